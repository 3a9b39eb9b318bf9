// Causal self-attention with grouped-query heads on the GPU, FlashAttention-2 style, f32.
// q (B, T, NH, HS), k/v (B, T, NKV, HS), out (B, T, NH, HS), lse (B, NH, T).
// Query head h reads key/value head h / (NH / NKV); scores are scaled by 1/sqrt(HS).
//
// Tiles are kTile = 64 queries x 64 keys, 256 threads. Thread (ty, tx) = (tid / 16,
// tid % 16) holds a 4 x 4 block of a score tile, rows ty*4 + r, columns tx + 16c, and the
// same rows of the output tile, columns tx + 16j (HSP / 16 of them, HSP = HS rounded up
// to 32, 64 or 128). The 16 threads of a row are 16 lanes of one warp, so row max and
// row sum are shuffles; tiles sit in shared memory with rows padded by one float, so
// that 16 threads reading 16 rows hit 16 banks.
//
// Forward: a block per (query tile, head, batch) walks the key tiles up to the diagonal
// with an online softmax (running max m and sum l per row, in log2 units so that exp2
// does the exponentials), keeping O in registers: memory O(kTile * HS) per block, never
// the (T, T) matrix. lse = ln(sum exp(scores)) is saved.
//
// Backward, without atomics: D = rowsum(dout * out) first. Then one kernel per key tile
// (of one kv head) recomputes S^T and dP^T for every query tile at or after the diagonal
// and every query head of the group, and owns dK, dV of its keys; a second kernel per
// query tile recomputes S and dP for the key tiles up to the diagonal and owns dQ of its
// queries. Each output float is written by one thread of one block: the same bits on
// every run. The recomputation costs 7 tile products per tile pair instead of the 5 of
// a single kernel with atomic dQ.

#include <stdexcept>
#include <string>

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kTile = 64;        // queries and keys per tile (square: the diagonal logic needs it)
constexpr int kThreads = 256;    // 16 x 16 threads, 4 x 4 score elements each
constexpr int kPLd = kTile + 1;  // row stride of a score tile in shared memory
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HSP>
struct Dims {
  static constexpr int LD = HSP + 1;   // row stride of a (kTile, HSP) tile in shared memory
  static constexpr int NJ = HSP / 16;  // output columns per thread
  static constexpr int kTileFloats = kTile * LD;
  static constexpr int kScoreFloats = kTile * kPLd;
};

// dst (kTile, HSP) = rows [r0, r0 + kTile) of src (row stride `stride`), zero past T or HS.
template <int HSP>
__device__ inline void load_tile(float* dst, const float* src, int64_t stride, int r0, int T, int HS) {
  for (int idx = threadIdx.x; idx < kTile * HSP; idx += kThreads) {
    const int r = idx / HSP, d = idx % HSP;
    const int row = r0 + r;
    dst[r * Dims<HSP>::LD + d] = (row < T && d < HS) ? src[int64_t(row) * stride + d] : 0.0f;
  }
}

// s[r][c] = sum_d A[ty*4 + r][d] * Bm[tx + 16c][d]: a 4 x 4 block of A Bm^T.
template <int HSP>
__device__ inline void tile_abt(float (&s)[4][4], const float* A, const float* Bm, int ty, int tx) {
  constexpr int LD = Dims<HSP>::LD;
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int c = 0; c < 4; c++) s[r][c] = 0.0f;
#pragma unroll 8
  for (int d = 0; d < HSP; d++) {
    float a[4], b[4];
#pragma unroll
    for (int r = 0; r < 4; r++) a[r] = A[(ty * 4 + r) * LD + d];
#pragma unroll
    for (int c = 0; c < 4; c++) b[c] = Bm[(tx + 16 * c) * LD + d];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
      for (int c = 0; c < 4; c++) s[r][c] = fmaf(a[r], b[c], s[r][c]);
  }
}

// Two products sharing the row block: s1 = A1 B1^T, s2 = A2 B2^T.
template <int HSP>
__device__ inline void tile_abt2(float (&s1)[4][4], float (&s2)[4][4], const float* A1, const float* B1,
                                 const float* A2, const float* B2, int ty, int tx) {
  constexpr int LD = Dims<HSP>::LD;
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int c = 0; c < 4; c++) s1[r][c] = s2[r][c] = 0.0f;
#pragma unroll 4
  for (int d = 0; d < HSP; d++) {
    float a1[4], b1[4], a2[4], b2[4];
#pragma unroll
    for (int r = 0; r < 4; r++) {
      a1[r] = A1[(ty * 4 + r) * LD + d];
      a2[r] = A2[(ty * 4 + r) * LD + d];
    }
#pragma unroll
    for (int c = 0; c < 4; c++) {
      b1[c] = B1[(tx + 16 * c) * LD + d];
      b2[c] = B2[(tx + 16 * c) * LD + d];
    }
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        s1[r][c] = fmaf(a1[r], b1[c], s1[r][c]);
        s2[r][c] = fmaf(a2[r], b2[c], s2[r][c]);
      }
  }
}

// acc[r][j] += sum_k P[ty*4 + r][k] * X[k][tx + 16j]: P (kTile, kTile) from shared
// memory (stride kPLd), X (kTile, HSP).
template <int HSP>
__device__ inline void tile_px(float (&acc)[4][Dims<HSP>::NJ], const float* P, const float* X, int ty, int tx) {
  constexpr int LD = Dims<HSP>::LD, NJ = Dims<HSP>::NJ;
#pragma unroll 4
  for (int k = 0; k < kTile; k++) {
    float p[4], x[NJ];
#pragma unroll
    for (int r = 0; r < 4; r++) p[r] = P[(ty * 4 + r) * kPLd + k];
#pragma unroll
    for (int j = 0; j < NJ; j++) x[j] = X[k * LD + tx + 16 * j];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
      for (int j = 0; j < NJ; j++) acc[r][j] = fmaf(p[r], x[j], acc[r][j]);
  }
}

// Reductions over the 16 threads (lanes) that share a row.
__device__ inline float row_max16(float v) {
  for (int o = 8; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float row_sum16(float v) {
  for (int o = 8; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int HSP>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v, int T, int NH,
                             int NKV, int HS, float scale_log2) {
  using D = Dims<HSP>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + D::kTileFloats;
  float* Vs = Ks + D::kTileFloats;
  float* Ps = Vs + D::kTileFloats;
  const int qb = gridDim.x - 1 - blockIdx.x;  // the longest rows (last query tiles) first, for balance
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (NH / NKV);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  const int q0 = qb * kTile;
  const int64_t qs = int64_t(NH) * HS, kvs = int64_t(NKV) * HS;  // row strides
  const float* Kb = k + int64_t(b) * T * kvs + int64_t(kvh) * HS;
  const float* Vb = v + int64_t(b) * T * kvs + int64_t(kvh) * HS;

  load_tile<HSP>(Qs, q + int64_t(b) * T * qs + int64_t(h) * HS, qs, q0, T, HS);
  float o[4][D::NJ], m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int j = 0; j < D::NJ; j++) o[r][j] = 0.0f;
  }
  for (int kb = 0; kb <= qb; kb++) {
    const int k0 = kb * kTile;
    __syncthreads();  // the previous tile's Ks, Vs, Ps are no longer read
    load_tile<HSP>(Ks, Kb, kvs, k0, T, HS);
    load_tile<HSP>(Vs, Vb, kvs, k0, T, HS);
    __syncthreads();
    float s[4][4];
    tile_abt<HSP>(s, Qs, Ks, ty, tx);
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int qi = q0 + ty * 4 + r;
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int kj = k0 + tx + 16 * c;
        s[r][c] = (kj <= qi && kj < T) ? s[r][c] * scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[r][c]);
      }
      // online softmax: m_new = max(m, max_j s), p = 2^(s - m_new), l = l * 2^(m - m_new) + sum_j p,
      // o *= 2^(m - m_new). A row that has seen no key yet keeps m = -inf (then p = 0).
      const float m_new = fmaxf(m[r], row_max16(mx));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m[r] - m_use);
      float rs = 0.0f;
#pragma unroll
      for (int c = 0; c < 4; c++) {
        s[r][c] = exp2f(s[r][c] - m_use);
        rs += s[r][c];
        Ps[(ty * 4 + r) * kPLd + tx + 16 * c] = s[r][c];
      }
      l[r] = l[r] * alpha + row_sum16(rs);
      m[r] = m_new;
#pragma unroll
      for (int j = 0; j < D::NJ; j++) o[r][j] *= alpha;
    }
    __syncthreads();
    // O (queries, HS) += P (queries, keys) @ V (keys, HS)
    tile_px<HSP>(o, Ps, Vs, ty, tx);
  }
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const int qi = q0 + ty * 4 + r;
    if (qi >= T) continue;
    const float inv = 1.0f / l[r];
    float* orow = out + (int64_t(b) * T + qi) * qs + int64_t(h) * HS;
#pragma unroll
    for (int j = 0; j < D::NJ; j++) {
      const int d = tx + 16 * j;
      if (d < HS) orow[d] = o[r][j] * inv;
    }
    if (tx == 0) lse[(int64_t(b) * NH + h) * T + qi] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// D[b, h, t] = dout[b, t, h, :] . out[b, t, h, :], one warp per (b, t, h).
__global__ void attention_d_kernel(float* Dout, const float* dout, const float* out, int B, int T, int NH, int HS) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / kWarp) + threadIdx.x / kWarp;  // (b, t, h) row-major
  const int lane = threadIdx.x % kWarp;
  if (row >= int64_t(B) * T * NH) return;
  const float* dy = dout + row * HS;
  const float* y = out + row * HS;
  float s = 0.0f;
  for (int d = lane; d < HS; d += kWarp) s += dy[d] * y[d];
  s = warp_sum(s);
  const int h = int(row % NH), t = int((row / NH) % T), b = int(row / NH / T);
  if (lane == 0) Dout[(int64_t(b) * NH + h) * T + t] = s;
}

// dK, dV of one key tile of one kv head, summed over the query heads of its group and
// the query tiles at or after the diagonal.
template <int HSP>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                   const float* v, const float* lse, const float* Dsum, int T, int NH, int NKV, int HS,
                                   float scale, float scale_log2) {
  using D = Dims<HSP>;
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + D::kTileFloats;
  float* Qs = Vs + D::kTileFloats;
  float* dOs = Qs + D::kTileFloats;
  float* Pt = dOs + D::kTileFloats;   // P^T (keys, queries)
  float* dSt = Pt + D::kScoreFloats;  // dS^T (keys, queries)
  float* lse_s = dSt + D::kScoreFloats;
  float* D_s = lse_s + kTile;
  const int kb = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int group = NH / NKV;
  const int nqb = (T + kTile - 1) / kTile;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  const int k0 = kb * kTile;
  const int64_t qs = int64_t(NH) * HS, kvs = int64_t(NKV) * HS;

  load_tile<HSP>(Ks, k + int64_t(b) * T * kvs + int64_t(kvh) * HS, kvs, k0, T, HS);
  load_tile<HSP>(Vs, v + int64_t(b) * T * kvs + int64_t(kvh) * HS, kvs, k0, T, HS);
  float dK[4][D::NJ], dV[4][D::NJ];
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int j = 0; j < D::NJ; j++) dK[r][j] = dV[r][j] = 0.0f;

  for (int g = 0; g < group; g++) {
    const int h = kvh * group + g;
    const float* Qh = q + int64_t(b) * T * qs + int64_t(h) * HS;
    const float* dOh = dout + int64_t(b) * T * qs + int64_t(h) * HS;
    const float* lse_h = lse + (int64_t(b) * NH + h) * T;
    const float* D_h = Dsum + (int64_t(b) * NH + h) * T;
    for (int qb = kb; qb < nqb; qb++) {
      const int q0 = qb * kTile;
      __syncthreads();  // the previous tile's Qs, dOs, Pt, dSt are no longer read
      load_tile<HSP>(Qs, Qh, qs, q0, T, HS);
      load_tile<HSP>(dOs, dOh, qs, q0, T, HS);
      if (threadIdx.x < kTile) {
        const int qi = q0 + threadIdx.x;
        lse_s[threadIdx.x] = qi < T ? lse_h[qi] * kLog2e : 0.0f;
        D_s[threadIdx.x] = qi < T ? D_h[qi] : 0.0f;
      }
      __syncthreads();
      // recompute S^T = K Q^T and dP^T = V dO^T (in the forward pass out = P V, so dP = dO V^T)
      float st[4][4], dpt[4][4];
      tile_abt2<HSP>(st, dpt, Ks, Qs, Vs, dOs, ty, tx);
      // P = exp(S * scale - lse); dS = P * (dP - D), the softmax backward with
      // D = rowsum(P * dP) = rowsum(dO * O); masked entries are 0. (scale goes on dK at the end)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int kj = k0 + ty * 4 + r;
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int qc = tx + 16 * c, qi = q0 + qc;
          const bool visible = kj <= qi && qi < T && kj < T;
          const float p = visible ? exp2f(st[r][c] * scale_log2 - lse_s[qc]) : 0.0f;
          Pt[(ty * 4 + r) * kPLd + qc] = p;
          dSt[(ty * 4 + r) * kPLd + qc] = visible ? p * (dpt[r][c] - D_s[qc]) : 0.0f;
        }
      }
      __syncthreads();
      // dV (keys, HS) += P^T (keys, queries) @ dO (queries, HS); dK += dS^T @ Q
      tile_px<HSP>(dV, Pt, dOs, ty, tx);
      tile_px<HSP>(dK, dSt, Qs, ty, tx);
    }
  }
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const int kj = k0 + ty * 4 + r;
    if (kj >= T) continue;
    float* dkrow = dk + (int64_t(b) * T + kj) * kvs + int64_t(kvh) * HS;
    float* dvrow = dv + (int64_t(b) * T + kj) * kvs + int64_t(kvh) * HS;
#pragma unroll
    for (int j = 0; j < D::NJ; j++) {
      const int d = tx + 16 * j;
      if (d < HS) {
        dkrow[d] += dK[r][j] * scale;  // the scores were S * scale
        dvrow[d] += dV[r][j];
      }
    }
  }
}

// dQ of one query tile of one head, summed over the key tiles up to the diagonal.
template <int HSP>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                 const float* lse, const float* Dsum, int T, int NH, int NKV, int HS, float scale,
                                 float scale_log2) {
  using D = Dims<HSP>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + D::kTileFloats;
  float* Ks = dOs + D::kTileFloats;
  float* Vs = Ks + D::kTileFloats;
  float* dS = Vs + D::kTileFloats;  // dS (queries, keys)
  float* lse_s = dS + D::kScoreFloats;
  float* D_s = lse_s + kTile;
  const int qb = gridDim.x - 1 - blockIdx.x;  // the longest rows first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (NH / NKV);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  const int q0 = qb * kTile;
  const int64_t qs = int64_t(NH) * HS, kvs = int64_t(NKV) * HS;
  const float* Kb = k + int64_t(b) * T * kvs + int64_t(kvh) * HS;
  const float* Vb = v + int64_t(b) * T * kvs + int64_t(kvh) * HS;

  load_tile<HSP>(Qs, q + int64_t(b) * T * qs + int64_t(h) * HS, qs, q0, T, HS);
  load_tile<HSP>(dOs, dout + int64_t(b) * T * qs + int64_t(h) * HS, qs, q0, T, HS);
  if (threadIdx.x < kTile) {
    const int qi = q0 + threadIdx.x;
    lse_s[threadIdx.x] = qi < T ? lse[(int64_t(b) * NH + h) * T + qi] * kLog2e : 0.0f;
    D_s[threadIdx.x] = qi < T ? Dsum[(int64_t(b) * NH + h) * T + qi] : 0.0f;
  }
  float dQ[4][D::NJ];
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int j = 0; j < D::NJ; j++) dQ[r][j] = 0.0f;
  for (int kb = 0; kb <= qb; kb++) {
    const int k0 = kb * kTile;
    __syncthreads();  // the previous tile's Ks, dS are no longer read (and lse_s, D_s are written)
    load_tile<HSP>(Ks, Kb, kvs, k0, T, HS);
    load_tile<HSP>(Vs, Vb, kvs, k0, T, HS);
    __syncthreads();
    // recompute S = Q K^T and dP = dO V^T
    float s[4][4], dp[4][4];
    tile_abt2<HSP>(s, dp, Qs, Ks, dOs, Vs, ty, tx);
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int qr = ty * 4 + r, qi = q0 + qr;
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int kj = k0 + tx + 16 * c;
        const bool visible = kj <= qi && qi < T && kj < T;
        const float p = visible ? exp2f(s[r][c] * scale_log2 - lse_s[qr]) : 0.0f;
        dS[qr * kPLd + tx + 16 * c] = visible ? p * (dp[r][c] - D_s[qr]) : 0.0f;
      }
    }
    __syncthreads();
    // dQ (queries, HS) += dS (queries, keys) @ K (keys, HS)
    tile_px<HSP>(dQ, dS, Ks, ty, tx);
  }
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const int qi = q0 + ty * 4 + r;
    if (qi >= T) continue;
    float* dqrow = dq + (int64_t(b) * T + qi) * qs + int64_t(h) * HS;
#pragma unroll
    for (int j = 0; j < D::NJ; j++) {
      const int d = tx + 16 * j;
      if (d < HS) dqrow[d] += dQ[r][j] * scale;
    }
  }
}

void check_shapes(int B, int T, int NH, int NKV, int HS) {
  if (B < 0 || T < 0 || NKV <= 0 || NH % NKV != 0 || HS <= 0 || HS > kMaxAttentionHeadSize)
    throw std::runtime_error("attention: unsupported shape B=" + std::to_string(B) + " T=" + std::to_string(T) +
                             " NH=" + std::to_string(NH) + " NKV=" + std::to_string(NKV) + " HS=" + std::to_string(HS) +
                             " (NH must be a multiple of NKV, 0 < HS <= " + std::to_string(kMaxAttentionHeadSize) +
                             ")");
}

// Raises the kernel's dynamic shared memory limit to `bytes`, checking the device has it.
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, const char* name) {
  int device = 0, limit = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > size_t(limit))
    throw std::runtime_error(std::string("attention: ") + name + " needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, the device allows " + std::to_string(limit));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int HSP>
void forward_launch(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T, int NH,
                    int NKV, int HS, cudaStream_t stream) {
  using D = Dims<HSP>;
  const size_t bytes = sizeof(float) * (3 * D::kTileFloats + D::kScoreFloats);
  allow_shared_memory(attention_forward_kernel<HSP>, bytes, "forward");
  const float scale_log2 = kLog2e / sqrtf(float(HS));
  const dim3 grid(ceil_div(T, kTile), NH, B);
  attention_forward_kernel<HSP><<<grid, kThreads, bytes, stream>>>(out, lse, q, k, v, T, NH, NKV, HS, scale_log2);
  CUDA_CHECK_LAUNCH();
}

template <int HSP>
void backward_launch(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                     const float* lse, const float* Dsum, int B, int T, int NH, int NKV, int HS, cudaStream_t stream) {
  using D = Dims<HSP>;
  const float scale = 1.0f / sqrtf(float(HS));
  const float scale_log2 = kLog2e / sqrtf(float(HS));
  const size_t dkdv_bytes = sizeof(float) * (4 * D::kTileFloats + 2 * D::kScoreFloats + 2 * kTile);
  allow_shared_memory(attention_backward_dkdv_kernel<HSP>, dkdv_bytes, "backward (dk, dv)");
  attention_backward_dkdv_kernel<HSP><<<dim3(ceil_div(T, kTile), NKV, B), kThreads, dkdv_bytes, stream>>>(
      dk, dv, dout, q, k, v, lse, Dsum, T, NH, NKV, HS, scale, scale_log2);
  CUDA_CHECK_LAUNCH();
  const size_t dq_bytes = sizeof(float) * (4 * D::kTileFloats + D::kScoreFloats + 2 * kTile);
  allow_shared_memory(attention_backward_dq_kernel<HSP>, dq_bytes, "backward (dq)");
  attention_backward_dq_kernel<HSP><<<dim3(ceil_div(T, kTile), NH, B), kThreads, dq_bytes, stream>>>(
      dq, dout, q, k, v, lse, Dsum, T, NH, NKV, HS, scale, scale_log2);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T, int NH,
                       int NKV, int HS, cudaStream_t stream) {
  check_shapes(B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  if (HS <= 32)
    forward_launch<32>(out, lse, q, k, v, B, T, NH, NKV, HS, stream);
  else if (HS <= 64)
    forward_launch<64>(out, lse, q, k, v, B, T, NH, NKV, HS, stream);
  else
    forward_launch<128>(out, lse, q, k, v, B, T, NH, NKV, HS, stream);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, int B, int T, int NH, int NKV, int HS,
                        cudaStream_t stream) {
  check_shapes(B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  // D = rowsum(dout * out) = rowsum(P * dP), the softmax backward's correction term
  const int64_t rows = int64_t(B) * T * NH;
  auto* Dsum = static_cast<float*>(scratch(stream, size_t(rows) * sizeof(float)));
  constexpr int kRowsPerBlock = 8;
  attention_d_kernel<<<unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(
      Dsum, dout, out, B, T, NH, HS);
  CUDA_CHECK_LAUNCH();
  if (HS <= 32)
    backward_launch<32>(dq, dk, dv, dout, q, k, v, lse, Dsum, B, T, NH, NKV, HS, stream);
  else if (HS <= 64)
    backward_launch<64>(dq, dk, dv, dout, q, k, v, lse, Dsum, B, T, NH, NKV, HS, stream);
  else
    backward_launch<128>(dq, dk, dv, dout, q, k, v, lse, Dsum, B, T, NH, NKV, HS, stream);
}

}  // namespace troupe::cuda
