// Per-target dot products of quantized rows (GGML blocks, MLX groups) with an F32 vector (included once per target).
//
// Each block is read once and widened in registers: its integer codes become floats and are multiplied
// with x; a block's (or sub-block's) scale multiplies the partial sum once, and its additive offset
// (Q4_0's -8 d, Q4_K's -dmin m, MLX's bias, ...) is applied through the sum of x over the block, which
// is computed once per call (`xsum16`: sums of x over each 16 elements; for MLX, over each group).
// Decode of Q8_0 and the k-quants uses the integer kernels further down instead. Values match the scalar
// reference dequantizer (quant/blocks.h) up to float summation order.
//
// Weight rows are read with software prefetches kPrefetch bytes ahead (rows are contiguous, so the
// prefetches run on into the next row; past the matrix they are harmless hints). Measured with
// kernels_bench at 2 threads, 0 / 1 / 2 / 4 / 8 / 16 KiB ahead: MLX4 down 2048x8192 8.5 / 10.4 / 12 /
// 15 / 16 / 16 GB/s, Q6_K 27 / - / - / 29 / 32 / 30, Q4_K and Q8_0 a few % better (noisy machine).
//
// Lane counts: every loop steps N = Lanes(float) <= 16 elements, and all block and sub-block sizes
// (16, 32, 64, ...) are multiples of N on every x86 target (N = 1, 4, 8, 16).
// MLX 4-bit packs element 2k in the low nibble and 2k+1 in the high nibble of byte k, so its rows are
// dotted with `xp`, x permuted per block of 2N into (N even elements, N odd elements), like BF16.
#if defined(UNEVEN_COMPUTE_QUANT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef UNEVEN_COMPUTE_QUANT_INL_H_
#undef UNEVEN_COMPUTE_QUANT_INL_H_
#else
#define UNEVEN_COMPUTE_QUANT_INL_H_
#endif

#include <cmath>
#include <cstring>
#include <vector>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "compute/f16-inl.h"
#include "model/dtype.h"
#include "quant/activations.h"
#include "quant/blocks.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::quant_impl::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
constexpr int64_t kPrefetch = 8192;  // bytes ahead of the weight row being read (see the file comment)
using QF = hn::ScalableTag<float>;
using QU32 = hn::RebindToUnsigned<QF>;
using QI32 = hn::RebindToSigned<QF>;
using QU8 = hn::Rebind<uint8_t, QF>;
using QI8 = hn::Rebind<int8_t, QF>;
using QV = hn::Vec<QF>;
using QVU = hn::Vec<QU32>;

// One F16 scale as a float, through the target's conversion (vcvtph2ps on AVX2 and up): the scalar
// decoder's subnormal loop would cost more than the 32 products of a block.
HWY_INLINE float Half(const uint8_t* p) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(uneven::kernels::HWY_NAMESPACE::LoadF16AsF32(d1, reinterpret_cast<const hwy::float16_t*>(p)));
}
HWY_INLINE float Scale(const uint8_t* p, DType t) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (t == DType::F16) return Half(p);
  uint16_t h;
  std::memcpy(&h, p, 2);
  return bf16_to_f32(h);
}
// N bytes at p as unsigned 32-bit lanes.
HWY_INLINE QVU Bytes(const uint8_t* p) { return hn::PromoteTo(QU32(), hn::LoadU(QU8(), p)); }
HWY_INLINE QV ToF(QVU v) { return hn::ConvertTo(QF(), hn::BitCast(QI32(), v)); }
HWY_INLINE QV X(const float* p) { return hn::LoadU(QF(), p); }

// Sum over a row's blocks; `off` gathers the scalar offset terms. Returns the dot product.
HWY_INLINE float Finish(QV acc, float off) { return hn::GetLane(hn::SumOfLanes(QF(), acc)) + off; }

float RowQ8_0(const uint8_t* row, int64_t blocks, const float* x) {
  const QF d;
  const int64_t N = int64_t(hn::Lanes(d));
  QV acc = hn::Zero(d);
  for (int64_t b = 0; b < blocks; ++b, row += 34, x += 32) {
    const int8_t* q = reinterpret_cast<const int8_t*>(row + 2);
    QV t = hn::Zero(d);
    for (int64_t i = 0; i < 32; i += N)
      t = hn::MulAdd(hn::ConvertTo(d, hn::PromoteTo(QI32(), hn::LoadU(QI8(), q + i))), X(x + i), t);
    acc = hn::MulAdd(hn::Set(d, Half(row)), t, acc);
  }
  return Finish(acc, 0.0f);
}

// Q4_0 / Q4_1: low nibbles of qs are elements 0..15, high nibbles 16..31.
template <bool kMin>
float RowQ4(const uint8_t* row, int64_t blocks, const float* x, const float* xsum16) {
  const QF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(QU32(), 15u);
  constexpr int64_t kBytes = kMin ? 20 : 18;
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t b = 0; b < blocks; ++b, row += kBytes, x += 32, xsum16 += 2) {
    const uint8_t* qs = row + (kMin ? 4 : 2);
    QV t = hn::Zero(d);
    for (int64_t i = 0; i < 16; i += N) {
      const QVU v = Bytes(qs + i);
      t = hn::MulAdd(ToF(hn::And(v, mask)), X(x + i), t);
      t = hn::MulAdd(ToF(hn::ShiftRight<4>(v)), X(x + 16 + i), t);
    }
    const float s = Half(row);
    acc = hn::MulAdd(hn::Set(d, s), t, acc);
    off += (kMin ? Half(row + 2) : -8.0f * s) * (xsum16[0] + xsum16[1]);
  }
  return Finish(acc, off);
}

// Q5_0 / Q5_1: Q4 nibbles plus bit j of the 32-bit qh as bit 4 of element j.
template <bool kMin>
float RowQ5(const uint8_t* row, int64_t blocks, const float* x, const float* xsum16) {
  const QF d;
  const QU32 du;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(du, 15u), one = hn::Set(du, 1u);
  constexpr int64_t kBytes = kMin ? 24 : 22;
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t b = 0; b < blocks; ++b, row += kBytes, x += 32, xsum16 += 2) {
    const uint8_t* qhp = row + (kMin ? 4 : 2);
    const uint8_t* qs = qhp + 4;
    uint32_t qh;
    std::memcpy(&qh, qhp, 4);
    const QVU h = hn::Set(du, qh);
    QV t = hn::Zero(d);
    for (int64_t i = 0; i < 16; i += N) {
      const QVU v = Bytes(qs + i);
      const QVU shift = hn::Iota(du, uint32_t(i));
      const QVU lo_bit = hn::ShiftLeft<4>(hn::And(hn::operator>>(h, shift), one));
      const QVU hi_bit = hn::ShiftLeft<4>(hn::And(hn::operator>>(h, hn::Add(shift, hn::Set(du, 16u))), one));
      t = hn::MulAdd(ToF(hn::Or(hn::And(v, mask), lo_bit)), X(x + i), t);
      t = hn::MulAdd(ToF(hn::Or(hn::ShiftRight<4>(v), hi_bit)), X(x + 16 + i), t);
    }
    const float s = Half(row);
    acc = hn::MulAdd(hn::Set(d, s), t, acc);
    off += (kMin ? Half(row + 2) : -16.0f * s) * (xsum16[0] + xsum16[1]);
  }
  return Finish(acc, off);
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (see quant/blocks.h).
HWY_INLINE void ScaleMinK(int j, const uint8_t* q, float& sc, float& m) {
  if (j < 4) {
    sc = float(q[j] & 63);
    m = float(q[j + 4] & 63);
  } else {
    sc = float((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = float((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K / Q5_K: four pairs of 32-element sub-blocks; pair p reads 32 bytes of qs (low nibbles: sub-block
// 2p, high: 2p+1) and, for Q5_K, bits 2p / 2p+1 of qh[0..32) as bit 4.
template <bool kFive>
float RowK45(const uint8_t* row, int64_t blocks, const float* x, const float* xsum16) {
  const QF d;
  const QU32 du;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(du, 15u), one = hn::Set(du, 1u);
  constexpr int64_t kBytes = kFive ? 176 : 144;
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t b = 0; b < blocks; ++b, row += kBytes, x += 256, xsum16 += 16) {
    const float dd = Half(row), dmin = Half(row + 2);
    const uint8_t* scales = row + 4;
    const uint8_t* qh = row + 16;
    const uint8_t* qs = row + (kFive ? 48 : 16);
    for (int p = 0; p < 4; ++p) {
      QV lo = hn::Zero(d), hi = hn::Zero(d);
      const float* xp = x + 64 * p;
      for (int64_t i = 0; i < 32; i += N) {
        QVU v = Bytes(qs + 32 * p + i);
        QVU a = hn::And(v, mask), c = hn::ShiftRight<4>(v);
        if constexpr (kFive) {
          const QVU h = Bytes(qh + i);
          a = hn::Or(a, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * p), one)));
          c = hn::Or(c, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * p + 1), one)));
        }
        lo = hn::MulAdd(ToF(a), X(xp + i), lo);
        hi = hn::MulAdd(ToF(c), X(xp + 32 + i), hi);
      }
      float sc0, m0, sc1, m1;
      ScaleMinK(2 * p, scales, sc0, m0);
      ScaleMinK(2 * p + 1, scales, sc1, m1);
      acc = hn::MulAdd(hn::Set(d, dd * sc0), lo, acc);
      acc = hn::MulAdd(hn::Set(d, dd * sc1), hi, acc);
      const float* xs = xsum16 + 4 * p;
      off -= dmin * (m0 * (xs[0] + xs[1]) + m1 * (xs[2] + xs[3]));
    }
  }
  return Finish(acc, off);
}

// Q6_K: two halves of 128; element l (0..31) of quarter k takes 4 bits from ql and 2 from qh; 16 int8
// scales, one per 16 elements; values d * sc * (q - 32).
float RowQ6_K(const uint8_t* row, int64_t blocks, const float* x, const float* xsum16) {
  const QF d;
  const QU32 du;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(du, 15u), three = hn::Set(du, 3u);
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t b = 0; b < blocks; ++b, row += 210, x += 256, xsum16 += 16) {
    const float dd = Half(row + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(row + 192);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = row + 64 * half;
      const uint8_t* qh = row + 128 + 32 * half;
      const int8_t* s = sc + 8 * half;
      const float* xh = x + 128 * half;
      for (int64_t l = 0; l < 32; l += N) {
        const int is = int(l / 16);
        const QVU a = Bytes(ql + l), c = Bytes(ql + 32 + l), h = Bytes(qh + l);
        const QVU q1 = hn::Or(hn::And(a, mask), hn::ShiftLeft<4>(hn::And(h, three)));
        const QVU q2 = hn::Or(hn::And(c, mask), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), three)));
        const QVU q3 = hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), three)));
        const QVU q4 = hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h)));
        acc = hn::MulAdd(hn::Set(d, dd * float(s[is])), hn::Mul(ToF(q1), X(xh + l)), acc);
        acc = hn::MulAdd(hn::Set(d, dd * float(s[is + 2])), hn::Mul(ToF(q2), X(xh + 32 + l)), acc);
        acc = hn::MulAdd(hn::Set(d, dd * float(s[is + 4])), hn::Mul(ToF(q3), X(xh + 64 + l)), acc);
        acc = hn::MulAdd(hn::Set(d, dd * float(s[is + 6])), hn::Mul(ToF(q4), X(xh + 96 + l)), acc);
      }
      // The -32 offset of each 16-element sub-block, through the sums of x.
      const float* xs = xsum16 + 8 * half;
      float o = 0.0f;
      for (int k = 0; k < 8; ++k) o += float(s[k]) * xs[k];  // scale k covers elements [16k, 16k + 16)
      off -= 32.0f * dd * o;
    }
  }
  return Finish(acc, off);
}

// MLX affine groups [scale][bias][codes]: value = scale * q + bias. 8-bit codes are bytes in element
// order; 4-bit codes are dotted with xp (see the file comment). xg holds the sums of x per group.
template <int kBits>
float RowMlx(const uint8_t* row, int64_t groups, int64_t group, DType scale_type, const float* x, const float* xp,
             const float* xg) {
  const QF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(QU32(), 15u);
  const int64_t ss = int64_t(dtype_size(scale_type));
  const int64_t bytes = 2 * ss + group * kBits / 8;
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t g = 0; g < groups; ++g, row += bytes, x += group, xp += group) {
    const uint8_t* q = row + 2 * ss;
    QV t0 = hn::Zero(d), t1 = hn::Zero(d);
    if constexpr (kBits == 8) {
      for (int64_t i = 0; i < group; i += 2 * N) {
        t0 = hn::MulAdd(ToF(Bytes(q + i)), X(x + i), t0);
        t1 = hn::MulAdd(ToF(Bytes(q + i + N)), X(x + i + N), t1);
      }
    } else {
      for (int64_t i = 0; i < group; i += 2 * N) {
        const QVU v = Bytes(q + i / 2);
        t0 = hn::MulAdd(ToF(hn::And(v, mask)), X(xp + i), t0);
        t1 = hn::MulAdd(ToF(hn::ShiftRight<4>(v)), X(xp + i + N), t1);
      }
    }
    acc = hn::MulAdd(hn::Set(d, Scale(row, scale_type)), hn::Add(t0, t1), acc);
    off += Scale(row + ss, scale_type) * xg[g];
  }
  return Finish(acc, off);
}

// RowMlx for a fixed group size and scale type (the common cases): the group's loop unrolls, and the
// scale and bias decode inline; two accumulators alternate between groups.
template <DType kS>
HWY_INLINE float ScaleT(const uint8_t* p) {
  if constexpr (kS == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  } else if constexpr (kS == DType::F16) {
    return Half(p);
  } else {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return bf16_to_f32(h);
  }
}
template <int kBits, int kGroup, DType kS>
float RowMlxT(const uint8_t* HWY_RESTRICT row, int64_t groups, const float* HWY_RESTRICT x,
              const float* HWY_RESTRICT xp, const float* HWY_RESTRICT xg) {
  const QF d;
  constexpr int64_t N = int64_t(HWY_LANES(float));
  static_assert(kGroup % (2 * N) == 0);
  const QVU mask = hn::Set(QU32(), 15u);
  constexpr int64_t ss = kS == DType::F32 ? 4 : 2;
  constexpr int64_t bytes = 2 * ss + kGroup * kBits / 8;
  QV acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  float off0 = 0.0f, off1 = 0.0f;
  const auto group = [&](const uint8_t* r, const float* xx, const float* xxp, float sum, QV& acc, float& off) {
    const uint8_t* q = r + 2 * ss;
    QV t0 = hn::Zero(d), t1 = hn::Zero(d);
    HWY_UNROLL(8)
    for (int64_t i = 0; i < kGroup; i += 2 * N) {
      if constexpr (kBits == 8) {
        t0 = hn::MulAdd(ToF(Bytes(q + i)), X(xx + i), t0);
        t1 = hn::MulAdd(ToF(Bytes(q + i + N)), X(xx + i + N), t1);
      } else {
        const QVU v = Bytes(q + i / 2);
        t0 = hn::MulAdd(ToF(hn::And(v, mask)), X(xxp + i), t0);
        t1 = hn::MulAdd(ToF(hn::ShiftRight<4>(v)), X(xxp + i + N), t1);
      }
    }
    acc = hn::MulAdd(hn::Set(d, ScaleT<kS>(r)), hn::Add(t0, t1), acc);
    off += ScaleT<kS>(r + ss) * sum;
  };
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2, row += 2 * bytes, x += 2 * kGroup, xp += 2 * kGroup) {
    for (int64_t l = 0; l < 2 * bytes; l += 64) hwy::Prefetch(row + kPrefetch + l);
    group(row, x, xp, xg[g], acc0, off0);
    group(row + bytes, x + kGroup, xp + kGroup, xg[g + 1], acc1, off1);
  }
  if (g < groups) group(row, x, xp, xg[g], acc0, off0);
  return Finish(hn::Add(acc0, acc1), off0 + off1);
}

template <int kBits>
HWY_INLINE float MlxDot(const WeightType& t, const uint8_t* row, int64_t cols, const float* x, const float* xp,
                        const float* xg) {
  const int64_t groups = cols / t.group;
#define UNEVEN_MLX_CASE(G, S) \
  if (t.group == G && t.scale == S) return RowMlxT<kBits, G, S>(row, groups, x, xp, xg);
  UNEVEN_MLX_CASE(64, DType::BF16)
  UNEVEN_MLX_CASE(32, DType::BF16)
  UNEVEN_MLX_CASE(128, DType::BF16)
  UNEVEN_MLX_CASE(64, DType::F16)
  UNEVEN_MLX_CASE(64, DType::F32)
#undef UNEVEN_MLX_CASE
  return RowMlx<kBits>(row, groups, t.group, t.scale, x, xp, xg);
}

// Dot of one quantized row of `cols` elements with x (see RowMlx for xp); xsum16 from PrepareQuantInput.
HWY_INLINE float QuantRowDot(const WeightType& t, const uint8_t* row, int64_t cols, const float* x, const float* xp,
                             const float* xsum16) {
  switch (t.dtype) {
    case DType::Q8_0: return RowQ8_0(row, cols / 32, x);
    case DType::Q4_0: return RowQ4<false>(row, cols / 32, x, xsum16);
    case DType::Q4_1: return RowQ4<true>(row, cols / 32, x, xsum16);
    case DType::Q5_0: return RowQ5<false>(row, cols / 32, x, xsum16);
    case DType::Q5_1: return RowQ5<true>(row, cols / 32, x, xsum16);
    case DType::Q4_K: return RowK45<false>(row, cols / 256, x, xsum16);
    case DType::Q5_K: return RowK45<true>(row, cols / 256, x, xsum16);
    case DType::Q6_K: return RowQ6_K(row, cols / 256, x, xsum16);
    case DType::MLX4: return MlxDot<4>(t, row, cols, x, xp, xsum16);
    case DType::MLX8: return MlxDot<8>(t, row, cols, x, xp, xsum16);
    default: return 0.0f;
  }
}

// Sums of x over each 16 elements (cols is a multiple of 16 for every quantized type) — for MLX over
// each group instead — and for MLX 4-bit the (even, odd) permutation per 2N block.
HWY_INLINE void PrepareQuantInput(const WeightType& t, const float* x, int64_t cols, float* xsum16, float* xp) {
  const int64_t per = is_mlx(t.dtype) ? t.group : 16;
  for (int64_t c = 0; c < cols; c += per) {
    float s = 0.0f;
    for (int64_t i = 0; i < per; ++i) s += x[c + i];
    xsum16[c / per] = s;
  }
  if (t.dtype == DType::MLX4) {
    const int64_t N = int64_t(hn::Lanes(QF()));
    for (int64_t c = 0; c < cols; c += 2 * N)
      for (int64_t i = 0; i < N; ++i) {
        xp[c + i] = x[c + 2 * i];
        xp[c + N + i] = x[c + 2 * i + 1];
      }
  }
}

// ---------------------------------------------------------------- activations rounded in SIMD
//
// The same values as quant/activations.cpp (bit for bit; tests/quant_kernels_test.cpp checks every
// target), written as integer codes with per-block scales for the integer dot products below, and/or
// as the rounded floats d * q for the float kernels.

// Q8_0 blocks: per 32 elements d = f16(amax / 127), q = round half away from zero (x * (1 / (amax / 127))).
// Writes the codes (q8), the stored scales (dsc) and / or the values d * q (out); null outputs
// are skipped.
inline void ActQ8_0(const float* HWY_RESTRICT x, int64_t n, int8_t* HWY_RESTRICT q8, float* HWY_RESTRICT dsc,
                    float* HWY_RESTRICT out) {
  const QF d;
  const QI32 di;
  const QI8 d8;
  const int64_t N = int64_t(hn::Lanes(d));
  const QV half = hn::Set(d, 0.5f), one = hn::Set(d, 1.0f);
  for (int64_t b = 0; b < n; b += 32) {
    QV m = hn::Zero(d);
    for (int64_t i = 0; i < 32; i += N) m = hn::Max(m, hn::Abs(X(x + b + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(d, m));
    const float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f, stored = f16_to_f32(f32_to_f16(dd));
    const QV vid = hn::Set(d, id), vs = hn::Set(d, stored);
    for (int64_t i = 0; i < 32; i += N) {
      const QV v = hn::Mul(X(x + b + i), vid);
      const QV t = hn::Trunc(v);
      // t + sign(v) where |v - t| >= 0.5 (v - t is exact); +0 never becomes -0 (t = -0 only gains +0 or -1).
      const QV r = hn::Add(t, hn::IfThenElseZero(hn::Ge(hn::Abs(hn::Sub(v, t)), half), hn::CopySign(one, v)));
      if (q8) hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(di, r)), d8, q8 + b + i);
      if (out) hn::StoreU(hn::Mul(vs, r), d, out + b + i);
    }
    if (dsc) dsc[b / 32] = stored;
  }
}

// Position of element `e` (0..255) of a Q8_K block in the code order the Q4_K / Q5_K integer kernel
// reads: on 64-byte vectors each 128 elements are stored as 32-element chunks 0, 2, 1, 3 (a vector of
// 64 code bytes holds sub-blocks 2p and 2p + 2 in its low nibbles); natural order otherwise.
HWY_INLINE int64_t K4Pos(int64_t e) {
  const int64_t c = e / 32, k = c & 3;
  return ((c & 4) | ((k & 1) << 1) | (k >> 1)) * 32 + e % 32;
}

// Q8_K blocks: per 256 elements, max = the first element of largest magnitude, iscale = -127 / max,
// q = min(127, round half to even (iscale * x)), d = 1 / iscale. Writes codes (q8, in K4Pos order when
// `k4order`), d (dsc), sums of codes per 16 elements (bsums) and / or the values d * q (out).
inline void ActQ8_K(const float* HWY_RESTRICT x, int64_t n, bool k4order, int8_t* HWY_RESTRICT q8,
                    float* HWY_RESTRICT dsc, int16_t* HWY_RESTRICT bsums, float* HWY_RESTRICT out) {
  const QF d;
  const QI32 di;
  const QI8 d8;
  const int64_t N = int64_t(hn::Lanes(d));
  for (int64_t b = 0; b < n; b += 256, x += 256) {
    QV m = hn::Zero(d);
    for (int64_t i = 0; i < 256; i += N) m = hn::Max(m, hn::Abs(X(x + i)));
    float amax = hn::GetLane(hn::MaxOfLanes(d, m)), max = 0.0f;
    bool found = false;
    if (amax != 0.0f) {
      const QV va = hn::Set(d, amax);
      for (int64_t i = 0; i < 256 && !found; i += N) {
        const auto eq = hn::Eq(hn::Abs(X(x + i)), va);
        if (!hn::AllFalse(d, eq)) {
          max = x[i + int64_t(hn::FindFirstTrue(d, eq))];
          found = true;
        }
      }
    }
    if (!found) {  // all zeros, or a NaN poisoned the vector maximum: the scalar scan decides
      amax = 0.0f;
      for (int64_t i = 0; i < 256; ++i)
        if (std::fabs(x[i]) > amax) {
          amax = std::fabs(x[i]);
          max = x[i];
        }
    }
    if (amax == 0.0f) {
      if (q8) std::memset(q8 + b, 0, 256);
      if (dsc) dsc[b / 256] = 0.0f;
      if (bsums) std::memset(bsums + b / 16, 0, 16 * sizeof(int16_t));
      if (out) std::memset(out + b, 0, 256 * sizeof(float));
      continue;
    }
    const float iscale = -127.0f / max, dd = 1.0f / iscale;
    const QV vis = hn::Set(d, iscale), vd = hn::Set(d, dd), top = hn::Set(d, 127.0f), zero = hn::Zero(d);
    for (int64_t k = 0; k < 256; k += 16) {
      QV s = hn::Zero(d);
      for (int64_t i = k; i < k + 16; i += N) {
        const QV r = hn::Add(hn::Min(hn::Round(hn::Mul(vis, X(x + i))), top), zero);  // + 0: no -0
        s = hn::Add(s, r);
        if (q8) hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(di, r)), d8, q8 + b + (k4order ? K4Pos(i) : i));
        if (out) hn::StoreU(hn::Mul(vd, r), d, out + b + i);
      }
      if (bsums) bsums[(b + k) / 16] = int16_t(hn::GetLane(hn::SumOfLanes(d, s)));
    }
    if (dsc) dsc[b / 256] = dd;
  }
}

// The rounded values for the batched path (and for float kernels): SIMD for the Q8_0 and Q8_K
// companions; Q8_1 (Q4_1 / Q5_1) through the scalar reference.
inline void RoundActivations(DType t, const float* x, int64_t n, float* out, float* sums16) {
  switch (t) {
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0:
      if (sums16 == nullptr) return ActQ8_0(x, n, nullptr, nullptr, out);
      break;
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      if (sums16 == nullptr) return ActQ8_K(x, n, false, nullptr, nullptr, nullptr, out);
      break;
    default: break;
  }
  std::vector<float> tmp;
  if (sums16 == nullptr) {
    tmp.resize(size_t(n / 16 + 1));
    sums16 = tmp.data();
  }
  quant::round_activations(t, x, n, out, sums16);
}

// ---------------------------------------------------------------- integer dot products (x86 SIMD)
//
// Activations as integer codes with a float scale per block (Q8_0 for Q8_0 weights, Q8_K for the
// k-quants); each block's integer dot product is exact, and is scaled once: d_w * d_x * sum(q_w q_x).
// The k-quants multiply unsigned weight codes (< 64) with int8 activation codes through pmaddubsw
// (pairs summed into int16: |sum| <= 2 * 63 * 127 < 2^15, never saturating), then pmaddwd with the
// sub-block scales as int16 (pairs summed into int32); Q8_0 widens both to int16 and uses pmaddwd
// (int8 activations: 8 KiB for the 8192 columns of a Llama down projection, which stays in L1 beside
// the weight stream; int16 ones measured 15-40% slower on rows of 8192-16384 columns).
// Offsets (Q4_K's -dmin * m, Q6_K's -32) go through the activation code sums per 16 (bsums).
// Every x86 SIMD target has both instructions (SSSE3 and up); HWY_SCALAR uses the float kernels.
#undef UNEVEN_QUANT_INT_DOT
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_SSSE3
#define UNEVEN_QUANT_INT_DOT 1

using BU8 = hn::ScalableTag<uint8_t>;
using BI8 = hn::ScalableTag<int8_t>;
using BU16 = hn::ScalableTag<uint16_t>;
using BI16 = hn::ScalableTag<int16_t>;
using BI32 = hn::ScalableTag<int32_t>;
using BU64 = hn::ScalableTag<uint64_t>;
using VB = hn::Vec<BU8>;
using VI16 = hn::Vec<BI16>;
using VI32 = hn::Vec<BI32>;
constexpr int64_t kW = HWY_MAX_BYTES;  // bytes per vector: 16, 32 or 64

// Unsigned bytes a times signed bytes b, adjacent pairs summed (saturating) into int16.
HWY_INLINE VI16 MulPairs(VB a, hn::Vec<BI8> b) {
#if HWY_TARGET <= HWY_AVX3
  return VI16{_mm512_maddubs_epi16(a.raw, b.raw)};
#elif HWY_TARGET == HWY_AVX2
  return VI16{_mm256_maddubs_epi16(a.raw, b.raw)};
#else
  return VI16{_mm_maddubs_epi16(a.raw, b.raw)};
#endif
}
// int16 products, adjacent pairs summed into int32.
HWY_INLINE VI32 Madd(VI16 a, VI16 b) {
#if HWY_TARGET <= HWY_AVX3
  return VI32{_mm512_madd_epi16(a.raw, b.raw)};
#elif HWY_TARGET == HWY_AVX2
  return VI32{_mm256_madd_epi16(a.raw, b.raw)};
#else
  return VI32{_mm_madd_epi16(a.raw, b.raw)};
#endif
}
HWY_INLINE VB Shr4(VB v) { return hn::BitCast(BU8(), hn::ShiftRight<4>(hn::BitCast(BU16(), v))); }
HWY_INLINE VB Shl4(VB v) { return hn::BitCast(BU8(), hn::ShiftLeft<4>(hn::BitCast(BU16(), v))); }
// v shifted by s bits (left if s > 0) as 16-bit lanes: callers mask out the bits that cross bytes.
HWY_INLINE VB Shift16(VB v, int s) {
  const BU16 d16;
  return hn::BitCast(BU8(), s >= 0 ? hn::ShiftLeftSame(hn::BitCast(d16, v), s) : hn::ShiftRightSame(hn::BitCast(d16, v), -s));
}
// 32 bytes at p in both halves of a 64-byte vector, the upper copy shifted right by 2 bits (16-bit
// lanes: bits 0..5 of each byte are exact); on narrower vectors, the plain bytes at p.
HWY_INLINE VB LoadQh(const uint8_t* p) {
#if HWY_TARGET <= HWY_AVX3
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return VB{_mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1)};
#else
  return hn::LoadU(BU8(), p);
#endif
}

// pshufb controls that spread scales over 128-bit blocks (one block of a product vector = 16 elements
// of pmaddubsw output = 8 int16 pair sums). k4[j]: block i holds word (byte j + 2 * (i / 2), 0) — the
// scale of sub-block j, and of j + 2 in the upper half of a 64-byte vector (see K4Pos). k6[r]: block i
// holds byte r + i in both bytes of each word (then shifted right by 8: the signed scale).
struct alignas(64) SelTables {
  uint8_t k4[8][64];
  uint8_t k6[16][64];
};
constexpr SelTables MakeSelTables() {
  SelTables t{};
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 64; ++i) t.k4[j][i] = (i % 2 == 0) ? uint8_t(j + 2 * (i / 32)) : uint8_t(0x80);
  for (int r = 0; r < 16; ++r)
    for (int i = 0; i < 64; ++i) t.k6[r][i] = uint8_t((r + i / 16) & 15);
  return t;
}
alignas(64) constexpr SelTables kSel = MakeSelTables();

HWY_INLINE float Sum4(__m128 v) {
  alignas(16) float f[4];
  _mm_store_ps(f, v);
  return (f[0] + f[1]) + (f[2] + f[3]);
}

float RowQ8_0Int(const uint8_t* HWY_RESTRICT row, int64_t blocks, const int8_t* HWY_RESTRICT xq,
                 const float* HWY_RESTRICT xd) {
  const QF df;
  const BI16 d16;
  const BI32 d32;
  const hn::Rebind<int8_t, BI16> d8;
  QV acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2, row += 68, xq += 64) {
    hwy::Prefetch(row + kPrefetch);
    hwy::Prefetch(row + kPrefetch + 64);
    VI32 t0 = hn::Zero(d32), t1 = hn::Zero(d32);
    const int8_t* q0 = reinterpret_cast<const int8_t*>(row + 2);
    const int8_t* q1 = reinterpret_cast<const int8_t*>(row + 36);
    for (int64_t i = 0; i < 32; i += kW / 2) {
      t0 = hn::Add(t0, Madd(hn::PromoteTo(d16, hn::LoadU(d8, q0 + i)), hn::PromoteTo(d16, hn::LoadU(d8, xq + i))));
      t1 = hn::Add(t1, Madd(hn::PromoteTo(d16, hn::LoadU(d8, q1 + i)), hn::PromoteTo(d16, hn::LoadU(d8, xq + 32 + i))));
    }
    acc0 = hn::MulAdd(hn::ConvertTo(df, t0), hn::Set(df, Half(row) * xd[b]), acc0);
    acc1 = hn::MulAdd(hn::ConvertTo(df, t1), hn::Set(df, Half(row + 34) * xd[b + 1]), acc1);
  }
  for (; b < blocks; ++b, row += 34, xq += 32) {
    VI32 t0 = hn::Zero(d32);
    const int8_t* q0 = reinterpret_cast<const int8_t*>(row + 2);
    for (int64_t i = 0; i < 32; i += kW / 2)
      t0 = hn::Add(t0, Madd(hn::PromoteTo(d16, hn::LoadU(d8, q0 + i)), hn::PromoteTo(d16, hn::LoadU(d8, xq + i))));
    acc0 = hn::MulAdd(hn::ConvertTo(df, t0), hn::Set(df, Half(row) * xd[b]), acc0);
  }
  return Finish(hn::Add(acc0, acc1), 0.0f);
}

// Q4_K / Q5_K; xq in K4Pos order. Vector byte o of qs (pair p = o / 32, l = o % 32) holds element l of
// sub-blocks 2p (low nibble) and 2p + 1 (high); on 64-byte vectors the upper half is pair p + 1.
template <bool kFive>
float RowK45Int(const uint8_t* HWY_RESTRICT row, int64_t blocks, const int8_t* HWY_RESTRICT xq,
                const float* HWY_RESTRICT xd, const int16_t* HWY_RESTRICT bs) {
  const QF df;
  const BU8 du8;
  const BI8 di8;
  const BI16 di16;
  const BI32 di32;
  const BU64 du64;
  const VB m4 = hn::Set(du8, 0x0F), b4 = hn::Set(du8, 0x10);
  constexpr int64_t kBytes = kFive ? 176 : 144;
  constexpr int64_t kHi = kW == 64 ? 64 : 32;  // offset of the high-nibble elements in xq
  QV acc = hn::Zero(df);
  __m128 off4 = _mm_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, row += kBytes, xq += 256, bs += 16) {
    for (int64_t l = 0; l < kBytes; l += 64) hwy::Prefetch(row + kPrefetch + l);
    const float dd = Half(row) * xd[b], dm = Half(row + 2) * xd[b];
    // llama.cpp's unpacking of the 6-bit scales and mins (quant/blocks.h k_scale_min): u[0..1] = the
    // 8 scales, u[2..3] = the 8 mins, one per byte.
    uint32_t u[4];
    std::memcpy(u, row + 4, 12);
    constexpr uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    uint64_t sc8;
    std::memcpy(&sc8, u, 8);
    const VB S = hn::BitCast(du8, hn::Set(du64, sc8));
    // sum_j m_j * (bs[2j] + bs[2j + 1]) as 4 int32 lanes: each min twice (as int16) against bs.
    const __m128i mins = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(u + 2)), _mm_setzero_si128());
    const __m128i msum = _mm_add_epi32(
        _mm_madd_epi16(_mm_unpacklo_epi16(mins, mins), _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs))),
        _mm_madd_epi16(_mm_unpackhi_epi16(mins, mins), _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs + 8))));
    off4 = _mm_sub_ps(off4, _mm_mul_ps(_mm_cvtepi32_ps(msum), _mm_set1_ps(dm)));
    const uint8_t* qs = row + (kFive ? 48 : 16);
    const uint8_t* qh = row + 16;
    VB H;
    if constexpr (kFive && kW == 64) H = LoadQh(qh);
    VI32 a = hn::Zero(di32);
    HWY_UNROLL(8)
    for (int64_t o = 0; o < 128; o += kW) {
      const int p = int(o / 32);
      const VB v = hn::LoadU(du8, qs + o);
      VB lo = hn::And(v, m4), hi = hn::And(Shr4(v), m4);
      if constexpr (kFive) {
        if constexpr (kW < 64) H = hn::LoadU(du8, qh + o % 32);
        lo = hn::OrAnd(lo, Shift16(H, 4 - 2 * p), b4);  // bit 2p of qh[l] -> bit 4
        hi = hn::OrAnd(hi, Shift16(H, 3 - 2 * p), b4);  // bit 2p + 1
      }
      const int8_t* xl = xq + 64 * p + o % 32;
      const VI16 slo = hn::BitCast(di16, hn::TableLookupBytesOr0(S, hn::Load(du8, kSel.k4[2 * p])));
      const VI16 shi = hn::BitCast(di16, hn::TableLookupBytesOr0(S, hn::Load(du8, kSel.k4[2 * p + 1])));
      a = hn::Add(a, Madd(MulPairs(lo, hn::LoadU(di8, xl)), slo));
      a = hn::Add(a, Madd(MulPairs(hi, hn::LoadU(di8, xl + kHi)), shi));
    }
    acc = hn::MulAdd(hn::ConvertTo(df, a), hn::Set(df, dd), acc);
  }
  return Finish(acc, Sum4(off4));
}

// Q6_K; xq in natural order. Per half of 128: vector byte o of ql (0..63) holds elements o (low
// nibble) and 64 + o (high) of the half, with 2 bits each from qh[o % 32] (bits 0-1 / 4-5 for o < 32,
// 2-3 / 6-7 above); values sc * (q - 32), the -32 through the code sums.
float RowQ6_KInt(const uint8_t* HWY_RESTRICT row, int64_t blocks, const int8_t* HWY_RESTRICT xq,
                 const float* HWY_RESTRICT xd, const int16_t* HWY_RESTRICT bs) {
  const QF df;
  const BU8 du8;
  const BI8 di8;
  const BI16 di16;
  const BI32 di32;
  const VB m4 = hn::Set(du8, 0x0F), m30 = hn::Set(du8, 0x30);
  QV acc = hn::Zero(df);
  __m128 off4 = _mm_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, row += 210, xq += 256, bs += 16) {
    for (int64_t l = 0; l < 210; l += 64) hwy::Prefetch(row + kPrefetch + l);
    const float dd = Half(row + 208) * xd[b];
    const int8_t* sc = reinterpret_cast<const int8_t*>(row + 192);
    // -32 sum_k sc_k bs_k (the scales sign-extended to int16 by unpacking with themselves).
    const __m128i sc16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc));
    const __m128i osum = _mm_add_epi32(
        _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(sc16, sc16), 8), _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs))),
        _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(sc16, sc16), 8), _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs + 8))));
    off4 = _mm_sub_ps(off4, _mm_mul_ps(_mm_cvtepi32_ps(osum), _mm_set1_ps(32.0f * dd)));
    const VB S = hn::LoadDup128(du8, row + 192);
    VI32 a = hn::Zero(di32);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = row + 64 * h;
      const uint8_t* qh = row + 128 + 32 * h;
      const int8_t* xh = xq + 128 * h;
      VB H;
      if constexpr (kW == 64) H = LoadQh(qh);
      HWY_UNROLL(4)
      for (int64_t o = 0; o < 64; o += kW) {
        if constexpr (kW < 64) {
          H = hn::LoadU(du8, qh + o % 32);
          if (o >= 32) H = hn::BitCast(du8, hn::ShiftRight<2>(hn::BitCast(BU16(), H)));
        }
        const VB v = hn::LoadU(du8, ql + o);
        const VB lo = hn::OrAnd(hn::And(v, m4), Shl4(H), m30);
        const VB hi = hn::OrAnd(hn::And(Shr4(v), m4), H, m30);
        const int r = 8 * h + int(o / 16);
        const VI16 slo = hn::ShiftRight<8>(hn::BitCast(di16, hn::TableLookupBytes(S, hn::Load(du8, kSel.k6[r]))));
        const VI16 shi = hn::ShiftRight<8>(hn::BitCast(di16, hn::TableLookupBytes(S, hn::Load(du8, kSel.k6[r + 4]))));
        a = hn::Add(a, Madd(MulPairs(lo, hn::LoadU(di8, xh + o)), slo));
        a = hn::Add(a, Madd(MulPairs(hi, hn::LoadU(di8, xh + 64 + o)), shi));
      }
    }
    acc = hn::MulAdd(hn::ConvertTo(df, a), hn::Set(df, dd), acc);
  }
  return Finish(acc, Sum4(off4));
}
#endif  // x86 SIMD

// Integer activations of one input vector (see ActQ8_0 / ActQ8_K).
struct IntAct {
  const int8_t* q8 = nullptr;     // codes: Q8_K (k-quants) or Q8_0 (Q8_0 weights)
  const float* d = nullptr;       // scale per block (256 or 32 elements)
  const int16_t* bsums = nullptr; // Q8_K: code sums per 16 elements
};

// Whether weights of type t are dotted with integer activations on this target.
HWY_INLINE bool UsesIntDot(DType t) {
#ifdef UNEVEN_QUANT_INT_DOT
  return t == DType::Q8_0 || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
#else
  (void)t;
  return false;
#endif
}

// Rounds x (cols elements) into integer activations for weights of type t (UsesIntDot(t)), in
// buffers that stay valid until the next call on this thread.
inline IntAct PrepareIntAct(DType t, const float* x, int64_t cols) {
  thread_local std::vector<int8_t> q8;
  thread_local std::vector<int16_t> bs;
  thread_local std::vector<float> dsc;
  IntAct a;
  if (t == DType::Q8_0) {
    q8.resize(size_t(cols));
    dsc.resize(size_t(cols / 32));
    ActQ8_0(x, cols, q8.data(), dsc.data(), nullptr);
    a.q8 = q8.data();
  } else {
    q8.resize(size_t(cols));
    dsc.resize(size_t(cols / 256));
    bs.resize(size_t(cols / 16));
#ifdef UNEVEN_QUANT_INT_DOT
    const bool k4 = kW == 64 && t != DType::Q6_K;
#else
    const bool k4 = false;
#endif
    ActQ8_K(x, cols, k4, q8.data(), dsc.data(), bs.data(), nullptr);
    a.q8 = q8.data();
    a.bsums = bs.data();
  }
  a.d = dsc.data();
  return a;
}

// Dot of one quantized row (UsesIntDot) with integer activations.
HWY_INLINE float QuantRowDotInt(DType t, const uint8_t* row, int64_t cols, const IntAct& a) {
#ifdef UNEVEN_QUANT_INT_DOT
  switch (t) {
    case DType::Q8_0: return RowQ8_0Int(row, cols / 32, a.q8, a.d);
    case DType::Q4_K: return RowK45Int<false>(row, cols / 256, a.q8, a.d, a.bsums);
    case DType::Q5_K: return RowK45Int<true>(row, cols / 256, a.q8, a.d, a.bsums);
    case DType::Q6_K: return RowQ6_KInt(row, cols / 256, a.q8, a.d, a.bsums);
    default: break;
  }
#endif
  (void)t, (void)row, (void)cols, (void)a;
  return 0.0f;
}

// ---------------------------------------------------------------- dequantization (batched path)

// Dequantizes n elements (whole blocks) at src into dst, as quant::dequantize_row_ref does (up to the
// rounding of fused multiply-adds). MLX 4-bit is written permuted per 2N elements (N even elements,
// then N odd), to be dotted with inputs permuted the same way (see PermuteMlx4).
inline void DequantRow(const WeightType& t, const uint8_t* HWY_RESTRICT src, int64_t n, float* HWY_RESTRICT dst) {
  const QF d;
  const QU32 du;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU m4 = hn::Set(du, 15u), one = hn::Set(du, 1u), three = hn::Set(du, 3u);
  switch (t.dtype) {
    case DType::Q8_0:
      for (int64_t b = 0; b < n; b += 32, src += 34, dst += 32) {
        const QV s = hn::Set(d, Half(src));
        const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
        for (int64_t i = 0; i < 32; i += N)
          hn::StoreU(hn::Mul(s, hn::ConvertTo(d, hn::PromoteTo(QI32(), hn::LoadU(QI8(), q + i)))), d, dst + i);
      }
      return;
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: {
      const bool kmin = t.dtype == DType::Q4_1 || t.dtype == DType::Q5_1;
      const bool five = t.dtype == DType::Q5_0 || t.dtype == DType::Q5_1;
      const int64_t bytes = t.block_bytes();
      for (int64_t b = 0; b < n; b += 32, src += bytes, dst += 32) {
        const float s = Half(src);
        // Q4_0 / Q5_0: d * (q - 8 or 16) in one rounding, as the reference's product of d and an integer.
        const QV vs = hn::Set(d, s), vm = hn::Set(d, kmin ? Half(src + 2) : (five ? -16.0f : -8.0f) * s);
        const uint8_t* qh = src + (kmin ? 4 : 2);
        const uint8_t* qs = qh + (five ? 4 : 0);
        uint32_t h32 = 0;
        if (five) std::memcpy(&h32, qh, 4);
        const QVU h = hn::Set(du, h32);
        for (int64_t i = 0; i < 16; i += N) {
          const QVU v = Bytes(qs + i);
          QVU lo = hn::And(v, m4), hi = hn::ShiftRight<4>(v);
          if (five) {
            const QVU sh = hn::Iota(du, uint32_t(i));
            lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::operator>>(h, sh), one)));
            hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::operator>>(h, hn::Add(sh, hn::Set(du, 16u))), one)));
          }
          hn::StoreU(hn::MulAdd(vs, ToF(lo), vm), d, dst + i);
          hn::StoreU(hn::MulAdd(vs, ToF(hi), vm), d, dst + 16 + i);
        }
      }
      return;
    }
    case DType::Q4_K: case DType::Q5_K: {
      const bool five = t.dtype == DType::Q5_K;
      const int64_t bytes = five ? 176 : 144;
      for (int64_t b = 0; b < n; b += 256, src += bytes, dst += 256) {
        const float dd = Half(src), dmin = Half(src + 2);
        const uint8_t* qh = src + 16;
        const uint8_t* qs = src + (five ? 48 : 16);
        for (int p = 0; p < 4; ++p) {
          float sc0, m0, sc1, m1;
          ScaleMinK(2 * p, src + 4, sc0, m0);
          ScaleMinK(2 * p + 1, src + 4, sc1, m1);
          const QV d0 = hn::Set(d, dd * sc0), mm0 = hn::Set(d, dmin * m0);
          const QV d1 = hn::Set(d, dd * sc1), mm1 = hn::Set(d, dmin * m1);
          for (int64_t i = 0; i < 32; i += N) {
            const QVU v = Bytes(qs + 32 * p + i);
            QVU a = hn::And(v, m4), c = hn::ShiftRight<4>(v);
            if (five) {
              const QVU hb = Bytes(qh + i);
              a = hn::Or(a, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(hb, 2 * p), one)));
              c = hn::Or(c, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(hb, 2 * p + 1), one)));
            }
            hn::StoreU(hn::MulSub(d0, ToF(a), mm0), d, dst + 64 * p + i);
            hn::StoreU(hn::MulSub(d1, ToF(c), mm1), d, dst + 64 * p + 32 + i);
          }
        }
      }
      return;
    }
    case DType::Q6_K:
      for (int64_t b = 0; b < n; b += 256, src += 210, dst += 256) {
        const float dd = Half(src + 208);
        const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
        const QVU k32 = hn::Set(du, 32u);
        for (int half = 0; half < 2; ++half) {
          const uint8_t* ql = src + 64 * half;
          const uint8_t* qh = src + 128 + 32 * half;
          const int8_t* s = sc + 8 * half;
          float* y = dst + 128 * half;
          for (int64_t l = 0; l < 32; l += N) {
            const int is = int(l / 16);
            const QVU a = Bytes(ql + l), c = Bytes(ql + 32 + l), h = Bytes(qh + l);
            const QVU q1 = hn::Or(hn::And(a, m4), hn::ShiftLeft<4>(hn::And(h, three)));
            const QVU q2 = hn::Or(hn::And(c, m4), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), three)));
            const QVU q3 = hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), three)));
            const QVU q4 = hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h)));
            hn::StoreU(hn::Mul(hn::Set(d, dd * float(s[is])), ToF(hn::Sub(q1, k32))), d, y + l);
            hn::StoreU(hn::Mul(hn::Set(d, dd * float(s[is + 2])), ToF(hn::Sub(q2, k32))), d, y + 32 + l);
            hn::StoreU(hn::Mul(hn::Set(d, dd * float(s[is + 4])), ToF(hn::Sub(q3, k32))), d, y + 64 + l);
            hn::StoreU(hn::Mul(hn::Set(d, dd * float(s[is + 6])), ToF(hn::Sub(q4, k32))), d, y + 96 + l);
          }
        }
      }
      return;
    case DType::MLX4: case DType::MLX8: {
      const int64_t ss = int64_t(dtype_size(t.scale));
      const int64_t bits = t.dtype == DType::MLX4 ? 4 : 8;
      const int64_t bytes = 2 * ss + t.group * bits / 8;
      for (int64_t g = 0; g < n; g += t.group, src += bytes, dst += t.group) {
        const QV s = hn::Set(d, Scale(src, t.scale)), bias = hn::Set(d, Scale(src + ss, t.scale));
        const uint8_t* q = src + 2 * ss;
        if (bits == 8) {
          for (int64_t i = 0; i < t.group; i += N) hn::StoreU(hn::MulAdd(s, ToF(Bytes(q + i)), bias), d, dst + i);
        } else {
          for (int64_t i = 0; i < t.group; i += 2 * N) {
            const QVU v = Bytes(q + i / 2);
            hn::StoreU(hn::MulAdd(s, ToF(hn::And(v, m4)), bias), d, dst + i);
            hn::StoreU(hn::MulAdd(s, ToF(hn::ShiftRight<4>(v)), bias), d, dst + i + N);
          }
        }
      }
      return;
    }
    default: quant::dequantize_row_ref(t, src, n, dst);
  }
}

// x permuted per block of 2N elements into (N even elements, N odd): the order DequantRow writes MLX
// 4-bit rows in (and RowMlx<4> reads xp in). n is a multiple of 2N.
inline void PermuteMlx4(const float* x, int64_t n, float* xp) {
  const int64_t N = int64_t(hn::Lanes(QF()));
  for (int64_t c = 0; c < n; c += 2 * N)
    for (int64_t i = 0; i < N; ++i) {
      xp[c + i] = x[c + 2 * i];
      xp[c + N + i] = x[c + 2 * i + 1];
    }
}

}  // namespace uneven::kernels::quant_impl::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // UNEVEN_COMPUTE_QUANT_INL_H_
