// Element-wise and reduction kernels (rmsnorm, silu_mul, softmax, add, dot, axpy, to_f32), Highway
// runtime-dispatched. matmul lives in matmul.cpp, the bandwidth probe in bandwidth.cpp.
//
// Every loop runs whole vectors and finishes the tail either with scalar code computing the same
// formula or, where the vector formula (exp) differs from libm, by running one padded vector over a
// stack copy, so that an element's result does not depend on its position.
#include "compute/kernels.h"
#include "quant/blocks.h"
#include "util/error.h"

#include <cmath>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "compute/kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "compute/f16-inl.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::elementwise::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using uneven::kernels::HWY_NAMESPACE::LoadF16AsF32;
using DF = hn::ScalableTag<float>;

// Sum of x[i]*y[i] with four vector accumulators (hides FMA latency; summation order differs from
// the sequential scalar one, so results agree with it to a few ulp times sqrt(n)).
float Dot(const float* HWY_RESTRICT x, const float* HWY_RESTRICT y, int64_t n) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    a0 = hn::MulAdd(hn::LoadU(d, x + i), hn::LoadU(d, y + i), a0);
    a1 = hn::MulAdd(hn::LoadU(d, x + i + N), hn::LoadU(d, y + i + N), a1);
    a2 = hn::MulAdd(hn::LoadU(d, x + i + 2 * N), hn::LoadU(d, y + i + 2 * N), a2);
    a3 = hn::MulAdd(hn::LoadU(d, x + i + 3 * N), hn::LoadU(d, y + i + 3 * N), a3);
  }
  for (; i + N <= n; i += N) a0 = hn::MulAdd(hn::LoadU(d, x + i), hn::LoadU(d, y + i), a0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

void RmsNorm(const float* x, const float* weight, float eps, int64_t n, int64_t rows, float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;  // may equal xr: each element is read before it is written
    const float scale = 1.0f / std::sqrt(Dot(xr, xr, n) / float(n) + eps);
    const auto vs = hn::Set(d, scale);
    int64_t i = 0;
    for (; i + N <= n; i += N)
      hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(d, xr + i), vs), hn::LoadU(d, weight + i)), d, o + i);
    for (; i < n; ++i) o[i] = xr[i] * scale * weight[i];
  }
}

// silu(g) * u = g * u / (1 + exp(-g)). exp's argument is clamped to 88 (exp(88) ~ 1.6e38 is finite)
// because Highway's Exp is only defined up to 104; for g < -88 the result is ~1e-36 * u either way.
template <class V>
V SiluMulVec(DF d, V g, V u) {
  const V e = hn::Exp(d, hn::Min(hn::Neg(g), hn::Set(d, 88.0f)));
  return hn::Div(hn::Mul(g, u), hn::Add(hn::Set(d, 1.0f), e));
}

void SiluMul(float* gate, const float* up, int64_t n) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(SiluMulVec(d, hn::LoadU(d, gate + i), hn::LoadU(d, up + i)), d, gate + i);
  if (i < n) {  // tail through one zero-padded vector
    HWY_ALIGN float g[hn::MaxLanes(d)] = {}, u[hn::MaxLanes(d)] = {};
    std::memcpy(g, gate + i, size_t(n - i) * sizeof(float));
    std::memcpy(u, up + i, size_t(n - i) * sizeof(float));
    hn::Store(SiluMulVec(d, hn::Load(d, g), hn::Load(d, u)), d, g);
    std::memcpy(gate + i, g, size_t(n - i) * sizeof(float));
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  // Pass 1: max.
  float mx = x[0];
  {
    auto vm = hn::Set(d, x[0]);
    int64_t i = 0;
    for (; i + N <= n; i += N) vm = hn::Max(vm, hn::LoadU(d, x + i));
    mx = hn::GetLane(hn::MaxOfLanes(d, vm));
    for (; i < n; ++i) mx = std::max(mx, x[i]);
  }
  // Pass 2: x = exp(x - max), summed. Exp is given arguments <= 0 only.
  const auto vmax = hn::Set(d, mx);
  auto vsum = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vmax));
    vsum = hn::Add(vsum, e);
    hn::StoreU(e, d, x + i);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  if (i < n) {  // tail through one padded vector; padding is -inf, whose exp is 0
    HWY_ALIGN float t[hn::MaxLanes(d)];
    for (size_t k = 0; k < hn::MaxLanes(d); ++k) t[k] = -INFINITY;
    std::memcpy(t, x + i, size_t(n - i) * sizeof(float));
    const auto e = hn::Exp(d, hn::Sub(hn::Load(d, t), vmax));
    sum += hn::GetLane(hn::SumOfLanes(d, e));
    hn::Store(e, d, t);
    std::memcpy(x + i, t, size_t(n - i) * sizeof(float));
  }
  // Pass 3: normalise.
  const float inv = 1.0f / sum;
  const auto vinv = hn::Set(d, inv);
  i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), vinv), d, x + i);
  for (; i < n; ++i) x[i] *= inv;
}

void Add(float* y, const float* x, int64_t n) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Add(hn::LoadU(d, y + i), hn::LoadU(d, x + i)), d, y + i);
  for (; i < n; ++i) y[i] += x[i];
}

// Exact (one fused rounding) on FMA targets; SSE4 has no FMA, so there it rounds twice.
void Axpy(float a, const float* x, float* y, int64_t n) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const auto va = hn::Set(d, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] = a * x[i] + y[i];
}

// Widening conversions are exact, so the vector and scalar paths agree bit for bit (NaN payloads
// aside: vcvtph2ps quiets signalling NaNs).
void ToF32(const void* src, DType dtype, int64_t n, float* dst) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t i = 0;
  if (dtype == DType::F32) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  } else if (dtype == DType::BF16) {
    const hn::RebindToUnsigned<DF> du32;
    const hn::Rebind<uint16_t, DF> du16;
    const auto* s = static_cast<const uint16_t*>(src);
    for (; i + N <= n; i += N)
      hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, s + i)))), d, dst + i);
    for (; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
  } else {
    const auto* s = static_cast<const hwy::float16_t*>(src);
    for (; i + N <= n; i += N) hn::StoreU(LoadF16AsF32(d, s + i), d, dst + i);
    const auto* s16 = static_cast<const uint16_t*>(src);
    for (; i < n; ++i) dst[i] = f16_to_f32(s16[i]);
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace uneven::kernels::elementwise::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace uneven::kernels {
namespace elementwise {
HWY_EXPORT(Dot);
HWY_EXPORT(RmsNorm);
HWY_EXPORT(SiluMul);
HWY_EXPORT(Softmax);
HWY_EXPORT(Add);
HWY_EXPORT(Axpy);
HWY_EXPORT(ToF32);
HWY_EXPORT(TargetName);
}  // namespace elementwise

void rmsnorm(const float* x, const float* weight, float eps, int64_t n, int64_t rows, float* out) {
  HWY_DYNAMIC_DISPATCH(elementwise::RmsNorm)(x, weight, eps, n, rows, out);
}
void silu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(elementwise::SiluMul)(gate, up, n); }
void softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(elementwise::Softmax)(x, n); }
void add(float* y, const float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(elementwise::Add)(y, x, n); }
float dot(const float* x, const float* y, int64_t n) { return HWY_DYNAMIC_DISPATCH(elementwise::Dot)(x, y, n); }
void axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(elementwise::Axpy)(a, x, y, n); }
void to_f32(const void* src, DType dtype, int64_t n, float* dst) {
  if (is_quantized(dtype)) fail("to_f32: {} needs its block layout (use the WeightType overload)", dtype_name(dtype));
  if (n > 0) HWY_DYNAMIC_DISPATCH(elementwise::ToF32)(src, dtype, n, dst);
}
void to_f32(const void* src, const WeightType& type, int64_t n, float* dst) {
  if (!is_quantized(type.dtype)) return to_f32(src, type.dtype, n, dst);
  if (n > 0) quant::dequantize_row_ref(type, src, n, dst);
}
const char* simd_target() { return HWY_DYNAMIC_DISPATCH(elementwise::TargetName)(); }

}  // namespace uneven::kernels
#endif  // HWY_ONCE
