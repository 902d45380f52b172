// Weight-streaming kernels: the batch-1 GEMV of every weight type and row dequantization to F32 (for
// embeddings and for the batched matmul, which multiplies dequantized row chunks with cuBLAS).
//
// GEMV of quantized types (qgemv_kernel): each warp stages 4 rows' tiles in shared memory with coalesced
// 16-byte cp.async copies (double-buffered) and decodes them from there, x read once per 4 rows; rows
// are split across warps when there are few. Plain types (and quantized fallbacks: unaligned x, odd MLX
// groups): one warp per row; lane i decodes units i, i + 32, ... (two in flight), so a warp reads a
// contiguous stretch of the row per step and every weight byte once; fp32 products and sums, then a
// warp-shuffle reduction. Activations stay fp32 (never quantized): results match a double-precision
// reference to ~1e-6 of sum |w x|.
#include <algorithm>

#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"
#include "compute/cuda/dequant.cuh"

namespace uneven::cuda {
namespace {

template <class D>
struct Tag {
  using type = D;
};

// Calls f(Tag<Decoder>{}) with the decoder of w's type. `vector_rows`: rows are 16-byte aligned (base
// aligned and row stride a multiple of 16), so plain types may use 16-byte loads.
template <class F>
void with_decoder(const kernels::WeightView& w, F&& f) {
  const bool vector_rows = reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_bytes() % 16 == 0;
  switch (w.dtype) {
    case DType::F32: return vector_rows ? f(Tag<DecF32x4>{}) : f(Tag<DecF32x1>{});
    case DType::F16: return vector_rows ? f(Tag<DecHalfx8<false>>{}) : f(Tag<DecHalfx1<false>>{});
    case DType::BF16: return vector_rows ? f(Tag<DecHalfx8<true>>{}) : f(Tag<DecHalfx1<true>>{});
    case DType::Q8_0: return f(Tag<DecQ8_0>{});
    case DType::Q4_0: return f(Tag<DecQ4_0>{});
    case DType::Q4_1: return f(Tag<DecQ4_1>{});
    case DType::Q5_0: return f(Tag<DecQ5_0>{});
    case DType::Q5_1: return f(Tag<DecQ5_1>{});
    case DType::Q4_K: return f(Tag<DecQ45_K<false>>{});
    case DType::Q5_K: return f(Tag<DecQ45_K<true>>{});
    case DType::Q6_K: return f(Tag<DecQ6_K>{});
    case DType::MLX4:
    case DType::MLX8: {
      if (w.group <= 0 || w.group % 32 != 0) fail("CUDA matmul: MLX group size {} is not a multiple of 32", w.group);
      const bool four = w.dtype == DType::MLX4;
      switch (w.scale) {
        case DType::F32: return four ? f(Tag<DecMlx<4, DType::F32>>{}) : f(Tag<DecMlx<8, DType::F32>>{});
        case DType::F16: return four ? f(Tag<DecMlx<4, DType::F16>>{}) : f(Tag<DecMlx<8, DType::F16>>{});
        case DType::BF16: return four ? f(Tag<DecMlx<4, DType::BF16>>{}) : f(Tag<DecMlx<8, DType::BF16>>{});
        default: fail("CUDA matmul: MLX scale type {} is not supported", dtype_name(w.scale));
      }
    }
    case DType::U32: break;
  }
  fail("CUDA matmul: weight type {} is not supported", w.type().name());
}

template <int E, bool kVecX>
__device__ __forceinline__ float dot_x(const float* v, const float* x) {
  float acc = 0;
  if constexpr (kVecX && E % 4 == 0) {
#pragma unroll
    for (int i = 0; i < E; i += 4) {
      const float4 xv = __ldg(reinterpret_cast<const float4*>(x + i));
      acc = fmaf(v[i], xv.x, acc);
      acc = fmaf(v[i + 1], xv.y, acc);
      acc = fmaf(v[i + 2], xv.z, acc);
      acc = fmaf(v[i + 3], xv.w, acc);
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) acc = fmaf(v[i], __ldg(x + i), acc);
  }
  return acc;
}

constexpr int kGemvWarps = 4;  // rows per block

template <class D, bool kVecX>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes,
                                                                int64_t rows, int64_t units, QParams p,
                                                                const float* __restrict__ x, float* __restrict__ y) {
  constexpr int E = D::kElems;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warps leave together: the shuffles below see full warps
  const uint8_t* r = w + uint64_t(row) * row_bytes;
  float acc0 = 0, acc1 = 0;
  int64_t u = lane;
  for (; u + 32 < units; u += 64) {  // two units in flight per lane
    float a[E], b[E];
    D::unit(r, u, p, a);
    D::unit(r, u + 32, p, b);
    acc0 += dot_x<E, kVecX>(a, x + u * E);
    acc1 += dot_x<E, kVecX>(b, x + (u + 32) * E);
  }
  if (u < units) {
    float a[E];
    D::unit(r, u, p, a);
    acc0 += dot_x<E, kVecX>(a, x + u * E);
  }
  const float sum = warp_sum(acc0 + acc1);
  if (lane == 0) y[row] = sum;
}

template <class D, bool kVecOut>
__global__ void dequant_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, int64_t table_rows, int64_t units,
                               QParams p, int64_t first_row, const float* __restrict__ rows, int64_t count,
                               float* __restrict__ out) {
  constexpr int E = D::kElems;
  const int64_t cols = units * E;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count * units; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / units, u = i % units;
    const int64_t row = rows ? int64_t(rows[t]) - first_row : first_row + t;
    if (row < 0 || row >= table_rows) continue;
    float v[E];
    D::unit(w + uint64_t(row) * row_bytes, u, p, v);
    float* o = out + t * cols + u * E;
    if constexpr (kVecOut && E % 4 == 0) {
#pragma unroll
      for (int j = 0; j < E; j += 4) *reinterpret_cast<float4*>(o + j) = make_float4(v[j], v[j + 1], v[j + 2], v[j + 3]);
    } else {
#pragma unroll
      for (int j = 0; j < E; ++j) o[j] = v[j];
    }
  }
}


// ---- Quantized GEMV: staged row tiles, R rows per warp ----
//
// A warp owns kRows rows and one of S segments (whole blocks) of them; a block of kQWarps warps holds
// kQWarps / S row groups. The warp walks its segment in tiles of 32 units (32 elements each) per row:
// it copies the 16-byte aligned span covering each row's tile into shared memory with cp.async (16-byte,
// coalesced, two tiles in flight: double buffering), then lane i decodes unit i of the tile for all
// kRows rows, so each x value (fp32, from L1) is read once for kRows rows. A block's row start keeps its
// global alignment modulo 16 in shared memory, so the decoders' alignment assumptions still hold there.
// Partial sums of a row's segments meet in shared memory; y is written once (deterministic).
constexpr int kQWarps = 4;
constexpr int kRows = 4;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(a));
  return v;
}
__device__ __forceinline__ uint4 lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
  return v;
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
#else
  *static_cast<uint4*>(smem) = *static_cast<const uint4*>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait1() {  // all but the latest group of this thread landed
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}
__device__ __forceinline__ float4 ldx4(const float* x) { return __ldg(reinterpret_cast<const float4*>(x)); }

// Exact int conversion of byte j of w (0..255) minus `off`: 2^23 + byte as a float bit pattern, then
// one subtraction (exact for integers below 2^24).
template <int kOff>
__device__ __forceinline__ float byte_val(uint32_t w, int j) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | uint32_t(j))) - float(8388608 + kOff);
}
// acc += sum over the 4 bytes of w (minus kOff) times x.
template <int kOff>
__device__ __forceinline__ float dot4(uint32_t w, float4 x, float acc) {
  acc = fmaf(byte_val<kOff>(w, 0), x.x, acc);
  acc = fmaf(byte_val<kOff>(w, 1), x.y, acc);
  acc = fmaf(byte_val<kOff>(w, 2), x.z, acc);
  return fmaf(byte_val<kOff>(w, 3), x.w, acc);
}
__device__ __forceinline__ float hsum4(float4 v) { return (v.x + v.y) + (v.z + v.w); }

// The shared-memory word holding 2-aligned address a (aligned down) and the shift that funnels the
// next 32 bits starting at a out of that word and the following one: 0 or 16.
__device__ __forceinline__ uint32_t shift_2(uint32_t a) { return (a & 2u) * 8u; }

// Every policy: dot<R>(b, sub, p, x, acc): acc[r] += sum_{l<32} w_r[l] * x[l] for unit `sub` of the
// block at shared-memory pointer b[r] (x: that unit's 32 activations, 16-byte aligned).

// Any decoder: decode the unit with D::unit (from shared memory), then the dot product.
template <class D>
struct GenericDot {
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int sub, const QParams& p, const float* x, float* acc) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v[32];
      D::unit(b[r], sub, p, v);
      float s = 0;
#pragma unroll
      for (int i = 0; i < 32; i += 4) {
        const float4 xv = ldx4(x + i);
        s = fmaf(v[i], xv.x, s);
        s = fmaf(v[i + 1], xv.y, s);
        s = fmaf(v[i + 2], xv.z, s);
        s = fmaf(v[i + 3], xv.w, s);
      }
      acc[r] += s;
    }
  }
};

struct DotQ8_0 {  // 34 bytes: d, qs[32]; 2-aligned. 9 aligned words cover the block.
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int, const QParams&, const float* x, float* acc) {
    uint32_t a[R], sh[R], prev[R];
    float d[R], s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ab = smem_addr(b[r]);
      a[r] = ab & ~3u;
      sh[r] = 16u + shift_2(ab);  // qs start at ab + 2: 16 (block 4-aligned) or 32 (take the next word whole)
      prev[r] = lds32(a[r]);
      d[r] = h2f(uint16_t(prev[r] >> (sh[r] - 16u)));
      s[r] = 0;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float4 xv = ldx4(x + 4 * k);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t cur = lds32(a[r] + 4u * (k + 1));
        const uint32_t q = __funnelshift_rc(prev[r], cur, sh[r]) ^ 0x80808080u;  // int8 + 128
        prev[r] = cur;
        s[r] = dot4<128>(q, xv, s[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(d[r], s[r], acc[r]);
  }
};

struct DotQ4_0 {  // 18 bytes: d, qs[16]; 2-aligned; element j: low nibble of byte j, j + 16: high nibble
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int, const QParams&, const float* x, float* acc) {
    uint32_t w[R][5], sh[R];
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ab = smem_addr(b[r]);
      sh[r] = 16u + shift_2(ab);
#pragma unroll
      for (int i = 0; i < 5; ++i) w[r][i] = lds32((ab & ~3u) + 4u * i);
      s[r] = 0;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float4 xl = ldx4(x + 4 * k), xh = ldx4(x + 16 + 4 * k);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t q = __funnelshift_rc(w[r][k], w[r][k + 1], sh[r]);
        s[r] = dot4<8>(q & 0x0F0F0F0Fu, xl, s[r]);
        s[r] = dot4<8>((q >> 4) & 0x0F0F0F0Fu, xh, s[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(h2f(uint16_t(w[r][0] >> (sh[r] - 16u))), s[r], acc[r]);
  }
};

struct DotQ4_K {  // 144 bytes: d, dmin, scales[12], qs[128]; 16-aligned
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int sub, const QParams&, const float* x, float* acc) {
    const int j = sub & 3, shift = (sub & 1) * 4;
    const uint32_t bsh = 8u * uint32_t(j);
    float dd[R], mm[R], s[R];
    uint32_t qa[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ab = smem_addr(b[r]);
      const uint4 head = lds128(ab);
      const uint32_t by = (head.y >> bsh) & 0xffu, bz = (head.z >> bsh) & 0xffu, bw = (head.w >> bsh) & 0xffu;
      int sc, m;
      if (sub < 4) {
        sc = int(by & 63);
        m = int(bz & 63);
      } else {
        sc = int((bw & 0xF) | ((by >> 6) << 4));
        m = int((bw >> 4) | ((bz >> 6) << 4));
      }
      const float d = h2f(uint16_t(head.x & 0xffffu)), dmin = h2f(uint16_t(head.x >> 16));
      dd[r] = d * float(sc);
      mm[r] = dmin * float(m);
      qa[r] = ab + 16u + 32u * uint32_t(sub >> 1);
      s[r] = 0;
    }
    float xs = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint4 q[R];
#pragma unroll
      for (int r = 0; r < R; ++r) q[r] = lds128(qa[r] + 16u * h);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 xv = ldx4(x + 16 * h + 4 * k);
        xs += hsum4(xv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t qw = k == 0 ? q[r].x : k == 1 ? q[r].y : k == 2 ? q[r].z : q[r].w;
          s[r] = dot4<0>((qw >> shift) & 0x0F0F0F0Fu, xv, s[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(dd[r], s[r], fmaf(-mm[r], xs, acc[r]));
  }
};

struct DotQ6_K {  // 210 bytes: ql[128], qh[64], scales[16], d; 2-aligned
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int sub, const QParams&, const float* x, float* acc) {
    const int half = sub >> 2, quarter = sub & 3;
    const int lshift = (quarter >> 1) * 4, hshift = 2 * quarter;
    uint32_t la[R], ha[R], sh[R], lp[R], hp[R];
    float d0[R], d1[R], s0[R], s1[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ab = smem_addr(b[r]);
      sh[r] = shift_2(ab);  // ql, qh and d lie at multiples of 4 from the block start
      const uint32_t sa = ab + 192u + 8u * half + 2u * quarter, da = ab + 208u;
      const uint32_t scw = __funnelshift_r(lds32(sa & ~3u), lds32((sa & ~3u) + 4u), shift_2(sa));
      const uint32_t dw = __funnelshift_r(lds32(da & ~3u), lds32((da & ~3u) + 4u), sh[r]);
      const float d = h2f(uint16_t(dw & 0xffffu));
      d0[r] = d * float(int8_t(scw & 0xffu));
      d1[r] = d * float(int8_t((scw >> 8) & 0xffu));
      la[r] = (ab + 64u * half + 32u * (quarter & 1)) & ~3u;
      ha[r] = (ab + 128u + 32u * half) & ~3u;
      lp[r] = lds32(la[r]);
      hp[r] = lds32(ha[r]);
      s0[r] = 0;
      s1[r] = 0;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float4 xv = ldx4(x + 4 * k);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t lc = lds32(la[r] + 4u * (k + 1)), hc = lds32(ha[r] + 4u * (k + 1));
        const uint32_t ql = __funnelshift_r(lp[r], lc, sh[r]), qh = __funnelshift_r(hp[r], hc, sh[r]);
        lp[r] = lc;
        hp[r] = hc;
        const uint32_t q = ((ql >> lshift) & 0x0F0F0F0Fu) | (((qh >> hshift) & 0x03030303u) << 4);
        if (k < 4) s0[r] = dot4<32>(q, xv, s0[r]);
        else s1[r] = dot4<32>(q, xv, s1[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(d0[r], s0[r], fmaf(d1[r], s1[r], acc[r]));
  }
};

template <int kBits, DType kScale>
struct DotMlx {  // groups [scale][bias][codes], 4-aligned; w = scale * q + bias
  using D = DecMlx<kBits, kScale>;
  template <int R>
  __device__ static void dot(const uint8_t* const* b, int sub, const QParams&, const float* x, float* acc) {
    float sc[R], bi[R], s[R];
    uint32_t qa[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ab = smem_addr(b[r]);
      if constexpr (kScale == DType::F32) {
        sc[r] = __uint_as_float(lds32(ab));
        bi[r] = __uint_as_float(lds32(ab + 4u));
      } else {
        const uint32_t sb = lds32(ab);
        sc[r] = kScale == DType::F16 ? h2f(uint16_t(sb & 0xffffu)) : bf2f(uint16_t(sb & 0xffffu));
        bi[r] = kScale == DType::F16 ? h2f(uint16_t(sb >> 16)) : bf2f(uint16_t(sb >> 16));
      }
      qa[r] = ab + 2u * D::kScaleBytes + uint32_t(sub) * 4u * kBits;
      s[r] = 0;
    }
    float xs = 0;
    if constexpr (kBits == 8) {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float4 xv = ldx4(x + 4 * k);
        xs += hsum4(xv);
#pragma unroll
        for (int r = 0; r < R; ++r) s[r] = dot4<0>(lds32(qa[r] + 4u * k), xv, s[r]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // word k: elements 8k .. 8k + 7, element 8k + i at bits 4i
        const float4 xa = ldx4(x + 8 * k), xb = ldx4(x + 8 * k + 4);
        xs += hsum4(xa) + hsum4(xb);
        const float4 xe = make_float4(xa.x, xa.z, xb.x, xb.z), xo = make_float4(xa.y, xa.w, xb.y, xb.w);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t q = lds32(qa[r] + 4u * k);
          s[r] = dot4<0>(q & 0x0F0F0F0Fu, xe, s[r]);
          s[r] = dot4<0>((q >> 4) & 0x0F0F0F0Fu, xo, s[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(sc[r], s[r], fmaf(bi[r], xs, acc[r]));
  }
};

template <class D>
struct DotOf {
  using type = GenericDot<D>;
};
template <>
struct DotOf<DecQ8_0> {
  using type = DotQ8_0;
};
template <>
struct DotOf<DecQ4_0> {
  using type = DotQ4_0;
};
template <>
struct DotOf<DecQ45_K<false>> {
  using type = DotQ4_K;
};
template <>
struct DotOf<DecQ6_K> {
  using type = DotQ6_K;
};
template <int kBits, DType kScale>
struct DotOf<DecMlx<kBits, kScale>> {
  using type = DotMlx<kBits, kScale>;
};

// Launch geometry: a row has `nblk` blocks of `bb` bytes, 2^lg_upb units each (2^lg_upb <= 32), so a
// tile is 32 >> lg_upb blocks; `tw` 16-byte words of shared memory per row tile (span plus slack);
// 2^split_lg segments per row.
struct QGeom {
  int64_t nblk = 0;
  int bb = 0, lg_upb = 0, tw = 0, split_lg = 0;
};

template <class P>
__global__ void __launch_bounds__(kQWarps * 32, 6) qgemv_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes,
                                                                 int64_t rows, QGeom g, QParams p,
                                                                 const float* __restrict__ x, float* __restrict__ y) {
  extern __shared__ uint4 qsmem[];  // [kQWarps][2 stages][kRows][g.tw]
  __shared__ float part[kQWarps][kRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups = kQWarps >> g.split_lg;  // row groups per block
  const int rg = warp >> g.split_lg, seg = warp & ((1 << g.split_lg) - 1);
  const int64_t row0 = (int64_t(blockIdx.x) * groups + rg) * kRows;
  const uint8_t* rp[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rp[r] = w + uint64_t(min(row0 + r, rows - 1)) * row_bytes;  // past the end: a repeat, unused
  const int bpt = 32 >> g.lg_upb;  // blocks per tile
  const int64_t sb0 = (g.nblk * seg) >> g.split_lg, sb1 = (g.nblk * (seg + 1)) >> g.split_lg;
  const int64_t ntiles = (sb1 - sb0 + bpt - 1) / bpt;
  uint4* buf = qsmem + size_t(warp) * 2 * kRows * g.tw;
  const uint64_t bb = uint64_t(g.bb);

  auto issue = [&](int64_t t) {
    if (t < ntiles) {
      const int64_t tb0 = sb0 + t * bpt, tb1 = min(tb0 + bpt, sb1);
      uint4* dst = buf + (t & 1) * kRows * g.tw;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const uint8_t* g0 = rp[r] + uint64_t(tb0) * bb;
        const uint8_t* a0 = g0 - (reinterpret_cast<uintptr_t>(g0) & 15);
        const int nw = int((rp[r] + uint64_t(tb1) * bb - a0 + 15) >> 4);
        for (int i = lane; i < nw; i += 32) cp_async16(dst + r * g.tw + i, a0 + 16 * i);
      }
    }
    cp_async_commit();  // (empty groups keep the count uniform)
  };

  issue(0);
  issue(1);
  float acc[kRows] = {};
  const int sub = lane & ((1 << g.lg_upb) - 1), bl = lane >> g.lg_upb;  // this lane's unit of a tile
  for (int64_t t = 0; t < ntiles; ++t) {
    cp_async_wait1();
    __syncwarp();
    const int64_t tb0 = sb0 + t * bpt;
    if (bl < sb1 - tb0) {
      const uint8_t* bp[kRows];
      const uint8_t* stage = reinterpret_cast<const uint8_t*>(buf + (t & 1) * kRows * g.tw);
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        bp[r] = stage + r * g.tw * 16 + (reinterpret_cast<uintptr_t>(rp[r] + uint64_t(tb0) * bb) & 15) + bl * bb;
      const int64_t unit = ((tb0 + bl) << g.lg_upb) + sub;
      P::template dot<kRows>(bp, sub, p, x + unit * 32, acc);
    }
    __syncwarp();
    issue(t + 2);
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) part[warp][r] = acc[r];
  }
  __syncthreads();
  if (int(threadIdx.x) < groups * kRows) {
    const int gi = threadIdx.x / kRows, r = threadIdx.x % kRows;
    const int64_t row = (int64_t(blockIdx.x) * groups + gi) * kRows + r;
    if (row < rows) {
      float s = 0;
      for (int k = 0; k < (1 << g.split_lg); ++k) s += part[gi * (1 << g.split_lg) + k][r];
      y[row] = s;
    }
  }
}

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      v = 132;
    return std::max(v, 1);
  }();
  return n;
}

// The staged GEMV of a quantized type; false where it does not apply (the per-unit kernel runs then).
template <class D>
bool qgemv(const DeviceWeight& w, const float* x, float* y, cudaStream_t stream) {
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  const WeightType t = w.type();
  const int64_t upb = t.block_elems() / 32;
  if (upb < 1 || upb > 32 || (upb & (upb - 1)) != 0 || t.block_elems() % 32 != 0) return false;
  QGeom g;
  g.nblk = w.cols / t.block_elems();
  g.bb = int(t.block_bytes());
  while ((int64_t(1) << g.lg_upb) < upb) ++g.lg_upb;
  const int bpt = 32 >> g.lg_upb;
  g.tw = (bpt * g.bb + 30) / 16 + 2;
  const size_t smem = size_t(kQWarps) * 2 * kRows * g.tw * 16;
  if (smem > 48 * 1024) return false;
  // Split rows into segments until there are enough warps to keep every SM's loads in flight.
  const int64_t row_groups = (w.rows + kRows - 1) / kRows, want = int64_t(sm_count()) * 24;
  while ((1 << g.split_lg) < kQWarps && row_groups * (int64_t(1) << g.split_lg) < want &&
         g.nblk >= (int64_t(2) << g.split_lg) * bpt)
    ++g.split_lg;
  const int64_t groups_per_block = kQWarps >> g.split_lg;
  const unsigned grid = unsigned((row_groups + groups_per_block - 1) / groups_per_block);
  qgemv_kernel<typename DotOf<D>::type><<<grid, kQWarps * 32, smem, stream>>>(
      static_cast<const uint8_t*>(w.data), w.row_bytes(), w.rows, g, params_of(w), x, y);
  UNEVEN_CUDA_LAUNCHED();
  return true;
}

}  // namespace

int64_t weight_alignment(const kernels::WeightView& w) {
  switch (w.dtype) {
    case DType::F32: return 4;
    case DType::Q4_1: case DType::MLX4: case DType::MLX8: return 4;
    case DType::Q5_1: return 8;
    case DType::Q4_K: case DType::Q5_K: return 16;
    default: return 2;  // F16, BF16, Q4_0, Q5_0, Q8_0, Q6_K
  }
}

void gemv(const DeviceWeight& w, const float* x, float* y, cudaStream_t stream) {
  if (w.rows == 0) return;
  with_decoder(w, [&](auto tag) {
    using D = typename decltype(tag)::type;
    if (w.cols % D::kElems != 0) fail("CUDA matmul: {} columns are not whole units of {} elements", w.cols, D::kElems);
    if constexpr (D::kElems == 32) {  // quantized types
      if (qgemv<D>(w, x, y, stream)) return;
    }
    const int64_t units = w.cols / D::kElems;
    const unsigned grid = blocks_for(w.rows, kGemvWarps);
    const auto* wp = static_cast<const uint8_t*>(w.data);
    if (reinterpret_cast<uintptr_t>(x) % 16 == 0)
      gemv_kernel<D, true><<<grid, kGemvWarps * 32, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), x, y);
    else
      gemv_kernel<D, false><<<grid, kGemvWarps * 32, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), x, y);
    UNEVEN_CUDA_LAUNCHED();
  });
}

void dequantize_rows(const DeviceWeight& w, int64_t first_row, const float* rows, int64_t count, float* out,
                     cudaStream_t stream) {
  if (count == 0 || w.cols == 0) return;
  with_decoder(w, [&](auto tag) {
    using D = typename decltype(tag)::type;
    if (w.cols % D::kElems != 0) fail("CUDA dequantize: {} columns are not whole units of {} elements", w.cols, D::kElems);
    const int64_t units = w.cols / D::kElems, total = count * units;
    const int threads = 256;
    const unsigned grid = unsigned(std::min<int64_t>(blocks_for(total, threads), 65535));
    const auto* wp = static_cast<const uint8_t*>(w.data);
    if (reinterpret_cast<uintptr_t>(out) % 16 == 0 && w.cols % 4 == 0)
      dequant_kernel<D, true><<<grid, threads, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), first_row, rows, count, out);
    else
      dequant_kernel<D, false><<<grid, threads, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), first_row, rows, count, out);
    UNEVEN_CUDA_LAUNCHED();
  });
}

}  // namespace uneven::cuda
