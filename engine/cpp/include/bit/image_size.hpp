// An encoded image's width and height, read from its header without decoding it: engine/image_size.py in C++
// (tests/cpp holds the two to the same answers and the same messages). A few kilobytes can declare gigapixels,
// and OpenCV allocates the whole image before it decodes a row, so bit::decode checks the size first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bit {

struct ImageSize {
  std::string format;  // "JPEG", "PNG", ... as engine/image_size.py names them
  std::uint64_t width = 0;
  std::uint64_t height = 0;
  std::string kind;  // what costs more to decode than the format's plain kind ("animated PNG"), else empty

  std::uint64_t pixels() const { return width * height; }
  // Peak memory of decoding it (engine/image_size.py, DECODE_BYTES_PER_PIXEL).
  std::uint64_t decode_bytes() const;
};

// The size the image declares. bit::Error naming `source` for bytes no decoder of OpenCV's would take, and for a
// header too short or malformed to read.
ImageSize encoded_size(const std::uint8_t* data, std::size_t size, const std::string& source = "image");

}  // namespace bit
