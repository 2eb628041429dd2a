"""An encoded image's width and height, read from its header without decoding it.

A few kilobytes can declare gigapixels (an all-zero PNG compresses about 1000:1), and OpenCV allocates the
whole image before it decodes a row. So every decoder OpenCV's image codecs may pick for a buffer is
mirrored here by its signature and size fields, and the size is checked before OpenCV sees the bytes
(preprocess.decode). A buffer no entry recognizes is refused: OpenCV would not decode it either.

engine/cpp/src/image_size.cpp is the same reading in C++ (tests/cpp holds the two to the same answers).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .errors import BitError

HEADER_SCAN = 1 << 16  # text headers (PNM, PAM, PFM, HDR) longer than this are refused, not read on
MAX_DIGITS = 10  # a number in a text header longer than this is malformed
# Peak memory of one cv2.imdecode(IMREAD_COLOR), in bytes per pixel of the image, measured with OpenCV 4.11 and 5.0
# (6000 x 6000 images, VmHWM): the decoder's buffer and the BGR result. Formats not named here: 6.
DECODE_BYTES_PER_PIXEL = {"WebP": 7, "GIF": 12, "Radiance HDR": 16, "JPEG 2000": 16, "AVIF": 18, "PFM": 24}


@dataclass(frozen=True)
class ImageSize:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """What decoding it costs at its peak (DECODE_BYTES_PER_PIXEL)."""
        return self.pixels * DECODE_BYTES_PER_PIXEL.get(self.format, 6)


class _Truncated(Exception):
    pass


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _Truncated
    return struct.unpack_from(fmt, data, offset)


def _jpeg(data: bytes) -> tuple[int, int]:
    """The first start-of-frame marker (SOF0-SOF15 but DHT, JPG and DAC), as libjpeg reads it."""
    i = 2
    while True:
        while _unpack("B", data, i)[0] != 0xFF:  # libjpeg skips garbage between markers
            i += 1
        while _unpack("B", data, i)[0] == 0xFF:  # fill bytes
            i += 1
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            continue
        if marker == 0xD9:
            raise _Truncated  # end of image before any frame
        (length,) = _unpack(">H", data, i)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = _unpack(">HH", data, i + 3)
            if height == 0:
                raise BitError("a JPEG whose height comes after its first scan (DNL) is not accepted")
            return width, height
        if length < 2:
            raise _Truncated
        i += length


def _png(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise _Truncated
    return _unpack(">II", data, 16)


def _bmp(data: bytes) -> tuple[int, int]:
    (header,) = _unpack("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return _unpack("<HH", data, 18)
    width, height = _unpack("<ii", data, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _gif(data: bytes) -> tuple[int, int]:
    """The logical screen, or the first frame where it reaches beyond it: the frame the decoder reads."""
    width, height, flags = _unpack("<HHB", data, 6)
    at = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)  # after the global color table
    while _unpack("B", data, at)[0] == 0x21:  # extensions: a label, then sub-blocks until an empty one
        at += 2
        while (size := _unpack("B", data, at)[0]) != 0:
            at += 1 + size
        at += 1
    if _unpack("B", data, at)[0] != 0x2C:
        raise _Truncated
    left, top, frame_width, frame_height = _unpack("<HHHH", data, at + 1)
    return max(width, left + frame_width), max(height, top + frame_height)


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # the canvas
        w0, w1, w2, h0, h1, h2 = _unpack("6B", data, 24)
        return 1 + (w0 | w1 << 8 | w2 << 16), 1 + (h0 | h1 << 8 | h2 << 16)
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise _Truncated
        width, height = _unpack("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: a signature byte, then 14-bit sizes minus one
        if _unpack("B", data, 20)[0] != 0x2F:
            raise _Truncated
        (bits,) = _unpack("<I", data, 21)
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    raise _Truncated


def _tiff(data: bytes) -> tuple[int, int]:
    """The first directory's ImageWidth (256) and ImageLength (257): the page OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = _unpack(order + "H", data, 2)
    if version == 42:
        (offset,) = _unpack(order + "I", data, 4)
        count_fmt, entry_size, value_at, counts = "H", 12, 8, 2
    else:  # 43: BigTIFF
        (offset,) = _unpack(order + "Q", data, 8)
        count_fmt, entry_size, value_at, counts = "Q", 20, 12, 8
    (entries,) = _unpack(order + count_fmt, data, offset)
    sizes = {}
    for n in range(min(entries, (len(data) - offset) // entry_size)):
        at = offset + counts + n * entry_size
        tag, kind = _unpack(order + "HH", data, at)
        if tag in (256, 257):
            if kind == 3:  # SHORT
                (sizes[tag],) = _unpack(order + "H", data, at + value_at)
            elif kind == 4:  # LONG
                (sizes[tag],) = _unpack(order + "I", data, at + value_at)
            elif kind == 16:  # LONG8 (BigTIFF)
                (sizes[tag],) = _unpack(order + "Q", data, at + value_at)
            else:
                raise _Truncated
    if 256 not in sizes or 257 not in sizes:
        raise _Truncated
    return sizes[256], sizes[257]


_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*([^\s#]+)(?=[\s#])")  # a number ends where whitespace or a comment starts


def _number(word: bytes) -> int:
    if not word.isdigit() or len(word) > MAX_DIGITS:
        raise _Truncated
    return int(word)


def _numbers(data: bytes, start: int, count: int) -> list[int]:
    """The first `count` whitespace-separated numbers of a PNM/PFM header, '#' comments skipped."""
    values, at, head = [], start, data[:HEADER_SCAN]
    for _ in range(count):
        found = _TOKEN.match(head, at)
        if not found:
            raise _Truncated
        values.append(_number(found.group(1)))
        at = found.end()
    return values


def _pnm(data: bytes) -> tuple[int, int]:
    return tuple(_numbers(data, 2, 2))


def _pam(data: bytes) -> tuple[int, int]:
    fields = {}
    for line in data[:HEADER_SCAN].split(b"\n")[1:]:
        words = line.split()
        if words[:1] == [b"ENDHDR"]:
            break
        if len(words) >= 2 and words[0] in (b"WIDTH", b"HEIGHT"):
            fields[words[0]] = _number(words[1])
    else:
        raise _Truncated
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        raise _Truncated
    return fields[b"WIDTH"], fields[b"HEIGHT"]


def _sun_raster(data: bytes) -> tuple[int, int]:
    return _unpack(">II", data, 4)


_HDR_SIZE = re.compile(rb"^([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)$")


def _hdr(data: bytes) -> tuple[int, int]:
    """Radiance RGBE: header lines, an empty line, then the resolution line ("-Y 480 +X 640")."""
    lines = data[:HEADER_SCAN].split(b"\n")[:-1]  # whole lines only
    for n, line in enumerate(lines[:-1]):
        if line.strip() == b"":
            found = _HDR_SIZE.match(lines[n + 1].strip())
            if not found or found[2] == found[5]:
                raise _Truncated
            first, second = _number(found[3]), _number(found[6])
            return (second, first) if found[2] == b"Y" else (first, second)
    raise _Truncated


def _j2k(data: bytes, at: int = 0) -> tuple[int, int]:
    """A JPEG 2000 codestream's SIZ segment: the reference grid minus its offsets; at most 4 components."""
    if data[at : at + 4] != b"\xff\x4f\xff\x51":
        raise _Truncated
    xsiz, ysiz, x0, y0 = _unpack(">IIII", data, at + 8)
    (components,) = _unpack(">H", data, at + 40)
    if components > 4:
        raise BitError(f"a JPEG 2000 image with {components} components is not accepted (at most 4)")
    if xsiz <= x0 or ysiz <= y0:
        raise _Truncated
    return xsiz - x0, ysiz - y0


def _jp2(data: bytes) -> tuple[int, int]:
    """A JP2 file: boxes, one of them ("jp2c") the codestream OpenJPEG decodes. Its SIZ is what counts, not the
    header box's ihdr, which a file may contradict."""
    at = 0
    while at + 8 <= len(data):
        length, kind = _unpack(">I4s", data, at)
        header = 8
        if length == 1:
            (length,) = _unpack(">Q", data, at + 8)
            header = 16
        if kind == b"jp2c":
            return _j2k(data, at + header)
        if length == 0 or length < header:  # 0: the last box runs to the end
            raise _Truncated
        at += length
    raise _Truncated


def _avif(data: bytes) -> tuple[int, int]:
    """The largest image spatial extent ("ispe") property declared anywhere: libavif decodes the primary item
    at its ispe, and a thumbnail or alpha plane is never larger than what is taken here."""
    width = height = 0
    at = data.find(b"ispe")
    while at >= 0:
        w, h = _unpack(">II", data, at + 8)  # after the full box's version and flags
        width, height = max(width, w), max(height, h)
        at = data.find(b"ispe", at + 4)
    if not width or not height:
        raise _Truncated
    return width, height


def _is_avif(data: bytes) -> bool:
    if data[4:8] != b"ftyp":
        return False
    (length,) = struct.unpack(">I", data[:4])
    brands = data[8 : min(length, 256)]
    return any(brands[i : i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


# (format, recognizes the buffer, reads its size): OpenCV's decoders, each known by what it checks first
_FORMATS = (
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff", _jpeg),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ("BMP", lambda d: d[:2] == b"BM", _bmp),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
    ("TIFF", lambda d: d[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    ("PAM", lambda d: d[:2] == b"P7" and d[2:3].isspace(), _pam),
    ("PNM", lambda d: d[:1] == b"P" and d[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6") and d[2:3].isspace(), _pnm),
    ("PFM", lambda d: d[:2] in (b"PF", b"Pf") and d[2:3].isspace(), _pnm),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95", _sun_raster),
    ("Radiance HDR", lambda d: d[:6] == b"#?RGBE" or d[:10] == b"#?RADIANCE", _hdr),
    ("JPEG 2000", lambda d: d[:4] == b"\xff\x4f\xff\x51", _j2k),
    ("JPEG 2000", lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n", _jp2),
    ("AVIF", _is_avif, _avif),
)


def encoded_size(data: bytes, source: str = "image") -> ImageSize:
    """The size an image declares; a BitError naming `source` for bytes no decoder of ours would take, and
    for a header too short or malformed to read."""
    if data[:4] == b"\x76\x2f\x31\x01":
        raise BitError(f"{source}: OpenEXR images are not accepted")
    for name, recognizes, read in _FORMATS:
        if recognizes(data):
            try:
                width, height = read(data)
            except _Truncated:
                raise BitError(f"{source}: not a decodable image (a truncated or malformed {name} header)") from None
            except BitError as exc:
                raise BitError(f"{source}: {exc}") from None
            if width <= 0 or height <= 0:
                raise BitError(f"{source}: not a decodable image ({name} declares {width}x{height})")
            return ImageSize(name, width, height)
    raise BitError(f"{source}: not a decodable image (corrupt, truncated, or not an image format)")
