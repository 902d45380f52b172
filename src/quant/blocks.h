// Block layouts of GGML's quantized types (as llama.cpp's ggml-common.h defines them) and of MLX affine
// groups in memory, with a scalar reference dequantizer that kernels and quantizers are tested against.
#pragma once
#include <cstdint>

#include "model/dtype.h"

namespace uneven::quant {

constexpr int kQK = 32;    // elements per block of Q4_0 .. Q8_0
constexpr int kQKK = 256;  // elements per super-block of the k-quants
constexpr int kKScaleBytes = 12;

#pragma pack(push, 1)
// x[j] = d * (q[j] - 8); q[j] is the low nibble of qs[j] for j < 16, the high nibble of qs[j - 16] after.
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQK / 2]; };
// x[j] = d * q[j] + m, nibbles as Q4_0.
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[kQK / 2]; };
// x[j] = d * (q[j] - 16); q[j] = nibble as Q4_0 | bit j of qh (little-endian uint32) << 4.
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
// x[j] = d * q[j] + m, q as Q5_0.
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
// x[j] = d * qs[j].
struct BlockQ8_0 { uint16_t d; int8_t qs[kQK]; };
// 8 sub-blocks of 32 with 6-bit scale sc and min m each (packed in `scales`, see k_scale_min):
// x = d * sc * q - dmin * m; sub-block pair (2i, 2i+1) uses the low / high nibbles of qs[32i .. 32i+32).
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[kKScaleBytes]; uint8_t qs[kQKK / 2]; };
// Q4_K plus a fifth bit: for sub-block s, bit s of qh[l] is the high bit of element l of it.
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[kKScaleBytes]; uint8_t qh[kQKK / 8]; uint8_t qs[kQKK / 2]; };
// 16 sub-blocks of 16 with int8 scales: x = d * scales[s] * (q - 32), q = 4 low bits (ql) | 2 high (qh) << 4.
struct BlockQ6_K { uint8_t ql[kQKK / 2]; uint8_t qh[kQKK / 4]; int8_t scales[kQKK / 16]; uint16_t d; };
#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block: j < 4 in the low 6 bits
// of bytes j and j + 4; j >= 4 split into a nibble of byte j + 4 and the top 2 bits of bytes j - 4 / j.
inline void k_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Dequantizes `n` elements (a whole number of blocks of `type`) starting at block-aligned `src` into
// dst. Scalar and exact in float: the reference for SIMD kernels and for quantizer round trips.
void dequantize_row_ref(const WeightType& type, const void* src, int64_t n, float* dst);

}  // namespace uneven::quant
