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
MAX_STEPS = 4096  # markers, chunks, blocks or tags walked before the size: more is refused, not walked on
# Peak memory of one cv2.imdecode(IMREAD_COLOR), in bytes per pixel of the image, measured with OpenCV 4.11 and 5.0
# (VmHWM) and rounded up: the decoder's buffers and the BGR result. Kinds not named here: 7 (measured 6.0-6.1).
DECODE_BYTES_PER_PIXEL = {
    "WebP": 8,  # 7.0
    "progressive JPEG": 11,  # 9.0-9.4 (and every JPEG frame but baseline, SOF0)
    "GIF": 13,  # 12.0
    "animated WebP": 14,  # 11.4-11.9
    "Radiance HDR": 16,  # 15.0
    "JPEG 2000": 17,  # 16.1
    "AVIF": 19,  # 18.1
    "AVIF sequence": 28,
    "PFM": 25,  # 24.0
    "animated PNG": 28,  # 12.1-26.6 (8- and 16-bit frames)
}


@dataclass(frozen=True)
class ImageSize:
    format: str
    width: int
    height: int
    kind: str = ""  # the DECODE_BYTES_PER_PIXEL entry when it is not the format's own ("animated PNG")

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """What decoding it costs at its peak (DECODE_BYTES_PER_PIXEL)."""
        return self.pixels * DECODE_BYTES_PER_PIXEL.get(self.kind or self.format, 7)


class _Truncated(Exception):
    pass


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _Truncated
    return struct.unpack_from(fmt, data, offset)


_FILL = re.compile(rb"\xff+")


def _jpeg(data: bytes) -> tuple[int, int, str]:
    """The first start-of-frame marker (SOF0-SOF15 but DHT, JPG and DAC), as libjpeg reads it."""
    i = 2
    for _ in range(MAX_STEPS):
        i = data.find(b"\xff", i)  # libjpeg skips garbage between markers
        if i < 0:
            raise _Truncated
        i = _FILL.match(data, i).end()  # and fill bytes
        marker = _unpack("B", data, i)[0]
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
            return width, height, "" if marker == 0xC0 else "progressive JPEG"
        if length < 2:
            raise _Truncated
        i += length
    raise _Truncated


def _png(data: bytes) -> tuple[int, int, str]:
    """IHDR, and whether an animation control chunk (APNG's acTL, before the first IDAT) makes it animated."""
    if data[12:16] != b"IHDR":
        raise _Truncated
    width, height = _unpack(">II", data, 16)
    at = 8
    for _ in range(MAX_STEPS):
        length, kind = _unpack(">I4s", data, at)
        if kind == b"acTL":
            return width, height, "animated PNG"
        if kind in (b"IDAT", b"IEND"):
            return width, height, ""
        at += 12 + length
    raise _Truncated


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
    steps = 0
    while _unpack("B", data, at)[0] == 0x21:  # extensions: a label, then sub-blocks until an empty one
        at += 2
        while (size := _unpack("B", data, at)[0]) != 0:
            at += 1 + size
            steps += 1
            if steps > MAX_STEPS:
                raise _Truncated
        at += 1
    if _unpack("B", data, at)[0] != 0x2C:
        raise _Truncated
    left, top, frame_width, frame_height = _unpack("<HHHH", data, at + 1)
    return max(width, left + frame_width), max(height, top + frame_height)


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # the canvas, and whether its flags say animated
        w0, w1, w2, h0, h1, h2 = _unpack("6B", data, 24)
        animated = _unpack("B", data, 20)[0] & 0x02
        return 1 + (w0 | w1 << 8 | w2 << 16), 1 + (h0 | h1 << 8 | h2 << 16), "animated WebP" if animated else ""
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
    if entries > MAX_STEPS:
        raise _Truncated
    sizes = {}
    for n in range(min(entries, (len(data) - offset) // entry_size)):
        at = offset + counts + n * entry_size
        tag, kind = _unpack(order + "HH", data, at)
        if tag in (256, 257):
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)  # SHORT, LONG, LONG8 (BigTIFF)
            if fmt is None:
                raise _Truncated
            (value,) = _unpack(order + fmt, data, at + value_at)
            sizes[tag] = max(value, sizes.get(tag, 0))  # a repeated tag: libtiff keeps the first; the larger counts
    if 256 not in sizes or 257 not in sizes:
        raise _Truncated
    return sizes[256], sizes[257]


# A number ends where whitespace or a comment starts; OpenCV ends a comment at CR as well as LF.
_TOKEN = re.compile(rb"(?:\s|#[^\r\n]*[\r\n])*([^\s#]+)(?=[\s#])")


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
    """WIDTH and HEIGHT up to ENDHDR; the larger of repeated ones. A header holding CR is refused: OpenCV ends some
    of its lines there, and where it does not, the header would read differently here."""
    fields = {}
    head = data[:HEADER_SCAN]
    if b"\r" in head.split(b"ENDHDR", 1)[0]:
        raise _Truncated
    for line in head.split(b"\n")[1:]:
        words = line.split()
        if words[:1] == [b"ENDHDR"]:
            break
        if len(words) >= 2 and words[0] in (b"WIDTH", b"HEIGHT"):
            fields[words[0]] = max(_number(words[1]), fields.get(words[0], 0))
    else:
        raise _Truncated
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        raise _Truncated
    return fields[b"WIDTH"], fields[b"HEIGHT"]


def _sun_raster(data: bytes) -> tuple[int, int]:
    return _unpack(">II", data, 4)


_HDR_SIZE = re.compile(rb"-Y\s*(\d+)\s*\+X\s*(\d+)")  # sscanf(line, "-Y %d +X %d", ...), as OpenCV's RGBE reader
HDR_LINE = 127  # OpenCV reads header lines with fgets into 128 bytes: a longer line arrives in pieces


def _hdr(data: bytes) -> tuple[int, int]:
    """Radiance RGBE as OpenCV's reader takes it: header lines up to one that is exactly empty, then "-Y H +X W".
    Lines it would read in pieces, and CRs, are refused rather than guessed at."""
    lines = data[:HEADER_SCAN].split(b"\n")[:-1]  # whole lines only
    for n, line in enumerate(lines[:-1]):
        if len(line) >= HDR_LINE or b"\r" in line:
            raise _Truncated
        if line == b"":
            found = _HDR_SIZE.match(lines[n + 1])
            if not found:
                raise _Truncated
            return _number(found[2]), _number(found[1])
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


def _avif(data: bytes) -> tuple[int, int, str]:
    """The largest image spatial extent ("ispe") property declared anywhere: libavif decodes the primary item
    at its ispe, and a thumbnail or alpha plane is never larger than what is taken here."""
    width = height = 0
    at, steps = data.find(b"ispe"), 0
    while at >= 0:
        steps += 1
        if steps > MAX_STEPS:
            raise _Truncated
        w, h = _unpack(">II", data, at + 8)  # after the full box's version and flags
        width, height = max(width, w), max(height, h)
        at = data.find(b"ispe", at + 4)
    if not width or not height:
        raise _Truncated
    return width, height, "AVIF sequence" if _brand(data, b"avis") else ""


def _brand(data: bytes, brand: bytes) -> bool:
    (length,) = struct.unpack(">I", data[:4])
    brands = data[8 : min(length, 256)]
    return any(brands[i : i + 4] == brand for i in range(0, len(brands) - 3, 4))


def _is_avif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and (_brand(data, b"avif") or _brand(data, b"avis"))


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
    data = bytes(data)  # a memoryview or bytearray reads as bytes
    if data[:4] == b"\x76\x2f\x31\x01":
        raise BitError(f"{source}: OpenEXR images are not accepted")
    for name, recognizes, read in _FORMATS:
        if recognizes(data):
            try:
                width, height, *kind = read(data)
            except _Truncated:
                raise BitError(f"{source}: not a decodable image (a truncated or malformed {name} header)") from None
            except BitError as exc:
                raise BitError(f"{source}: {exc}") from None
            if width <= 0 or height <= 0:
                raise BitError(f"{source}: not a decodable image ({name} declares {width}x{height})")
            return ImageSize(name, width, height, *kind)
    raise BitError(f"{source}: not a decodable image (corrupt, truncated, or not an image format)")
