#include "core/gguf.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/dtype.h"
#include "test_util.h"

using namespace troupe;

namespace {

// ---- a small GGUF writer, to build valid files and then break them one field at a time ------

void put_bytes(std::vector<uint8_t>& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}
template <class T>
void put(std::vector<uint8_t>& b, T v) {
  put_bytes(b, &v, sizeof v);
}
void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  put_bytes(b, s.data(), s.size());
}
template <class T>
void put_at(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

struct GgufBuilder {
  struct TensorSpec {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::vector<uint8_t> data;
  };
  // Where build() put things, for tests that corrupt one field.
  struct Layout {
    size_t n_tensors_at = 8, n_kv_at = 16;
    std::vector<size_t> kv_at;             // start of each metadata entry
    std::vector<size_t> tensor_info_at;    // start of each tensor record
    std::vector<size_t> tensor_offset_at;  // each tensor's data offset field
    size_t data_at = 0;
  };

  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; general.alignment is written only when set
  std::vector<std::vector<uint8_t>> kvs;
  std::vector<TensorSpec> tensors;

  void kv(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    std::vector<uint8_t> e;
    put_str(e, key);
    put<uint32_t>(e, type);
    e.insert(e.end(), value.begin(), value.end());
    kvs.push_back(std::move(e));
  }
  template <class T>
  void kv_scalar(const std::string& key, GgufValueType type, T v) {
    std::vector<uint8_t> b;
    put(b, v);
    kv(key, uint32_t(type), b);
  }
  void kv_string(const std::string& key, const std::string& s) {
    std::vector<uint8_t> b;
    put_str(b, s);
    kv(key, uint32_t(GgufValueType::String), b);
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(GgufValueType::String));
    put<uint64_t>(b, v.size());
    for (const auto& s : v) put_str(b, s);
    kv(key, uint32_t(GgufValueType::Array), b);
  }
  template <class T>
  void kv_array(const std::string& key, GgufValueType elem, const std::vector<T>& v) {
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(elem));
    put<uint64_t>(b, v.size());
    for (T x : v) put(b, x);
    kv(key, uint32_t(GgufValueType::Array), b);
  }
  void set_alignment(uint32_t a) {
    alignment = a;
    kv_scalar<uint32_t>("general.alignment", GgufValueType::U32, a);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, std::vector<uint8_t> data) {
    tensors.push_back({name, std::move(ne), uint32_t(type), std::move(data)});
  }

  // Tensors are laid out in order, each at the next multiple of the alignment; the file ends
  // right after the last tensor's data.
  std::vector<uint8_t> build(Layout* layout = nullptr) const {
    Layout lay;
    std::vector<uint8_t> b;
    put<uint32_t>(b, 0x46554747);
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensors.size());
    put<uint64_t>(b, kvs.size());
    for (const auto& e : kvs) {
      lay.kv_at.push_back(b.size());
      b.insert(b.end(), e.begin(), e.end());
    }
    uint64_t offset = 0;
    for (const auto& t : tensors) {
      lay.tensor_info_at.push_back(b.size());
      put_str(b, t.name);
      put<uint32_t>(b, uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) put<uint64_t>(b, d);
      put<uint32_t>(b, t.type);
      lay.tensor_offset_at.push_back(b.size());
      put<uint64_t>(b, offset);
      offset = (offset + t.data.size() + alignment - 1) / alignment * alignment;
    }
    if (!tensors.empty()) {
      while (b.size() % alignment) b.push_back(0);
      lay.data_at = b.size();
      for (const auto& t : tensors) {
        while ((b.size() - lay.data_at) % alignment) b.push_back(0);
        b.insert(b.end(), t.data.begin(), t.data.end());
      }
    }
    if (layout) *layout = lay;
    return b;
  }
};

Expected<GgufFile> parse(const std::vector<uint8_t>& b, const std::string& name = "test.gguf") {
  return GgufFile::parse(b.data(), b.size(), name);
}

std::string parse_error(const std::vector<uint8_t>& b) {
  Expected<GgufFile> f = parse(b);
  if (f.ok()) return "(parsed without error)";
  return f.error().message;
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Q8_0 block: scale d (exact in f16) and 32 int8.
std::vector<uint8_t> q8_0_block(float d, const int8_t* q) {
  std::vector<uint8_t> b;
  put<uint16_t>(b, f32_to_f16(d));
  put_bytes(b, q, 32);
  return b;
}
// Q4_1 block: element j < 16 in the low nibble of byte j, element j + 16 in its high nibble.
std::vector<uint8_t> q4_1_block(float d, float m, const uint8_t* q) {
  std::vector<uint8_t> b;
  put<uint16_t>(b, f32_to_f16(d));
  put<uint16_t>(b, f32_to_f16(m));
  for (int j = 0; j < 16; j++) b.push_back(uint8_t((q[j] & 0x0f) | (q[j + 16] << 4)));
  return b;
}

// A valid file with every metadata type, nested arrays and one tensor of each dequantizable type.
GgufBuilder sample_builder() {
  GgufBuilder g;
  g.kv_string("general.architecture", "llama");
  g.kv_scalar<uint8_t>("t.u8", GgufValueType::U8, 200);
  g.kv_scalar<int8_t>("t.i8", GgufValueType::I8, -5);
  g.kv_scalar<uint16_t>("t.u16", GgufValueType::U16, 60000);
  g.kv_scalar<int16_t>("t.i16", GgufValueType::I16, -30000);
  g.kv_scalar<uint32_t>("t.u32", GgufValueType::U32, 4000000000u);
  g.kv_scalar<int32_t>("t.i32", GgufValueType::I32, -7);
  g.kv_scalar<float>("t.f32", GgufValueType::F32, 1.5f);
  g.kv_scalar<uint8_t>("t.bool", GgufValueType::Bool, 1);
  g.kv_scalar<uint64_t>("t.u64", GgufValueType::U64, UINT64_MAX);
  g.kv_scalar<int64_t>("t.i64", GgufValueType::I64, -(int64_t(1) << 40));
  g.kv_scalar<double>("t.f64", GgufValueType::F64, 0.125);
  g.kv_strings("t.strings", {"a", "", "ccc"});
  g.kv_array<int32_t>("t.i32s", GgufValueType::I32, {1, -2, 3});
  g.kv_array<uint8_t>("t.u8s", GgufValueType::U8, {7, 8});
  g.kv_array<float>("t.f32s", GgufValueType::F32, {0.5f, -1.0f});
  g.kv_array<int64_t>("t.i64s", GgufValueType::I64, {int64_t(1) << 40});
  {  // [[1, 2], ["x"]]: an array of two arrays
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(GgufValueType::Array));
    put<uint64_t>(b, 2);
    put<uint32_t>(b, uint32_t(GgufValueType::U16));
    put<uint64_t>(b, 2);
    put<uint16_t>(b, 1);
    put<uint16_t>(b, 2);
    put<uint32_t>(b, uint32_t(GgufValueType::String));
    put<uint64_t>(b, 1);
    put_str(b, "x");
    g.kv("t.nested", uint32_t(GgufValueType::Array), b);
  }

  std::vector<float> f32(6);
  for (int k = 0; k < 6; k++) f32[size_t(k)] = 0.25f * float(k) - 1.0f;
  g.tensor("w.f32", {3, 2}, GgmlType::F32, f32_bytes(f32));  // torch shape (2, 3)

  std::vector<uint8_t> f16, bf16;
  for (float x : {1.0f, -2.5f, 65504.0f, 6.1035156e-05f}) put<uint16_t>(f16, f32_to_f16(x));
  for (float x : {1.0f, -3.140625f, 256.0f, 0.0078125f}) put<uint16_t>(bf16, f32_to_bf16(x));
  g.tensor("w.f16", {4}, GgmlType::F16, f16);
  g.tensor("w.bf16", {2, 2}, GgmlType::BF16, bf16);

  int8_t q8[64];
  for (int k = 0; k < 64; k++) q8[k] = int8_t(k - 32);
  std::vector<uint8_t> q8b = q8_0_block(0.5f, q8);
  std::vector<uint8_t> q8b2 = q8_0_block(-0.25f, q8 + 32);
  q8b.insert(q8b.end(), q8b2.begin(), q8b2.end());
  g.tensor("w.q8_0", {64}, GgmlType::Q8_0, q8b);

  uint8_t q4[32];
  for (int k = 0; k < 32; k++) q4[k] = uint8_t((k * 7) % 16);
  g.tensor("w.q4_1", {32, 1}, GgmlType::Q4_1, q4_1_block(0.125f, -1.0f, q4));
  return g;
}

std::vector<float> values(const Tensor& t) {
  return t.to_vector();
}

}  // namespace

// ---- the real file ------------------------------------------------------------------------------

namespace {
const std::string kModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

GgufFile open_real_file() {
  std::string path = test::data_path(kModelFile);
  if (access(path.c_str(), R_OK) != 0)
    FAIL("run scripts/setup.sh to fetch data/" << kModelFile << " (looked for " << path << ")");
  Expected<GgufFile> f = GgufFile::open(path);
  INFO((f.ok() ? std::string() : f.error().message));
  REQUIRE(f.ok());
  return std::move(f).value();
}
}  // namespace

TEST_CASE("gguf: SmolLM2 metadata and tensor table", "[gguf][data]") {
  GgufFile f = open_real_file();
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.tensors().size() == 272);
  CHECK(f.metadata().size() == 33);
  CHECK(f.get_string("general.architecture").value() == "llama");
  CHECK(f.get_u32("llama.block_count").value() == 30);
  CHECK(f.get_i64("llama.block_count").value() == 30);
  CHECK(f.get_u32("llama.embedding_length").value() == 576);
  CHECK(f.get_u32("llama.feed_forward_length").value() == 1536);
  CHECK(f.get_u32("llama.attention.head_count").value() == 9);
  CHECK(f.get_u32("llama.attention.head_count_kv").value() == 3);
  CHECK(f.get_u32("llama.context_length").value() == 8192);
  CHECK(f.get_f32("llama.rope.freq_base").value() == 100000.0f);
  CHECK(f.get_f32("llama.attention.layer_norm_rms_epsilon").value() == 1e-5f);
  CHECK(f.get_string("tokenizer.ggml.model").value() == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre").value() == "smollm");
  CHECK(f.get_string_array("tokenizer.ggml.tokens").value().size() == 49152);
  CHECK(f.get_string_array("tokenizer.ggml.merges").value().size() == 48900);
  CHECK(f.get_i32_array("tokenizer.ggml.token_type").value().size() == 49152);
  CHECK(f.get_u32("tokenizer.ggml.bos_token_id").value() == 1);
  CHECK(f.get_u32("tokenizer.ggml.eos_token_id").value() == 2);
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token").value() == false);
  CHECK(f.get_string("tokenizer.chat_template").value().find("<|im_start|>") != std::string::npos);

  int n_f32 = 0, n_q4_1 = 0, n_q8_0 = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    n_f32 += t.type == GgmlType::F32;
    n_q4_1 += t.type == GgmlType::Q4_1;
    n_q8_0 += t.type == GgmlType::Q8_0;
    CHECK(t.offset % 32 == 0);
    CHECK(f.data_offset() + t.offset + t.nbytes <= f.size());
  }
  CHECK(n_f32 == 61);
  CHECK(n_q4_1 == 210);
  CHECK(n_q8_0 == 1);

  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  REQUIRE(emb);
  CHECK(emb->ne == std::vector<int64_t>{576, 49152});
  CHECK(emb->shape() == Shape({49152, 576}));  // (V, C) in torch order
  CHECK(emb->type == GgmlType::Q8_0);
  CHECK(emb->nbytes == uint64_t(49152) * 576 / 32 * 34);
  const GgufTensorInfo* k = f.find_tensor("blk.0.attn_k.weight");
  REQUIRE(k);
  CHECK(k->shape() == Shape({192, 576}));            // (n_kv_heads * head_dim, C)
  CHECK(f.find_tensor("output.weight") == nullptr);  // tied to token_embd
}

TEST_CASE("gguf: typed accessors name the key and the problem", "[gguf][data]") {
  GgufFile f = open_real_file();
  Expected<uint32_t> a = f.get_u32("general.architecture");
  REQUIRE_FALSE(a.ok());
  CHECK_THAT(a.error().message, Catch::Contains("general.architecture") && Catch::Contains("is string") &&
                                    Catch::Contains("expected an integer") && Catch::Contains(kModelFile));
  Expected<std::string> b = f.get_string("llama.block_count");
  REQUIRE_FALSE(b.ok());
  CHECK_THAT(b.error().message, Catch::Contains("'llama.block_count' is u32, expected string"));
  Expected<float> c = f.get_f32("no.such.key");
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(c.error().message, Catch::Contains("metadata key 'no.such.key' is missing"));
  Expected<std::vector<std::string>> d = f.get_string_array("tokenizer.ggml.token_type");
  REQUIRE_FALSE(d.ok());
  CHECK_THAT(d.error().message, Catch::Contains("is array of i32, expected array of string"));
  Expected<Tensor> e = f.dequantize("blk.99.attn_q.weight");
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.error().message, Catch::Contains("no tensor named 'blk.99.attn_q.weight'"));
}

TEST_CASE("gguf: dequantization matches the gguf package on the real file", "[gguf][data]") {
  GgufFile f = open_real_file();
  std::ifstream in(test::fixture_path("gguf_dequant.txt"));
  REQUIRE(in.good());
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name, type, ne_text;
    int64_t numel;
    double sum, wsum;
    ls >> name >> type >> ne_text >> numel >> sum >> wsum;
    std::vector<float> head(64);
    for (float& v : head) ls >> v;
    REQUIRE_FALSE(ls.fail());
    INFO("tensor " << name << " (" << type << ")");

    const GgufTensorInfo* t = f.find_tensor(name);
    REQUIRE(t);
    CHECK(ggml_type_info(uint32_t(t->type))->name == [&] {
      std::string s = type;
      for (char& ch : s) ch = char(std::tolower(ch));
      return s;
    }());
    std::vector<int64_t> ne;
    std::istringstream ns(ne_text);
    for (std::string d; std::getline(ns, d, ',');) ne.push_back(std::stoll(d));
    CHECK(t->ne == ne);
    CHECK(t->numel == numel);

    Expected<Tensor> x = f.dequantize(*t);
    REQUIRE(x.ok());
    CHECK(x->dtype() == DType::F32);
    CHECK(x->numel() == numel);
    CHECK(x->shape() == t->shape());
    const float* v = x->data<float>();
    if (t->type == GgmlType::F32) {
      for (int k = 0; k < 64; k++) CHECK(v[k] == head[size_t(k)]);
    } else {
      // Within 1e-6 of the block's scale: a fused multiply-add may round d * q + m once instead of twice.
      double scale = test::max_abs(head.data(), 64);
      for (int k = 0; k < 64; k++) {
        INFO("element " << k);
        CHECK(std::fabs(double(v[k]) - double(head[size_t(k)])) <=
              1e-6 * std::max(std::fabs(double(head[size_t(k)])), scale));
      }
    }
    double s = 0, ws = 0, sabs = 0;
    for (int64_t k = 0; k < numel; k++) {
      s += v[k];
      ws += double(v[k]) * double(k % 17 - 8);
      sabs += std::fabs(double(v[k]));
    }
    CHECK(std::fabs(s - sum) <= 1e-6 * sabs);
    CHECK(std::fabs(ws - wsum) <= 1e-6 * sabs * 8);
    checked++;
  }
  CHECK(checked == 3);
}

// ---- synthetic files ----------------------------------------------------------------------------

TEST_CASE("gguf: every metadata type and nested arrays parse", "[gguf]") {
  for (uint32_t version : {2u, 3u}) {
    GgufBuilder g = sample_builder();
    g.version = version;
    std::vector<uint8_t> b = g.build();
    Expected<GgufFile> r = parse(b);
    INFO((r.ok() ? "" : r.error().message));
    REQUIRE(r.ok());
    const GgufFile& f = *r;
    CHECK(f.version() == version);
    CHECK(f.get_u32("t.u8").value() == 200);
    CHECK(f.get_i64("t.i8").value() == -5);
    CHECK(f.get_u32("t.u16").value() == 60000);
    CHECK(f.get_i64("t.i16").value() == -30000);
    CHECK(f.get_u32("t.u32").value() == 4000000000u);
    CHECK(f.get_i64("t.i32").value() == -7);
    CHECK(f.get_f32("t.f32").value() == 1.5f);
    CHECK(f.get_bool("t.bool").value() == true);
    CHECK(f.get_i64("t.i64").value() == -(int64_t(1) << 40));
    CHECK(f.get_f32("t.f64").value() == 0.125f);
    CHECK(f.get_f32("t.u16").value() == 60000.0f);
    CHECK(f.get_string_array("t.strings").value() == std::vector<std::string>{"a", "", "ccc"});
    CHECK(f.get_i32_array("t.i32s").value() == std::vector<int32_t>{1, -2, 3});
    CHECK(f.get_i32_array("t.u8s").value() == std::vector<int32_t>{7, 8});
    CHECK(f.get_f32_array("t.f32s").value() == std::vector<float>{0.5f, -1.0f});
    CHECK(f.get_f32_array("t.i32s").value() == std::vector<float>{1.0f, -2.0f, 3.0f});
    const GgufValue* nested = f.find("t.nested");
    REQUIRE(nested);
    REQUIRE(nested->arrays.size() == 2);
    CHECK(nested->elem_type == GgufValueType::Array);
    CHECK(nested->arrays[0].elem_type == GgufValueType::U16);
    CHECK(nested->arrays[0].uint_at(1) == 2);
    CHECK(nested->arrays[1].strings == std::vector<std::string>{"x"});
    CHECK(f.find("t.strings")->summary() == "[3 x string]");
    CHECK(f.find("general.architecture")->summary() == "'llama'");
    CHECK(f.metadata().front().first == "general.architecture");  // file order kept

    // Integers are accepted by any getter they fit; the ones that do not fit say so.
    Expected<uint32_t> neg = f.get_u32("t.i8");
    REQUIRE_FALSE(neg.ok());
    CHECK_THAT(neg.error().message, Catch::Contains("'t.i8' = -5 does not fit in u32"));
    Expected<int64_t> big = f.get_i64("t.u64");
    REQUIRE_FALSE(big.ok());
    CHECK_THAT(big.error().message, Catch::Contains("= 18446744073709551615 does not fit in i64"));
    Expected<std::vector<int32_t>> wide = f.get_i32_array("t.i64s");
    REQUIRE_FALSE(wide.ok());
    CHECK_THAT(wide.error().message, Catch::Contains("element [0] does not fit in i32"));
    CHECK_FALSE(f.get_bool("t.u8").ok());
    CHECK_FALSE(f.get_i32_array("t.strings").ok());
  }
}

TEST_CASE("gguf: F32, F16, BF16, Q8_0 and Q4_1 tensors dequantize with the torch shape", "[gguf]") {
  std::vector<uint8_t> b = sample_builder().build();
  Expected<GgufFile> r = parse(b);
  REQUIRE(r.ok());
  const GgufFile& f = *r;
  REQUIRE(f.tensors().size() == 5);

  Tensor t32 = f.dequantize("w.f32").value();
  CHECK(t32.shape() == Shape({2, 3}));
  CHECK(values(t32) == std::vector<float>{-1.0f, -0.75f, -0.5f, -0.25f, 0.0f, 0.25f});

  CHECK(values(f.dequantize("w.f16").value()) == std::vector<float>{1.0f, -2.5f, 65504.0f, 6.1035156e-05f});
  Tensor tb = f.dequantize("w.bf16").value();
  CHECK(tb.shape() == Shape({2, 2}));
  CHECK(values(tb) == std::vector<float>{1.0f, -3.140625f, 256.0f, 0.0078125f});

  std::vector<float> q8 = values(f.dequantize("w.q8_0").value());
  REQUIRE(q8.size() == 64);
  for (int k = 0; k < 64; k++) CHECK(q8[size_t(k)] == (k < 32 ? 0.5f : -0.25f) * float(k - 32));

  Tensor tq4 = f.dequantize("w.q4_1").value();
  CHECK(tq4.shape() == Shape({1, 32}));
  std::vector<float> q4 = values(tq4);
  for (int k = 0; k < 32; k++) CHECK(q4[size_t(k)] == 0.125f * float((k * 7) % 16) - 1.0f);

  // The raw bytes are where the kernels will read them.
  const GgufTensorInfo* info = f.find_tensor("w.q4_1");
  REQUIRE(info);
  CHECK(info->nbytes == 20);
  BlockQ4_1 blk;
  std::memcpy(&blk, f.tensor_data(*info), sizeof blk);
  CHECK(f16_to_f32(blk.d) == 0.125f);
  CHECK(f16_to_f32(blk.m) == -1.0f);
  CHECK((blk.qs[1] & 0x0f) == 7);
  CHECK((blk.qs[1] >> 4) == (17 * 7) % 16);
}

TEST_CASE("gguf: a type it cannot dequantize is an error, not garbage", "[gguf]") {
  GgufBuilder g;
  g.tensor("w.q4_0", {32}, GgmlType::Q4_0, std::vector<uint8_t>(18, 0));
  std::vector<uint8_t> b = g.build();
  Expected<GgufFile> f = parse(b);
  REQUIRE(f.ok());
  Expected<Tensor> t = f->dequantize("w.q4_0");
  REQUIRE_FALSE(t.ok());
  CHECK_THAT(t.error().message, Catch::Contains("tensor 'w.q4_0': cannot dequantize type q4_0"));
}

TEST_CASE("gguf: general.alignment moves the data section", "[gguf]") {
  GgufBuilder g = sample_builder();
  g.set_alignment(64);
  std::vector<uint8_t> b = g.build();
  Expected<GgufFile> f = parse(b);
  REQUIRE(f.ok());
  CHECK(f->alignment() == 64);
  CHECK(f->data_offset() % 64 == 0);
  CHECK(values(f->dequantize("w.f16").value())[1] == -2.5f);

  GgufBuilder odd = sample_builder();
  odd.kv_scalar<uint32_t>("general.alignment", GgufValueType::U32, 24);
  CHECK_THAT(parse_error(odd.build()), Catch::Contains("'general.alignment': 24 is not a power of two"));
  GgufBuilder wide = sample_builder();
  wide.kv_scalar<uint64_t>("general.alignment", GgufValueType::U64, 32);
  CHECK_THAT(parse_error(wide.build()), Catch::Contains("'general.alignment': must be a u32, not u64"));
}

TEST_CASE("gguf: every truncation of a valid file is an error naming the offset", "[gguf]") {
  std::vector<uint8_t> b = sample_builder().build();
  REQUIRE(parse(b).ok());
  for (size_t n = 0; n < b.size(); n++) {
    Expected<GgufFile> f = GgufFile::parse(b.data(), n, "cut.gguf");
    INFO("prefix of " << n << " of " << b.size() << " bytes");
    REQUIRE_FALSE(f.ok());
    CHECK_THAT(f.error().message, Catch::StartsWith("cut.gguf: offset "));
  }
  // The message says what was being read.
  CHECK_THAT(GgufFile::parse(b.data(), 2, "cut.gguf").error().message, Catch::Contains("too short for the GGUF magic"));
  CHECK_THAT(GgufFile::parse(b.data(), 12, "cut.gguf").error().message,
             Catch::Contains("offset 8: tensor count needs 8 bytes, only 4 left"));
}

TEST_CASE("gguf: header errors", "[gguf]") {
  std::vector<uint8_t> b = sample_builder().build();
  std::vector<uint8_t> bad = b;
  std::memcpy(bad.data(), "GGML", 4);
  CHECK_THAT(parse_error(bad), Catch::Contains("test.gguf: offset 0: bad magic 'GGML'"));

  bad = b;
  put_at<uint32_t>(bad, 4, 1);
  CHECK_THAT(parse_error(bad), Catch::Contains("offset 4: unsupported GGUF version 1 (supported: 2, 3)"));
  put_at<uint32_t>(bad, 4, 0x03000000);
  CHECK_THAT(parse_error(bad), Catch::Contains("big-endian"));

  bad = b;
  put_at<uint64_t>(bad, 16, uint64_t(1) << 60);
  CHECK_THAT(parse_error(bad), Catch::Contains("offset 16: metadata count 1152921504606846976 is impossible"));
  bad = b;
  put_at<uint64_t>(bad, 8, uint64_t(-1));
  CHECK_THAT(parse_error(bad), Catch::Contains("offset 8: tensor count 18446744073709551615 is impossible"));
  bad = b;
  put_at<uint64_t>(bad, 8, 100);  // plausible for the header, too many for the bytes after the metadata
  CHECK_THAT(parse_error(bad), Catch::Contains("tensor count 100 is impossible"));
}

TEST_CASE("gguf: metadata errors name the key and offset", "[gguf]") {
  GgufBuilder::Layout lay;
  GgufBuilder g = sample_builder();
  std::vector<uint8_t> b = g.build(&lay);

  std::vector<uint8_t> bad = b;  // key length far past the end
  put_at<uint64_t>(bad, lay.kv_at[1], uint64_t(1) << 62);
  CHECK_THAT(parse_error(bad),
             Catch::Contains(strformat("offset %zu: metadata entry 1: key: length 4611686018427387904 "
                                       "exceeds the",
                                       lay.kv_at[1])));

  bad = b;  // value type 13 does not exist; the entry's key is "t.u8" (4 bytes)
  put_at<uint32_t>(bad, lay.kv_at[1] + 8 + 4, 13);
  CHECK_THAT(parse_error(bad),
             Catch::Contains(strformat("offset %zu: metadata 't.u8': unknown value type 13", lay.kv_at[1] + 12)));

  bad = b;  // "general.architecture" string value length
  size_t value_at = lay.kv_at[0] + 8 + 20 + 4;
  put_at<uint64_t>(bad, value_at, 1000000);
  CHECK_THAT(parse_error(bad),
             Catch::Contains("metadata 'general.architecture': string value: length 1000000 exceeds"));

  GgufBuilder arr;
  {
    std::vector<uint8_t> v;
    put<uint32_t>(v, uint32_t(GgufValueType::U32));
    put<uint64_t>(v, uint64_t(1) << 61);  // 2^61 u32 elements
    arr.kv("huge", uint32_t(GgufValueType::Array), v);
  }
  CHECK_THAT(parse_error(arr.build()),
             Catch::Contains("metadata 'huge': array of 2305843009213693952 u32 needs at least 4 "
                             "bytes per element"));

  GgufBuilder strs;
  strs.kv_strings("tokens", {"a", "b", "c"});
  std::vector<uint8_t> sb = strs.build();
  put_at<uint64_t>(sb, sb.size() - 9, 99);  // length of the last string, "c"
  CHECK_THAT(parse_error(sb), Catch::Contains("metadata 'tokens': array element [2]: length 99 exceeds"));

  GgufBuilder dup;
  dup.kv_string("a", "x");
  dup.kv_string("a", "y");
  CHECK_THAT(parse_error(dup.build()), Catch::Contains("metadata 'a': duplicate key"));

  GgufBuilder flag;
  flag.kv_scalar<uint8_t>("b", GgufValueType::Bool, 2);
  CHECK_THAT(parse_error(flag.build()), Catch::Contains("metadata 'b': bool value 2 is neither 0 nor 1"));

  GgufBuilder deep;  // arrays nested 20 deep
  {
    std::vector<uint8_t> v;
    for (int d = 0; d < 20; d++) {
      put<uint32_t>(v, uint32_t(GgufValueType::Array));
      put<uint64_t>(v, 1);
    }
    put<uint32_t>(v, uint32_t(GgufValueType::U8));
    put<uint64_t>(v, 0);
    deep.kv("deep", uint32_t(GgufValueType::Array), v);
  }
  CHECK_THAT(parse_error(deep.build()), Catch::Contains("metadata 'deep': arrays nested deeper than 8 levels"));

  GgufBuilder empty_key;
  empty_key.kv_string("", "x");
  CHECK_THAT(parse_error(empty_key.build()), Catch::Contains("metadata entry 0: empty key"));
}

TEST_CASE("gguf: tensor info errors name the tensor and offset", "[gguf]") {
  auto one = [](std::vector<uint64_t> ne, GgmlType type, size_t bytes) {
    GgufBuilder g;
    g.tensor("w", std::move(ne), type, std::vector<uint8_t>(bytes, 0));
    return g;
  };
  CHECK_THAT(parse_error(one({1, 1, 1, 1, 1}, GgmlType::F32, 4).build()),
             Catch::Contains("tensor 'w': n_dims 5 is not in [1, 4]"));
  CHECK_THAT(parse_error(one({4, 0}, GgmlType::F32, 0).build()),
             Catch::Contains("tensor 'w': ne[1] = 0 is not a positive dimension"));
  CHECK_THAT(parse_error(one({4, uint64_t(-3)}, GgmlType::F32, 16).build()),
             Catch::Contains("tensor 'w': ne[1] = -3 is not a positive dimension"));
  CHECK_THAT(parse_error(one({uint64_t(1) << 32, uint64_t(1) << 32}, GgmlType::F32, 16).build()),
             Catch::Contains("tensor 'w': element count overflows int64 at ne[1]"));
  CHECK_THAT(parse_error(one({48, 2}, GgmlType::Q4_1, 60).build()),
             Catch::Contains("tensor 'w': row length ne[0] = 48 is not a multiple of the q4_1 block size 32"));

  GgufBuilder::Layout lay;
  std::vector<uint8_t> b = one({8}, GgmlType::F32, 32).build(&lay);
  std::vector<uint8_t> bad = b;
  put_at<uint32_t>(bad, lay.tensor_offset_at[0] - 4, 99);
  CHECK_THAT(parse_error(bad), Catch::Contains(strformat("test.gguf: offset %zu: tensor 'w': unknown ggml type 99",
                                                         lay.tensor_offset_at[0] - 4)));

  bad = b;
  put_at<uint64_t>(bad, lay.tensor_offset_at[0], 32);
  std::string want = strformat("test.gguf: offset %zu: tensor 'w': data [%zu, %zu) past end of file (size %zu)",
                               lay.tensor_offset_at[0], lay.data_at + 32, lay.data_at + 64, b.size());
  CHECK(parse_error(bad) == want);

  bad = b;
  put_at<uint64_t>(bad, lay.tensor_offset_at[0], 8);
  CHECK_THAT(parse_error(bad), Catch::Contains("tensor 'w': data offset 8 is not a multiple of the alignment 32"));

  bad = b;
  put_at<uint64_t>(bad, lay.tensor_offset_at[0], uint64_t(-32));
  CHECK_THAT(parse_error(bad), Catch::Contains("tensor 'w': data at") && Catch::Contains("overflows"));

  // A tensor whose data runs into the next one's.
  GgufBuilder two;
  two.tensor("a", {16}, GgmlType::F32, std::vector<uint8_t>(64, 0));
  two.tensor("b", {8}, GgmlType::F32, std::vector<uint8_t>(32, 0));
  GgufBuilder::Layout lay2;
  std::vector<uint8_t> tb = two.build(&lay2);
  REQUIRE(parse(tb).ok());
  put_at<uint64_t>(tb, lay2.tensor_offset_at[1], 32);
  CHECK_THAT(parse_error(tb), Catch::Contains("tensor 'b': data [") && Catch::Contains("overlaps tensor 'a'"));

  GgufBuilder same;
  same.tensor("w", {8}, GgmlType::F32, std::vector<uint8_t>(32, 0));
  same.tensor("w", {8}, GgmlType::F32, std::vector<uint8_t>(32, 0));
  CHECK_THAT(parse_error(same.build()), Catch::Contains("tensor 'w': duplicate tensor name"));

  GgufBuilder noname;
  noname.tensor("", {8}, GgmlType::F32, std::vector<uint8_t>(32, 0));
  CHECK_THAT(parse_error(noname.build()), Catch::Contains("tensor entry 0: empty name"));
}

TEST_CASE("gguf: open maps a file and keeps it mapped while any copy lives", "[gguf]") {
  std::vector<uint8_t> b = sample_builder().build();
  std::string path =
      (std::filesystem::temp_directory_path() / strformat("troupe_gguf_test_%d.gguf", int(getpid()))).string();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  }
  std::optional<GgufFile> copy;
  {
    Expected<GgufFile> f = GgufFile::open(path);
    REQUIRE(f.ok());
    CHECK(f->name() == path);
    copy = *f;
  }
  std::remove(path.c_str());
  CHECK(values(copy->dequantize("w.f32").value())[5] == 0.25f);

  Expected<GgufFile> missing = GgufFile::open(path);
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error().message, Catch::Contains(path + ": cannot open: No such file or directory"));
  Expected<GgufFile> dir = GgufFile::open(std::filesystem::temp_directory_path().string());
  REQUIRE_FALSE(dir.ok());
  CHECK_THAT(dir.error().message, Catch::Contains("not a regular file"));
}
