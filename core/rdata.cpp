#include "core/rdata.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "core/file_io.h"

namespace troupe {

const RValue* RValue::attribute(const std::string& name) const {
  for (auto& [k, v] : attributes)
    if (k == name) return &v;
  return nullptr;
}

namespace {

constexpr int kNilValue = 254, kRefSxp = 255, kSymSxp = 1, kListSxp = 2, kCharSxp = 9, kLglSxp = 10,
              kIntSxp = 13, kStrSxp = 16, kVecSxp = 19;
constexpr int kMaxDepth = 64;

class XdrReader {
 public:
  XdrReader(const uint8_t* d, size_t n, const std::string& name, size_t base) : d_(d), n_(n), name_(name), base_(base) {}

  Expected<RValue> run() {
    if (n_ < 2 || d_[0] != 'X' || d_[1] != '\n') return fail("not an XDR R serialization (expected \"X\\n\")");
    pos_ = 2;
    int32_t version;
    if (!i32(&version)) return fail("truncated header");
    if (version != 2 && version != 3) return fail(strformat("serialization version %d is not 2 or 3", version));
    int32_t writer, minimal;
    if (!i32(&writer) || !i32(&minimal)) return fail("truncated header");
    if (version == 3) {
      int32_t nelen;
      if (!i32(&nelen) || nelen < 0 || size_t(nelen) > n_ - pos_) return fail("bad native-encoding length");
      pos_ += size_t(nelen);
    }
    RValue v;
    if (!item(&v, 0)) return err_;
    return v;
  }

 private:
  Error fail(const std::string& what) { return make_error(strformat("%s: offset %zu: ", name_.c_str(), base_ + pos_) + what); }
  bool i32(int32_t* out) {
    if (n_ - pos_ < 4) return false;
    uint32_t u = uint32_t(d_[pos_]) << 24 | uint32_t(d_[pos_ + 1]) << 16 | uint32_t(d_[pos_ + 2]) << 8 | d_[pos_ + 3];
    pos_ += 4;
    *out = int32_t(u);
    return true;
  }
  bool bad(const std::string& what) {
    err_ = fail(what);
    return false;
  }
  bool length(int64_t* out) {
    int32_t n;
    if (!i32(&n)) return bad("truncated length");
    if (n == -1) {  // long vector: two more ints
      int32_t hi, lo;
      if (!i32(&hi) || !i32(&lo)) return bad("truncated long length");
      *out = int64_t(uint32_t(hi)) << 32 | uint32_t(lo);
    } else {
      *out = n;
    }
    if (*out < 0 || uint64_t(*out) > n_ - pos_) return bad(strformat("length %lld exceeds the remaining bytes", (long long)*out));
    return true;
  }
  // A CHARSXP body: length then bytes (-1 = NA).
  bool charsxp(std::string* s, bool* na) {
    int32_t n;
    if (!i32(&n)) return bad("truncated string length");
    *na = n == -1;
    if (n == -1) return true;
    if (n < 0 || size_t(n) > n_ - pos_) return bad(strformat("string length %d exceeds the remaining bytes", n));
    s->assign(reinterpret_cast<const char*>(d_ + pos_), size_t(n));
    pos_ += size_t(n);
    return true;
  }
  bool item(RValue* v, int depth) {
    if (depth > kMaxDepth) return bad("nesting too deep");
    int32_t flags;
    if (!i32(&flags)) return bad("truncated item");
    int type = flags & 0xff;
    bool has_attr = flags & (1 << 9), has_tag = flags & (1 << 10);
    v->type = type;
    switch (type) {
      case kNilValue: v->type = 0; return true;
      case kRefSxp: {
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
        if (!charsxp(&s, &na)) return false;
        v->strings = {s};
        v->na = {uint8_t(na)};
        return true;
      }
      case kListSxp: {  // pairlist: (attributes)? (tag)? car cdr
        // Only used for attribute lists here: flatten into v->attributes.
        RValue* cur = v;
        v->type = kListSxp;
        for (int guard = 0;; guard++) {
          if (guard > 1 << 20) return bad("pairlist too long");
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
          cur->attributes.push_back({tag, std::move(car)});
          int32_t next;
          if (!i32(&next)) return bad("truncated pairlist");
          int nt = next & 0xff;
          if (nt == kNilValue) return true;
          if (nt != kListSxp) return bad(strformat("pairlist continues with type %d", nt));
          has_attr = next & (1 << 9);
          has_tag = next & (1 << 10);
        }
      }
      case kLglSxp:
      case kIntSxp: {
        int64_t n;
        if (!length(&n)) return false;
        if (uint64_t(n) * 4 > n_ - pos_) return bad("integer vector past the end");
        v->ints.resize(size_t(n));
        for (auto& x : v->ints) i32(&x);
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
          if ((ef & 0xff) != kCharSxp) return bad(strformat("string vector element %lld has type %d", (long long)i, ef & 0xff));
          bool na;
          if (!charsxp(&v->strings[size_t(i)], &na)) return false;
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
        return bad(strformat("unsupported R type %d", type));
    }
    if (has_attr) {
      RValue attrs;
      if (!item(&attrs, depth + 1)) return false;
      v->attributes = std::move(attrs.attributes);
    }
    return true;
  }

  const uint8_t* d_;
  size_t n_, pos_ = 0;
  std::string name_;
  size_t base_;
  std::vector<std::string> refs_;
  Error err_;
};

}  // namespace

Expected<RValue> parse_r_serialized(const uint8_t* data, size_t size, const std::string& name, size_t base) {
  return XdrReader(data, size, name, base).run();
}

Expected<std::string> inflate_bytes(const uint8_t* data, size_t size, size_t expected, bool gzip,
                                    const std::string& what) {
  z_stream zs{};
  if (inflateInit2(&zs, gzip ? 16 + MAX_WBITS : MAX_WBITS) != Z_OK) return make_error(what + ": zlib init failed");
  std::string out;
  out.resize(expected ? expected : 4 * size + 1024);
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = uInt(std::min<size_t>(size, UINT32_MAX));
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (zs.total_out == out.size()) {
      if (expected) break;  // full, yet the stream goes on
      out.resize(out.size() * 2);
    }
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = uInt(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
  }
  size_t produced = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END)
    return make_error(what + strformat(": %s after %zu bytes out", rc == Z_OK ? "more data than the stated length"
                                                                         : (zs.msg ? zs.msg : "corrupt or truncated stream"),
                                       produced));
  if (expected && produced != expected)
    return make_error(what + strformat(": inflated to %zu bytes, the header says %zu", produced, expected));
  out.resize(produced);
  return out;
}

Expected<std::vector<Book>> read_janeausten(const std::string& dir) {
  std::string rdx_path = dir + "/Rdata.rdx", rdb_path = dir + "/Rdata.rdb";
  auto rdx = MappedFile::open(rdx_path);
  if (!rdx) return rdx.error();
  auto idx_bytes = inflate_bytes(rdx->data, rdx->size, 0, true, rdx_path);
  if (!idx_bytes) return idx_bytes.error();
  auto idx = parse_r_serialized(reinterpret_cast<const uint8_t*>(idx_bytes->data()), idx_bytes->size(),
                                rdx_path + " (inflated)");
  if (!idx) return idx.error();
  // The index is list(variables = list(name = c(offset, length), ...), references, compressed).
  const RValue* names = idx->attribute("names");
  if (idx->type != 19 || !names || names->strings.empty() || names->strings[0] != "variables" || idx->items.empty())
    return make_error(rdx_path + ": not a lazy-load index (no 'variables' list)");
  const RValue& vars = idx->items[0];
  const RValue* var_names = vars.attribute("names");
  if (!var_names || var_names->strings.size() != vars.items.size())
    return make_error(rdx_path + ": 'variables' has no names");

  auto rdb = MappedFile::open(rdb_path);
  if (!rdb) return rdb.error();
  std::vector<Book> books;
  for (const char* want : {"sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"}) {
    auto it = std::find(var_names->strings.begin(), var_names->strings.end(), want);
    if (it == var_names->strings.end()) return make_error(rdx_path + ": no variable '" + want + "'");
    const RValue& pos = vars.items[size_t(it - var_names->strings.begin())];
    if (pos.ints.size() != 2 || pos.ints[0] < 0 || pos.ints[1] < 5)
      return make_error(rdx_path + ": variable '" + want + "' has no valid (offset, length)");
    size_t off = size_t(pos.ints[0]), len = size_t(pos.ints[1]);
    if (off > rdb->size || len > rdb->size - off)
      return make_error(strformat("%s: offset %zu: block of %zu bytes for '%s' runs past the end (%zu bytes)",
                                  rdb_path.c_str(), off, len, want, rdb->size));
    const uint8_t* b = rdb->data + off;
    size_t expected = size_t(b[0]) << 24 | size_t(b[1]) << 16 | size_t(b[2]) << 8 | b[3];
    size_t hdr = 4;
    if (b[4] == 'Z') hdr = 5;  // R_compress3 writes a type byte; R_compress1 does not
    else if (b[4] == '2' || b[4] == 'X') return make_error(strformat("%s: offset %zu: block for '%s' uses an unsupported compression ('%c')", rdb_path.c_str(), off + 4, want, b[4]));
    auto raw = inflate_bytes(b + hdr, len - hdr, expected, false, strformat("%s: offset %zu: block for '%s'", rdb_path.c_str(), off, want));
    if (!raw) return raw.error();
    auto v = parse_r_serialized(reinterpret_cast<const uint8_t*>(raw->data()), raw->size(),
                                strformat("%s: block for '%s' (inflated)", rdb_path.c_str(), want));
    if (!v) return v.error();
    if (v->type != 16) return make_error(strformat("%s: '%s' is R type %d, not a character vector", rdb_path.c_str(), want, v->type));
    books.push_back({want, std::move(v->strings)});
  }
  return books;
}

}  // namespace troupe
