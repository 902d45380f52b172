// matmul: y = x W^T for F32, BF16 and F16 weights, Highway runtime-dispatched.
//
// batch == 1 (decode) is bound by reading W, so each thread streams a contiguous band of rows, four
// rows at a time against one load of x, converting weights in registers:
//  - F32: plain loads;
//  - F16: LoadF16AsF32 (vcvtph2ps on AVX2 and up);
//  - BF16: one 16-bit vector of 2N weights is read as N 32-bit lanes; lane i holds weights 2i (low
//    half) and 2i+1 (high half), so `lane << 16` is weight 2i as a float and `lane & 0xffff0000` is
//    weight 2i+1. x is permuted once per call to match (per block of 2N: even elements, then odd),
//    so no shuffle is needed in the hot loop. BF16 rows of up to 4096 columns (x fits L1) are read one
//    row at a time or four interleaved, whichever this machine reads faster: the prefetchers differ (an
//    AMD Zen 4 VM read one linear stream per thread ~30% faster, 16.6 -> 21.9 GB/s at 2048x2048; an
//    Intel Sapphire Rapids VM read four rows ~23% faster, 20.5 -> 25.2 GB/s). Bf16RowChoice times both
//    on the first products of a process; the two sum in the same order, so the choice never changes a result.
//    Longer rows are always four at a time.
// Quantized weights (quant-inl.h): at batch 1, Q8_0 and the k-quants meet int8 activation codes in
// integer dot products on x86 SIMD targets; other types (and HWY_SCALAR) dequantize in registers
// against float activations. Batched, tiles are dequantized in SIMD into the F32 tile below.
// batch > 1 (prompt) packs a tile of kRows rows x kc columns of W into F32 (cache-resident) and runs
// a register-blocked kernel of kRows rows x kBatch inputs over it, so W is read from memory once per
// call, and each packed vector is reused for kBatch inputs from cache.
//
// Summation order differs from a sequential scalar sum (several vector accumulators, column
// blocking), so results agree with a double-precision reference to ~1e-6 relative to sum |w x|.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <type_traits>
#include <cstring>
#include <vector>

#include "compute/kernels.h"
#include "quant/activations.h"
#include "quant/blocks.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "compute/matmul.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "compute/f16-inl.h"
#include "compute/quant-inl.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::matmul_impl::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using uneven::kernels::HWY_NAMESPACE::LoadF16AsF32;
using DF = hn::ScalableTag<float>;
using DU32 = hn::RebindToUnsigned<DF>;
using DU16 = hn::Repartition<uint16_t, DF>;   // 2N lanes: a full vector of 16-bit weights
using VF = hn::Vec<DF>;

constexpr int64_t kRows = 4;  // rows per register block (both paths)
// Inputs per register block of the batched kernel: kRows * kBatch accumulators + kRows weight
// vectors + 1 input vector must fit the register file (32 vectors on AVX-512, 16 below).
#if HWY_TARGET <= HWY_AVX3
constexpr int64_t kBatch = 6;
#else
constexpr int64_t kBatch = 2;
#endif

inline float scalar_weight(const void* w, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(w)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
    default: return 0.0f;  // quantized rows never take the element paths
  }
}

// ---------------------------------------------------------------- decode (batch 1)

// Loads N consecutive weights at `p` as floats.
HWY_INLINE VF LoadW(DF d, const float* p) { return hn::LoadU(d, p); }
HWY_INLINE VF LoadW(DF d, const hwy::float16_t* p) { return LoadF16AsF32(d, p); }
// BF16 by widening (used where the even/odd kernel below cannot be: the 1-lane HWY_SCALAR target).
HWY_INLINE VF LoadW(DF d, const hwy::bfloat16_t* p) {
  const hn::Rebind<uint16_t, DF> dh16;
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(DU32(), hn::LoadU(dh16, reinterpret_cast<const uint16_t*>(p)))));
}

template <class T>
constexpr DType kDType = std::is_same_v<T, float> ? DType::F32
                         : std::is_same_v<T, hwy::float16_t> ? DType::F16 : DType::BF16;

// out[r] = dot(W row r, x) for kRows rows starting at w (row stride `stride` elements); F32 or F16.
template <class T>
HWY_INLINE void DotRows4(const T* HWY_RESTRICT w, int64_t stride, int64_t cols, const float* HWY_RESTRICT x,
                         float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const T* w0 = w;
  const T* w1 = w + stride;
  const T* w2 = w + 2 * stride;
  const T* w3 = w + 3 * stride;
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  VF b0 = hn::Zero(d), b1 = hn::Zero(d), b2 = hn::Zero(d), b3 = hn::Zero(d);
  int64_t c = 0;
  for (; c + 2 * N <= cols; c += 2 * N) {
    const VF x0 = hn::LoadU(d, x + c), x1 = hn::LoadU(d, x + c + N);
    a0 = hn::MulAdd(LoadW(d, w0 + c), x0, a0);
    a1 = hn::MulAdd(LoadW(d, w1 + c), x0, a1);
    a2 = hn::MulAdd(LoadW(d, w2 + c), x0, a2);
    a3 = hn::MulAdd(LoadW(d, w3 + c), x0, a3);
    b0 = hn::MulAdd(LoadW(d, w0 + c + N), x1, b0);
    b1 = hn::MulAdd(LoadW(d, w1 + c + N), x1, b1);
    b2 = hn::MulAdd(LoadW(d, w2 + c + N), x1, b2);
    b3 = hn::MulAdd(LoadW(d, w3 + c + N), x1, b3);
  }
  if (c + N <= cols) {
    const VF x0 = hn::LoadU(d, x + c);
    a0 = hn::MulAdd(LoadW(d, w0 + c), x0, a0);
    a1 = hn::MulAdd(LoadW(d, w1 + c), x0, a1);
    a2 = hn::MulAdd(LoadW(d, w2 + c), x0, a2);
    a3 = hn::MulAdd(LoadW(d, w3 + c), x0, a3);
    c += N;
  }
  out[0] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, b0)));
  out[1] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a1, b1)));
  out[2] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a2, b2)));
  out[3] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a3, b3)));
  for (; c < cols; ++c)
    for (int r = 0; r < 4; ++r) out[r] += scalar_weight(w + r * stride, kDType<T>, c) * x[c];
}

template <class T>
HWY_INLINE float DotRow1(const T* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT x) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  VF a = hn::Zero(d);
  int64_t c = 0;
  for (; c + N <= cols; c += N) a = hn::MulAdd(LoadW(d, w + c), hn::LoadU(d, x + c), a);
  float sum = hn::GetLane(hn::SumOfLanes(d, a));
  for (; c < cols; ++c) sum += scalar_weight(w, kDType<T>, c) * x[c];
  return sum;
}

#if HWY_TARGET != HWY_SCALAR
// BF16 weight lane pair -> (even, odd) floats; see the file comment.
HWY_INLINE VF Bf16Even(DF d, hn::Vec<DU32> v) { return hn::BitCast(d, hn::ShiftLeft<16>(v)); }
HWY_INLINE VF Bf16Odd(DF d, hn::Vec<DU32> v, hn::Vec<DU32> hi_mask) { return hn::BitCast(d, hn::And(v, hi_mask)); }
HWY_INLINE hn::Vec<DU32> LoadBf16Pairs(const uint16_t* p) { return hn::BitCast(DU32(), hn::LoadU(DU16(), p)); }

// BF16 version of DotRows4: xp is x permuted per block of 2N (N even elements, then N odd ones) for
// the whole blocks; x (unpermuted) serves the tail.
HWY_INLINE void DotRows4Bf16(const uint16_t* HWY_RESTRICT w, int64_t stride, int64_t cols,
                             const float* HWY_RESTRICT xp, const float* HWY_RESTRICT x, float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const auto hi = hn::Set(DU32(), 0xffff0000u);
  const uint16_t* w0 = w;
  const uint16_t* w1 = w + stride;
  const uint16_t* w2 = w + 2 * stride;
  const uint16_t* w3 = w + 3 * stride;
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  VF b0 = hn::Zero(d), b1 = hn::Zero(d), b2 = hn::Zero(d), b3 = hn::Zero(d);
  int64_t c = 0;
  for (; c + 2 * N <= cols; c += 2 * N) {
    const VF xe = hn::LoadU(d, xp + c), xo = hn::LoadU(d, xp + c + N);
    const auto v0 = LoadBf16Pairs(w0 + c), v1 = LoadBf16Pairs(w1 + c);
    const auto v2 = LoadBf16Pairs(w2 + c), v3 = LoadBf16Pairs(w3 + c);
    a0 = hn::MulAdd(Bf16Even(d, v0), xe, a0);
    a1 = hn::MulAdd(Bf16Even(d, v1), xe, a1);
    a2 = hn::MulAdd(Bf16Even(d, v2), xe, a2);
    a3 = hn::MulAdd(Bf16Even(d, v3), xe, a3);
    b0 = hn::MulAdd(Bf16Odd(d, v0, hi), xo, b0);
    b1 = hn::MulAdd(Bf16Odd(d, v1, hi), xo, b1);
    b2 = hn::MulAdd(Bf16Odd(d, v2, hi), xo, b2);
    b3 = hn::MulAdd(Bf16Odd(d, v3, hi), xo, b3);
  }
  out[0] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, b0)));
  out[1] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a1, b1)));
  out[2] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a2, b2)));
  out[3] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a3, b3)));
  for (; c < cols; ++c)
    for (int r = 0; r < 4; ++r) out[r] += bf16_to_f32(w[r * stride + c]) * x[c];
}

HWY_INLINE float DotRow1Bf16(const uint16_t* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT xp,
                             const float* HWY_RESTRICT x) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const auto hi = hn::Set(DU32(), 0xffff0000u);
  VF a = hn::Zero(d), b = hn::Zero(d);
  int64_t c = 0;
  for (; c + 2 * N <= cols; c += 2 * N) {
    const auto v = LoadBf16Pairs(w + c);
    a = hn::MulAdd(Bf16Even(d, v), hn::LoadU(d, xp + c), a);
    b = hn::MulAdd(Bf16Odd(d, v, hi), hn::LoadU(d, xp + c + N), b);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(a, b)));
  for (; c < cols; ++c) sum += bf16_to_f32(w[c]) * x[c];
  return sum;
}

// Permutes the whole 2N-blocks of x into (even, odd) halves; the tail is left out (read from x).
void PermuteEvenOdd(const float* x, int64_t cols, float* xp) {
  const int64_t N = int64_t(hn::Lanes(DF()));
  for (int64_t c = 0; c + 2 * N <= cols; c += 2 * N)
    for (int64_t i = 0; i < N; ++i) {
      xp[c + i] = x[c + 2 * i];
      xp[c + N + i] = x[c + 2 * i + 1];
    }
}

#endif  // HWY_TARGET != HWY_SCALAR

inline void Store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// Rows [r0, r1) of the product with one input vector.
void GemvRows(const WeightView& w, const float* x, const float* xp, const float* xsum16, int64_t r0, int64_t r1,
              float* y, bool accumulate, bool bf16_single_rows = false) {
  const int64_t cols = w.cols;
  float out[4];
  int64_t r = r0;
  if (is_quantized(w.dtype)) {
    const WeightType t = w.type();
    const uint64_t row_bytes = t.bytes(cols);
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    for (; r < r1; ++r)
      Store(y + r, quant_impl::HWY_NAMESPACE::QuantRowDot(t, base + uint64_t(r) * row_bytes, cols, x, xp, xsum16),
            accumulate);
    return;
  }
  switch (w.dtype) {
    case DType::F32: {
      const float* base = static_cast<const float*>(w.data);
      for (; r + 4 <= r1; r += 4) {
        DotRows4(base + r * cols, cols, cols, x, out);
        for (int i = 0; i < 4; ++i) Store(y + r + i, out[i], accumulate);
      }
      for (; r < r1; ++r) Store(y + r, DotRow1(base + r * cols, cols, x), accumulate);
      break;
    }
    case DType::F16: {
      const hwy::float16_t* base = static_cast<const hwy::float16_t*>(w.data);
      for (; r + 4 <= r1; r += 4) {
        DotRows4(base + r * cols, cols, cols, x, out);
        for (int i = 0; i < 4; ++i) Store(y + r + i, out[i], accumulate);
      }
      for (; r < r1; ++r) Store(y + r, DotRow1(base + r * cols, cols, x), accumulate);
      break;
    }
    case DType::BF16: {
#if HWY_TARGET == HWY_SCALAR
      (void)bf16_single_rows;
      const hwy::bfloat16_t* base = static_cast<const hwy::bfloat16_t*>(w.data);
      for (; r + 4 <= r1; r += 4) {
        DotRows4(base + r * cols, cols, cols, x, out);
        for (int i = 0; i < 4; ++i) Store(y + r + i, out[i], accumulate);
      }
      for (; r < r1; ++r) Store(y + r, DotRow1(base + r * cols, cols, x), accumulate);
#else
      const uint16_t* base = static_cast<const uint16_t*>(w.data);
      // Rows whose input vector stays in L1 (<= 16 KiB of floats) stream one at a time where this
      // machine reads that faster (see the file comment); longer rows go four at a time so each input
      // load serves four. DotRow1Bf16 sums in DotRows4Bf16's order: the same results either way.
      if (cols <= 4096 && bf16_single_rows) {
        for (; r < r1; ++r) Store(y + r, DotRow1Bf16(base + r * cols, cols, xp, x), accumulate);
        break;
      }
      for (; r + 4 <= r1; r += 4) {
        DotRows4Bf16(base + r * cols, cols, cols, xp, x, out);
        for (int i = 0; i < 4; ++i) Store(y + r + i, out[i], accumulate);
      }
      for (; r < r1; ++r) Store(y + r, DotRow1Bf16(base + r * cols, cols, xp, x), accumulate);
#endif
      break;
    }
    default: break;
  }
}

// ---------------------------------------------------------------- batched (batch > 1)

// Converts cols [k0, k0+kc) of `rows` rows starting at r0 into dst (row stride kc), zero-filling rows
// up to kRows so the kernel can always run a full register block.
void PackTile(const WeightView& w, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  for (int64_t r = 0; r < kRows; ++r) {
    float* o = dst + r * kc;
    if (r >= rows) {
      std::fill(o, o + kc, 0.0f);
      continue;
    }
    if (is_quantized(w.dtype)) {  // k0 and kc are whole blocks (see Matmul)
      const WeightType t = w.type();
      const uint8_t* row = static_cast<const uint8_t*>(w.data) + uint64_t(r0 + r) * t.bytes(w.cols);
      quant_impl::HWY_NAMESPACE::DequantRow(t, row + t.bytes(k0), kc, o);
      continue;
    }
    const int64_t at = (r0 + r) * w.cols + k0;
    int64_t c = 0;
    switch (w.dtype) {
      case DType::F32:
        std::memcpy(o, static_cast<const float*>(w.data) + at, size_t(kc) * sizeof(float));
        c = kc;
        break;
      case DType::BF16: {
        const uint16_t* s = static_cast<const uint16_t*>(w.data) + at;
        const hn::Rebind<uint16_t, DF> dh16;
        for (; c + N <= kc; c += N)
          hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(DU32(), hn::LoadU(dh16, s + c)))), d, o + c);
        break;
      }
      case DType::F16: {
        const hwy::float16_t* s = static_cast<const hwy::float16_t*>(w.data) + at;
        for (; c + N <= kc; c += N) hn::StoreU(LoadF16AsF32(d, s + c), d, o + c);
        break;
      }
      default: break;
    }
    for (; c < kc; ++c) o[c] = scalar_weight(w.data, w.dtype, at + c);
  }
}

// acc[r][b] = sum over kc of tile[r][k] * x[b][k] for kRows packed rows and NB inputs (x row stride
// `xs`), then stored into y (row stride `ys`) for the first `rows` rows.
template <int NB>
HWY_INLINE void TileKernel(const float* HWY_RESTRICT tile, int64_t kc, const float* HWY_RESTRICT x, int64_t xs,
                           float* y, int64_t ys, int64_t rows, bool accumulate) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  VF acc[kRows][NB];
  HWY_UNROLL(4)
  for (int r = 0; r < kRows; ++r) {
    HWY_UNROLL(6)
    for (int b = 0; b < NB; ++b) acc[r][b] = hn::Zero(d);
  }
  int64_t k = 0;
  for (; k + N <= kc; k += N) {
    VF wv[kRows];
    HWY_UNROLL(4)
    for (int r = 0; r < kRows; ++r) wv[r] = hn::LoadU(d, tile + r * kc + k);
    HWY_UNROLL(6)
    for (int b = 0; b < NB; ++b) {
      const VF xv = hn::LoadU(d, x + b * xs + k);
      HWY_UNROLL(4)
      for (int r = 0; r < kRows; ++r) acc[r][b] = hn::MulAdd(wv[r], xv, acc[r][b]);
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < NB; ++b) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[r][b]));
      for (int64_t j = k; j < kc; ++j) s += tile[r * kc + j] * x[b * xs + j];
      Store(y + b * ys + r, s, accumulate);
    }
}

template <int NB>
void TileKernelUpTo(int nb, const float* tile, int64_t kc, const float* x, int64_t xs, float* y, int64_t ys,
                    int64_t rows, bool accumulate) {
  if constexpr (NB > 1) {
    if (nb < NB) return TileKernelUpTo<NB - 1>(nb, tile, kc, x, xs, y, ys, rows, accumulate);
  }
  TileKernel<NB>(tile, kc, x, xs, y, ys, rows, accumulate);
}

// Small batches (a server's few streams): weights read straight from W and converted in registers, with
// no packed tile. At 8 inputs per weight, packing costs the tiled kernel about a third of its time
// (kernels_bench 1 --hot --batch 8: 29 GFMA/s against 53 at batch 64). kDirectRows rows x NB inputs of
// accumulators, each weight vector loaded once per call and used NB times.
#if HWY_TARGET <= HWY_AVX3
constexpr int64_t kDirect = 8;  // 2 x 8 accumulators + 2 weight vectors + 1 input: 19 of 32 registers
#else
constexpr int64_t kDirect = 4;  // 2 x 4 + 2 + 1 of 16
#endif
constexpr int64_t kDirectRows = 2;

// y[b][r] for rows [r, r + rows) (rows <= kDirectRows) and NB inputs; F32, F16 or BF16 weights.
// Columns [0, cols) of rows at w (row stride `stride`) against inputs x (row stride `xs`).
template <int NB, class T>
HWY_INLINE void DirectRows(const T* HWY_RESTRICT w, int64_t stride, int64_t rows, int64_t cols,
                           const float* HWY_RESTRICT x, int64_t xs, float* y, int64_t ys, bool accumulate) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  VF acc[kDirectRows][NB];
  for (int r = 0; r < kDirectRows; ++r)
    for (int b = 0; b < NB; ++b) acc[r][b] = hn::Zero(d);
  const T* w1 = rows > 1 ? w + stride : w;  // a lone row is read twice rather than branch in the loop
  int64_t k = 0;
  for (; k + N <= cols; k += N) {
    const VF v0 = LoadW(d, w + k), v1 = LoadW(d, w1 + k);
    HWY_UNROLL(8)
    for (int b = 0; b < NB; ++b) {
      const VF xv = hn::LoadU(d, x + b * xs + k);
      acc[0][b] = hn::MulAdd(v0, xv, acc[0][b]);
      acc[1][b] = hn::MulAdd(v1, xv, acc[1][b]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    const T* row = r == 0 ? w : w1;
    for (int b = 0; b < NB; ++b) {
      float sum = hn::GetLane(hn::SumOfLanes(d, acc[r][b]));
      for (int64_t j = k; j < cols; ++j) sum += scalar_weight(row, kDType<T>, j) * x[b * xs + j];
      Store(y + b * ys + r, sum, accumulate);
    }
  }
}

template <int NB, class T>
void DirectRowsUpTo(int nb, const T* w, int64_t stride, int64_t rows, int64_t cols, const float* x, int64_t xs,
                    float* y, int64_t ys, bool accumulate) {
  if constexpr (NB > 1) {
    if (nb < NB) return DirectRowsUpTo<NB - 1>(nb, w, stride, rows, cols, x, xs, y, ys, accumulate);
  }
  DirectRows<NB>(w, stride, rows, cols, x, xs, y, ys, accumulate);
}

// Rows [r0, r1) of the product with `batch` <= kDirect inputs, F32/F16/BF16 weights. Columns go in
// blocks whose inputs fit L1 beside the weight stream (24 KiB: 768 columns of 8 inputs): from L2, the
// inputs' loads would bound the kernel. The piece's rows (~64 KiB) stay in L2 across the blocks.
template <class T>
void DirectGemmRows(const WeightView& w, const float* x, int64_t batch, int64_t r0, int64_t r1, float* y,
                    bool accumulate) {
  const T* base = static_cast<const T*>(w.data);
  const int64_t cols = w.cols;
  const int64_t kc = std::min(cols, std::max<int64_t>(64, (int64_t(24) << 10) / int64_t(sizeof(float)) / batch / 64 * 64));
  for (int64_t k0 = 0; k0 < cols; k0 += kc) {
    const int64_t n = std::min(kc, cols - k0);
    for (int64_t r = r0; r < r1; r += kDirectRows)
      DirectRowsUpTo<kDirect>(int(batch), base + r * cols + k0, cols, std::min(kDirectRows, r1 - r), n, x + k0, cols,
                              y + r, w.rows, accumulate || k0 > 0);
  }
}

// Rows [r0, r1) of the product with all `batch` inputs.
void GemmRows(const WeightView& w, const float* x, int64_t batch, int64_t kc_max, int64_t r0, int64_t r1, float* y,
              bool accumulate) {
  thread_local std::vector<float> tile;
  tile.resize(size_t(kRows * kc_max));
  const int64_t cols = w.cols;
  for (int64_t k0 = 0; k0 < cols; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, cols - k0);
    const bool acc = accumulate || k0 > 0;
    for (int64_t r = r0; r < r1; r += kRows) {
      const int64_t rows = std::min(kRows, r1 - r);
      PackTile(w, r, rows, k0, kc, tile.data());
      // Inputs in blocks of near-equal size (8 = 4 + 4, not 6 + 2): the last block of an uneven split
      // would run few accumulators per packed weight vector.
      const int64_t blocks = (batch + kBatch - 1) / kBatch, per_block = (batch + blocks - 1) / blocks;
      for (int64_t b = 0; b < batch; b += per_block) {
        const int nb = int(std::min(per_block, batch - b));
        TileKernelUpTo<kBatch>(nb, tile.data(), kc, x + b * cols + k0, cols, y + b * w.rows + r, w.rows, rows, acc);
      }
    }
  }
}

// ---------------------------------------------------------------- entry

// Runs body(r0, r1) over [0, rows) in pieces of `piece` rows claimed dynamically by the pool's threads.
// Dynamic claiming (rather than one fixed band per thread) keeps all threads busy to the end when one
// of them is slowed (descheduled, or sharing a core), which on a shared machine is the common case.
template <class Body>
void ForRowPieces(ThreadPool& pool, int64_t rows, int64_t piece, const Body& body) {
  const int64_t pieces = (rows + piece - 1) / piece;
  std::atomic<int64_t> next{0};
  pool.parallel_for(std::min<int64_t>(pieces, pool.size()), [&](int64_t, int64_t) {
    for (;;) {
      const int64_t r0 = next.fetch_add(piece, std::memory_order_relaxed);
      if (r0 >= rows) return;
      body(r0, std::min(rows, r0 + piece));
    }
  });
}

#if HWY_TARGET != HWY_SCALAR
// Which BF16 row grouping this machine reads faster (file comment), learnt from the products themselves:
// the first kTrials products of at least 1 MiB alternate between the two and the faster (bytes per second,
// summed) serves the rest of the process. No buffer of its own, and since both sum in the same order the
// trial never changes a result. UNEVEN_BF16_ROWS=1 or 4 fixes the choice.
class Bf16RowChoice {
 public:
  static constexpr int kTrials = 24;
  // The grouping for a product of `bytes`: single rows or not, and whether to time it (pass to record).
  bool pick(uint64_t bytes, bool& timed) {
    timed = false;
    const int d = decided_.load(std::memory_order_acquire);
    if (d >= 0) return d == 1;
    if (bytes < (uint64_t(1) << 20)) return false;
    const int n = started_.fetch_add(1, std::memory_order_relaxed);
    if (n >= kTrials) return false;  // others' trials finish the decision
    timed = true;
    return n % 2 == 1;
  }
  void record(bool single, uint64_t bytes, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    bytes_[single] += double(bytes), seconds_[single] += seconds;
    if (++finished_ == kTrials)
      decided_.store(bytes_[1] / seconds_[1] > bytes_[0] / seconds_[0] ? 1 : 0, std::memory_order_release);
  }
  Bf16RowChoice() {
    if (const char* env = std::getenv("UNEVEN_BF16_ROWS")) {
      const std::string_view v = env;
      if (v == "1" || v == "4") decided_.store(v == "1" ? 1 : 0);
    }
  }

 private:
  std::atomic<int> decided_{-1}, started_{0};
  std::mutex mutex_;
  int finished_ = 0;
  double bytes_[2] = {0, 0}, seconds_[2] = {0, 0};
};
#endif

void Matmul(const WeightView& w, const float* x, int64_t batch, float* y, ThreadPool& pool, bool accumulate) {
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t row_bytes = int64_t(w.row_bytes());
  const bool quantized = is_quantized(w.dtype);
  // GGML weights meet activations rounded as llama.cpp rounds them (quant/activations.h), so that a
  // GGUF gives the numbers llama.cpp gives; MLX weights meet the activations as they are.
  namespace qi = quant_impl::HWY_NAMESPACE;
  thread_local std::vector<float> rounded, sums;
  if (quantized && batch == 1 && qi::UsesIntDot(w.dtype)) {
    // Decode: the rounded activations as int8 codes (8 KiB at 8192 columns, so they stay in L1 beside
    // the weight stream) and integer dot products per block (quant-inl.h).
    const qi::IntAct act = qi::PrepareIntAct(w.dtype, x, cols);
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    const DType t = w.dtype;
    const int64_t piece = std::max<int64_t>(1, (int64_t(64) << 10) / row_bytes / kRows) * kRows;
    ForRowPieces(pool, rows, piece, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        Store(y + r, qi::QuantRowDotInt(t, base + uint64_t(r) * uint64_t(row_bytes), cols, act), accumulate);
    });
    return;
  }
  if (quantized && !is_mlx(w.dtype)) {
    rounded.resize(size_t(batch * cols));
    sums.resize(size_t(cols / 16 + 1));
    if (batch == 1) {
      quant::round_activations(w.dtype, x, cols, rounded.data(), sums.data());
    } else {  // (a thread_local named inside the body would be the worker's own)
      float* out = rounded.data();
      ForRowPieces(pool, batch, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) qi::RoundActivations(w.dtype, x + b * cols, cols, out + b * cols, nullptr);
      });
    }
    x = rounded.data();
  } else if (quantized && batch > 1 && w.dtype == DType::MLX4) {
    // DequantRow writes MLX 4-bit tiles permuted per 2N columns; the inputs follow.
    rounded.resize(size_t(batch * cols));
    float* out = rounded.data();
    ForRowPieces(pool, batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) qi::PermuteMlx4(x + b * cols, cols, out + b * cols);
    });
    x = rounded.data();
  }
  if (batch == 1) {
    const float* xp = nullptr;
    const float* xsum16 = nullptr;
    thread_local std::vector<float> permuted;
    if (quantized) {
      permuted.resize(size_t(cols));
      if (is_mlx(w.dtype)) {
        sums.resize(size_t(cols / 16 + 1));
        quant_impl::HWY_NAMESPACE::PrepareQuantInput(w.type(), x, cols, sums.data(), permuted.data());
      }
      xp = permuted.data();
      xsum16 = sums.data();
    }
#if HWY_TARGET != HWY_SCALAR
    if (w.dtype == DType::BF16) {
      permuted.resize(size_t(cols));
      PermuteEvenOdd(x, cols, permuted.data());
      xp = permuted.data();
    }
#endif
    // ~64 KiB of weights per piece: long enough runs for the prefetchers and to amortise the claim,
    // short enough to balance threads (a 2048x2048 BF16 matrix is 128 pieces).
    const int64_t piece = std::max<int64_t>(1, (int64_t(64) << 10) / row_bytes / kRows) * kRows;
    bool single_rows = false;
#if HWY_TARGET != HWY_SCALAR
    static Bf16RowChoice bf16_rows;  // one per process and SIMD target
    bool timed = false;
    if (w.dtype == DType::BF16 && cols <= 4096) single_rows = bf16_rows.pick(w.bytes(), timed);
    const auto t0 = std::chrono::steady_clock::now();
#endif
    ForRowPieces(pool, rows, piece,
                 [&](int64_t r0, int64_t r1) { GemvRows(w, x, xp, xsum16, r0, r1, y, accumulate, single_rows); });
#if HWY_TARGET != HWY_SCALAR
    if (timed)
      bf16_rows.record(single_rows, w.bytes(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
#endif
    return;
  }
  if (batch <= kDirect && !quantized) {
    const int64_t piece = std::max<int64_t>(1, (int64_t(64) << 10) / row_bytes / kRows) * kRows;
    ForRowPieces(pool, rows, piece, [&](int64_t r0, int64_t r1) {
      switch (w.dtype) {
        case DType::F32: return DirectGemmRows<float>(w, x, batch, r0, r1, y, accumulate);
        case DType::F16: return DirectGemmRows<hwy::float16_t>(w, x, batch, r0, r1, y, accumulate);
        default: return DirectGemmRows<hwy::bfloat16_t>(w, x, batch, r0, r1, y, accumulate);
      }
    });
    return;
  }
  // Column block: keeps the batch x kc inputs (<= 512 KiB) in L2 and the packed tile in L1/L2. Quantized
  // blocks are unpacked whole, so kc is a multiple of 256 (a multiple of every block and group size).
  const int64_t unit = quantized ? 256 : 64;
  int64_t kc = std::min(cols, std::clamp<int64_t>((int64_t(1) << 17) / batch / unit * unit, 256, 2048));
  if (quantized && kc < cols && kc % w.type().block_elems() != 0) kc = cols;
  // Each piece re-reads its inputs from L2 once per column block, so pieces are larger here.
  const int64_t piece = std::max<int64_t>(1, (int64_t(256) << 10) / row_bytes / kRows) * kRows;
  ForRowPieces(pool, rows, piece,
               [&](int64_t r0, int64_t r1) { GemmRows(w, x, batch, kc, r0, r1, y, accumulate); });
}

}  // namespace uneven::kernels::matmul_impl::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace uneven::kernels {
namespace matmul_impl {
HWY_EXPORT(Matmul);
}

void matmul(const WeightView& w, const float* x, int64_t batch, float* y, ThreadPool& pool, bool accumulate) {
  if (batch <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {  // empty contraction: the product is zero
    if (!accumulate) std::fill(y, y + batch * w.rows, 0.0f);
    return;
  }
  HWY_DYNAMIC_DISPATCH(matmul_impl::Matmul)(w, x, batch, y, pool, accumulate);
}

}  // namespace uneven::kernels
#endif  // HWY_ONCE
