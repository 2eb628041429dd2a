"""Image preprocessing, exactly as a bundle's manifest states it. The one CPU implementation every backend uses.

Contract (manifest "input"): OpenCV decode -> RGB -> resize to (size, size) with the named interpolation
-> float32 in [0, 1] -> NHWC. Grayscale and RGBA sources become RGB.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import BitError

INTERPOLATIONS = ("bilinear", "area", "bicubic", "nearest")
DEFAULT_RESIZE = "bilinear"  # the BiT reference code's straight resize
# An array's sides may be as long as those of an image OpenCV decodes (CV_IO_MAX_IMAGE_WIDTH/HEIGHT), no
# longer: cv2.resize reads a side of 2**31 as an empty image, and builds tables as long as the source width
# that crashed the process (a segfault, not an exception) for a (1, 2**30, 3) array under a 12 GB limit.
MAX_SIDE = 1 << 20


@dataclass(frozen=True)
class InputSpec:
    """What the network expects; read from and written to the manifest's "input" section."""

    resolution: int
    resize: str = DEFAULT_RESIZE
    layout: str = "NHWC"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    name: str = "images"
    color: str = "RGB"

    def to_manifest(self) -> dict:
        return {
            "name": self.name,
            "layout": self.layout,
            "dtype": self.dtype,
            "color": self.color,
            "value_range": list(self.value_range),
            "resolution": self.resolution,
            "resize": self.resize,
            "decoder": "opencv",
        }

    @classmethod
    def from_manifest(cls, d: dict) -> InputSpec:
        try:
            spec = cls(
                resolution=int(d["resolution"]),
                resize=d.get("resize", DEFAULT_RESIZE),
                layout=d.get("layout", "NHWC"),
                dtype=d.get("dtype", "float32"),
                value_range=tuple(d.get("value_range", (0.0, 1.0))),
                name=d.get("name", "images"),
                color=d.get("color", "RGB"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BitError(f"manifest input section is malformed ({exc})") from None
        if spec.resize not in INTERPOLATIONS:
            raise BitError(f"manifest names resize {spec.resize!r}; supported: {', '.join(INTERPOLATIONS)}")
        return spec


def _cv2():
    import cv2  # opencv-python-headless is a core dependency; imported here to keep `import engine` light

    return cv2


def _native_reason(exc: Exception) -> str:
    """A cv2.error's first line without its "OpenCV(5.0.0) /path/file.cpp:79: error: " prefix."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return re.sub(r"^OpenCV\([^)]*\)\s+\S+:\d+:\s+error:\s*", "", lines[0].strip())


def _opencv(what: str, call, *args, **kwargs):
    """call(*args) with any cv2.error turned into a one-line BitError; the last line of defence behind
    to_array's checks, for what they cannot foresee. `from exc` keeps the native error for --debug."""
    cv2 = _cv2()
    try:
        return call(*args, **kwargs)
    except cv2.error as exc:
        raise BitError(f"{what} (OpenCV: {_native_reason(exc)})") from exc


def decode(data: bytes, source: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 RGB HWC. Corrupt or non-image bytes are a BitError naming the source."""
    cv2 = _cv2()
    if not data:
        raise BitError(f"{source}: empty file, not an image")
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_COLOR turns grayscale into 3 channels and drops alpha, so every image arrives as BGR.
    # imdecode returns None for most bad data but raises for a header it refuses (a size over its limits).
    img = _opencv(f"{source}: not a decodable image", cv2.imdecode, buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BitError(f"{source}: not a decodable image (corrupt, truncated, or not an image format)")
    return _opencv(f"{source}: cannot convert the decoded image to RGB", cv2.cvtColor, img, cv2.COLOR_BGR2RGB)


def read_image(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BitError(f"{path}: cannot read ({exc.strerror})") from None
    return decode(data, os.fspath(path))


def resize_to(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    cv2 = _cv2()
    interp = {
        "bilinear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "bicubic": cv2.INTER_CUBIC,
        "nearest": cv2.INTER_NEAREST,
    }[spec.resize]
    if rgb.shape[:2] == (spec.resolution, spec.resolution):
        return rgb
    what = f"cannot resize a {rgb.dtype} image of shape {rgb.shape}"
    return _opencv(what, cv2.resize, rgb, (spec.resolution, spec.resolution), interpolation=interp)


def to_array(image) -> np.ndarray:
    """Anything a user may hand us (path, bytes, uint8/float array) -> uint8 or float32 RGB HWC array.

    Every check on an array happens here, before OpenCV sees it: OpenCV answers a bad one with a native
    assertion (or worse), not with what the user should change.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image))
    if not isinstance(image, np.ndarray):
        raise BitError(f"expected a path, encoded bytes or an HWC array, got {type(image).__name__}")
    image = np.asarray(image)  # a subclass (np.matrix, a masked array) indexes and reduces differently
    shape = image.shape
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        expected = "an HWC image with 3 (RGB) or 4 (RGBA) channels, or a grayscale HW or HWx1 one"
        raise BitError(f"expected {expected}; got shape {shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise BitError(f"image has zero height or width (shape {shape})")
    if max(height, width) > MAX_SIDE:
        raise BitError(f"image of shape {shape} is too large: at most {MAX_SIDE} pixels a side")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype.kind == "f":  # any width or byte order; OpenCV gets native float32
        if not np.isfinite(image).all():
            raise BitError("image contains NaN or Inf")
        if image.min() < 0.0 or image.max() > 1.0:
            raise BitError(f"float images must be in [0, 1]; got [{image.min():.3g}, {image.max():.3g}]")
        image = image.astype(np.float32, copy=False)
    elif image.dtype != np.uint8:
        raise BitError(f"unsupported image dtype {image.dtype}; use uint8 or float in [0, 1]")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


_pool = None
_pool_lock = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    """Threads for decoding a batch: OpenCV's JPEG decoder is single-threaded and releases the GIL."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="bit-decode")
        return _pool


def scale_uint8(images_u8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], the manifest's value range; the one place the scale is written."""
    return images_u8.astype(np.float32) * np.float32(1 / 255)


def as_list(images) -> list:
    """One image, a list of images, or a 4-D array batch -> a non-empty list of images."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise BitError("empty batch: pass at least one image")
    return list(images)


def preprocess(images, spec: InputSpec) -> np.ndarray:
    """A list of images (any mix of paths, bytes, arrays, any sizes) -> float32 NHWC batch in [0, 1].

    Images of a batch are decoded and resized in parallel threads; the first bad image raises.
    """
    images = as_list(images)
    batch = np.empty((len(images), spec.resolution, spec.resolution, 3), np.float32)

    def one(i):
        arr = resize_to(to_array(images[i]), spec)
        batch[i] = scale_uint8(arr) if arr.dtype == np.uint8 else arr

    if len(images) == 1:
        one(0)
    else:
        for job in [_decode_pool().submit(one, i) for i in range(len(images))]:
            job.result()
    return batch
