// Per-target dot products of quantized rows (GGML blocks, MLX groups) with an F32 vector (included once per target).
//
// Each block is read once and widened in registers: its integer codes become floats and are multiplied
// with x; a block's (or sub-block's) scale multiplies the partial sum once, and its additive offset
// (Q4_0's -8 d, Q4_K's -dmin m, MLX's bias, ...) is applied through the sum of x over the block, which
// is computed once per call (`xsum16`: sums of x over each 16 elements). Values match the scalar
// reference dequantizer (quant/blocks.h) up to float summation order.
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

#include <cstring>

#include "hwy/highway.h"
#include "compute/f16-inl.h"
#include "model/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::quant_impl::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
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
// order; 4-bit codes are dotted with xp (see the file comment).
template <int kBits>
float RowMlx(const uint8_t* row, int64_t groups, int64_t group, DType scale_type, const float* x, const float* xp,
             const float* xsum16) {
  const QF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const QVU mask = hn::Set(QU32(), 15u);
  const int64_t ss = int64_t(dtype_size(scale_type));
  const int64_t bytes = 2 * ss + group * kBits / 8;
  QV acc = hn::Zero(d);
  float off = 0.0f;
  for (int64_t g = 0; g < groups; ++g, row += bytes, x += group, xp += group, xsum16 += group / 16) {
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
    float xs = 0.0f;
    for (int64_t k = 0; k < group / 16; ++k) xs += xsum16[k];
    off += Scale(row + ss, scale_type) * xs;
  }
  return Finish(acc, off);
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
    case DType::MLX4: return RowMlx<4>(row, cols / t.group, t.group, t.scale, x, xp, xsum16);
    case DType::MLX8: return RowMlx<8>(row, cols / t.group, t.group, t.scale, x, xp, xsum16);
    default: return 0.0f;
  }
}

// Sums of x over each 16 elements (cols is a multiple of 16 for every quantized type), and for MLX
// 4-bit the (even, odd) permutation per 2N block.
HWY_INLINE void PrepareQuantInput(const WeightType& t, const float* x, int64_t cols, float* xsum16, float* xp) {
  for (int64_t c = 0; c < cols; c += 16) {
    float s = 0.0f;
    for (int64_t i = 0; i < 16; ++i) s += x[c + i];
    xsum16[c / 16] = s;
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

}  // namespace uneven::kernels::quant_impl::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // UNEVEN_COMPUTE_QUANT_INL_H_
