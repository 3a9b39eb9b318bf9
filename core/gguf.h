#pragma once
// GGUF reader: the model file format of ggml / llama.cpp (versions 2 and 3, little-endian).
//
// Layout: "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//         | n_kv x (string key, u32 value type, value)
//         | n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//         | padding to `general.alignment` (default 32) | data section
// A string is a u64 byte length then the bytes; an array is a u32 element type, a u64 count,
// then the elements. Tensor offsets count from the start of the data section.
//
// Every count, length, dimension and offset is checked against the bytes actually present
// before it is used, so a corrupt or hostile file gives an Error whose message names the file,
// the byte offset and the field ("model.gguf: offset 1234: tensor 'blk.0.attn_q.weight':
// data [x, y) past end of file (size z)"), never a crash or a huge allocation.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace troupe {

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);  // "u32", "string", ...

// One metadata value. Scalars sit in the field their kind uses: unsigned integers and bool in
// `u`, signed integers in `i`, floats in `f`, strings in `str`. An array keeps its element type
// and count, and its elements in the one vector that fits that type.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  uint64_t offset = 0;  // where the value starts in the file, for messages

  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string str;

  GgufValueType elem_type = GgufValueType::U8;
  uint64_t count = 0;
  std::vector<uint8_t> raw;          // numeric and bool elements, packed little-endian as in the file
  std::vector<std::string> strings;  // string elements
  std::vector<GgufValue> arrays;     // nested array elements

  bool is_integer() const;  // any of u8..i64 (not bool)
  bool is_float() const { return type == GgufValueType::F32 || type == GgufValueType::F64; }
  // Element k of a numeric or bool array, widened (k < count, elem_type numeric or bool).
  int64_t int_at(uint64_t k) const;  // integer and bool elements (u64 above INT64_MAX wraps; check with uint_at)
  uint64_t uint_at(uint64_t k) const;
  double float_at(uint64_t k) const;  // any numeric element
  std::string summary() const;        // short human form: "30", "'llama'", "[49152 x string]"
};

// ggml tensor types. The values are the file's; types ggml never stores in files are absent.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

// A row of `block_size` elements takes `type_size` bytes (1 and 4 for F32; 32 and 20 for Q4_1).
struct GgmlTypeInfo {
  const char* name;
  int64_t block_size;
  int64_t type_size;
};
// Null for a type this reader does not know: such a file is rejected, since the size of its
// tensors cannot be checked.
const GgmlTypeInfo* ggml_type_info(uint32_t type);

// Q8_0: 32 weights share one f16 scale d; x = d * q.
struct BlockQ8_0 {
  uint16_t d;  // f16 bits
  int8_t qs[32];
};
// Q4_1: 32 weights share an f16 scale d and an f16 minimum m; x = d * q + m with q in [0, 15].
// qs[j] holds element j in its low nibble and element j + 16 in its high nibble.
struct BlockQ4_1 {
  uint16_t d;  // f16 bits
  uint16_t m;  // f16 bits
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_1) == 20, "ggml block layouts");

// Reference dequantization of n consecutive elements (n a multiple of the block size) from
// ggml's byte layout to f32. src needs no alignment. The Q4_1 / Q8_0 kernels in ops/ are
// checked against these.
void dequantize_row_q8_0(const uint8_t* src, float* dst, int64_t n);
void dequantize_row_q4_1(const uint8_t* src, float* dst, int64_t n);
void dequantize_row_f16(const uint8_t* src, float* dst, int64_t n);
void dequantize_row_bf16(const uint8_t* src, float* dst, int64_t n);
// F32, F16, BF16, Q8_0, Q4_1; false (dst untouched) for any other type.
bool dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order, fastest-varying first: ne[0] is the row length
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;  // size of the data in the file
  int64_t numel = 0;
  uint64_t info_offset = 0;  // where this tensor's record starts in the file, for messages

  // torch / HF order: ne reversed. A (OC, C) weight is stored with ne = [C, OC].
  Shape shape() const;
};

class GgufFile {
 public:
  // Maps the file read-only; the mapping lives as long as this object (and its copies).
  static Expected<GgufFile> open(const std::string& path);
  // Parses a caller's buffer, which must outlive the GgufFile. `name` is used in messages.
  static Expected<GgufFile> parse(const uint8_t* data, size_t size, std::string name);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section
  size_t size() const { return size_; }
  const uint8_t* bytes() const { return data_; }

  // Metadata, in file order, and lookups by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed accessors: "missing key" / "wrong type" / "does not fit" errors name the key.
  // Integer getters accept any integer type whose value fits; get_f32 also takes f64 and integers.
  Expected<std::string> get_string(std::string_view key) const;
  Expected<uint32_t> get_u32(std::string_view key) const;
  Expected<int64_t> get_i64(std::string_view key) const;
  Expected<float> get_f32(std::string_view key) const;
  Expected<bool> get_bool(std::string_view key) const;
  Expected<std::vector<std::string>> get_string_array(std::string_view key) const;
  Expected<std::vector<int32_t>> get_i32_array(std::string_view key) const;  // any integer elements that fit
  Expected<std::vector<float>> get_f32_array(std::string_view key) const;    // f32, f64 or integer elements

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The tensor's bytes in the file (t.nbytes of them, in t.type's layout), for kernels that
  // read quantized weights directly. t must come from this file's tensors().
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return data_ + data_offset_ + t.offset; }
  // A new f32 CPU tensor of shape t.shape(). F32, F16, BF16, Q8_0, Q4_1.
  Expected<Tensor> dequantize(const GgufTensorInfo& t) const;
  Expected<Tensor> dequantize(std::string_view tensor_name) const;

 private:
  class Parser;
  std::shared_ptr<const void> mapping_;  // owns the mmap when opened from a path; null for parse()
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace troupe
