"""Image preprocessing, exactly as a bundle's manifest states it. The one CPU implementation every backend uses.

Contract (manifest "input"): OpenCV decode -> RGB -> resize to (size, size) with the named interpolation
-> float32 in [0, 1] -> NHWC. Grayscale and RGBA sources become RGB.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .errors import BitError
from .image_size import ImageSize, encoded_size
from .opencv_temp import private_opencv_temp

INTERPOLATIONS = ("bilinear", "area", "bicubic", "nearest")
DEFAULT_RESIZE = "bilinear"  # the BiT reference code's straight resize
# An array's sides may be as long as those of an image OpenCV decodes (CV_IO_MAX_IMAGE_WIDTH/HEIGHT), no
# longer: cv2.resize reads a side of 2**31 as an empty image, and builds tables as long as the source width
# that crashed the process (a segfault, not an exception) for a (1, 2**30, 3) array under a 12 GB limit.
MAX_SIDE = 1 << 20
# Encoded images are refused from their header above this many pixels (a setting: Classifier(max_image_pixels=),
# --max-image-pixels). 2**28 = 268 megapixels, 16384 x 16384: above every phone sensor to date (200 MP,
# 16320 x 12240); 1.75 GiB to decode as JPEG or PNG. OpenCV's own limit is 2**30 (3 GiB), which a 17 KB PNG reaches.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 28
# Decoding memory in flight in one process, over every thread and Classifier (image_size.DECODE_BYTES_PER_PIXEL:
# 7 bytes a pixel for JPEG and PNG): one image at the default limit (1.75 GiB) and smaller ones beside it. An image
# that would need more on its own is refused. A setting of the process: set_decode_budget (bit-serve --max-decode-mb).
DEFAULT_DECODE_BUDGET = 2 << 30


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


class _DecodeBudget:
    """At most `total` bytes of decoding in flight in this process, handed out first come, first served: a decode
    waits for its image's share, so many small images decode side by side and the largest ones take turns.
    Every holder is one bounded decode (and its resize), so every wait ends."""

    def __init__(self, total: int):
        self.total = total
        self.free = total
        self._turns: list[object] = []
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int):
        turn = object()
        with self._changed:
            self._turns.append(turn)
            try:
                self._changed.wait_for(lambda: self._turns[0] is turn and self.free >= nbytes)
            finally:  # granted, or interrupted (KeyboardInterrupt): either way the turn is over
                self._turns.remove(turn)
                self._changed.notify_all()
            self.free -= nbytes
        try:
            yield
        finally:
            with self._changed:
                self.free += nbytes
                self._changed.notify_all()


DECODE_BUDGET = _DecodeBudget(DEFAULT_DECODE_BUDGET)


def set_decode_budget(nbytes: int) -> None:
    """The process's decoding memory in flight (bytes); a server sets it once, before it decodes anything."""
    global DECODE_BUDGET
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise BitError(f"the decode budget must be a positive number of bytes, got {nbytes!r}")
    DECODE_BUDGET = _DecodeBudget(nbytes)


def check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise BitError(f"max_image_pixels (--max-image-pixels) must be a positive integer, got {max_pixels!r}")
    return max_pixels


def _declared_size(data: bytes, source: str, max_pixels: int, budget: _DecodeBudget) -> ImageSize:
    """The image's size from its header, refused before any decoding when it declares more than max_pixels, or
    would take more memory to decode than the whole decode budget."""
    if not data:
        raise BitError(f"{source}: empty file, not an image")
    size = encoded_size(data, source)
    what = f"{source}: a {size.width}x{size.height} {size.format} image ({size.pixels / 1e6:.1f} megapixels)"
    if size.pixels > max_pixels:
        raise BitError(
            f"{what} is over the limit of {max_pixels / 1e6:.1f} megapixels (max_image_pixels, --max-image-pixels)"
        )
    if size.decode_bytes > budget.total:
        raise BitError(
            f"{what} would take {size.decode_bytes / 2**20:.0f} MiB to decode, over this process's decode memory "
            f"of {budget.total / 2**20:.0f} MiB (--max-decode-mb)"
        )
    return size


def _decode_bgr(data: bytes, source: str) -> np.ndarray:
    cv2 = _cv2()
    private_opencv_temp()  # a decoder that reads from a file writes the upload there, not in /tmp
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_COLOR turns grayscale into 3 channels and drops alpha, so every image arrives as BGR.
    # imdecode returns None for most bad data but raises for a header it refuses (a size over its limits).
    img = _opencv(f"{source}: not a decodable image", cv2.imdecode, buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BitError(f"{source}: not a decodable image (corrupt, truncated, or not an image format)")
    return img


def _bgr_to_rgb(img: np.ndarray, source: str) -> np.ndarray:
    cv2 = _cv2()
    return _opencv(f"{source}: cannot convert the decoded image to RGB", cv2.cvtColor, img, cv2.COLOR_BGR2RGB)


def decode(data: bytes, source: str = "image", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded bytes -> uint8 RGB HWC at full size. Corrupt or non-image bytes, and images declaring more than
    max_pixels, are a BitError naming the source. The caller holds the whole image: to feed a network, use
    preprocess(), which keeps only the resized copy."""
    budget = DECODE_BUDGET  # read once: a budget set meanwhile applies to the next decode
    size = _declared_size(data, source, max_pixels, budget)
    with budget.reserve(size.decode_bytes):
        return _bgr_to_rgb(_decode_bgr(data, source), source)


def _resized(data: bytes, spec: InputSpec, source: str, size: ImageSize, budget: _DecodeBudget) -> np.ndarray:
    """Encoded bytes -> uint8 RGB at the network's resolution, the full-size image alive only inside this call
    (and inside the decode budget). Resizing before the BGR -> RGB swap gives the same bits as after it (every
    interpolation works on each channel alone) and swaps R x R pixels instead of the whole photo."""
    with budget.reserve(size.decode_bytes):
        small = resize_to(_decode_bgr(data, source), spec)
    return _bgr_to_rgb(small, source)


def read_image(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    return decode(read_file(path), os.fspath(path), max_pixels)


def read_file(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BitError(f"{path}: cannot read ({exc.strerror})") from None


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


def _read_headers(images: list, max_pixels: int, sources: list[str] | None, budget: _DecodeBudget) -> list[tuple]:
    """(image, its name in errors, its declared size or None) for each image: files read, and every encoded
    image's header checked against max_pixels and the budget before anything is decoded."""
    prepared = []
    for i, image in enumerate(images):
        source = sources[i] if sources else "image"
        if isinstance(image, (str, os.PathLike)):
            image, source = read_file(image), sources[i] if sources else os.fspath(image)
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = bytes(image)
            prepared.append((image, source, _declared_size(image, source, max_pixels, budget)))
        else:
            prepared.append((image, source, None))
    return prepared


@contextmanager
def full_size(images, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, sources: list[str] | None = None):
    """Every image as an RGB HWC array at full size (uint8, or float as given), for a consumer that resizes them
    itself (the trt runner's CUDA kernel). The encoded ones are checked against max_pixels from their headers,
    then decoded inside the decode budget, reserved for all of them until the block ends (a batch needing more
    than the whole budget is refused)."""
    budget = DECODE_BUDGET
    items = _read_headers(as_list(images), max_pixels, sources, budget)
    total = sum(size.decode_bytes for _, _, size in items if size)
    if total > budget.total:
        raise BitError(
            f"decoding these {len(items)} images at full size at once would take {total / 2**20:.0f} MiB, over this "
            f"process's decode memory of {budget.total / 2**20:.0f} MiB: send fewer at a time"
        )
    with budget.reserve(total):
        yield [
            _bgr_to_rgb(_decode_bgr(image, source), source) if size else to_array(image)
            for image, source, size in items
        ]


def preprocess(
    images, spec: InputSpec, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, sources: list[str] | None = None
) -> np.ndarray:
    """A list of images (any mix of paths, bytes, arrays, any sizes) -> float32 NHWC batch in [0, 1].

    Every encoded image's header is read first, so a batch holding one image over max_pixels (or one that is not
    an image at all) is refused before anything is decoded. Then the images are decoded and resized in parallel
    threads, each at full size only while it is resized, inside the process's decode budget; the first failure
    cancels the decodes not yet started and waits for the running ones, so no work outlives the call. `sources`
    names each image in errors (default: its path, or "image").
    """
    images = as_list(images)
    budget = DECODE_BUDGET
    prepared = _read_headers(images, max_pixels, sources, budget)
    batch = np.empty((len(images), spec.resolution, spec.resolution, 3), np.float32)

    def one(i):
        image, source, size = prepared[i]
        arr = _resized(image, spec, source, size, budget) if size else resize_to(to_array(image), spec)
        batch[i] = scale_uint8(arr) if arr.dtype == np.uint8 else arr

    if len(images) == 1:
        one(0)
        return batch
    jobs = [_decode_pool().submit(one, i) for i in range(len(images))]
    try:
        for job in jobs:
            job.result()
    except BaseException:
        for job in jobs:
            job.cancel()
        wait(jobs)  # the ones already running
        raise
    return batch
