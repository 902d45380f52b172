// Causal attention over a layer's KV cache (backend.h AttentionArgs): query/key preparation (split,
// qk RMSNorm, RoPE, cache writes), then an online-softmax pass over the cache positions per (token, head),
// split over positions for decode so that a few heads still fill the GPU.
#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"

namespace uneven::cuda {
namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kPerLane = kMaxHeadDim / 32;  // head values per lane in the attention pass
constexpr int kAttnWarps = 8;

// The chunk's first position: from the buffer when given (a recorded step replays at later positions).
__device__ __forceinline__ int64_t position_of(const AttentionArgs& a) {
  return a.position_value ? int64_t(*a.position_value) : a.position;
}

// Block (t, head) over heads [0, q_heads) (queries) then [q_heads, q_heads + kv_heads) (keys); thread d
// owns element d. Norm, then rotation from the normed values (shared), then the writes.
__global__ void prepare_kernel(AttentionArgs a, AttentionVectors vec) {
  __shared__ float red[32];
  __shared__ float buf[kMaxHeadDim];
  const int64_t t = blockIdx.x, h = blockIdx.y, hd = a.head_dim;
  const int d = threadIdx.x;
  const bool is_q = h < a.q_heads;
  const int64_t kh = h - a.q_heads;
  const float* src = is_q ? a.q_in + (t * a.q_heads + h) * (a.gated ? 2 : 1) * hd : a.k + (t * a.kv_heads + kh) * hd;
  float* dst = is_q ? a.q + (t * a.q_heads + h) * hd : a.k + (t * a.kv_heads + kh) * hd;
  const float* norm = is_q ? vec.q_norm : vec.k_norm;
  float x = d < hd ? src[d] : 0.0f;
  if (norm) {  // block-uniform branch: every thread reaches the barriers
    const float scale = 1.0f / sqrtf(block_sum(x * x, red) / float(hd) + a.eps);
    if (d < hd) x = x * scale * norm[d];
  }
  if (d < hd) buf[d] = x;
  __syncthreads();
  const int64_t half = a.rope_half;
  if (d < 2 * half) {
    if (a.rope_interleaved) {
      const float c = a.cos[t * half + d / 2], s = a.sin[t * half + d / 2];
      x = (d & 1) ? x * c + buf[d - 1] * s : x * c - buf[d + 1] * s;
    } else if (d < half) {
      x = x * a.cos[t * half + d] - buf[d + half] * a.sin[t * half + d];
    } else {
      x = x * a.cos[t * half + d - half] + buf[d - half] * a.sin[t * half + d - half];
    }
  }
  if (d >= hd) return;
  dst[d] = x;
  if (!is_q) {
    const int64_t at = (kh * a.context + position_of(a) + t) * hd + d;
    a.k_cache[at] = x;
    a.v_cache[at] = a.v[(t * a.kv_heads + kh) * hd + d];
  }
}

__device__ __forceinline__ float gate_of(const AttentionArgs& a, int64_t t, int64_t j, int d) {
  return a.gated ? sigmoidf_(a.q_in[(t * a.q_heads + j) * 2 * a.head_dim + a.head_dim + d]) : 1.0f;
}

// Block (head j, token t, split z) over positions [z * chunk, min((z + 1) * chunk, visible)). Each warp
// keeps a running max m, sum l and weighted values acc over its positions; the warps are merged at the
// end. With one split the result goes to out; otherwise (m, l, acc) go to partial[(j * splits + z)].
__global__ void __launch_bounds__(kAttnWarps * 32) attend_kernel(AttentionArgs a, float scale, int64_t chunk,
                                                                 int splits, float* partial) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float wm[kAttnWarps], wl[kAttnWarps];
  __shared__ float wacc[kAttnWarps][kMaxHeadDim];
  const int64_t j = blockIdx.x, t = blockIdx.y, z = blockIdx.z, hd = a.head_dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t kv = (a.q_head_begin + j) / a.group - a.kv_head_begin;
  const float* keys = a.k_cache + kv * a.context * hd;
  const float* values = a.v_cache + kv * a.context * hd;
  const int64_t visible = position_of(a) + t + 1;
  const int64_t p0 = z * chunk, p1 = min(visible, p0 + chunk);  // empty for splits past the visible end
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = a.q[(t * a.q_heads + j) * hd + d];
  __syncthreads();
  float q[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    q[i] = lane + 32 * i < hd ? qs[lane + 32 * i] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t p = p0 + warp; p < p1; p += kAttnWarps) {
    const float* kp = keys + p * hd;
    const float* vp = values + p * hd;
    float s = 0;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i < hd) s = fmaf(q[i], kp[lane + 32 * i], s);
    s = warp_sum(s) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), e = expf(s - m_new);  // corr = 0 on the first position
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i < hd) acc[i] = acc[i] * corr + e * vp[lane + 32 * i];
    m = m_new;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i)
    if (lane + 32 * i < hd) wacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, wm[w]);
  const bool empty = M == -INFINITY;  // no position in this split (only possible with several splits)
  float L = 0;
  if (!empty)
    for (int w = 0; w < kAttnWarps; ++w) L += wl[w] * expf(wm[w] - M);
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0;
    if (!empty)
      for (int w = 0; w < kAttnWarps; ++w) o += wacc[w][d] * expf(wm[w] - M);
    if (splits == 1) {
      a.out[(t * a.q_heads + j) * hd + d] = o / L * gate_of(a, t, j, int(d));
    } else {
      float* part = partial + (j * splits + z) * (hd + 2);
      part[2 + d] = o;
      if (d == 0) {
        part[0] = M;
        part[1] = L;
      }
    }
  }
}

// Merges the splits of one head (count == 1): out = sum_z e^{M_z - M} o_z / sum_z e^{M_z - M} L_z.
__global__ void combine_kernel(AttentionArgs a, int splits, const float* partial) {
  const int64_t j = blockIdx.x, hd = a.head_dim;
  const float* base = partial + j * splits * (hd + 2);
  float M = -INFINITY;
  for (int z = 0; z < splits; ++z) M = fmaxf(M, base[z * (hd + 2)]);
  float L = 0;
  for (int z = 0; z < splits; ++z) L += base[z * (hd + 2) + 1] * expf(base[z * (hd + 2)] - M);
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0;
    for (int z = 0; z < splits; ++z) o += base[z * (hd + 2) + 2 + d] * expf(base[z * (hd + 2)] - M);
    a.out[j * hd + d] = o / L * gate_of(a, 0, j, int(d));
  }
}

}  // namespace

void attention(const AttentionArgs& a, const AttentionVectors& vec, bool for_any_position, cudaStream_t s) {
  if (a.count == 0 || a.q_heads == 0) return;
  if (a.head_dim <= 0 || a.head_dim > kMaxHeadDim)
    fail("CUDA attention: head_dim {} is outside 1..{}", a.head_dim, kMaxHeadDim);
  if (2 * a.rope_half > a.head_dim) fail("CUDA attention: rope over {} of {} values", 2 * a.rope_half, a.head_dim);
  if (a.position + a.count > a.context)
    fail("CUDA attention: positions {}..{} exceed the cache of {}", a.position, a.position + a.count, a.context);
  const unsigned threads = unsigned((a.head_dim + 31) / 32 * 32);
  prepare_kernel<<<dim3(unsigned(a.count), unsigned(a.q_heads + a.kv_heads)), threads, 0, s>>>(a, vec);
  UNEVEN_CUDA_LAUNCHED();

  // Decode: split the positions so that ~2 blocks per SM run even for few heads; the partial results
  // (head_dim + 2 floats per split) live in `scores` (q_heads * context floats).
  const float scale = 1.0f / sqrtf(float(a.head_dim));
  // Recorded for any position: split as if the whole context were visible (splits past the visible end
  // are empty; combine_kernel weighs them zero).
  const int64_t visible = for_any_position ? a.context : a.position + a.count;
  if (for_any_position && !a.position_value) fail("CUDA attention: a recorded step needs position_value");
  int splits = 1;
  if (a.count == 1 && a.scores) {
    const int64_t want = std::max<int64_t>(1, 264 / a.q_heads);
    const int64_t by_len = std::max<int64_t>(1, visible / 64);  // at least 64 positions per split
    const int64_t by_room = std::max<int64_t>(1, a.context / (a.head_dim + 2));
    splits = int(std::min({want, by_len, by_room, int64_t(64)}));
  }
  const int64_t chunk = (visible + splits - 1) / splits;
  attend_kernel<<<dim3(unsigned(a.q_heads), unsigned(a.count), unsigned(splits)), kAttnWarps * 32, 0, s>>>(
      a, scale, chunk, splits, a.scores);
  UNEVEN_CUDA_LAUNCHED();
  if (splits > 1) {
    combine_kernel<<<unsigned(a.q_heads), threads, 0, s>>>(a, splits, a.scores);
    UNEVEN_CUDA_LAUNCHED();
  }
}

}  // namespace uneven::cuda
