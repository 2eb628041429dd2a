"""tests/scale/cluster/ runs only inside the network namespace tests/scale/test_ray_cluster.py makes for it."""

import os

collect_ignore = [] if os.environ.get("BIT_TRT_RAY_NETNS") == "1" else ["cluster"]
