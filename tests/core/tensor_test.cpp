#include "core/tensor.h"

#include "test_util.h"

using namespace troupe;

TEST_CASE("tensor views share storage and slices index correctly", "[tensor]") {
  Tensor t = Tensor::empty({2, 3, 4});
  for (int i = 0; i < 24; i++) t.data<float>()[i] = float(i);
  CHECK(t.is_contiguous());
  Tensor s = t.slice(1, 1, 3);  // (2, 2, 4)
  CHECK(s.shape() == Shape({2, 2, 4}));
  CHECK_FALSE(s.is_contiguous());
  std::vector<float> v = s.to_vector();
  CHECK(v[0] == 4.0f);   // t[0,1,0]
  CHECK(v[8] == 16.0f);  // t[1,1,0]
  Tensor r = t.view({6, 4});
  CHECK(r.data<float>() == t.data<float>());
  CHECK(t.use_count() == 3);
  Tensor tr = t.view({6, 4}).transpose(0, 1).contiguous();  // (4, 6)
  CHECK(tr.data<float>()[1] == 4.0f);
  CHECK(tr.data<float>()[6] == 1.0f);
  CHECK(t[1].shape() == Shape({3, 4}));
  CHECK(t[1].to_vector()[0] == 12.0f);
}

TEST_CASE("tensor errors name the problem", "[tensor]") {
  Tensor t = Tensor::empty({2, 3});
  CHECK_THROWS_WITH(t.view({4, 2}), Catch::Contains("changes the element count"));
  CHECK_THROWS_WITH(t.slice(1, 2, 5), Catch::Contains("slice [2, 5)"));
  CHECK_THROWS_WITH(t.transpose(0, 1).view({6}), Catch::Contains("non-contiguous"));
}

TEST_CASE("bf16 and f16 conversions round to nearest even", "[dtype]") {
  CHECK(bf16_to_f32(f32_to_bf16(1.0f)) == 1.0f);
  CHECK(bf16_to_f32(f32_to_bf16(3.140625f)) == 3.140625f);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (1.0).
  CHECK(bf16_to_f32(f32_to_bf16(1.00390625f)) == 1.0f);
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    CHECK(f16_to_f32(f32_to_f16(f)) == f);
  CHECK(f32_to_f16(1e6f) == 0x7c00);  // overflow to inf
  Tensor t = Tensor::from_vector({1.5f, -2.0f, 0.25f}, {3});
  CHECK(t.to(DType::BF16).to(DType::F32).to_vector() == std::vector<float>{1.5f, -2.0f, 0.25f});
  CHECK(t.to(DType::F16).to_vector() == std::vector<float>{1.5f, -2.0f, 0.25f});
}
