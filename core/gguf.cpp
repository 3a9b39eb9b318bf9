#include "core/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <numeric>
#include <optional>

#include "core/bytes.h"
#include "core/dtype.h"
#include "core/file_io.h"

namespace troupe {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kGgufMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;            // nested arrays deeper than this are refused (stack safety)
constexpr uint64_t kDefaultAlignment = 32;
// Smallest encodings, used to bound counts by the bytes left before anything is allocated.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // key length, value type, a one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, one dim, type, offset

using ull = unsigned long long;

// Bytes of one scalar of this type; 0 for string and array (variable size) and unknown types.
uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
      return 8;
    default:
      return 0;
  }
}

// Smallest encoding of one element of this type inside an array.
uint64_t min_element_size(GgufValueType t) {
  if (t == GgufValueType::String) return 8;
  if (t == GgufValueType::Array) return 4 + 8;
  return scalar_size(t);
}

bool known_value_type(uint32_t t) {
  return t <= uint32_t(GgufValueType::F64);
}

bool is_integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}
bool is_signed_type(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 || t == GgufValueType::I64;
}

std::string type_description(const GgufValue& v) {
  if (v.type != GgufValueType::Array) return std::string(gguf_value_type_name(v.type));
  return "array of " + std::string(gguf_value_type_name(v.elem_type));
}

// Integer value of a scalar as a (sign, magnitude) pair so any integer type compares exactly.
struct IntValue {
  bool negative;
  uint64_t magnitude;
};
IntValue int_value(const GgufValue& v) {
  if (is_signed_type(v.type)) {
    return v.i < 0 ? IntValue{true, uint64_t(0) - uint64_t(v.i)} : IntValue{false, uint64_t(v.i)};
  }
  return {false, v.u};
}

std::string int_text(IntValue x) {
  return strformat("%s%llu", x.negative ? "-" : "", ull(x.magnitude));
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
      return "u8";
    case GgufValueType::I8:
      return "i8";
    case GgufValueType::U16:
      return "u16";
    case GgufValueType::I16:
      return "i16";
    case GgufValueType::U32:
      return "u32";
    case GgufValueType::I32:
      return "i32";
    case GgufValueType::F32:
      return "f32";
    case GgufValueType::Bool:
      return "bool";
    case GgufValueType::String:
      return "string";
    case GgufValueType::Array:
      return "array";
    case GgufValueType::U64:
      return "u64";
    case GgufValueType::I64:
      return "i64";
    case GgufValueType::F64:
      return "f64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  return is_integer_type(type);
}


uint64_t GgufValue::uint_at(uint64_t k) const {
  TROUPE_CHECK(
      type == GgufValueType::Array && (is_integer_type(elem_type) || elem_type == GgufValueType::Bool) && k < count,
      "integer element %llu of a %s", ull(k), type_description(*this).c_str());
  const uint8_t* p = raw.data() + k * scalar_size(elem_type);
  switch (elem_type) {
    case GgufValueType::I8:
      return uint64_t(int64_t(load_le<int8_t>(p)));
    case GgufValueType::U16:
      return load_le<uint16_t>(p);
    case GgufValueType::I16:
      return uint64_t(int64_t(load_le<int16_t>(p)));
    case GgufValueType::U32:
      return load_le<uint32_t>(p);
    case GgufValueType::I32:
      return uint64_t(int64_t(load_le<int32_t>(p)));
    case GgufValueType::U64:
      return load_le<uint64_t>(p);
    case GgufValueType::I64:
      return uint64_t(load_le<int64_t>(p));
    default:
      return p[0];  // u8, bool
  }
}

int64_t GgufValue::int_at(uint64_t k) const {
  return int64_t(uint_at(k));
}

double GgufValue::float_at(uint64_t k) const {
  TROUPE_CHECK(type == GgufValueType::Array && scalar_size(elem_type) != 0 && k < count, "element %llu of a %s", ull(k),
               type_description(*this).c_str());
  const uint8_t* p = raw.data() + k * scalar_size(elem_type);
  if (elem_type == GgufValueType::F32) return load_le<float>(p);
  if (elem_type == GgufValueType::F64) return load_le<double>(p);
  if (elem_type == GgufValueType::U64 || !is_signed_type(elem_type)) return double(uint_at(k));
  return double(int_at(k));
}

std::string GgufValue::summary() const {
  switch (type) {
    case GgufValueType::String: {
      std::string s = str.size() > 60 ? str.substr(0, 57) + "..." : str;
      return "'" + s + "'";
    }
    case GgufValueType::Array:
      return strformat("[%llu x %s]", ull(count), std::string(gguf_value_type_name(elem_type)).c_str());
    case GgufValueType::Bool:
      return u ? "true" : "false";
    case GgufValueType::F32:
    case GgufValueType::F64:
      return strformat("%.9g", f);
    default:
      return int_text(int_value(*this));
  }
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  // {name, block_size, type_size}, checked against gguf-py's GGML_QUANT_SIZES.
  static const struct {
    uint32_t id;
    GgmlTypeInfo info;
  } kTypes[] = {
      {0, {"f32", 1, 4}},         {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},     {3, {"q4_1", 32, 20}},
      {6, {"q5_0", 32, 22}},      {7, {"q5_1", 32, 24}},      {8, {"q8_0", 32, 34}},     {10, {"q2_k", 256, 84}},
      {11, {"q3_k", 256, 110}},   {12, {"q4_k", 256, 144}},   {13, {"q5_k", 256, 176}},  {14, {"q6_k", 256, 210}},
      {15, {"q8_k", 256, 292}},   {16, {"iq2_xxs", 256, 66}}, {17, {"iq2_xs", 256, 74}}, {18, {"iq3_xxs", 256, 98}},
      {19, {"iq1_s", 256, 50}},   {20, {"iq4_nl", 32, 18}},   {21, {"iq3_s", 256, 110}}, {22, {"iq2_s", 256, 82}},
      {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},         {25, {"i16", 1, 2}},       {26, {"i32", 1, 4}},
      {27, {"i64", 1, 8}},        {28, {"f64", 1, 8}},        {29, {"iq1_m", 256, 56}},  {30, {"bf16", 1, 2}},
      {34, {"tq1_0", 256, 54}},   {35, {"tq2_0", 256, 66}},   {39, {"mxfp4", 32, 17}},   {40, {"nvfp4", 64, 36}},
      {41, {"q1_0", 128, 18}},
  };
  for (const auto& t : kTypes)
    if (t.id == type) return &t.info;
  return nullptr;
}

// ---- dequantization ---------------------------------------------------------------------------

void dequantize_row_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++) {
    BlockQ8_0 blk;
    std::memcpy(&blk, src + b * 34, sizeof blk);
    float d = f16_to_f32(blk.d);
    for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * float(blk.qs[j]);
  }
}

void dequantize_row_q4_1(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++) {
    BlockQ4_1 blk;
    std::memcpy(&blk, src + b * 20, sizeof blk);
    float d = f16_to_f32(blk.d), m = f16_to_f32(blk.m);
    float* y = dst + b * 32;
    for (int j = 0; j < 16; j++) {
      y[j] = d * float(blk.qs[j] & 0x0f) + m;
      y[j + 16] = d * float(blk.qs[j] >> 4) + m;
    }
  }
}

void dequantize_row_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    uint16_t h;
    std::memcpy(&h, src + 2 * k, 2);
    dst[k] = f16_to_f32(h);
  }
}

void dequantize_row_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    uint16_t h;
    std::memcpy(&h, src + 2 * k, 2);
    dst[k] = bf16_to_f32(h);
  }
}

bool dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return true;
    case GgmlType::F16:
      dequantize_row_f16(src, dst, n);
      return true;
    case GgmlType::BF16:
      dequantize_row_bf16(src, dst, n);
      return true;
    case GgmlType::Q8_0:
      dequantize_row_q8_0(src, dst, n);
      return true;
    case GgmlType::Q4_1:
      dequantize_row_q4_1(src, dst, n);
      return true;
    default:
      return false;
  }
}

Shape GgufTensorInfo::shape() const {
  return Shape(std::vector<int64_t>(ne.rbegin(), ne.rend()));
}

// ---- parsing ----------------------------------------------------------------------------------

// Reads the header, metadata and tensor infos of f's buffer, filling f. Each read checks the bytes
// left first; a failure leaves its message in err_ and the read returns false.
class GgufFile::Parser {
 public:
  explicit Parser(GgufFile& f) : f_(f), p_(f.data_), n_(f.size_) {}

  Expected<void> run() {
    if (!header() || !metadata() || !tensor_infos() || !tensor_layout()) return *err_;
    return {};
  }

 private:
  GgufFile& f_;
  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0;
  std::string ctx_;  // the record being read ("metadata 'general.name'"), prefixed to messages
  std::optional<Error> err_;
  uint64_t n_tensors_ = 0, n_kv_ = 0;
  std::vector<uint64_t> offset_field_;  // per tensor: where its data offset is written

  uint64_t left() const { return n_ - pos_; }

  bool fail(uint64_t at, const std::string& msg) {
    err_ = make_error(strformat("%s: offset %llu: %s%s%s", f_.name_.c_str(), ull(at), ctx_.c_str(),
                                ctx_.empty() ? "" : ": ", msg.c_str()));
    return false;
  }

  bool need(uint64_t bytes, const char* field) {
    if (bytes <= left()) return true;
    return fail(pos_,
                strformat("%s needs %llu bytes, only %llu left (file truncated?)", field, ull(bytes), ull(left())));
  }

  template <class T>
  bool read(T* v, const char* field) {
    if (!need(sizeof(T), field)) return false;
    std::memcpy(v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  // Reads a T and widens it into *out (u64, i64 or double).
  template <class T, class Wide>
  bool read_number(Wide* out, const char* field) {
    T x;
    if (!read(&x, field)) return false;
    *out = Wide(x);
    return true;
  }

  // index >= 0 names an array element in the message (built only on failure: arrays of 49152
  // token strings are read here).
  bool read_string(std::string* s, const char* field, int64_t index = -1) {
    uint64_t at = pos_;
    uint64_t len = 0;
    bool have_len = left() >= 8;
    if (have_len) std::memcpy(&len, p_ + pos_, 8);
    if (have_len && len <= left() - 8) {
      s->assign(reinterpret_cast<const char*>(p_ + pos_ + 8), size_t(len));
      pos_ += 8 + len;
      return true;
    }
    std::string what = index < 0 ? std::string(field) : strformat("%s [%lld]", field, (long long)index);
    if (!have_len)
      return fail(at,
                  strformat("%s length needs 8 bytes, only %llu left (file truncated?)", what.c_str(), ull(left())));
    return fail(at, strformat("%s: length %llu exceeds the %llu bytes left in the file", what.c_str(), ull(len),
                              ull(left() - 8)));
  }

  bool header() {
    if (n_ < 4) return fail(0, strformat("file is %llu bytes, too short for the GGUF magic", ull(n_)));
    uint32_t magic = 0;
    read(&magic, "magic");
    if (magic != kGgufMagic) {
      char m[5] = {};
      for (int k = 0; k < 4; k++) m[k] = (p_[k] >= 32 && p_[k] < 127) ? char(p_[k]) : '?';
      return fail(0, strformat("bad magic '%s' (0x%08x), expected 'GGUF': not a GGUF file", m, magic));
    }
    uint32_t version;
    if (!read(&version, "version")) return false;
    if (version != 2 && version != 3) {
      uint32_t swapped = __builtin_bswap32(version);
      return fail(4,
                  strformat("unsupported GGUF version %u (supported: 2, 3)%s", version,
                            (swapped == 2 || swapped == 3) ? "; a big-endian file? only little-endian is read" : ""));
    }
    f_.version_ = version;
    if (!read(&n_tensors_, "tensor count") || !read(&n_kv_, "metadata count")) return false;
    if (n_kv_ > left() / kMinKvBytes)
      return fail(16, strformat("metadata count %llu is impossible: each entry takes at least %llu bytes and only "
                                "%llu are left",
                                ull(n_kv_), ull(kMinKvBytes), ull(left())));
    if (n_tensors_ > left() / kMinTensorInfoBytes)
      return fail(8, strformat("tensor count %llu is impossible: each tensor info takes at least %llu bytes and only "
                               "%llu are left",
                               ull(n_tensors_), ull(kMinTensorInfoBytes), ull(left())));
    return true;
  }

  bool metadata() {
    f_.kv_.reserve(size_t(n_kv_));
    for (uint64_t k = 0; k < n_kv_; k++) {
      uint64_t at = pos_;
      ctx_ = strformat("metadata entry %llu", ull(k));
      std::string key;
      if (!read_string(&key, "key")) return false;
      if (key.empty()) return fail(at, "empty key");
      ctx_ = "metadata '" + key + "'";
      if (f_.kv_index_.count(key)) return fail(at, "duplicate key");
      uint32_t type;
      uint64_t type_at = pos_;
      if (!read(&type, "value type")) return false;
      if (!known_value_type(type)) return fail(type_at, strformat("unknown value type %u", type));
      GgufValue v;
      if (!read_value(GgufValueType(type), &v, 0)) return false;
      f_.kv_index_.emplace(key, f_.kv_.size());
      f_.kv_.emplace_back(std::move(key), std::move(v));
    }
    ctx_.clear();
    if (const GgufValue* a = f_.find("general.alignment")) {
      ctx_ = "metadata 'general.alignment'";
      if (a->type != GgufValueType::U32) return fail(a->offset, "must be a u32, not " + type_description(*a));
      if (a->u == 0 || (a->u & (a->u - 1)) != 0)
        return fail(a->offset, strformat("%llu is not a power of two", ull(a->u)));
      f_.alignment_ = a->u;
      ctx_.clear();
    } else {
      f_.alignment_ = kDefaultAlignment;
    }
    return true;
  }

  bool read_value(GgufValueType type, GgufValue* v, int depth) {
    v->type = type;
    v->offset = pos_;
    switch (type) {
      case GgufValueType::U8:
        return read_number<uint8_t>(&v->u, "u8 value");
      case GgufValueType::I8:
        return read_number<int8_t>(&v->i, "i8 value");
      case GgufValueType::U16:
        return read_number<uint16_t>(&v->u, "u16 value");
      case GgufValueType::I16:
        return read_number<int16_t>(&v->i, "i16 value");
      case GgufValueType::U32:
        return read_number<uint32_t>(&v->u, "u32 value");
      case GgufValueType::I32:
        return read_number<int32_t>(&v->i, "i32 value");
      case GgufValueType::U64:
        return read_number<uint64_t>(&v->u, "u64 value");
      case GgufValueType::I64:
        return read_number<int64_t>(&v->i, "i64 value");
      case GgufValueType::F32:
        return read_number<float>(&v->f, "f32 value");
      case GgufValueType::F64:
        return read_number<double>(&v->f, "f64 value");
      case GgufValueType::Bool: {
        uint8_t x;
        if (!read(&x, "bool value")) return false;
        if (x > 1) return fail(v->offset, strformat("bool value %u is neither 0 nor 1", x));
        v->u = x;
        return true;
      }
      case GgufValueType::String:
        return read_string(&v->str, "string value");
      case GgufValueType::Array:
        return read_array(v, depth);
    }
    return fail(v->offset, strformat("unknown value type %u", uint32_t(type)));
  }

  bool read_array(GgufValue* v, int depth) {
    uint32_t elem;
    if (!read(&elem, "array element type")) return false;
    if (!known_value_type(elem)) return fail(v->offset, strformat("array of unknown value type %u", elem));
    v->elem_type = GgufValueType(elem);
    uint64_t count_at = pos_;
    if (!read(&v->count, "array count")) return false;
    uint64_t min_size = min_element_size(v->elem_type);
    if (v->count > left() / min_size)
      return fail(count_at, strformat("array of %llu %s needs at least %llu bytes per element, only %llu bytes left",
                                      ull(v->count), std::string(gguf_value_type_name(v->elem_type)).c_str(),
                                      ull(min_size), ull(left())));
    if (v->elem_type == GgufValueType::String) {
      v->strings.resize(size_t(v->count));
      for (uint64_t k = 0; k < v->count; k++)
        if (!read_string(&v->strings[size_t(k)], "array element", int64_t(k))) return false;
      return true;
    }
    if (v->elem_type == GgufValueType::Array) {
      if (depth + 1 >= kMaxArrayDepth)
        return fail(v->offset, strformat("arrays nested deeper than %d levels", kMaxArrayDepth));
      v->arrays.resize(size_t(v->count));
      for (uint64_t k = 0; k < v->count; k++)
        if (!read_value(GgufValueType::Array, &v->arrays[size_t(k)], depth + 1)) return false;
      return true;
    }
    // Numeric and bool elements: one bounded copy (the count check above covers the bytes).
    uint64_t bytes = v->count * min_size;
    v->raw.assign(p_ + pos_, p_ + pos_ + bytes);
    if (v->elem_type == GgufValueType::Bool)
      for (uint64_t k = 0; k < v->count; k++)
        if (v->raw[size_t(k)] > 1)
          return fail(pos_ + k,
                      strformat("bool array element [%llu] is %u, neither 0 nor 1", ull(k), v->raw[size_t(k)]));
    pos_ += bytes;
    return true;
  }

  bool tensor_infos() {
    if (n_tensors_ > left() / kMinTensorInfoBytes)
      return fail(8, strformat("tensor count %llu is impossible: each tensor info takes at least %llu bytes and only "
                               "%llu are left after the metadata",
                               ull(n_tensors_), ull(kMinTensorInfoBytes), ull(left())));
    f_.tensors_.reserve(size_t(n_tensors_));
    offset_field_.reserve(size_t(n_tensors_));
    for (uint64_t k = 0; k < n_tensors_; k++) {
      GgufTensorInfo t;
      t.info_offset = pos_;
      ctx_ = strformat("tensor entry %llu", ull(k));
      if (!read_string(&t.name, "name")) return false;
      if (t.name.empty()) return fail(t.info_offset, "empty name");
      ctx_ = "tensor '" + t.name + "'";
      if (f_.tensor_index_.count(t.name)) return fail(t.info_offset, "duplicate tensor name");
      uint32_t n_dims;
      uint64_t dims_at = pos_;
      if (!read(&n_dims, "n_dims")) return false;
      if (n_dims < 1 || n_dims > kGgufMaxDims)
        return fail(dims_at, strformat("n_dims %u is not in [1, %u]", n_dims, kGgufMaxDims));
      t.numel = 1;
      for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t dim_at = pos_;
        uint64_t dim;
        if (!read(&dim, "dimension")) return false;
        if (dim == 0 || dim > uint64_t(INT64_MAX))
          return fail(dim_at, strformat("ne[%u] = %lld is not a positive dimension", d, (long long)dim));
        if (__builtin_mul_overflow(t.numel, int64_t(dim), &t.numel))
          return fail(dim_at, strformat("element count overflows int64 at ne[%u] = %llu", d, ull(dim)));
        t.ne.push_back(int64_t(dim));
      }
      uint32_t type;
      uint64_t type_at = pos_;
      if (!read(&type, "ggml type")) return false;
      const GgmlTypeInfo* info = ggml_type_info(type);
      if (!info) return fail(type_at, strformat("unknown ggml type %u", type));
      t.type = GgmlType(type);
      if (t.ne[0] % info->block_size != 0)
        return fail(dims_at, strformat("row length ne[0] = %lld is not a multiple of the %s block size %lld",
                                       (long long)t.ne[0], info->name, (long long)info->block_size));
      uint64_t blocks = uint64_t(t.numel / info->block_size);
      if (__builtin_mul_overflow(blocks, uint64_t(info->type_size), &t.nbytes))
        return fail(dims_at, strformat("size of %llu %s blocks overflows", ull(blocks), info->name));
      offset_field_.push_back(pos_);
      if (!read(&t.offset, "data offset")) return false;
      f_.tensor_index_.emplace(t.name, f_.tensors_.size());
      f_.tensors_.push_back(std::move(t));
    }
    ctx_.clear();
    return true;
  }

  // The data section starts at the next multiple of the alignment; each tensor must sit inside
  // the file, aligned, without overlapping another.
  bool tensor_layout() {
    uint64_t a = f_.alignment_;
    f_.data_offset_ = (pos_ + a - 1) / a * a;  // pos_ <= file size and a <= 2^31: no overflow
    std::vector<size_t> order(f_.tensors_.size());
    std::iota(order.begin(), order.end(), size_t(0));
    for (size_t k = 0; k < f_.tensors_.size(); k++) {
      const GgufTensorInfo& t = f_.tensors_[k];
      ctx_ = "tensor '" + t.name + "'";
      if (t.offset % a != 0)
        return fail(offset_field_[k],
                    strformat("data offset %llu is not a multiple of the alignment %llu", ull(t.offset), ull(a)));
      uint64_t begin, end;
      bool overflow =
          __builtin_add_overflow(f_.data_offset_, t.offset, &begin) || __builtin_add_overflow(begin, t.nbytes, &end);
      if (overflow)
        return fail(offset_field_[k], strformat("data at %llu + %llu + %llu bytes overflows (file size %llu)",
                                                ull(f_.data_offset_), ull(t.offset), ull(t.nbytes), ull(n_)));
      if (end > n_)
        return fail(offset_field_[k],
                    strformat("data [%llu, %llu) past end of file (size %llu)", ull(begin), ull(end), ull(n_)));
    }
    std::sort(order.begin(), order.end(),
              [&](size_t x, size_t y) { return f_.tensors_[x].offset < f_.tensors_[y].offset; });
    for (size_t k = 1; k < order.size(); k++) {
      const GgufTensorInfo& prev = f_.tensors_[order[k - 1]];
      const GgufTensorInfo& cur = f_.tensors_[order[k]];
      if (cur.offset < prev.offset + prev.nbytes) {
        ctx_ = "tensor '" + cur.name + "'";
        uint64_t d = f_.data_offset_;
        return fail(offset_field_[order[k]],
                    strformat("data [%llu, %llu) overlaps tensor '%s' at [%llu, %llu)", ull(d + cur.offset),
                              ull(d + cur.offset + cur.nbytes), prev.name.c_str(), ull(d + prev.offset),
                              ull(d + prev.offset + prev.nbytes)));
      }
    }
    ctx_.clear();
    return true;
  }
};

Expected<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, std::string name) {
  GgufFile f;
  f.data_ = data;
  f.size_ = data ? size : 0;
  f.name_ = std::move(name);
  Expected<void> r = Parser(f).run();
  if (!r) return r.error();
  return f;
}

Expected<GgufFile> GgufFile::open(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return m.error();
  Expected<GgufFile> f = parse(m->data, m->size, path);
  if (f) f->mapping_ = std::move(m->owner);
  return f;
}

// ---- metadata accessors -----------------------------------------------------------------------

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {

Error missing_key(const std::string& file, std::string_view key) {
  return make_error(strformat("%s: metadata key '%.*s' is missing", file.c_str(), int(key.size()), key.data()));
}
Error wrong_type(const std::string& file, std::string_view key, const GgufValue& v, const char* expected) {
  return make_error(strformat("%s: offset %llu: metadata '%.*s' is %s, expected %s", file.c_str(), ull(v.offset),
                              int(key.size()), key.data(), type_description(v).c_str(), expected));
}

}  // namespace

Expected<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->type != GgufValueType::String) return wrong_type(name_, key, *v, "string");
  return v->str;
}

Expected<uint32_t> GgufFile::get_u32(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (!v->is_integer()) return wrong_type(name_, key, *v, "an integer");
  IntValue x = int_value(*v);
  if (x.negative || x.magnitude > UINT32_MAX)
    return make_error(strformat("%s: offset %llu: metadata '%.*s' = %s does not fit in u32", name_.c_str(),
                                ull(v->offset), int(key.size()), key.data(), int_text(x).c_str()));
  return uint32_t(x.magnitude);
}

Expected<int64_t> GgufFile::get_i64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (!v->is_integer()) return wrong_type(name_, key, *v, "an integer");
  IntValue x = int_value(*v);
  if (!x.negative && x.magnitude > uint64_t(INT64_MAX))
    return make_error(strformat("%s: offset %llu: metadata '%.*s' = %s does not fit in i64", name_.c_str(),
                                ull(v->offset), int(key.size()), key.data(), int_text(x).c_str()));
  return x.negative ? v->i : int64_t(x.magnitude);
}

Expected<float> GgufFile::get_f32(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->is_float()) return float(v->f);
  if (v->is_integer()) return is_signed_type(v->type) ? float(v->i) : float(v->u);
  return wrong_type(name_, key, *v, "a number");
}

Expected<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->type != GgufValueType::Bool) return wrong_type(name_, key, *v, "bool");
  return v->u != 0;
}

Expected<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->type != GgufValueType::Array || v->elem_type != GgufValueType::String)
    return wrong_type(name_, key, *v, "array of string");
  return v->strings;
}

Expected<std::vector<int32_t>> GgufFile::get_i32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->type != GgufValueType::Array || !is_integer_type(v->elem_type))
    return wrong_type(name_, key, *v, "array of integers");
  std::vector<int32_t> out(size_t(v->count));
  for (uint64_t k = 0; k < v->count; k++) {
    bool fits = v->elem_type == GgufValueType::U64 ? v->uint_at(k) <= uint64_t(INT32_MAX)
                                                   : (v->int_at(k) >= INT32_MIN && v->int_at(k) <= INT32_MAX);
    if (!fits)
      return make_error(strformat("%s: offset %llu: metadata '%.*s': element [%llu] does not fit in i32", name_.c_str(),
                                  ull(v->offset), int(key.size()), key.data(), ull(k)));
    out[size_t(k)] = int32_t(v->int_at(k));
  }
  return out;
}

Expected<std::vector<float>> GgufFile::get_f32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(name_, key);
  if (v->type != GgufValueType::Array || scalar_size(v->elem_type) == 0 || v->elem_type == GgufValueType::Bool)
    return wrong_type(name_, key, *v, "array of numbers");
  std::vector<float> out(size_t(v->count));
  for (uint64_t k = 0; k < v->count; k++) out[size_t(k)] = float(v->float_at(k));
  return out;
}

// ---- tensors ----------------------------------------------------------------------------------

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Expected<Tensor> GgufFile::dequantize(const GgufTensorInfo& t) const {
  // Re-check what the parser checked, since t may not come from this file.
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
  if (!info || t.ne.empty() || t.ne.size() > kGgufMaxDims || t.ne[0] % info->block_size != 0)
    return make_error(strformat("%s: tensor '%s': bad type or shape", name_.c_str(), t.name.c_str()));
  int64_t numel = 1;
  for (int64_t d : t.ne)
    if (d <= 0 || __builtin_mul_overflow(numel, d, &numel))
      return make_error(strformat("%s: tensor '%s': bad shape", name_.c_str(), t.name.c_str()));
  if (numel != t.numel || uint64_t(numel / info->block_size) * uint64_t(info->type_size) != t.nbytes ||
      data_offset_ > size_ || t.offset > size_ - data_offset_ || t.nbytes > size_ - data_offset_ - t.offset)
    return make_error(
        strformat("%s: tensor '%s': size or offset does not match this file", name_.c_str(), t.name.c_str()));
  switch (t.type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_1:
      break;
    default:
      return make_error(strformat("%s: tensor '%s': cannot dequantize type %s (supported: f32, f16, bf16, q8_0, q4_1)",
                                  name_.c_str(), t.name.c_str(), info->name));
  }
  Tensor out = Tensor::empty(t.shape());
  dequantize_row(t.type, tensor_data(t), out.data<float>(), numel);
  return out;
}

Expected<Tensor> GgufFile::dequantize(std::string_view tensor_name) const {
  const GgufTensorInfo* t = find_tensor(tensor_name);
  if (!t)
    return make_error(
        strformat("%s: no tensor named '%.*s'", name_.c_str(), int(tensor_name.size()), tensor_name.data()));
  return dequantize(*t);
}

}  // namespace troupe
