#pragma once
// Helpers shared by the CPU kernels (internal to ops/cpu): a vectorizable exp and
// sigmoid, and sums in a fixed order.
//
// Determinism: every reduction here splits its input into kLanes interleaved partial
// sums and combines them by a fixed tree, so a result depends only on the data, never on
// thread count, vector width or pointer alignment (the build uses -ffp-contract=off, so
// the compiler does not fuse or reorder these operations either).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace troupe::ops::cpu {

// Partial sums per reduction: 16 floats = one AVX-512 register or two AVX2 registers.
constexpr int kLanes = 16;

// Adds lanes pairwise (8+8, 4+4, 2+2, 1+1): a fixed order.
template <class Acc>
inline Acc combine_lanes(Acc* acc) {
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

// sum_{i < n} term(i), accumulated in Acc (float or double) over kLanes interleaved lanes.
template <class Acc = float, class Term>
inline Acc reduce_sum(int64_t n, Term term) {
  Acc acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd  // lanes are independent: this vectorizes without reordering any sum
    for (int l = 0; l < kLanes; l++) acc[l] += Acc(term(i + l));
  }
  for (int l = 0; i + l < n; l++) acc[l] += Acc(term(i + l));
  return combine_lanes(acc);
}

// max_{i < n} x[i] (-inf for n = 0). NaN elements are skipped; callers that
// exponentiate x - max still turn a NaN input into a NaN result.
inline float reduce_max(const float* __restrict x, int64_t n) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; l++) acc[l] = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  }
  for (int l = 0; i + l < n; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  float m = acc[0];
  for (int l = 1; l < kLanes; l++) m = acc[l] > m ? acc[l] : m;
  return m;
}

// exp(x) in plain arithmetic so that loops calling it vectorize (glibc's expf only does
// without -ffast-math). Cephes' expf: x = n*ln2 + r with |r| <= ln2/2 (ln2 split in two
// for an exact reduction), exp(r) by a degree-7 polynomial, 2^n put into the exponent
// bits. Relative error under 2e-7 for x in [-87.3, 88.3]; below that it returns 0 (the
// true value is subnormal), NaN stays NaN, x > 88.72 gives inf, and x in (88.38, 88.72]
// saturates at exp(88.38). The kernels only call it with x <= 0.
inline float exp_fast(float x) {
  constexpr float kLo = -87.33654f, kHi = 88.37626f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = std::min(std::max(x, kLo), kHi);
  const float t = xc * kLog2e + kShift;  // low mantissa bits of t hold n = round(xc / ln2)
  const float n = t - kShift;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n: shifting t's bits by 23 keeps only n (mod 2^9) in the exponent field.
  const uint32_t bits = (std::bit_cast<uint32_t>(t) << 23) + (127u << 23);
  const float y = p * std::bit_cast<float>(bits);
  return x < kLo ? 0.0f : (x > 88.72284f ? INFINITY : y);
}

// sigmoid(x) = 1 / (1 + exp(-x)), from e = exp(-|x|) <= 1 so nothing overflows. Also
// returns 1 - sigmoid(x) = sigmoid(-x) without cancellation, which the backward passes use.
struct Sigmoid {
  float s, one_minus_s;
};
inline Sigmoid sigmoid_fast(float x) {
  const float e = exp_fast(-std::fabs(x));
  const float big = 1.0f / (1.0f + e);  // sigmoid(|x|)
  const float small = e * big;          // sigmoid(-|x|)
  return x >= 0.0f ? Sigmoid{big, small} : Sigmoid{small, big};
}

}  // namespace troupe::ops::cpu
