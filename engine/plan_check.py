"""Can this TensorRT plan run on this host? Asked of the manifest before any byte is deserialized.

A plan is tied to the TensorRT version that built it and to a GPU architecture. Deserializing a foreign
plan fails deep inside TensorRT with an opaque message (or, on old versions, crashes), so the manifest's
record is checked first and a mismatch gets a rebuild hint.
"""

from __future__ import annotations

from .errors import BitError, install_hint
from .precision import flavour_of, precision_of

# Compute capabilities TensorRT-RTX targets when a plan names none ("library default").
RTX_DEFAULT_CCS = ("sm75", "sm80", "sm86", "sm89", "sm120")


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def _cc_number(cc: str) -> int:
    return int(cc.lower().removeprefix("sm"))


def rebuild_hint(art: dict, bundle_path: str) -> str:
    lib = art.get("library", "tensorrt")
    precision = precision_of(flavour_of(art))
    return (
        f"rebuild it on this host from the bundle's verified ONNX: bit-engine {bundle_path} --engine {lib} "
        f"--precision {precision} --force"
    )


def check_plan(art: dict, installed_version: str | None, host_cc: str | None, bundle_path: str = "BUNDLE") -> None:
    """Raise BitError unless `art` (a manifest engine record) can be deserialized here.

    installed_version: the version of art["library"] importable here (None: not installed).
    host_cc: this GPU's compute capability, e.g. 'sm90' (None: no GPU found).
    """
    lib = art.get("library", "tensorrt")
    built = art.get("library_version", "?")
    hint = rebuild_hint(art, bundle_path)
    if installed_version is None:
        raise BitError(
            f"{art['file']} was built by {lib} {built}, which is not installed here; {install_hint(lib, built)}"
        )
    if host_cc is None:
        raise BitError(
            f"{art['file']}: no NVIDIA GPU found on this host (nvidia-smi); TensorRT plans need one. "
            "Use --backend ort-cpu or openvino here"
        )
    b, i = _version(built), _version(installed_version)
    if art.get("version_compatible"):
        if i[:1] != b[:1] or i < b:
            raise BitError(
                f"{art['file']} is a version-compatible plan from {lib} {built}; it runs on {lib} "
                f"{b[0]}.x at or above {built}, not {installed_version}. {hint}"
            )
    elif i != b:
        raise BitError(
            f"{art['file']} was built by {lib} {built} but {lib} {installed_version} is installed; "
            f"plans only load in the version that built them. {hint}"
        )
    target = art.get("target", {})
    if target.get("kind") == "rtx":
        ccs = [c.lower() for c in target.get("compute_capabilities", [])]
        allowed = RTX_DEFAULT_CCS if not ccs or ccs == ["library default"] else tuple(ccs)
        if host_cc not in allowed:
            raise BitError(
                f"{art['file']} is a TensorRT-RTX engine for {', '.join(allowed)}; this GPU is {host_cc}. "
                f"TensorRT-RTX engines run on RTX-class GPUs only (not data-centre parts such as the H100). {hint}"
            )
        return
    built_cc = target.get("compute_capability")
    level = art.get("hardware_compatibility", "none")
    if level == "ampere_plus":
        if _cc_number(host_cc) < 80:
            raise BitError(f"{art['file']} is an Ampere-and-later plan; this GPU is {host_cc}. {hint}")
    elif built_cc and built_cc != host_cc:
        raise BitError(
            f"{art['file']} was built for {built_cc} but this GPU is {host_cc}; a plan is not portable "
            f"across GPU architectures. {hint}"
        )
