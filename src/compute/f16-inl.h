// Per-target F16 -> F32 widening that is exact for every bit pattern (included once per target).
//
// AVX2 and up convert in hardware (vcvtph2ps). Below that, Highway 1.0.3's emulation maps inf and NaN
// to finite values, so those targets use the exponent-rebias trick instead: (h & 0x7fff) << 13 read
// as a float is the value times 2^-112 for normals and subnormals alike, so one multiply by 2^112 is
// exact; exponent 31 (inf/NaN) is patched to the F32 all-ones exponent; the sign is OR-ed back.
#if defined(UNEVEN_COMPUTE_F16_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef UNEVEN_COMPUTE_F16_INL_H_
#undef UNEVEN_COMPUTE_F16_INL_H_
#else
#define UNEVEN_COMPUTE_F16_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Loads Lanes(d) F16 values at p as floats.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadF16AsF32(DF d, const hwy::float16_t* HWY_RESTRICT p) {
#if HWY_TARGET < HWY_SSE4 && HWY_ARCH_X86
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::float16_t, DF>(), p));
#else
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto h = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint16_t, DF>(), reinterpret_cast<const uint16_t*>(p)));
  const auto mag = hn::And(h, hn::Set(du, 0x7fffu));
  const auto scaled = hn::Mul(hn::BitCast(d, hn::ShiftLeft<13>(mag)), hn::Set(d, 5.192296858534828e33f));  // 2^112
  const auto special = hn::BitCast(d, hn::Or(hn::ShiftLeft<13>(mag), hn::Set(du, 0x7f800000u)));
  const auto is_special = hn::RebindMask(d, hn::Gt(hn::BitCast(di, mag), hn::Set(di, 0x7bff)));
  const auto sign = hn::BitCast(d, hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u))));
  return hn::Or(hn::IfThenElse(is_special, special, scaled), sign);
#endif
}

}  // namespace uneven::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard
