"""Reading an artifact bundle: the manifest, its files, and their checksums.

The bundle is the only thing the engine reads. Export writes it (bit_trt.export.bundle_writer); this
module owns the format's version and the checks a deployment host runs before trusting a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from .atomic_write import atomic_path
from .compare import BF16_GATED_FLAVOURS
from .errors import BitError
from .precision import flavour_of, flavour_table
from .preprocess import InputSpec

MANIFEST = "manifest.json"
FORMAT = "bit-trt-bundle"
# 2: each artifact record names its `flavour` (fp32, fp16, int8-trt, int8-ort), which version 1 called `variant`
# and left out for fp32/fp16, and the manifest carries `flavours` (precision.flavour_table). Version 1 is read
# (upgraded in memory); `bit-engine BUNDLE --upgrade-manifest` rewrites it for readers that take only 2.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(directory: str, name: str) -> dict:
    """A file's manifest record: its name in the bundle, size and sha256."""
    full = os.path.join(directory, name)
    return {"file": name, "bytes": os.path.getsize(full), "sha256": sha256_file(full)}


def give_mkdir_mode(path: str) -> None:
    """Give a mkdtemp directory (mode 0700) the mode os.mkdir would have: a bundle or Triton repository staged
    privately must be readable, once published, by the server's user (a container's non-root uid)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


@dataclass
class Bundle:
    path: str
    manifest: dict
    # (path, sha256, size, mtime) of files already hashed: a second use of the same unchanged file (bit-bench's
    # check before measuring, then the Classifier's) does not read a 900 MB model again.
    _verified: set = field(default_factory=set, repr=False, compare=False)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_manifest(self.manifest["input"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["model"]["num_classes"])

    def artifacts(self, kind: str = "onnx") -> dict[str, dict]:
        """Artifacts of one kind by flavour: fp32, fp16, int8-trt (S8S8 for TensorRT), int8-ort (U8S8 for ORT)."""
        return {flavour_of(a): a for a in self.manifest.get("artifacts", []) if a.get("kind") == kind}

    def artifact_path(self, flavour: str = "fp32", kind: str = "onnx", verify: bool = True) -> str:
        found = self.artifacts(kind)
        if flavour not in found:
            raise BitError(
                f"bundle {self.path!r} has no {flavour} {kind} artifact; it has: {', '.join(found) or 'none'}"
            )
        return self.file_path(found[flavour], verify)

    def file_path(self, art: dict, verify: bool = True) -> str:
        """Where an artifact record's file is, after checking it (and its data files) against the manifest."""
        if verify:
            self.verify_file(art)
        return os.path.join(self.path, art["file"])

    def verify_file(self, art: dict) -> None:
        """Raise if an artifact (or its external data file) is missing or does not match its checksum."""
        for file, digest in [(art["file"], art["sha256"])] + [
            (d["file"], d["sha256"]) for d in art.get("data_files", [])
        ]:
            full = os.path.join(self.path, file)
            if not os.path.isfile(full):
                raise BitError(f"bundle {self.path!r} is missing {file}; re-export it")
            stat = os.stat(full)
            key = (full, digest, stat.st_size, stat.st_mtime_ns)
            if key in self._verified:
                continue
            if sha256_file(full) != digest:
                raise BitError(
                    f"bundle {self.path!r}: {file} does not match its manifest checksum (corrupt or modified); "
                    "re-export it"
                )
            self._verified.add(key)

    def labels(self) -> list[dict]:
        path = os.path.join(self.path, self.manifest["labels"]["file"])
        try:
            with open(path, encoding="utf-8") as f:
                labels = json.load(f)
        except (OSError, ValueError) as exc:
            raise BitError(f"bundle {self.path!r}: cannot read labels ({exc})") from exc
        if len(labels) != self.num_classes:
            raise BitError(f"bundle {self.path!r}: {len(labels)} labels for {self.num_classes} classes")
        return labels


def _upgraded(manifest: dict) -> dict:
    """A version-1 manifest in version 2's terms (the same bundle, nothing else changed)."""
    artifacts = []
    for a in manifest.get("artifacts", []):
        a = dict(a)
        a["flavour"] = a.pop("variant", a.get("precision"))
        artifacts.append(a)
    return {**manifest, "format_version": FORMAT_VERSION, "flavours": flavour_table(), "artifacts": artifacts}


def write_manifest(path: str, manifest: dict) -> None:
    """Replace a bundle's manifest in one rename, synced first: the last step of every change to a bundle."""
    with atomic_path(os.path.join(path, MANIFEST), "manifest") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _add_bf16_bounds(manifest: dict) -> list[str]:
    """Give each record that OpenVINO may run in bf16 the bound its gate holds it to (compare.BF16_GATED_FLAVOURS),
    where a bundle exported before bf16 runs were gated has none, as bit-export writes it now: the gate itself still
    measures the model against TF's stored logits on the host that runs it. Returns the files whose records gained
    it."""
    added = []
    for art in manifest.get("artifacts", []):
        bound = BF16_GATED_FLAVOURS.get(art.get("flavour")) if art.get("kind") == "onnx" else None
        if bound is not None and "bf16_tolerance" not in art:
            art["bf16_tolerance"] = bound.to_dict()
            added.append(art["file"])
    return added


def upgrade_manifest(path: str) -> str:
    """Rewrite an older bundle's manifest in the current format, with the bf16 gate's bounds its records lack;
    returns what was done, in one line."""
    version, manifest = _read_manifest(path)  # a missing or unreadable bundle is its one-line error
    added = _add_bf16_bounds(manifest)
    if version == FORMAT_VERSION and not added:
        return f"{path}: already bundle format version {FORMAT_VERSION}, every bf16 gate bound recorded; nothing to do"
    write_manifest(path, manifest)
    done = []
    if version != FORMAT_VERSION:
        done.append(f"manifest upgraded from bundle format version {version} to {FORMAT_VERSION}")
    if added:
        done.append(f"the bf16 gate's bound added to {', '.join(added)}, as bit-export writes it now")
    return f"{path}: {'; '.join(done)}"


def load_bundle(path: str) -> Bundle:
    return Bundle(path, _read_manifest(path)[1])


def manifest_sha256(path: str) -> str:
    """The bundle's identity: the sha256 of its manifest.json, which pins every artifact's sha256. A copy of the
    bundle elsewhere (another node, a shared volume) is the same bundle iff this matches and its files verify."""
    _read_manifest(path)  # a missing or foreign manifest is the bundle's one line, not a hash of nothing
    return sha256_file(os.path.join(path, MANIFEST))


def _read_manifest(path: str) -> tuple[int, dict]:
    """(the format version the file says, its manifest in the current format), or a one-line BitError."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise BitError(f"bundle {path!r} does not exist or is not a directory")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BitError(f"{path!r} is not a bit-trt bundle (no {MANIFEST}); an interrupted export leaves none") from None
    except (OSError, ValueError) as exc:
        raise BitError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise BitError(f"{manifest_path}: not a bit-trt manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BitError(
            f"{manifest_path}: bundle format version {version} is not supported "
            f"(this bit-trt reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-export with this version"
        )
    if version != FORMAT_VERSION:
        manifest = _upgraded(manifest)
    for i, art in enumerate(manifest.get("artifacts", [])):
        missing = [key for key in ("file", "sha256", "kind", "precision", "flavour") if key not in art]
        if missing:
            raise BitError(f"{manifest_path}: artifacts[{i}] has no {missing[0]!r}; re-export the bundle")
    return version, manifest
