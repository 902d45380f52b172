// Device decoders of every weight type: each turns one "unit" of a row (a fixed run of consecutive
// elements) into floats in registers, for the GEMV, dequantize and embedding kernels.
//
// Invariants: a row starts at a multiple of its row stride from a cudaMalloc'd (256-byte aligned) base, so
// a block is aligned to the largest power of two dividing its size (Q8_0: 34 bytes -> 2, Q4_K: 144 -> 16).
// Each decoder only issues loads of that alignment (byte / halfword / word / 16-byte) - never a wider
// load on a packed struct. Arithmetic follows quant/dequant_ref.cpp operation for operation.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "model/dtype.h"

namespace uneven::cuda {

// Runtime parameters of a type (MLX group layout).
struct QParams {
  int group = 0;        // MLX: elements per group
  int block_bytes = 0;  // MLX: bytes per group (scale, bias, codes)
};

// The per-weight parameters the decoders take (MLX group geometry; none for the other types).
inline QParams params_of(const kernels::WeightView& w) {
  QParams p;
  if (is_mlx(w.dtype)) {
    p.group = w.group;
    p.block_bytes = int(w.type().block_bytes());
  }
  return p;
}

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
__device__ __forceinline__ uint16_t ld16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t ld32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint4 ld128(const uint8_t* p) { return *reinterpret_cast<const uint4*>(p); }
// A 32-bit word from two halfword loads (2-byte aligned data).
__device__ __forceinline__ uint32_t ld32_2(const uint8_t* p) { return uint32_t(ld16(p)) | (uint32_t(ld16(p + 2)) << 16); }

// 16 bytes of a 2-byte aligned block as 4 words.
__device__ __forceinline__ void ld16x_2(const uint8_t* p, uint32_t* w) {
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = ld32_2(p + 4 * i);
}
__device__ __forceinline__ void ld16x_4(const uint8_t* p, uint32_t* w) {
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = ld32(p + 4 * i);
}
__device__ __forceinline__ void ld16x_16(const uint8_t* p, uint32_t* w) {
  const uint4 v = ld128(p);
  w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
}
__device__ __forceinline__ uint32_t byte_of(const uint32_t* w, int j) { return (w[j >> 2] >> (8 * (j & 3))) & 0xffu; }

// ---- plain types ----
struct DecF32x4 {  // rows 16-byte aligned, cols % 4 == 0
  static constexpr int kElems = 4;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const float4 v = *reinterpret_cast<const float4*>(row + 16 * u);
    y[0] = v.x; y[1] = v.y; y[2] = v.z; y[3] = v.w;
  }
};
struct DecF32x1 {
  static constexpr int kElems = 1;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    y[0] = reinterpret_cast<const float*>(row)[u];
  }
};
template <bool kBF16>
struct DecHalfx8 {  // rows 16-byte aligned, cols % 8 == 0
  static constexpr int kElems = 8;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    uint32_t w[4];
    ld16x_16(row + 16 * u, w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = uint16_t(w[i] & 0xffffu), hi = uint16_t(w[i] >> 16);
      y[2 * i] = kBF16 ? bf2f(lo) : h2f(lo);
      y[2 * i + 1] = kBF16 ? bf2f(hi) : h2f(hi);
    }
  }
};
template <bool kBF16>
struct DecHalfx1 {
  static constexpr int kElems = 1;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint16_t h = ld16(row + 2 * u);
    y[0] = kBF16 ? bf2f(h) : h2f(h);
  }
};

// ---- 32-element GGML blocks: one unit is one block ----
struct DecQ8_0 {  // 34 bytes: d, qs[32]; 2-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 34 * u;
    const float d = h2f(ld16(b));
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint16_t q = ld16(b + 2 + 2 * i);
      y[2 * i] = d * float(int8_t(q & 0xffu));
      y[2 * i + 1] = d * float(int8_t(q >> 8));
    }
  }
};
struct DecQ4_0 {  // 18 bytes: d, qs[16]; 2-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 18 * u;
    const float d = h2f(ld16(b));
    uint32_t qs[4];
    ld16x_2(b + 2, qs);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t q = byte_of(qs, j);
      y[j] = d * float(int(q & 0xF) - 8);
      y[j + 16] = d * float(int(q >> 4) - 8);
    }
  }
};
struct DecQ4_1 {  // 20 bytes: d, m, qs[16]; 4-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 20 * u;
    const uint32_t dm = ld32(b);
    const float d = h2f(uint16_t(dm & 0xffffu)), m = h2f(uint16_t(dm >> 16));
    uint32_t qs[4];
    ld16x_4(b + 4, qs);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t q = byte_of(qs, j);
      y[j] = d * float(q & 0xF) + m;
      y[j + 16] = d * float(q >> 4) + m;
    }
  }
};
struct DecQ5_0 {  // 22 bytes: d, qh[4], qs[16]; 2-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 22 * u;
    const float d = h2f(ld16(b));
    const uint32_t qh = ld32_2(b + 2);
    uint32_t qs[4];
    ld16x_2(b + 6, qs);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t q = byte_of(qs, j);
      const int lo = int((q & 0xF) | (((qh >> j) & 1u) << 4));
      const int hi = int((q >> 4) | (((qh >> (j + 16)) & 1u) << 4));
      y[j] = d * float(lo - 16);
      y[j + 16] = d * float(hi - 16);
    }
  }
};
struct DecQ5_1 {  // 24 bytes: d, m, qh[4], qs[16]; 8-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 24 * u;
    const uint32_t dm = ld32(b);
    const float d = h2f(uint16_t(dm & 0xffffu)), m = h2f(uint16_t(dm >> 16));
    const uint32_t qh = ld32(b + 4);
    uint32_t qs[4];
    ld16x_4(b + 8, qs);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t q = byte_of(qs, j);
      const int lo = int((q & 0xF) | (((qh >> j) & 1u) << 4));
      const int hi = int((q >> 4) | (((qh >> (j + 16)) & 1u) << 4));
      y[j] = d * float(lo) + m;
      y[j + 16] = d * float(hi) + m;
    }
  }
};

// ---- k-quants: one unit is a 32-element sub-block (8 per 256-element super-block) ----
// The 6-bit scale and min of sub-block j from the 12 scale bytes (quant::k_scale_min).
__device__ __forceinline__ void k_scale_min(int j, const uint32_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = int(byte_of(s, j) & 63);
    m = int(byte_of(s, j + 4) & 63);
  } else {
    sc = int((byte_of(s, j + 4) & 0xF) | ((byte_of(s, j - 4) >> 6) << 4));
    m = int((byte_of(s, j + 4) >> 4) | ((byte_of(s, j) >> 6) << 4));
  }
}
template <bool kQ5>
struct DecQ45_K {  // Q4_K: 144 bytes (d, dmin, scales[12], qs[128]); Q5_K: 176 (.., qh[32] before qs); 16-aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + (kQ5 ? 176 : 144) * (u >> 3);
    const int s = int(u & 7), pair = s >> 1;
    const uint4 head = ld128(b);  // d, dmin | scales[12]
    const uint32_t sc_words[3] = {head.y, head.z, head.w};
    int sc, m;
    k_scale_min(s, sc_words, sc, m);
    const float d = h2f(uint16_t(head.x & 0xffffu)), dmin = h2f(uint16_t(head.x >> 16));
    const float dd = d * float(sc), mm = dmin * float(m);
    const uint8_t* qs = b + (kQ5 ? 48 : 16) + 32 * pair;
    uint32_t q[8], qh[8] = {};
    ld16x_16(qs, q);
    ld16x_16(qs + 16, q + 4);
    if (kQ5) {
      ld16x_16(b + 16, qh);
      ld16x_16(b + 32, qh + 4);
    }
    const int shift = (s & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      int v = int((byte_of(q, l) >> shift) & 0xF);
      if (kQ5) v += ((byte_of(qh, l) >> s) & 1u) ? 16 : 0;
      y[l] = dd * float(v) - mm;
    }
  }
};
struct DecQ6_K {  // 210 bytes: ql[128], qh[64], scales[16], d; 2-byte aligned
  static constexpr int kElems = 32;
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams&, float* y) {
    const uint8_t* b = row + 210 * (u >> 3);
    const int v = int(u & 7), half = v >> 2, quarter = v & 3;
    const float d = h2f(ld16(b + 208));
    uint32_t ql[8], qh[8];
    const uint8_t* qlp = b + 64 * half + 32 * (quarter & 1);
    ld16x_2(qlp, ql);
    ld16x_2(qlp + 16, ql + 4);
    ld16x_2(b + 128 + 32 * half, qh);
    ld16x_2(b + 128 + 32 * half + 16, qh + 4);
    const uint16_t sc01 = ld16(b + 192 + 8 * half + 2 * quarter);  // scales for l < 16 and l >= 16
    const float d0 = d * float(int8_t(sc01 & 0xffu)), d1 = d * float(int8_t(sc01 >> 8));
    const int lshift = (quarter >> 1) * 4, hshift = 2 * quarter;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = int(((byte_of(ql, l) >> lshift) & 0xF) | (((byte_of(qh, l) >> hshift) & 3) << 4)) - 32;
      y[l] = (l < 16 ? d0 : d1) * float(q);
    }
  }
};

// ---- MLX affine groups [scale][bias][codes]: one unit is 32 elements of a group ----
template <int kBits, DType kScale>
struct DecMlx {
  static constexpr int kElems = 32;
  static constexpr int kScaleBytes = kScale == DType::F32 ? 4 : 2;
  __device__ static float scale_at(const uint8_t* p) {
    if constexpr (kScale == DType::F32) return __uint_as_float(ld32(p));
    else if constexpr (kScale == DType::F16) return h2f(ld16(p));
    else return bf2f(ld16(p));
  }
  __device__ static void unit(const uint8_t* row, int64_t u, const QParams& p, float* y) {
    const int per_group = p.group / 32;
    const uint8_t* b = row + int64_t(p.block_bytes) * (u / per_group);
    const int sub = int(u % per_group);
    const float scale = scale_at(b), bias = scale_at(b + kScaleBytes);
    // Codes start 4- or 8-byte aligned (block bytes are multiples of 4): word loads.
    const uint8_t* q = b + 2 * kScaleBytes + sub * 4 * kBits;
    uint32_t w[kBits];
#pragma unroll
    for (int i = 0; i < kBits; ++i) w[i] = ld32(q + 4 * i);
    constexpr int per_word = 32 / kBits;
    constexpr uint32_t mask = (1u << kBits) - 1u;
#pragma unroll
    for (int j = 0; j < 32; ++j) y[j] = scale * float((w[j / per_word] >> ((j % per_word) * kBits)) & mask) + bias;
  }
};

}  // namespace uneven::cuda
