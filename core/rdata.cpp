#include "core/rdata.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/file_io.h"
#include "core/unicode.h"

namespace troupe {

const RValue* RValue::attribute(const std::string& name) const {
  for (auto& [k, v] : attributes)
    if (k == name) return &v;
  return nullptr;
}

namespace {

// SEXPTYPEs and pseudo-types of R's serialization (serialize.c).
constexpr int kNilValue = 254, kRefSxp = 255, kNilSxp = 0, kSymSxp = 1, kListSxp = 2, kCharSxp = 9, kLglSxp = 10,
              kIntSxp = 13, kStrSxp = 16, kVecSxp = 19;
// Flag bits of an item header: type in bits 0-7, then object, attributes, tag; the
// "levels" (for a CHARSXP, its encoding) from bit 12.
constexpr int32_t kHasAttr = 1 << 9, kHasTag = 1 << 10;
constexpr int kLevelsShift = 12;
constexpr int32_t kBytesMask = 1 << 1, kLatin1Mask = 1 << 2, kUtf8Mask = 1 << 3, kAsciiMask = 1 << 6;
constexpr int kMaxDepth = 64;

uint32_t load_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) utf8_append(c, out);
  return out;
}

bool is_latin1_name(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s == "latin1" || s == "iso-8859-1" || s == "iso8859-1" || s == "iso_8859-1";
}

class XdrReader {
 public:
  XdrReader(const uint8_t* d, size_t n, const std::string& name, size_t base)
      : d_(d), n_(n), name_(name), base_(base) {}

  Expected<RValue> run() {
    if (n_ < 2 || d_[0] != 'X' || d_[1] != '\n') return fail("not an XDR R serialization (expected \"X\\n\")");
    pos_ = 2;
    int32_t version, writer, minimal;
    if (!i32(&version)) return fail("truncated header");
    if (version != 2 && version != 3) return fail(strformat("serialization version %d is not 2 or 3", version));
    if (!i32(&writer) || !i32(&minimal)) return fail("truncated header");
    if (version == 3) {
      int32_t nelen;
      if (!i32(&nelen) || nelen < 0 || size_t(nelen) > n_ - pos_) return fail("bad native-encoding length");
      native_latin1_ = is_latin1_name(std::string(reinterpret_cast<const char*>(d_ + pos_), size_t(nelen)));
      pos_ += size_t(nelen);
    }
    RValue v;
    if (!item(&v, 0)) return err_;
    return v;
  }

 private:
  Error fail(const std::string& what) const {
    return make_error(strformat("%s: offset %zu: ", name_.c_str(), base_ + pos_) + what);
  }
  bool bad(const std::string& what) {
    err_ = fail(what);
    return false;
  }
  bool i32(int32_t* out) {
    if (n_ - pos_ < 4) return false;
    *out = int32_t(load_be32(d_ + pos_));
    pos_ += 4;
    return true;
  }
  // A vector length: one int, or -1 and then two ints for a long vector.
  bool length(int64_t* out) {
    int32_t n;
    if (!i32(&n)) return bad("truncated length");
    if (n == -1) {
      int32_t hi, lo;
      if (!i32(&hi) || !i32(&lo)) return bad("truncated long length");
      *out = int64_t(uint32_t(hi)) << 32 | uint32_t(lo);
    } else {
      *out = n;
    }
    // Every element takes at least 4 bytes, so this bounds allocations by the input.
    if (*out < 0 || uint64_t(*out) > (n_ - pos_) / 4)
      return bad(strformat("length %lld exceeds the remaining bytes", (long long)*out));
    return true;
  }
  // A CHARSXP body after its flags: length then bytes (-1 = NA), decoded to UTF-8.
  bool charsxp(int32_t flags, std::string* s, bool* na) {
    size_t at = pos_;
    int32_t n;
    if (!i32(&n)) return bad("truncated string length");
    *na = n == -1;
    s->clear();
    if (n == -1) return true;
    if (n < 0 || size_t(n) > n_ - pos_) return bad(strformat("string length %d exceeds the remaining bytes", n));
    s->assign(reinterpret_cast<const char*>(d_ + pos_), size_t(n));
    pos_ += size_t(n);
    int32_t levels = flags >> kLevelsShift;
    bool high = std::any_of(s->begin(), s->end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
    if (!high) return true;
    if (levels & kAsciiMask) {
      pos_ = at;
      return bad("string flagged ASCII holds bytes >= 0x80");
    }
    bool latin1 = (levels & kLatin1Mask) || (native_latin1_ && !(levels & (kUtf8Mask | kBytesMask)));
    if (latin1) *s = latin1_to_utf8(*s);
    return true;
  }
  bool item(RValue* v, int depth) {
    if (depth > kMaxDepth) return bad("nesting too deep");
    int32_t flags;
    if (!i32(&flags)) return bad("truncated item");
    int type = flags & 0xff;
    bool has_attr = flags & kHasAttr, has_tag = flags & kHasTag;
    v->type = type;
    switch (type) {
      case kNilValue:
        v->type = kNilSxp;
        return true;
      case kRefSxp: {  // a symbol seen before: index packed in the flags, or in the next int
        int32_t idx = flags >> 8;
        if (idx == 0 && !i32(&idx)) return bad("truncated reference");
        if (idx < 1 || size_t(idx) > refs_.size()) return bad(strformat("reference %d to an unknown symbol", idx));
        v->type = kSymSxp;
        v->strings = {refs_[size_t(idx - 1)]};
        return true;
      }
      case kSymSxp: {
        RValue name;
        if (!item(&name, depth + 1)) return false;
        if (name.type != kCharSxp) return bad("symbol without a name");
        refs_.push_back(name.strings.at(0));
        v->strings = name.strings;
        return true;
      }
      case kCharSxp: {
        std::string s;
        bool na;
        if (!charsxp(flags, &s, &na)) return false;
        v->strings = {s};
        v->na = {uint8_t(na)};
        return true;
      }
      case kListSxp: {  // pairlist cells: (attributes)? (tag)? car, then the next cell or NIL
        for (int cells = 0;; cells++) {
          if (cells > (1 << 20)) return bad("pairlist too long");
          if (has_attr) {
            RValue ignored;
            if (!item(&ignored, depth + 1)) return false;
          }
          std::string tag;
          if (has_tag) {
            RValue t;
            if (!item(&t, depth + 1)) return false;
            if (!t.strings.empty()) tag = t.strings[0];
          }
          RValue car;
          if (!item(&car, depth + 1)) return false;
          v->attributes.push_back({tag, std::move(car)});
          int32_t next;
          if (!i32(&next)) return bad("truncated pairlist");
          if ((next & 0xff) == kNilValue) return true;
          if ((next & 0xff) != kListSxp) return bad(strformat("pairlist continues with type %d", next & 0xff));
          has_attr = next & kHasAttr;
          has_tag = next & kHasTag;
        }
      }
      case kLglSxp:
      case kIntSxp: {
        int64_t n;
        if (!length(&n)) return false;
        v->ints.resize(size_t(n));
        for (auto& x : v->ints) i32(&x);  // length() checked the bytes are there
        break;
      }
      case kStrSxp: {
        int64_t n;
        if (!length(&n)) return false;
        v->strings.resize(size_t(n));
        v->na.resize(size_t(n));
        for (int64_t i = 0; i < n; i++) {
          int32_t ef;
          if (!i32(&ef)) return bad("truncated string vector");
          if ((ef & 0xff) != kCharSxp) {
            pos_ -= 4;
            return bad(strformat("string vector element %lld has type %d, not CHARSXP", (long long)i, ef & 0xff));
          }
          bool na;
          if (!charsxp(ef, &v->strings[size_t(i)], &na)) return false;
          v->na[size_t(i)] = na;
        }
        break;
      }
      case kVecSxp: {
        int64_t n;
        if (!length(&n)) return false;
        v->items.resize(size_t(n));
        for (auto& it : v->items)
          if (!item(&it, depth + 1)) return false;
        break;
      }
      default:
        pos_ -= 4;
        return bad(strformat("unsupported R type %d", type));
    }
    if (has_attr) {
      RValue attrs;
      if (!item(&attrs, depth + 1)) return false;
      if (attrs.type != kListSxp) return bad("attributes are not a pairlist");
      v->attributes = std::move(attrs.attributes);
    }
    return true;
  }

  const uint8_t* d_;
  size_t n_, pos_ = 0;
  std::string name_;
  size_t base_;
  bool native_latin1_ = false;
  std::vector<std::string> refs_;
  Error err_;
};

}  // namespace

Expected<RValue> parse_r_serialized(const uint8_t* data, size_t size, const std::string& name, size_t base) {
  return XdrReader(data, size, name, base).run();
}

Expected<std::string> inflate_bytes(const uint8_t* data, size_t size, size_t expected, bool gzip,
                                    const std::string& what) {
  constexpr size_t kMaxUnknownOut = size_t(1) << 30;
  z_stream zs{};
  if (inflateInit2(&zs, gzip ? 16 + MAX_WBITS : MAX_WBITS) != Z_OK) return make_error(what + ": zlib init failed");
  // With a stated length, one spare byte tells "more data than stated" from "exactly".
  std::string out(expected ? expected + 1 : std::min<size_t>(4 * size + 1024, kMaxUnknownOut), '\0');
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = uInt(std::min<size_t>(size, UINT32_MAX));
  int rc = Z_OK;
  bool too_big = false;
  while (rc == Z_OK) {
    if (zs.total_out == out.size()) {
      if (expected || out.size() >= kMaxUnknownOut) {  // full, yet the stream goes on
        too_big = true;
        break;
      }
      out.resize(std::min(out.size() * 2, kMaxUnknownOut));
    }
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = uInt(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);  // Z_BUF_ERROR: the input ended mid-stream
  }
  size_t produced = zs.total_out, consumed = zs.total_in;
  std::string zmsg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  if (too_big)
    return make_error(expected ? what + strformat(": more data than the stated length of %zu bytes", expected)
                               : what + strformat(": stream inflates past %zu bytes", out.size()));
  if (rc != Z_STREAM_END)
    return make_error(
        what + strformat(": %s at input byte %zu, after %zu bytes out",
                         rc == Z_BUF_ERROR ? "truncated stream" : (zmsg.empty() ? "corrupt stream" : zmsg.c_str()),
                         consumed, produced));
  if (consumed != size)
    return make_error(what + strformat(": %zu trailing bytes after the end of the stream", size - consumed));
  if (expected && produced > expected)
    return make_error(what + strformat(": more data than the stated length of %zu bytes", expected));
  if (expected && produced != expected)
    return make_error(what + strformat(": inflated to %zu bytes, the header says %zu", produced, expected));
  out.resize(produced);
  return out;
}

Expected<std::string> decode_lazyload_block(const uint8_t* b, size_t size, int compressed, const std::string& file,
                                            size_t base) {
  auto err = [&](size_t off, const std::string& what) {
    return make_error(strformat("%s: offset %zu: ", file.c_str(), base + off) + what);
  };
  if (compressed == 0) return std::string(reinterpret_cast<const char*>(b), size);
  size_t header = compressed == 1 ? 4 : 5;
  if (size < header + 1) return err(0, strformat("block of %zu bytes is too short for its header", size));
  size_t expected = load_be32(b);
  char type = compressed == 1 ? '1' : char(b[4]);
  if (type == '0') {  // stored uncompressed (R_compress2/3 when compression did not pay)
    if (size - header != expected)
      return err(0, strformat("stored block holds %zu bytes, the header says %zu", size - header, expected));
    return std::string(reinterpret_cast<const char*>(b + header), expected);
  }
  if (type == '2') return err(4, "block is bzip2-compressed (type '2'), which this reader does not support");
  if (type == 'Z' && compressed == 3)
    return err(4, "block is xz/LZMA2-compressed (type 'Z'), which this reader does not support");
  if (type != '1') return err(4, strformat("unknown compression type byte 0x%02x", unsigned(b[4])));
  // zlib can expand at most ~1032:1; refuse a header that claims more before allocating.
  if (expected > (size - header) * 1032 + 64)
    return err(0, strformat("length %zu cannot come from %zu zlib bytes", expected, size - header));
  return inflate_bytes(b + header, size - header, expected, false,
                       strformat("%s: offset %zu: zlib stream", file.c_str(), base + header));
}

Expected<std::vector<Book>> read_janeausten_rdb(const std::string& dir) {
  std::string rdx_path = dir + "/Rdata.rdx", rdb_path = dir + "/Rdata.rdb";
  auto rdx = MappedFile::open(rdx_path);
  if (!rdx) return rdx.error();
  auto idx_bytes = inflate_bytes(rdx->data, rdx->size, 0, true, rdx_path + ": gzip stream");
  if (!idx_bytes) return idx_bytes.error();
  auto idx = parse_r_serialized(reinterpret_cast<const uint8_t*>(idx_bytes->data()), idx_bytes->size(),
                                rdx_path + " (inflated)");
  if (!idx) return idx.error();

  // list(variables = list(name = c(offset, length), ...), references = ..., compressed = ...)
  auto field = [&](const RValue& list, const std::string& name) -> const RValue* {
    const RValue* names = list.attribute("names");
    if (list.type != kVecSxp || !names || names->strings.size() != list.items.size()) return nullptr;
    auto it = std::find(names->strings.begin(), names->strings.end(), name);
    return it == names->strings.end() ? nullptr : &list.items[size_t(it - names->strings.begin())];
  };
  const RValue* vars = field(*idx, "variables");
  const RValue* comp = field(*idx, "compressed");
  if (!vars || vars->type != kVecSxp) return make_error(rdx_path + ": not a lazy-load index (no 'variables' list)");
  if (!comp || comp->ints.size() != 1 || comp->ints[0] < 0 || comp->ints[0] > 3)
    return make_error(rdx_path + ": 'compressed' is not TRUE, FALSE, 2 or 3");
  int compressed = comp->ints[0];

  auto rdb = MappedFile::open(rdb_path);
  if (!rdb) return rdb.error();
  std::vector<Book> books;
  for (const char* want : kAustenBooks) {
    const RValue* pos = field(*vars, want);
    if (!pos) return make_error(rdx_path + ": no variable '" + want + "' in the index");
    if (pos->type != kIntSxp || pos->ints.size() != 2 || pos->ints[0] < 0 || pos->ints[1] < 0)
      return make_error(rdx_path + ": variable '" + want + "' has no valid (offset, length)");
    size_t off = size_t(pos->ints[0]), len = size_t(pos->ints[1]);
    if (off > rdb->size || len > rdb->size - off)
      return make_error(
          strformat("%s: offset %zu: block of %zu bytes for '%s' runs past the end of the file (%zu bytes)",
                    rdb_path.c_str(), off, len, want, rdb->size));
    auto raw = decode_lazyload_block(rdb->data + off, len, compressed, rdb_path, off);
    if (!raw) return make_error(raw.error().message + strformat(" (block for '%s')", want));
    auto v = parse_r_serialized(reinterpret_cast<const uint8_t*>(raw->data()), raw->size(),
                                strformat("%s: block for '%s' at offset %zu, inflated", rdb_path.c_str(), want, off));
    if (!v) return v.error();
    if (v->type != kStrSxp)
      return make_error(
          strformat("%s: offset %zu: '%s' is R type %d, not a character vector", rdb_path.c_str(), off, want, v->type));
    for (size_t i = 0; i < v->strings.size(); i++) {
      const std::string& s = v->strings[i];
      for (size_t k = 0; k < s.size();) {
        uint32_t cp;
        k += size_t(utf8_decode(s.data() + k, s.size() - k, &cp));
        if (cp == kInvalidCodePoint)
          return make_error(strformat("%s: '%s' line %zu is not valid UTF-8", rdb_path.c_str(), want, i + 1));
      }
    }
    books.push_back({want, std::move(v->strings)});
  }
  return books;
}

std::string join_books(const std::vector<Book>& books) {
  size_t n = 0;
  for (auto& b : books)
    for (auto& l : b.lines) n += l.size() + 1;
  std::string text;
  text.reserve(n + books.size());
  for (auto& b : books) {
    if (!text.empty()) text += '\n';
    for (auto& l : b.lines) {
      text += l;
      text += '\n';
    }
  }
  return text;
}

}  // namespace troupe
