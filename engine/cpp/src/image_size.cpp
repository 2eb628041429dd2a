// engine/image_size.py in C++: the same signatures, the same fields, the same messages (see its docstring for why
// each format is read the way it is).
#include "bit/image_size.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#include "bit/error.hpp"

namespace bit {
namespace {

constexpr std::size_t kHeaderScan = 1 << 16;  // text headers longer than this are refused, not read on
constexpr std::size_t kMaxDigits = 10;         // a header number longer than this is malformed
constexpr std::uint64_t kMaxSteps = 4096;      // markers, chunks, blocks or tags walked before the size
constexpr std::size_t kHdrLine = 127;          // OpenCV's RGBE reader reads header lines into 128 bytes

struct Truncated {};  // a header too short or malformed to read

using Bytes = std::string_view;
struct Size {
  std::uint64_t width = 0, height = 0;
  std::string kind;
};

void need(Bytes d, std::size_t at, std::size_t n) {
  if (at > d.size() || d.size() - at < n) throw Truncated{};
}
std::uint8_t u8(Bytes d, std::size_t at) {
  need(d, at, 1);
  return static_cast<std::uint8_t>(d[at]);
}
std::uint64_t unsigned_at(Bytes d, std::size_t at, int n, bool little) {
  need(d, at, static_cast<std::size_t>(n));
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t b = static_cast<std::uint8_t>(d[at + static_cast<std::size_t>(i)]);
    v |= little ? b << (8 * i) : b << (8 * (n - 1 - i));
  }
  return v;
}
std::uint64_t be16(Bytes d, std::size_t at) { return unsigned_at(d, at, 2, false); }
std::uint64_t be32(Bytes d, std::size_t at) { return unsigned_at(d, at, 4, false); }
std::uint64_t le16(Bytes d, std::size_t at) { return unsigned_at(d, at, 2, true); }
std::uint64_t le32(Bytes d, std::size_t at) { return unsigned_at(d, at, 4, true); }
bool starts(Bytes d, std::size_t at, std::string_view s) { return d.size() >= at + s.size() && d.substr(at, s.size()) == s; }
bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

Size jpeg(Bytes d) {
  std::size_t i = 2;
  for (std::uint64_t step = 0; step < kMaxSteps; ++step) {
    i = d.find('\xff', i);  // libjpeg skips garbage between markers
    if (i == Bytes::npos) throw Truncated{};
    while (i < d.size() && static_cast<std::uint8_t>(d[i]) == 0xFF) ++i;  // and fill bytes
    const std::uint8_t marker = u8(d, i);
    ++i;
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // TEM, RSTn, SOI: no length
    if (marker == 0xD9) throw Truncated{};                              // end of image before any frame
    const std::uint64_t length = be16(d, i);
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      const std::uint64_t height = be16(d, i + 3), width = be16(d, i + 5);
      if (height == 0) throw Error("a JPEG whose height comes after its first scan (DNL) is not accepted");
      return {width, height, marker == 0xC0 ? "" : "progressive JPEG"};
    }
    if (length < 2) throw Truncated{};
    i += length;
  }
  throw Truncated{};
}

Size png(Bytes d) {  // IHDR, and whether APNG's acTL (before the first IDAT) makes it animated
  if (!starts(d, 12, "IHDR")) throw Truncated{};
  const std::uint64_t width = be32(d, 16), height = be32(d, 20);
  std::size_t at = 8;
  for (std::uint64_t step = 0; step < kMaxSteps; ++step) {
    const std::uint64_t length = be32(d, at);
    need(d, at + 4, 4);
    if (starts(d, at + 4, "acTL")) return {width, height, "animated PNG"};
    if (starts(d, at + 4, "IDAT") || starts(d, at + 4, "IEND")) return {width, height, ""};
    at += 12 + length;
  }
  throw Truncated{};
}

Size bmp(Bytes d) {
  if (le32(d, 14) == 12) return {le16(d, 18), le16(d, 20), ""};  // OS/2 BITMAPCOREHEADER
  const auto width = static_cast<std::int32_t>(le32(d, 18)), height = static_cast<std::int32_t>(le32(d, 22));
  return {static_cast<std::uint64_t>(std::abs(static_cast<std::int64_t>(width))),
          static_cast<std::uint64_t>(std::abs(static_cast<std::int64_t>(height))), ""};  // negative: top-down
}

Size gif(Bytes d) {
  const std::uint64_t width = le16(d, 6), height = le16(d, 8);
  const std::uint8_t flags = u8(d, 10);
  std::size_t at = 13 + ((flags & 0x80) ? (std::size_t{3} << ((flags & 7) + 1)) : 0);
  std::uint64_t steps = 0;
  while (u8(d, at) == 0x21) {  // extensions: a label, then sub-blocks until an empty one
    at += 2;
    for (std::uint8_t size; (size = u8(d, at)) != 0;) {
      at += 1 + size;
      if (++steps > kMaxSteps) throw Truncated{};
    }
    at += 1;
  }
  if (u8(d, at) != 0x2C) throw Truncated{};
  const std::uint64_t left = le16(d, at + 1), top = le16(d, at + 3), fw = le16(d, at + 5), fh = le16(d, at + 7);
  return {std::max(width, left + fw), std::max(height, top + fh), ""};
}

Size webp(Bytes d) {
  if (starts(d, 12, "VP8X")) {  // the canvas, and whether its flags say animated
    const std::uint64_t width = 1 + unsigned_at(d, 24, 3, true), height = 1 + unsigned_at(d, 27, 3, true);
    return {width, height, (u8(d, 20) & 0x02) ? "animated WebP" : ""};
  }
  if (starts(d, 12, "VP8 ")) {
    if (!starts(d, 23, "\x9d\x01\x2a")) throw Truncated{};
    return {le16(d, 26) & 0x3FFF, le16(d, 28) & 0x3FFF, ""};
  }
  if (starts(d, 12, "VP8L")) {
    if (u8(d, 20) != 0x2F) throw Truncated{};
    const std::uint64_t bits = le32(d, 21);
    return {1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), ""};
  }
  throw Truncated{};
}

Size tiff(Bytes d) {
  const bool little = starts(d, 0, "II");
  const std::uint64_t version = unsigned_at(d, 2, 2, little);
  std::uint64_t offset, entries;
  std::size_t entry_size, value_at, counts;
  if (version == 42) {
    offset = unsigned_at(d, 4, 4, little);
    entry_size = 12, value_at = 8, counts = 2;
    entries = unsigned_at(d, offset, 2, little);
  } else {  // 43: BigTIFF
    offset = unsigned_at(d, 8, 8, little);
    entry_size = 20, value_at = 12, counts = 8;
    entries = unsigned_at(d, offset, 8, little);
  }
  if (entries > kMaxSteps) throw Truncated{};
  std::map<std::uint64_t, std::uint64_t> sizes;
  const std::uint64_t fit = offset <= d.size() ? (d.size() - offset) / entry_size : 0;
  for (std::uint64_t n = 0; n < std::min(entries, fit); ++n) {
    const std::size_t at = offset + counts + n * entry_size;
    const std::uint64_t tag = unsigned_at(d, at, 2, little), kind = unsigned_at(d, at + 2, 2, little);
    if (tag != 256 && tag != 257) continue;
    const int bytes = kind == 3 ? 2 : kind == 4 ? 4 : kind == 16 ? 8 : 0;  // SHORT, LONG, LONG8 (BigTIFF)
    if (bytes == 0) throw Truncated{};
    // a repeated tag: libtiff keeps the first; the larger counts
    sizes[tag] = std::max(sizes[tag], unsigned_at(d, at + value_at, bytes, little));
  }
  if (!sizes.count(256) || !sizes.count(257)) throw Truncated{};
  return {sizes[256], sizes[257], ""};
}

std::uint64_t number(std::string_view word) {
  if (word.empty() || word.size() > kMaxDigits) throw Truncated{};
  std::uint64_t v = 0;
  for (char c : word) {
    if (c < '0' || c > '9') throw Truncated{};
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

Size pnm(Bytes d) {  // the first two numbers after the magic, '#' comments skipped; each ends at space or '#'
  const Bytes head = d.substr(0, kHeaderScan);
  std::size_t at = 2;
  std::uint64_t values[2];
  for (auto& value : values) {
    while (true) {
      if (at < head.size() && space(head[at])) {
        ++at;
      } else if (at < head.size() && head[at] == '#') {  // OpenCV ends a comment at CR as well as LF
        const std::size_t end = head.find_first_of("\r\n", at);
        if (end == Bytes::npos) throw Truncated{};
        at = end + 1;
      } else {
        break;
      }
    }
    const std::size_t start = at;
    while (at < head.size() && !space(head[at]) && head[at] != '#') ++at;
    if (at == start || at == head.size()) throw Truncated{};  // no token, or one that may go on past the buffer
    value = number(head.substr(start, at - start));
  }
  return {values[0], values[1], ""};
}

std::vector<std::string_view> split(Bytes text, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t at; (at = text.find(sep, start)) != Bytes::npos; start = at + 1) parts.push_back(text.substr(start, at - start));
  parts.push_back(text.substr(start));
  return parts;
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t at = 0;
  while (at < line.size()) {
    while (at < line.size() && space(line[at])) ++at;
    const std::size_t start = at;
    while (at < line.size() && !space(line[at])) ++at;
    if (at > start) out.push_back(line.substr(start, at - start));
  }
  return out;
}

Size pam(Bytes d) {  // WIDTH and HEIGHT up to ENDHDR, the larger of repeated ones; a CR before ENDHDR is refused
  std::map<std::string_view, std::uint64_t> fields;
  const Bytes head = d.substr(0, kHeaderScan);
  if (head.substr(0, head.find("ENDHDR")).find('\r') != Bytes::npos) throw Truncated{};
  const auto lines = split(head, '\n');
  bool ended = false;
  for (std::size_t n = 1; n < lines.size() && !ended; ++n) {
    const auto w = words(lines[n]);
    if (!w.empty() && w[0] == "ENDHDR") {
      ended = true;
    } else if (w.size() >= 2 && (w[0] == "WIDTH" || w[0] == "HEIGHT")) {
      fields[w[0]] = std::max(fields[w[0]], number(w[1]));
    }
  }
  if (!ended || !fields.count("WIDTH") || !fields.count("HEIGHT")) throw Truncated{};
  return {fields["WIDTH"], fields["HEIGHT"], ""};
}

Size sun_raster(Bytes d) { return {be32(d, 4), be32(d, 8), ""}; }

Size hdr(Bytes d) {  // header lines up to one exactly empty, then sscanf(line, "-Y %d +X %d") as OpenCV's RGBE
  auto lines = split(d.substr(0, kHeaderScan), '\n');
  lines.pop_back();  // whole lines only
  for (std::size_t n = 0; n + 1 < lines.size(); ++n) {
    if (lines[n].size() >= kHdrLine || lines[n].find('\r') != Bytes::npos) throw Truncated{};
    if (!lines[n].empty()) continue;
    const std::string_view line = lines[n + 1];
    std::size_t at = 0;
    auto literal = [&](std::string_view text) {
      if (line.substr(at, text.size()) != text) throw Truncated{};
      at += text.size();
    };
    auto spaces = [&] {
      while (at < line.size() && space(line[at])) ++at;
    };
    auto digits = [&] {
      const std::size_t start = at;
      while (at < line.size() && line[at] >= '0' && line[at] <= '9') ++at;
      return number(line.substr(start, at - start));
    };
    literal("-Y");
    spaces();
    const std::uint64_t height = digits();
    spaces();
    literal("+X");
    spaces();
    const std::uint64_t width = digits();
    return {width, height, ""};
  }
  throw Truncated{};
}

Size j2k(Bytes d, std::size_t at = 0) {  // the codestream's SIZ: the reference grid minus its offsets
  if (!starts(d, at, "\xff\x4f\xff\x51")) throw Truncated{};
  const std::uint64_t xsiz = be32(d, at + 8), ysiz = be32(d, at + 12), x0 = be32(d, at + 16), y0 = be32(d, at + 20);
  const std::uint64_t components = be16(d, at + 40);
  if (components > 4)
    throw Error("a JPEG 2000 image with " + std::to_string(components) + " components is not accepted (at most 4)");
  if (xsiz <= x0 || ysiz <= y0) throw Truncated{};
  return {xsiz - x0, ysiz - y0, ""};
}

Size jp2(Bytes d) {  // boxes; the codestream ("jp2c") counts, not the header box's ihdr
  std::size_t at = 0;
  while (at + 8 <= d.size()) {
    std::uint64_t length = be32(d, at);
    std::size_t header = 8;
    if (length == 1) {
      length = unsigned_at(d, at + 8, 8, false);
      header = 16;
    }
    if (starts(d, at + 4, "jp2c")) return j2k(d, at + header);
    if (length == 0 || length < header || length > d.size()) throw Truncated{};
    at += length;
  }
  throw Truncated{};
}

bool brand(Bytes d, std::string_view name) {
  const std::size_t length = static_cast<std::size_t>(be32(d, 0));
  const std::size_t end = std::min<std::size_t>({length, 256, d.size()});
  for (std::size_t i = 8; end >= 4 && i <= end - 4; i += 4)
    if (d.substr(i, 4) == name) return true;
  return false;
}

Size avif(Bytes d) {  // the largest image spatial extent ("ispe") declared anywhere
  std::uint64_t width = 0, height = 0, steps = 0;
  for (std::size_t at = d.find("ispe"); at != Bytes::npos; at = d.find("ispe", at + 4)) {
    if (++steps > kMaxSteps) throw Truncated{};
    width = std::max(width, be32(d, at + 8));
    height = std::max(height, be32(d, at + 12));
  }
  if (!width || !height) throw Truncated{};
  return {width, height, brand(d, "avis") ? "AVIF sequence" : ""};
}

bool is_avif(Bytes d) { return starts(d, 4, "ftyp") && (brand(d, "avif") || brand(d, "avis")); }

bool space_at(Bytes d, std::size_t at) { return at < d.size() && space(d[at]); }

struct Format {
  const char* name;
  std::function<bool(Bytes)> recognizes;
  std::function<Size(Bytes)> read;
};

const std::vector<Format>& formats() {  // OpenCV's decoders, each known by what it checks first
  static const std::vector<Format> table = {
      {"JPEG", [](Bytes d) { return starts(d, 0, "\xff\xd8\xff"); }, jpeg},
      {"PNG", [](Bytes d) { return starts(d, 0, "\x89PNG\r\n\x1a\n"); }, png},
      {"BMP", [](Bytes d) { return starts(d, 0, "BM"); }, bmp},
      {"GIF", [](Bytes d) { return starts(d, 0, "GIF87a") || starts(d, 0, "GIF89a"); }, gif},
      {"WebP", [](Bytes d) { return starts(d, 0, "RIFF") && starts(d, 8, "WEBP"); }, webp},
      {"TIFF",
       [](Bytes d) {
         using namespace std::string_view_literals;
         return starts(d, 0, "II*\0"sv) || starts(d, 0, "MM\0*"sv) || starts(d, 0, "II+\0"sv) ||
                starts(d, 0, "MM\0+"sv);
       },
       tiff},
      {"PAM", [](Bytes d) { return starts(d, 0, "P7") && space_at(d, 2); }, pam},
      {"PNM", [](Bytes d) { return d.size() > 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6' && space_at(d, 2); }, pnm},
      {"PFM", [](Bytes d) { return (starts(d, 0, "PF") || starts(d, 0, "Pf")) && space_at(d, 2); }, pnm},
      {"Sun raster", [](Bytes d) { return starts(d, 0, "\x59\xa6\x6a\x95"); }, sun_raster},
      {"Radiance HDR", [](Bytes d) { return starts(d, 0, "#?RGBE") || starts(d, 0, "#?RADIANCE"); }, hdr},
      {"JPEG 2000", [](Bytes d) { return starts(d, 0, "\xff\x4f\xff\x51"); }, [](Bytes d) { return j2k(d); }},
      {"JPEG 2000",
       [](Bytes d) {
         using namespace std::string_view_literals;
         return starts(d, 0, "\0\0\0\x0cjP  \r\n\x87\n"sv);
       },
       jp2},
      {"AVIF", is_avif, avif},
  };
  return table;
}

}  // namespace

std::uint64_t ImageSize::decode_bytes() const {
  static const std::map<std::string, std::uint64_t> per_pixel = {
      {"WebP", 8},          {"progressive JPEG", 11}, {"GIF", 13},           {"animated WebP", 14},
      {"Radiance HDR", 16}, {"JPEG 2000", 17},        {"AVIF", 19},          {"AVIF sequence", 28},
      {"PFM", 25},          {"animated PNG", 28}};
  const auto found = per_pixel.find(kind.empty() ? format : kind);
  return pixels() * (found == per_pixel.end() ? 7 : found->second);
}

ImageSize encoded_size(const std::uint8_t* data, std::size_t size, const std::string& source) {
  const Bytes d(reinterpret_cast<const char*>(data), size);
  if (starts(d, 0, "\x76\x2f\x31\x01")) throw Error(source + ": OpenEXR images are not accepted");
  for (const auto& format : formats()) {
    if (!format.recognizes(d)) continue;
    Size wh;
    try {
      wh = format.read(d);
    } catch (const Truncated&) {
      throw Error(source + ": not a decodable image (a truncated or malformed " + format.name + " header)");
    } catch (const Error& exc) {
      throw Error(source + ": " + exc.what());
    }
    if (wh.width == 0 || wh.height == 0)
      throw Error(source + ": not a decodable image (" + format.name + " declares " + std::to_string(wh.width) + "x" +
                  std::to_string(wh.height) + ")");
    return {format.name, wh.width, wh.height, wh.kind};
  }
  throw Error(source + ": not a decodable image (corrupt, truncated, or not an image format)");
}

}  // namespace bit
