"""Hostile images (files whose header OpenCV refuses, arrays OpenCV would choke on) are one clear BitError.

Real bundle, real OpenCV, no mocks. Each bad input here escaped as a cv2.error (or crashed the process)
before preprocess.to_array checked arrays itself and OpenCV's calls were wrapped; the valid odd layouts
pin that those checks refuse nothing OpenCV can take, and accept the valid images that used to be refused.
"""

import re
import resource
import struct
import subprocess
import sys
import warnings
import zlib

import cv2
import numpy as np
import pytest

from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import real_photo_paths
from bit_trt.engine.preprocess import InputSpec, resize_to
from tests.conftest import run_cli

CLASSIFY = "bit_trt.engine.classify_cli"
HUGE = 100_000  # 10**10 pixels: past our limit from the header, and past OpenCV's CV_IO_MAX_IMAGE_PIXELS (2**30)
OVER = r"a 100000x100000 {} image \(10000\.0 megapixels\) is over the limit of 268\.4 megapixels"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = HUGE, height: int = HUGE) -> bytes:
    """A well-formed PNG (valid CRCs) whose IHDR declares width x height RGB; the pixel data is a stub."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((6, 5, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


def huge_bmp(width: int = HUGE, height: int = HUGE) -> bytes:
    data = bytearray(_encoded(".bmp"))
    data[18:26] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER width, height
    return bytes(data)


def huge_gif() -> bytes:
    """Logical screen and one frame of 65535 x 65535 (GIF's largest), a 2-colour table, a stub of LZW data."""
    screen = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 65535, 65535) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def huge_tiff() -> bytes:
    """OpenCV's own little-endian TIFF with ImageWidth and ImageLength rewritten as LONGs of HUGE."""
    data = bytearray(_encoded(".tiff"))
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] in (256, 257):
            struct.pack_into("<HII", data, entry + 2, 4, 1, HUGE)  # type LONG, count 1, value
    return bytes(data)


@pytest.fixture(scope="module")
def photo() -> str:
    photos = real_photo_paths()
    assert photos, "the test photos ship with scikit-learn (the export extra)"
    return photos[0]


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    with Classifier(str(tiny_bundle)) as c:
        yield c


def test_cli_reports_a_refused_header_on_one_line_and_goes_on(tiny_bundle, tmp_path, photo):
    huge = tmp_path / "huge.png"
    huge.write_bytes(huge_png())
    proc = run_cli(CLASSIFY, tiny_bundle, huge, photo)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("bit-classify: error:")]
    assert re.match(re.escape(f"bit-classify: error: {huge}: ") + OVER.format("PNG"), line), line
    assert photo in proc.stdout.splitlines()  # the good image after it was still classified


def test_a_header_opencv_refuses_keeps_the_native_error_as_its_cause(clf):
    """A row wider than OpenCV takes (2**20 + 1 pixels, a megapixel in all): OpenCV's own header check answers;
    what `--debug` shows: raised `from` the cv2.error, so the native message is one traceback away."""
    with pytest.raises(BitError, match="CV_IO_MAX_IMAGE_WIDTH") as info:
        clf.predict(huge_bmp(width=(1 << 20) + 1, height=1))
    assert isinstance(info.value.__cause__, cv2.error)


@pytest.mark.parametrize("shape", [(0, 10, 3), (10, 0, 3)], ids=["zero-height", "zero-width"])
def test_zero_size_array_is_a_bit_error_and_the_classifier_stays_usable(tiny_bundle, photo, shape):
    clf = Classifier(str(tiny_bundle))
    with pytest.raises(BitError, match=re.escape(f"zero height or width (shape {shape})")):
        clf.predict(np.zeros(shape, np.uint8))
    assert clf.predict(photo).logits.shape == (1, 1000)


def _broadcast(shape):
    """A read-only view of shape `shape` that costs no memory: a size check, not RAM, must stop it."""
    return np.broadcast_to(np.full(shape[-1], 7, np.uint8), shape)


BAD = [
    pytest.param(huge_png(), "^image: " + OVER.format("PNG"), id="png-bytes"),
    pytest.param(bytearray(huge_png()), OVER.format("PNG"), id="png-bytearray"),
    pytest.param(memoryview(huge_png()), OVER.format("PNG"), id="png-memoryview"),
    pytest.param(huge_bmp(), OVER.format("BMP"), id="bmp"),
    pytest.param(huge_gif(), r"a 65535x65535 GIF image \(4294\.8 megapixels\) is over the limit", id="gif"),
    pytest.param(huge_tiff(), OVER.format("TIFF"), id="tiff"),
    pytest.param(np.zeros((0, 5), np.uint8), r"zero height or width \(shape \(0, 5\)\)", id="gray-zero-height"),
    pytest.param(np.zeros((5, 0), np.float32), r"zero height or width", id="gray-float-zero-width"),
    pytest.param(np.zeros((0, 5, 3), np.float32), r"zero height or width", id="float-zero-height"),
    pytest.param(np.zeros((4, 0, 4), np.float64), r"zero height or width", id="rgba-float64-zero-width"),
    pytest.param(_broadcast((1, 2**31, 3)), r"too large: at most 1048576 pixels a side", id="width-over-int32"),
    pytest.param(_broadcast((2**31, 1, 3)), r"too large: at most 1048576 pixels a side", id="height-over-int32"),
]


@pytest.mark.parametrize("image, message", BAD)
def test_bad_input_is_a_clear_bit_error(clf, photo, image, message):
    with pytest.raises(BitError, match=message) as info:
        clf.predict(image)
    assert "\n" not in str(info.value)
    assert clf.predict(photo).logits.shape == (1, 1000)


def _rgb(photo):
    return cv2.cvtColor(cv2.imread(photo), cv2.COLOR_BGR2RGB)


def _matrix(gray: np.ndarray) -> np.ndarray:
    """An np.matrix, as old linear-algebra code still hands over; numpy's deprecation notice is not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(gray)


# Valid images in a layout or dtype OpenCV does not take as is: each must predict exactly what its plain
# C-contiguous native uint8/float32 equivalent does. Those marked "was refused" were a BitError before.
VALID = [
    ("negative-column-stride", lambda rgb: rgb[:, ::-1]),
    ("negative-row-stride", lambda rgb: rgb[::-1]),
    ("every-other-row", lambda rgb: rgb[::2]),
    ("every-other-column", lambda rgb: rgb[:, ::2]),
    ("fortran-order", np.asfortranarray),
    ("transposed-view", lambda rgb: rgb.transpose(1, 0, 2)),
    ("rgba-slice-non-contiguous", lambda rgb: np.dstack([rgb, rgb[:, :, :1]])[:, 1:]),
    ("float64-reversed-rgba", lambda rgb: (np.dstack([rgb, rgb[:, :, :1]]) / 255.0)[::-1, ::-1]),
    ("float16", lambda rgb: (rgb / 255.0).astype(np.float16)),
    ("float64", lambda rgb: rgb / 255.0),
    ("zero-stride-broadcast", lambda rgb: np.broadcast_to(rgb[:1, :1], rgb.shape)),
    ("extremely-wide", lambda rgb: np.resize(rgb, (1, 70000, 3))),
    ("gray-hw1 (was refused)", lambda rgb: rgb[:, :, 1:2]),
    ("big-endian-float32 (was refused)", lambda rgb: (rgb / 255.0).astype(">f4")),
    ("big-endian-float64 (was refused)", lambda rgb: (rgb / 255.0).astype(">f8")),
    ("gray-np.matrix (was a ValueError)", lambda rgb: _matrix(rgb[:, :, 1])),
]


def _plain(image: np.ndarray) -> np.ndarray:
    """The same pixels as a C-contiguous native-endian uint8 or float32 array, grayscale spelled HW."""
    plain = np.asarray(image)
    plain = plain[:, :, 0] if plain.ndim == 3 and plain.shape[2] == 1 else plain
    return np.ascontiguousarray(plain.astype(np.float32) if plain.dtype.kind == "f" else plain)


@pytest.mark.parametrize("make", [m for _, m in VALID], ids=[name for name, _ in VALID])
def test_valid_odd_layouts_predict_like_their_plain_copy(clf, photo, make):
    image = make(_rgb(photo))
    np.testing.assert_array_equal(clf.predict(image).logits, clf.predict(_plain(image)).logits)


@pytest.mark.parametrize(
    "image", [np.zeros((0, 4, 3), np.uint8), np.zeros((9, 9, 3), np.float16)], ids=["zero-size", "float16"]
)
def test_resize_to_turns_an_opencv_refusal_into_a_bit_error(image):
    """resize_to is public (export calls it on decoded files); its wrapper is the last line of defence."""
    with pytest.raises(BitError, match=r"^cannot resize a .* image of shape .* \(OpenCV: \(-215") as info:
        resize_to(image, InputSpec(resolution=8))
    assert isinstance(info.value.__cause__, cv2.error)


def test_a_width_that_crashed_opencv_is_refused_before_opencv_sees_it():
    """cv2.resize on a (1, 2**30, 3) view segfaulted once its width tables outgrew memory; a child with
    4 GiB of address space reproduces that. A crash kills the process, so the check runs in a child."""
    code = (
        "import numpy as np\n"
        "from bit_trt.engine.errors import BitError\n"
        "from bit_trt.engine.preprocess import InputSpec, preprocess\n"
        "wide = np.broadcast_to(np.zeros(3, np.uint8), (1, 2**30, 3))\n"
        "try:\n"
        "    preprocess([wide], InputSpec(resolution=8))\n"
        "except BitError as exc:\n"
        "    print(exc)\n"
    )

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, preexec_fn=limit_memory
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "is too large: at most 1048576 pixels a side" in proc.stdout
