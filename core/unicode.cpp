#include "core/unicode.h"

#include <algorithm>
#include <array>

namespace troupe {

namespace {

struct ClassRange {
  uint32_t first, last;
  CharClass cls;
};
constexpr CharClass kLetter = CharClass::Letter;
constexpr CharClass kNumber = CharClass::Number;
constexpr CharClass kSpace = CharClass::Space;

constexpr ClassRange kRanges[] = {
#include "core/unicode_tables.inc"
};

// ASCII is most of real text: one table load instead of a binary search.
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (const ClassRange& r : kRanges)
    for (uint32_t c = r.first; c <= r.last && c < 128; c++) t[c] = r.cls;
  return t;
}
constexpr std::array<CharClass, 128> kAscii = make_ascii_classes();

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return kAscii[cp];
  // Last range starting at or before cp.
  const ClassRange* end = kRanges + sizeof(kRanges) / sizeof(kRanges[0]);
  const ClassRange* it =
      std::upper_bound(kRanges, end, cp, [](uint32_t c, const ClassRange& r) { return c < r.first; });
  if (it == kRanges) return CharClass::Other;
  --it;
  return cp <= it->last ? it->cls : CharClass::Other;
}

int utf8_decode(const char* s, size_t n, uint32_t* cp) {
  const auto* u = reinterpret_cast<const unsigned char*>(s);
  unsigned char b0 = u[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int len;
  uint32_t c, min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, c = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, c = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, c = b0 & 0x07u, min = 0x10000;
  } else {
    *cp = kInvalidCodePoint;
    return 1;
  }
  if (n < size_t(len)) {
    *cp = kInvalidCodePoint;
    return 1;
  }
  for (int k = 1; k < len; k++) {
    if ((u[k] & 0xC0) != 0x80) {
      *cp = kInvalidCodePoint;
      return 1;
    }
    c = (c << 6) | (u[k] & 0x3Fu);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
    *cp = kInvalidCodePoint;
    return 1;
  }
  *cp = c;
  return len;
}

void utf8_append(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace troupe
