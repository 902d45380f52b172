// Causal attention over a layer's KV cache (backend.h AttentionArgs): query/key preparation (split,
// qk RMSNorm, RoPE, cache writes), then for a prompt chunk an online-softmax pass over the cache positions per
// (token, head), for decode a flash-decoding pass per (KV head, split of the positions) shared by the
// head's query heads, merged over the splits by combine_kernel.
#include <algorithm>
#include <cstdint>

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

// Prompt chunks (decode has decode_kernel below; this one is launched with one split).
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

// ---- Decode (count == 1): flash-decoding over (KV head, split) blocks ----
// Block (z, kv, c) takes the local query heads of KV head kv (at most kMaxGroup of them: chunk c of the
// group) over positions [z * chunk, min((z + 1) * chunk, visible)), chunk = ceil(visible / splits) from the
// position in device memory (so a recorded step keeps every split busy at any position). Each K/V row is
// read once per block for all its heads: tiles of kTile positions are copied to shared memory (cp.async,
// double-buffered), then
//  - scores: a warp pass takes 32 / GP positions x GP heads (lanes over head_dim, q in registers) and one
//    reduce-scatter over the lanes leaves the dot product of pair `lane` in lane `lane`;
//  - softmax: warp g keeps head g's running max m and sum l (registers), takes the tile max, then the
//    weights e^{s - m} and the correction e^{m_old - m};
//  - values: warp w accumulates positions w, w + 8, ... of the tile for all heads (lanes over head_dim).
// The warps' accumulators are summed at the end; one split writes out (gated), several write (m, l, acc)
// to partial[(j * splits + z)] for combine_kernel; a split past the visible end writes (-inf, 0, 0).
constexpr int kTile = 32;
constexpr int kDecodeWarps = 8;
constexpr int kMaxGroup = 8;  // query heads per block (a larger group takes several blocks per KV head)
static_assert(kMaxGroup <= kDecodeWarps, "softmax: one warp per head");
static_assert(kTile == 32, "softmax: one lane per position");

__device__ __forceinline__ void copy_async16(float* dst, const float* src) {
#if __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
#else
  *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
#endif
}
__device__ __forceinline__ void copy_async4(float* dst, const float* src) {
#if __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src) : "memory");
#else
  *dst = *src;
#endif
}
__device__ __forceinline__ void copy_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void copy_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// One step of the reduce-scatter over the lanes: 2 * O values per lane become O, lanes with bit O set
// keeping the upper half. After steps 16, 8, 4, 2, 1, v[0] of lane l is the sum over lanes of value l.
template <int O>
__device__ __forceinline__ void scatter_step(float (&v)[32], int lane) {
  const bool up = (lane & O) != 0;
#pragma unroll
  for (int k = 0; k < O; ++k) {
    const float lo = v[k], hi = v[k + O];
    v[k] = (up ? hi : lo) + __shfl_xor_sync(0xffffffffu, up ? lo : hi, O);
  }
}

// Shared floats of decode_kernel for head_dim hd: K and V tiles (two buffers each), weights, corrections.
inline size_t decode_shared_floats(int64_t hd) { return size_t(4 * kTile * hd + kMaxGroup * kTile + kMaxGroup); }

// KPL: head values per lane (head_dim <= 32 * KPL); GP: heads per block rounded up to a power of two.
template <int KPL, int GP>
__global__ void __launch_bounds__(kDecodeWarps * 32) decode_kernel(AttentionArgs a, float scale, int splits,
                                                                   float* partial) {
  extern __shared__ __align__(16) float sm[];
  constexpr int kPairs = 32 / GP;  // positions per score pass
  const int hd = int(a.head_dim);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int z = int(blockIdx.x);
  const int64_t kv = blockIdx.y;
  // Global query heads [first, last) use KV head kv; local head j is global a.q_head_begin + j.
  const int64_t first = (a.kv_head_begin + kv) * a.group + int64_t(blockIdx.z) * kMaxGroup;
  const int64_t last = min((a.kv_head_begin + kv + 1) * a.group, first + kMaxGroup);
  const int64_t j0 = max(first - a.q_head_begin, int64_t(0)), j1 = min(last - a.q_head_begin, a.q_heads);
  if (j0 >= j1) return;  // no local query head here (block-uniform)
  const int G = int(j1 - j0);
  const int64_t visible = position_of(a) + 1;
  const int64_t chunk = (visible + splits - 1) / splits;
  const int64_t p0 = int64_t(z) * chunk, p1 = min(visible, p0 + chunk);
  if (p0 >= p1) {  // past the visible end: an empty partial (only with several splits)
    for (int idx = threadIdx.x; idx < G * (hd + 2); idx += blockDim.x) {
      const int g = idx / (hd + 2), e = idx - g * (hd + 2);
      partial[((j0 + g) * splits + z) * (hd + 2) + e] = e == 0 ? -INFINITY : 0.0f;
    }
    return;
  }
  float* kbuf = sm;                       // [2][kTile][hd]
  float* vbuf = sm + 2 * kTile * hd;      // [2][kTile][hd]
  float* wts = sm + 4 * kTile * hd;       // [kMaxGroup][kTile]: scores, then softmax weights
  float* corr = wts + kMaxGroup * kTile;  // [kMaxGroup]: this tile's correction of the earlier sums
  const float* keys = a.k_cache + kv * a.context * hd;
  const float* values = a.v_cache + kv * a.context * hd;
  const uintptr_t bases = reinterpret_cast<uintptr_t>(a.k_cache) | reinterpret_cast<uintptr_t>(a.v_cache);
  const bool vec4 = (hd & 3) == 0 && (bases & 15) == 0;  // 16-byte copies (rows then start 16-byte aligned)
  auto load_tile = [&](int b, int64_t pt) {
    const int n = int(min(int64_t(kTile), p1 - pt));
    const float* kg = keys + pt * hd;
    const float* vg = values + pt * hd;
    float* kd = kbuf + b * kTile * hd;
    float* vd = vbuf + b * kTile * hd;
    if (vec4) {
      for (int i = threadIdx.x; i < n * hd / 4; i += blockDim.x) {
        copy_async16(kd + 4 * i, kg + 4 * i);
        copy_async16(vd + 4 * i, vg + 4 * i);
      }
    } else {
      for (int i = threadIdx.x; i < n * hd; i += blockDim.x) {
        copy_async4(kd + i, kg + i);
        copy_async4(vd + i, vg + i);
      }
    }
    copy_commit();
  };
  load_tile(0, p0);

  float q[GP][KPL], acc[GP][KPL];
#pragma unroll
  for (int g = 0; g < GP; ++g)
#pragma unroll
    for (int i = 0; i < KPL; ++i) {
      const int d = lane + 32 * i;
      q[g][i] = g < G && d < hd ? a.q[(j0 + g) * hd + d] : 0.0f;
      acc[g][i] = 0.0f;
    }
  float m = -INFINITY, l = 0.0f;  // head `warp` (warps < G)

  int b = 0;
  for (int64_t pt = p0; pt < p1; pt += kTile, b ^= 1) {
    const int n = int(min(int64_t(kTile), p1 - pt));
    // The other buffer was last read before the barrier that ended the previous tile.
    if (pt + kTile < p1) {
      load_tile(b ^ 1, pt + kTile);
      copy_wait<1>();
    } else {
      copy_wait<0>();
    }
    __syncthreads();
    const float* kt = kbuf + b * kTile * hd;
    const float* vt = vbuf + b * kTile * hd;

    // Scores of pairs (position pass * kPairs + lane / GP, head lane % GP).
    for (int pass = warp; pass < kTile / kPairs; pass += kDecodeWarps) {
      float v[32];
#pragma unroll
      for (int pp = 0; pp < kPairs; ++pp) {
        const float* row = kt + (pass * kPairs + pp) * hd;  // rows >= n are stale: their scores are masked
        float kr[KPL];
#pragma unroll
        for (int i = 0; i < KPL; ++i) kr[i] = lane + 32 * i < hd ? row[lane + 32 * i] : 0.0f;
#pragma unroll
        for (int g = 0; g < GP; ++g) {
          float s = 0.0f;
#pragma unroll
          for (int i = 0; i < KPL; ++i) s = fmaf(q[g][i], kr[i], s);
          v[pp * GP + g] = s;
        }
      }
      scatter_step<16>(v, lane);
      scatter_step<8>(v, lane);
      scatter_step<4>(v, lane);
      scatter_step<2>(v, lane);
      scatter_step<1>(v, lane);
      const int g = lane % GP, p = pass * kPairs + lane / GP;
      if (g < G) wts[g * kTile + p] = p < n ? v[0] * scale : -INFINITY;
    }
    __syncthreads();

    // Softmax over the tile: warp g, lane = position.
    if (warp < G) {
      const float s = wts[warp * kTile + lane];
      const float m_new = fmaxf(m, warp_max(s));  // finite: position 0 of the tile is visible
      const float e = s == -INFINITY ? 0.0f : expf(s - m_new);
      wts[warp * kTile + lane] = e;
      const float c = expf(m - m_new);  // 0 on the first tile
      l = l * c + warp_sum(e);
      m = m_new;
      if (lane == 0) corr[warp] = c;
    }
    __syncthreads();

    // Values: warp w over positions w, w + 8, ... of the tile.
#pragma unroll
    for (int g = 0; g < GP; ++g)
      if (g < G) {
        const float c = corr[g];
#pragma unroll
        for (int i = 0; i < KPL; ++i) acc[g][i] *= c;
      }
    for (int p = warp; p < n; p += kDecodeWarps) {
      const float* row = vt + p * hd;
      float vr[KPL];
#pragma unroll
      for (int i = 0; i < KPL; ++i) vr[i] = lane + 32 * i < hd ? row[lane + 32 * i] : 0.0f;
#pragma unroll
      for (int g = 0; g < GP; ++g)
        if (g < G) {
          const float w = wts[g * kTile + p];
#pragma unroll
          for (int i = 0; i < KPL; ++i) acc[g][i] = fmaf(w, vr[i], acc[g][i]);
        }
    }
    __syncthreads();
  }

  // Sum the warps' accumulators (the tiles' space is free: every copy has landed and been read).
  float* wacc = sm;                           // [kDecodeWarps][GP][hd]: <= 64 * hd of the 128 * hd floats
  float* ml = wacc + kDecodeWarps * GP * hd;  // [kMaxGroup][2]: final m, l
#pragma unroll
  for (int g = 0; g < GP; ++g)
    if (g < G)
#pragma unroll
      for (int i = 0; i < KPL; ++i)
        if (lane + 32 * i < hd) wacc[(warp * GP + g) * hd + lane + 32 * i] = acc[g][i];
  if (warp < G && lane == 0) {
    ml[2 * warp] = m;
    ml[2 * warp + 1] = l;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * hd; idx += blockDim.x) {
    const int g = idx / hd, d = idx - g * hd;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) o += wacc[(w * GP + g) * hd + d];
    const int64_t j = j0 + g;
    if (splits == 1) {
      a.out[j * hd + d] = o / ml[2 * g + 1] * gate_of(a, 0, j, d);
    } else {
      float* part = partial + (j * splits + z) * (hd + 2);
      part[2 + d] = o;
      if (d == 0) {
        part[0] = ml[2 * g];
        part[1] = ml[2 * g + 1];
      }
    }
  }
}

using DecodeKernel = void (*)(AttentionArgs, float, int, float*);
template <int KPL>
DecodeKernel decode_for_group(int gp) {
  switch (gp) {
    case 1: return decode_kernel<KPL, 1>;
    case 2: return decode_kernel<KPL, 2>;
    case 4: return decode_kernel<KPL, 4>;
    default: return decode_kernel<KPL, 8>;
  }
}
DecodeKernel decode_for(int64_t head_dim, int gp) {
  if (head_dim <= 32) return decode_for_group<1>(gp);
  if (head_dim <= 64) return decode_for_group<2>(gp);
  if (head_dim <= 128) return decode_for_group<4>(gp);
  return decode_for_group<8>(gp);
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

  const float scale = 1.0f / sqrtf(float(a.head_dim));
  if (for_any_position && !a.position_value) fail("CUDA attention: a recorded step needs position_value");
  if (a.count == 1) {
    // Decode: blocks over (split, KV head, chunk of its query heads). Splits: ~2 blocks per SM, at least a
    // tile of positions each, and room for the partial results (head_dim + 2 floats per head and split)
    // in `scores` (q_heads * context floats). Recorded for any position: sized as if the whole context
    // were visible; the kernels split the visible positions evenly among them at replay.
    const int64_t visible = for_any_position ? a.context : a.position + 1;
    const int64_t chunks = (a.group + kMaxGroup - 1) / kMaxGroup;
    int device = 0, sms = 0, optin = 0;
    UNEVEN_CUDA_CHECK(cudaGetDevice(&device));
    UNEVEN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    UNEVEN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    int splits = 1;
    if (a.scores) {
      const int64_t blocks = a.kv_heads * chunks;
      const int64_t want = (2 * int64_t(sms) + blocks - 1) / blocks;
      const int64_t by_len = (visible + kTile - 1) / kTile;
      const int64_t by_room = a.context / (a.head_dim + 2);
      splits = int(std::max<int64_t>(1, std::min({want, by_len, by_room, int64_t(64)})));
    }
    int gp = 1;
    while (gp < std::min<int64_t>(a.group, kMaxGroup)) gp *= 2;
    const DecodeKernel kernel = decode_for(a.head_dim, gp);
    const size_t bytes = decode_shared_floats(a.head_dim) * sizeof(float);
    if (bytes > size_t(optin))
      fail("CUDA attention: head_dim {} needs {} bytes of shared memory (device: {})", a.head_dim, bytes, optin);
    if (bytes > 48 * 1024)
      UNEVEN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    kernel<<<dim3(unsigned(splits), unsigned(a.kv_heads), unsigned(chunks)), kDecodeWarps * 32, bytes, s>>>(
        a, scale, splits, a.scores);
    UNEVEN_CUDA_LAUNCHED();
    if (splits > 1) {
      combine_kernel<<<unsigned(a.q_heads), threads, 0, s>>>(a, splits, a.scores);
      UNEVEN_CUDA_LAUNCHED();
    }
    return;
  }
  // Prompt chunk: one block per (head, token) over all its visible positions (one split).
  const int64_t chunk = for_any_position ? a.context : a.position + a.count;
  attend_kernel<<<dim3(unsigned(a.q_heads), unsigned(a.count), 1), kAttnWarps * 32, 0, s>>>(a, scale, chunk, 1,
                                                                                           nullptr);
  UNEVEN_CUDA_LAUNCHED();
}

}  // namespace uneven::cuda
