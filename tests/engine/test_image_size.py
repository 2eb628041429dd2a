"""An encoded image's size from its header (engine/image_size.py), the limits built on it (engine/preprocess.py)
and their one code path through Classifier.predict and bit-classify.

Real OpenCV encodes every format it can write here; the header reader must give the size OpenCV decodes, refuse
what it cannot read with one line, and never raise anything else on a truncated or crafted header.
"""

import struct
import threading

import cv2
import numpy as np
import pytest

from bit_trt.engine import preprocess
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.image_size import encoded_size
from bit_trt.engine.opencv_temp import private_opencv_temp
from bit_trt.engine.parity_set import real_photo_paths
from bit_trt.engine.preprocess import InputSpec, resize_to, scale_uint8
from tests.conftest import run_cli
from tools.serve_attack_bench import zero_png

FORMATS = [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".pam", ".pfm", ".sr", ".jp2", ".hdr"]
FORMATS += [".avif", ".gif"]  # OpenCV 5 writes these; 4.x skips them
SIZES = [(37, 53), (1, 1), (300, 7)]


def _encode(ext: str, height: int, width: int) -> bytes | None:
    # OpenCV's JPEG 2000 encoder writes through a temporary file and leaves it when it refuses a size (1x1): in the
    # process's own folder (engine/opencv_temp.py), removed at exit, not 0644 in /tmp
    private_opencv_temp()
    rng = np.random.default_rng(height * 1000 + width)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    if ext == ".pgm":
        image = image[..., 0].copy()
    if ext in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        return None
    return buf.tobytes() if ok else None


@pytest.mark.parametrize("ext", FORMATS)
def test_the_header_gives_the_size_opencv_decodes(ext):
    if _encode(ext, 37, 53) is None:
        pytest.skip(f"this OpenCV does not write {ext}")
    for height, width in SIZES:
        data = _encode(ext, height, width)
        if data is None:  # a size this encoder refuses
            continue
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        size = encoded_size(data)
        assert (size.height, size.width) == decoded.shape[:2] == (height, width), (ext, size)


@pytest.mark.parametrize("ext", FORMATS)
def test_every_truncated_header_is_one_line_or_the_right_size(ext):
    data = _encode(ext, 37, 53)
    if data is None:
        pytest.skip(f"this OpenCV does not write {ext}")
    for cut in range(min(len(data), 400)):
        try:
            size = encoded_size(data[:cut], "probe")
        except BitError as exc:
            assert str(exc).startswith("probe: ") and "\n" not in str(exc)
        else:
            assert (size.width, size.height) == (53, 37), (ext, cut)


def test_a_jpeg_2000_codestream_counts_not_its_header_box():
    """A JP2 whose ihdr box declares 53x37 while its codestream (what OpenJPEG decodes) declares 60000x60000."""
    data = bytearray(_encode(".jp2", 37, 53))
    stream = data.index(b"\xff\x4f\xff\x51")
    assert encoded_size(bytes(data[stream:])).width == 53  # the bare codestream (.j2k) alone
    struct.pack_into(">II", data, stream + 8, 60000, 60000)
    size = encoded_size(bytes(data))
    assert (size.format, size.width, size.height) == ("JPEG 2000", 60000, 60000)


def _bmp_top_down() -> bytes:
    data = bytearray(_encode(".bmp", 37, 53))
    struct.pack_into("<i", data, 22, -37)
    return bytes(data)


def _gif(screen: tuple[int, int], frame: tuple[int, int, int, int], palette: bool = True) -> bytes:
    if palette:  # a global color table of two entries
        head = b"GIF89a" + struct.pack("<HH", *screen) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    else:
        head = b"GIF89a" + struct.pack("<HH", *screen) + b"\x00\x00\x00"
    comment = b"\x21\xfe\x03abc\x00"  # an extension block before the frame
    return head + comment + b"\x2c" + struct.pack("<HHHH", *frame) + b"\x00\x02\x02\x44\x01\x00\x3b"


def _tiff(order: str, big: bool, width: int, height: int) -> bytes:
    """A minimal TIFF header with one directory holding ImageWidth and ImageLength."""
    if big:
        head = (b"II+\0" if order == "<" else b"MM\0+") + struct.pack(order + "HHQ", 8, 0, 16)
        entries = struct.pack(order + "Q", 2)
        entries += struct.pack(order + "HHQQ", 256, 16, 1, width) + struct.pack(order + "HHQQ", 257, 4, 1, height)
        return head + entries
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    entries = struct.pack(order + "H", 2)
    entries += struct.pack(order + "HHII", 256, 3, 1, width << (16 if order == ">" else 0))
    entries += struct.pack(order + "HHII", 257, 4, 1, height)
    return head + entries


def _tiff_twice() -> bytes:
    """ImageWidth and ImageLength each given twice, 3000 then 1 (libtiff keeps the first)."""
    head = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 4)
    for tag, value in ((256, 3000), (256, 1), (257, 3000), (257, 1)):
        head += struct.pack("<HHII", tag, 4, 1, value)
    return head


def _jpeg_with(markers: bytes, sof: int = 0xC2, height: int = 37, width: int = 53) -> bytes:
    frame = struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + markers + bytes([0xFF, sof]) + frame + b"\xff\xd9"


CRAFTED = [
    pytest.param(_bmp_top_down(), ("BMP", 53, 37), id="bmp-top-down"),
    pytest.param(_gif((10, 10), (0, 0, 10, 10)), ("GIF", 10, 10), id="gif"),
    pytest.param(_gif((10, 10), (5, 0, 60000, 40000)), ("GIF", 60005, 40000), id="gif-frame-beyond-screen"),
    pytest.param(_gif((12, 9), (0, 0, 12, 9), palette=False), ("GIF", 12, 9), id="gif-no-global-palette"),
    pytest.param(_tiff("<", False, 53, 37), ("TIFF", 53, 37), id="tiff-le"),
    pytest.param(_tiff(">", False, 53, 37), ("TIFF", 53, 37), id="tiff-be-short"),
    pytest.param(_tiff("<", True, 70000, 37), ("TIFF", 70000, 37), id="bigtiff"),
    pytest.param(_jpeg_with(b"\xff\xe0\x00\x04ab" + b"\xff\xff"), ("JPEG", 53, 37), id="jpeg-progressive-fill"),
    pytest.param(_jpeg_with(b"\xff\xc4\x00\x02", sof=0xC0), ("JPEG", 53, 37), id="jpeg-dht-before-sof"),
    pytest.param(b"P6\n# a comment\n53   37\n255\n", ("PNM", 53, 37), id="pnm-comment"),
    pytest.param(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 37 +X 53\n", ("Radiance HDR", 53, 37), id="hdr"),
    # what a header says twice, or hides behind a CR, counts at its largest (found by review: each slipped past)
    pytest.param(_tiff_twice(), ("TIFF", 3000, 3000), id="tiff-repeated-tags"),
    pytest.param(b"P5\n#x\r40 30 255\n#\n1 1\n", ("PNM", 40, 30), id="pnm-comment-ends-at-cr"),
]


def _kinds() -> dict[bytes, str]:
    """Headers whose decoders hold more per pixel than their format's plain kind: encoded bytes -> kind."""
    png = _encode(".png", 37, 53)
    actl = struct.pack(">I", 8) + b"acTL" + struct.pack(">II", 2, 0) + b"\0\0\0\0"
    webp = b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 4 + b"\x02\0\0\0" + struct.pack("<I", 52)[:3] * 2
    return {
        _jpeg_with(b""): "progressive JPEG",
        _jpeg_with(b"", sof=0xC0): "",
        png[:33] + actl + png[33:]: "animated PNG",  # after IHDR, before IDAT
        png: "",
        webp: "animated WebP",
        webp[:20] + b"\0" + webp[21:]: "",
    }


KINDS = _kinds()


def test_what_costs_more_to_decode_is_charged_more():
    """Progressive JPEG, animated PNG and WebP: their decoders hold more per pixel (DECODE_BYTES_PER_PIXEL,
    measured); tests/cpp holds the C++ reader to the same kinds and costs."""
    assert {data: encoded_size(data).kind for data in KINDS} == KINDS
    assert encoded_size(_jpeg_with(b"")).decode_bytes == 53 * 37 * 11
    assert encoded_size(_jpeg_with(b"", sof=0xC0)).decode_bytes == 53 * 37 * 7


@pytest.mark.parametrize("data, expected", CRAFTED)
def test_crafted_headers(data, expected):
    size = encoded_size(data)
    assert (size.format, size.width, size.height) == expected


REFUSED = [
    pytest.param(b"\x76\x2f\x31\x01" + b"\0" * 60, "OpenEXR images are not accepted", id="exr"),
    pytest.param(b"not an image at all", "not a decodable image (corrupt, truncated", id="text"),
    pytest.param(_jpeg_with(b"", height=0), "height comes after its first scan", id="jpeg-dnl"),
    pytest.param(b"P6\n53 x\n255\n", "malformed PNM header", id="pnm-word"),
    pytest.param(b"\xff\x4f\xff\x51" + b"\0" * 36 + b"\x00\x05", "5 components is not accepted", id="j2k-5-components"),
    pytest.param(_tiff("<", False, 0, 37), "declares 0x37", id="tiff-zero-width"),
    pytest.param(b"#?RADIANCE\n\n+X 53 -Y 37\n", "malformed Radiance HDR header", id="hdr-x-first"),  # not OpenCV's
    pytest.param(
        b"#?RGBE\nFORMAT=32-bit_rle_rgbe\n\r\n-Y 1 +X 8\n\n-Y 3000 +X 3000\n", "malformed Radiance HDR", id="hdr-cr"
    ),
    pytest.param(b"#?RGBE\n" + b"x" * 127 + b"\n\n-Y 3000 +X 3000\n", "malformed Radiance HDR", id="hdr-long-line"),
    pytest.param(b"P7\nWIDTH 40\nHEIGHT 30\n#\rENDHDR\nWIDTH 1\nHEIGHT 1\nENDHDR\n", "malformed PAM", id="pam-cr"),
    pytest.param(b"\xff\xd8" + b"\xff\xe0\x00\x02" * 5000, "malformed JPEG header", id="jpeg-endless-markers"),
]


@pytest.mark.parametrize("data, message", REFUSED)
def test_refused_headers_are_one_line(data, message):
    with pytest.raises(BitError, match="^probe: .*" + __import__("re").escape(message)) as info:
        encoded_size(data, "probe")
    assert "\n" not in str(info.value)


def test_the_pixel_limit_is_a_classifier_option(tiny_bundle):
    bomb = zero_png(2000)  # 4 megapixels in 1.5 KB
    with Classifier(str(tiny_bundle), max_image_pixels=1_000_000) as strict:
        with pytest.raises(BitError, match=r"^image 3: a 2000x2000 PNG image \(4\.0 megapixels\) is over the limit"):
            strict.predict([zero_png(8)] * 3 + [bomb], sources=[f"image {i}" for i in range(4)])
    with Classifier(str(tiny_bundle)) as default:
        assert default.max_image_pixels == preprocess.DEFAULT_MAX_IMAGE_PIXELS == 16384 * 16384
        assert default.predict(bomb).logits.shape == (1, 1000)
    with pytest.raises(BitError, match="max_image_pixels .* must be a positive integer, got 0"):
        Classifier(str(tiny_bundle), max_image_pixels=0)


def test_bit_classify_takes_both_limits(tiny_bundle, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(zero_png(2000))
    proc = run_cli("bit_trt.engine.classify_cli", tiny_bundle, bomb, "--max-image-pixels", "1000000")
    assert proc.returncode == 1
    assert f"bit-classify: error: {bomb}: a 2000x2000 PNG image (4.0 megapixels) is over the limit" in proc.stderr
    proc = run_cli("bit_trt.engine.classify_cli", tiny_bundle, bomb, "--max-decode-mb", "10")
    assert proc.returncode == 1
    assert "would take 27 MiB to decode, over this process's decode memory of 10 MiB (--max-decode-mb)" in proc.stderr
    assert run_cli("bit_trt.engine.classify_cli", tiny_bundle, bomb).returncode == 0


def test_the_decode_budget_serves_in_order_and_never_overflows():
    budget = preprocess._DecodeBudget(10)
    order, inside, peak = [], [0], [0]
    lock = threading.Lock()
    first_in = threading.Event()
    release_first = threading.Event()

    def take(name, nbytes, hold=None):
        with budget.reserve(nbytes):
            with lock:
                order.append(name)
                inside[0] += nbytes
                peak[0] = max(peak[0], inside[0])
            if hold:
                first_in.set()
                assert hold.wait(10)
            with lock:
                inside[0] -= nbytes

    first = threading.Thread(target=take, args=("first", 6, release_first))
    first.start()
    assert first_in.wait(10)
    big = threading.Thread(target=take, args=("big", 6))
    big.start()
    while not budget._turns:  # the big one queues: 4 bytes are free, it needs 6
        threading.Event().wait(0.01)
    small = threading.Thread(target=take, args=("small", 1))
    small.start()  # 4 bytes are free, but the big one waits first: no overtaking
    threading.Event().wait(0.2)
    assert order == ["first"]
    release_first.set()
    for thread in (first, big, small):
        thread.join(10)
    assert order == ["first", "big", "small"] and peak[0] <= 10 and budget.free == 10


def test_a_decode_over_the_whole_budget_is_refused(tiny_bundle):
    saved = preprocess.DECODE_BUDGET
    try:
        preprocess.set_decode_budget(10 << 20)
        with Classifier(str(tiny_bundle)) as clf:
            with pytest.raises(BitError, match=r"would take 27 MiB to decode, over this process's decode memory"):
                clf.predict(zero_png(2000))
            assert clf.predict(zero_png(1000)).logits.shape == (1, 1000)  # 6 MiB
    finally:
        preprocess.DECODE_BUDGET = saved


@pytest.mark.parametrize("resize", ["bilinear", "area", "bicubic", "nearest"])
def test_resizing_before_the_colour_swap_gives_the_same_bits(resize):
    """preprocess swaps BGR -> RGB after resizing (R x R pixels, not the whole photo): the same bits as the
    contract's order, decode -> RGB -> resize, for every interpolation."""
    spec = InputSpec(resolution=97, resize=resize)
    for path in real_photo_paths():
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        assert np.array_equal(preprocess.preprocess([path], spec), scale_uint8(resize_to(rgb, spec))[None])


class CountingBudget(preprocess._DecodeBudget):
    """The real budget, counting the decodes it lets in."""

    def __init__(self, total):
        super().__init__(total)
        self.granted = 0

    def reserve(self, nbytes):
        self.granted += 1
        return super().reserve(nbytes)


def test_a_bad_image_in_a_batch_costs_no_decode_and_leaves_none_running():
    """Headers are all read before anything decodes; a decode failure cancels the rest and waits for the running
    ones. (Found by review: the rest used to run on after the request had failed, behind later requests.)"""
    spec = InputSpec(resolution=32)
    good = zero_png(1500)
    saved, preprocess.DECODE_BUDGET = preprocess.DECODE_BUDGET, CountingBudget(1 << 30)
    try:
        with pytest.raises(BitError, match="^image 6: not a decodable image"):
            preprocess.preprocess([good] * 6 + [b"not an image"], spec, sources=[f"image {i}" for i in range(7)])
        assert preprocess.DECODE_BUDGET.granted == 0
        broken = good[:40] + b"\0" * (len(good) - 40)  # a valid header, no image after it
        with pytest.raises(BitError, match="^image 0: not a decodable image"):
            preprocess.preprocess([broken] + [good] * 8, spec, sources=[f"image {i}" for i in range(9)])
        budget = preprocess.DECODE_BUDGET
        assert budget.free == budget.total and not budget._turns  # nothing still decoding
    finally:
        preprocess.DECODE_BUDGET = saved
