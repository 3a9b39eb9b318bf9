#include "core/safetensors.h"

#include <cstdio>
#include <filesystem>

#include "test_util.h"

using namespace troupe;

TEST_CASE("safetensors written by Python's safetensors read back exactly", "[safetensors]") {
  auto f = SafetensorsFile::open(test::fixture_path("safetensors_small.safetensors"));
  REQUIRE(f.ok());
  CHECK_THAT(f->metadata().at("made_by"), Catch::StartsWith("safetensors "));
  CHECK(f->tensor("f32")->to_vector() == std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f});
  CHECK(f->tensor("f32")->shape() == Shape({2, 3}));
  CHECK(f->tensor("bf16")->to_vector() == std::vector<float>{1.5f, -2.0f, 0.25f});
  CHECK(f->tensor("f16")->to_vector() == std::vector<float>{0.5f, -3.0f});
  CHECK(f->tensor("i32")->data<int32_t>()[1] == -2);
  CHECK(f->tensor("i64")->data<int64_t>()[0] == (int64_t(1) << 40));
  CHECK(f->tensor("empty")->numel() == 0);
  CHECK_THAT(f->tensor("nope").error().message, Catch::Contains("no tensor named 'nope'"));
}

TEST_CASE("safetensors round trip through the atomic writer", "[safetensors]") {
  auto dir = std::filesystem::temp_directory_path() / "troupe_st_test";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "w.safetensors").string();
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor at = a.transpose(0, 1);  // non-contiguous: written densely
  REQUIRE(write_safetensors(path, {{"a", a}, {"at", at}, {"h", a.to(DType::BF16)}}, {{"step", "7"}}).ok());
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  auto f = SafetensorsFile::open(path);
  REQUIRE(f.ok());
  CHECK(f->metadata().at("step") == "7");
  CHECK(f->tensor("at")->to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(f->tensor("h")->dtype() == DType::BF16);
  CHECK(f->tensor("a")->to_vector() == a.to_vector());
  // Writing into a missing directory fails cleanly and leaves nothing behind.
  auto bad = write_safetensors((dir / "no/such/dir.safetensors").string(), {{"a", a}});
  CHECK_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Catch::Contains("cannot create"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("malformed safetensors are rejected with the field at fault", "[safetensors]") {
  auto make = [](const std::string& header, size_t data_bytes) {
    std::string s(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; i++) s[size_t(i)] = char(n >> (8 * i));
    return s + header + std::string(data_bytes, '\0');
  };
  auto err = [](const std::string& bytes) {
    auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.st");
    REQUIRE_FALSE(f.ok());
    return f.error().message;
  };
  CHECK_THAT(err("abc"), Catch::Contains("shorter than the 8-byte header length"));
  CHECK_THAT(err(make("{}", 0).substr(0, 9)), Catch::Contains("runs past the end"));
  CHECK_THAT(err(make("{\"a\":", 0)), Catch::Contains("not valid JSON"));
  CHECK_THAT(err(make("[1]", 0)), Catch::Contains("not a JSON object"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8)),
             Catch::Contains("tensor 'a': dtype: 'F64' is not one of"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8)),
             Catch::Contains("tensor 'a': data_offsets: 4 bytes, but shape (2) x F32 needs 8"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
             Catch::Contains("past the end of the data section"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)),
             Catch::Contains("begin 8 > end 0"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0)),
             Catch::Contains("non-negative integers"));
  CHECK_THAT(
      err(make(
          R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
          16)),
      Catch::Contains("tensors 'a' and 'b' overlap"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4)),
             Catch::Contains("unknown field 'extra'"));
  CHECK_THAT(err(make(R"({"__metadata__":{"k":1}})", 0)), Catch::Contains("__metadata__.k: expected a string"));
  // numel x 4 wraps to 0 in 64 bits: must not pass as an empty tensor.
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[1099511627776,4194304],"data_offsets":[0,0]}})", 0)),
             Catch::Contains("tensor 'a': shape (1099511627776, 4194304) x F32 needs more than 2^64 bytes"));
  CHECK_THAT(
      err(make(
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8)),
      Catch::Contains("header names 'a' twice"));
  CHECK_THAT(err(make(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", 4)),
             Catch::Contains("data_offsets: expected [begin, end]"));
  CHECK_THAT(err(make(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)), Catch::Contains("dtype: missing"));
  std::string huge(8, '\xff');
  CHECK_THAT(err(huge + "{}"), Catch::Contains("exceeds the limit"));
  // Every truncation of a valid file is an error, never a crash.
  std::string good = encode_safetensors({{"a", Tensor::from_vector({1, 2, 3}, {3})}}, {{"k", "v"}});
  for (size_t n = 0; n < good.size(); n++) {
    auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(good.data()), n, "cut.st");
    CHECK_FALSE(f.ok());
  }
  CHECK(SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "ok.st").ok());
}
