"""Scaling out on the cluster engines users already run (docs/scaling.md).

- serve_app: a Ray Serve application, one Classifier per replica (`bit-serve BUNDLE --ray ADDRESS`).
- bulk: bulk classification on Ray Data (`bit-classify --ray ADDRESS INPUT... --out results.parquet`).

Ray is imported only here, never by engine/ (the light core), which hands `--ray` over to this package by name.
"""
