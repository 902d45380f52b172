// Batched products (prompts) on tensor cores: y = W x^T for batch > 1 with 16-bit operands and fp32
// accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F, fp32 y), kept close to fp32 by splitting operands into
// 16-bit parts.
//
// The backend's PromptPrecision (cuda_backend.h) picks the path; kFp32 never comes here:
//   split-bf16  activations split as x = hi + lo, both 16-bit: each product is within ~2^-18 (BF16) of
//            the exact one, like fp32 arithmetic; 2x (BF16/F16 weights) or 3x (quantized) the tensor-core
//            work of bf16. Per product like fp32 arithmetic, but measured over whole (random, tiny) models
//            the logits land up to ~1e-3 from the CPU's fp32 run (the GPU tests' bound for this mode).
//   bf16     activations rounded to 16 bits once (hi only): ~2^-9 (BF16) or ~2^-11 (F16) relative per
//            product, the usual mixed-precision prompt GEMM.
//
// Paths by weight type (F32 weights never come here: the backend keeps pedantic fp32 cublasSgemm):
//  - BF16: the resident weight is the A operand as stored. hi = bf16(x), lo = bf16(x - hi) (x - hi is
//    exact in fp32; |x - hi - lo| <= 2^-18 |x|); y = W hi, then y += W lo (beta = 1).
//  - F16: like BF16 in fp16 (2^-22 per product), with a per-token power-of-two scale s_t against fp16's
//    range (max |s_t x_t| in [2^14, 2^15): no overflow, subnormals only for parts below 2^-29 of the
//    token's largest value): hi = f16(s x), lo = f16((s x - hi) 2^11); y = W hi + 2^-11 W lo, then
//    column t of y times 1/s_t. All scales are powers of two: exact.
//  - quantized (GGML Q*, k-quants, MLX): a chunk of rows is decoded to fp32 in registers (the decoders of
//    dequant.cuh, the same values as the F32 dequantization) and split into W1 = bf16(w),
//    W2 = bf16(w - W1) (|w - W1 - W2| <= 2^-18 |w|: the decoded values have up to 24 significant bits,
//    so neither one bf16 nor one fp16 holds them exactly). Rows are stored [W1 | W1 | W2] (3K each)
//    against tokens [hi | lo | hi]: one GEMM over K' = 3K accumulates W1 hi + W1 lo + W2 hi in fp32;
//    what it leaves out (W2 lo, the residues of w and x) is at most 3 * 2^-18 |w x| per product, with
//    random signs. Fast: [W1] against [hi]. The chunk lives in the backend's dequantization scratch.
// Tensor-core accumulation is fp32 with a 16-wide inner step: over K' = 3 * 2048 its error stays far below
// 1e-5 of sum |w x| (the GPU test's bound).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"
#include "compute/cuda/dequant.cuh"

namespace uneven::cuda {
namespace {

constexpr float kHalfLoScale = 2048.0f;  // F16 lo parts are stored times 2^11 (clear of fp16 subnormals)
constexpr uint64_t kScaleBytes = 256;    // per-token F16 scales at the start of the activation scratch (padding)

template <class D>
struct Tag {
  using type = D;
};

// Calls f(Tag<Decoder>{}) for a quantized type's decoder (32-element units); false for plain types.
template <class F>
bool with_quant_decoder(const kernels::WeightView& w, F&& f) {
  switch (w.dtype) {
    case DType::Q8_0: f(Tag<DecQ8_0>{}); return true;
    case DType::Q4_0: f(Tag<DecQ4_0>{}); return true;
    case DType::Q4_1: f(Tag<DecQ4_1>{}); return true;
    case DType::Q5_0: f(Tag<DecQ5_0>{}); return true;
    case DType::Q5_1: f(Tag<DecQ5_1>{}); return true;
    case DType::Q4_K: f(Tag<DecQ45_K<false>>{}); return true;
    case DType::Q5_K: f(Tag<DecQ45_K<true>>{}); return true;
    case DType::Q6_K: f(Tag<DecQ6_K>{}); return true;
    case DType::MLX4:
    case DType::MLX8: {
      if (w.group <= 0 || w.group % 32 != 0) fail("CUDA matmul: MLX group size {} is not a multiple of 32", w.group);
      const bool four = w.dtype == DType::MLX4;
      switch (w.scale) {
        case DType::F32: four ? f(Tag<DecMlx<4, DType::F32>>{}) : f(Tag<DecMlx<8, DType::F32>>{}); return true;
        case DType::F16: four ? f(Tag<DecMlx<4, DType::F16>>{}) : f(Tag<DecMlx<8, DType::F16>>{}); return true;
        case DType::BF16: four ? f(Tag<DecMlx<4, DType::BF16>>{}) : f(Tag<DecMlx<8, DType::BF16>>{}); return true;
        default: fail("CUDA matmul: MLX scale type {} is not supported", dtype_name(w.scale));
      }
    }
    default: return false;
  }
}

// Round to the 16-bit type (nearest even) and back.
template <bool kHalf>
__device__ __forceinline__ uint16_t to16(float v) {
  if constexpr (kHalf) return __half_as_ushort(__float2half_rn(v));
  else return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
template <bool kHalf>
__device__ __forceinline__ float from16(uint16_t h) {
  if constexpr (kHalf) return __half2float(__ushort_as_half(h));
  else return __uint_as_float(uint32_t(h) << 16);
}
// v = hi + lo (+ a residue of at most 2^-18 |v| for bf16, 2^-22 for fp16); fp16 lo is stored times 2^11.
template <bool kHalf>
__device__ __forceinline__ void split16(float v, uint16_t& hi, uint16_t& lo) {
  hi = to16<kHalf>(v);
  const float r = v - from16<kHalf>(hi);  // exact in fp32
  lo = to16<kHalf>(kHalf ? r * kHalfLoScale : r);
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = 0;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, shared[w]);
  return m;
}

constexpr int kSplitThreads = 256;

// One block per token: out[t] = `parts` blocks of k 16-bit values, part 1 = lo and the others hi (ld parts * k).
// kHalf: scales the token by a power of two first (inv_scale[t] = its inverse).
template <bool kHalf, bool kVec>
__global__ void __launch_bounds__(kSplitThreads) split_x_kernel(const float* __restrict__ x, int64_t k, int parts,
                                                                float* __restrict__ inv_scale,
                                                                uint16_t* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const float* xr = x + t * k;
  uint16_t* o = out + t * int64_t(parts) * k;
  float s = 1.0f;
  if constexpr (kHalf) {
    __shared__ float red[32];
    float m = 0;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) m = fmaxf(m, fabsf(xr[i]));  // NaNs are skipped
    m = block_max(m, red);
    if (m > 0 && isfinite(m)) {
      int e = 0;
      frexpf(m, &e);  // m = f 2^e, f in [0.5, 1): m 2^(15 - e) in [2^14, 2^15)
      const int sh = 15 - e;
      s = ldexpf(1.0f, sh > 126 ? 126 : sh < -126 ? -126 : sh);
    }
    if (threadIdx.x == 0) inv_scale[t] = 1.0f / s;
  }
  if constexpr (kVec) {  // k % 4 == 0, x 16-byte aligned: 4 values per step, 8-byte stores
    for (int64_t i = threadIdx.x; i < k / 4; i += blockDim.x) {
      const float4 v = reinterpret_cast<const float4*>(xr)[i];
      uint16_t h[4], l[4];
      split16<kHalf>(v.x * s, h[0], l[0]);
      split16<kHalf>(v.y * s, h[1], l[1]);
      split16<kHalf>(v.z * s, h[2], l[2]);
      split16<kHalf>(v.w * s, h[3], l[3]);
      const uint2 hv = make_uint2(uint32_t(h[0]) | (uint32_t(h[1]) << 16), uint32_t(h[2]) | (uint32_t(h[3]) << 16));
      const uint2 lv = make_uint2(uint32_t(l[0]) | (uint32_t(l[1]) << 16), uint32_t(l[2]) | (uint32_t(l[3]) << 16));
      for (int p = 0; p < parts; ++p) reinterpret_cast<uint2*>(o + p * k)[i] = p == 1 ? lv : hv;
    }
  } else {
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
      uint16_t h, l;
      split16<kHalf>(xr[i] * s, h, l);
      for (int p = 0; p < parts; ++p) o[p * k + i] = p == 1 ? l : h;
    }
  }
}

// Rows [first_row, first_row + count) of a quantized weight as bf16 parts, row t at out + t * kParts * k:
// kParts 3: [W1 | W1 | W2]; kParts 1: [W1].
template <class D, int kParts>
__global__ void split_w_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, int64_t units, QParams p,
                               int64_t first_row, int64_t count, uint16_t* __restrict__ out) {
  constexpr int E = D::kElems;
  static_assert(E % 8 == 0, "whole 16-byte stores per unit");
  const int64_t k = units * E, ld = kParts * k;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count * units;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / units, u = i % units;
    float v[E];
    D::unit(w + uint64_t(first_row + t) * row_bytes, u, p, v);
    uint32_t hi[E / 2], lo[E / 2];
#pragma unroll
    for (int j = 0; j < E; j += 2) {
      uint16_t h0, l0, h1, l1;
      split16<false>(v[j], h0, l0);
      split16<false>(v[j + 1], h1, l1);
      hi[j / 2] = uint32_t(h0) | (uint32_t(h1) << 16);
      lo[j / 2] = uint32_t(l0) | (uint32_t(l1) << 16);
    }
    // 16-byte aligned: the scratch is cudaMalloc'd, k % 32 == 0 and a unit is 64 bytes.
    uint4* o = reinterpret_cast<uint4*>(out + t * ld + u * E);
#pragma unroll
    for (int j = 0; j < E / 8; ++j) {
      const uint4 h = make_uint4(hi[4 * j], hi[4 * j + 1], hi[4 * j + 2], hi[4 * j + 3]);
      o[j] = h;
      if constexpr (kParts == 3) {
        reinterpret_cast<uint4*>(out + t * ld + k + u * E)[j] = h;
        reinterpret_cast<uint4*>(out + t * ld + 2 * k + u * E)[j] =
            make_uint4(lo[4 * j], lo[4 * j + 1], lo[4 * j + 2], lo[4 * j + 3]);
      }
    }
  }
}

// y[t * ldc + r] *= inv_scale[t] for t < count, r < rows.
__global__ void scale_columns_kernel(float* __restrict__ y, int64_t rows, int64_t ldc, int64_t count,
                                     const float* __restrict__ inv_scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count * rows;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / rows, r = i % rows;
    y[t * ldc + r] *= inv_scale[t];
  }
}

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) fail("CUDA matmul: {} {} exceeds cuBLAS's int range", what, v);
  return int(v);
}

// c (m x n column-major, ldc) = alpha * A^T b + beta * c with A stored k x m (lda), b k x n (ldb), 16-bit.
void gemm16(cublasHandle_t blas, cudaDataType_t type, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
            int64_t lda, const void* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  UNEVEN_CUDA_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, as_int(m, "rows"), as_int(n, "batch"),
                                 as_int(k, "depth"), &alpha, a, type, as_int(lda, "lda"), b, type, as_int(ldb, "ldb"),
                                 &beta, c, CUDA_R_32F, as_int(ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The handle's math mode set to default (tensor cores; no reduced-precision split-K reductions) for the
// GEMMs of one call, then restored (the backend's handle is pedantic for its fp32 GEMMs).
class TensorMath {
 public:
  explicit TensorMath(cublasHandle_t blas) : blas_(blas) {
    UNEVEN_CUDA_CHECK(cublasGetMathMode(blas_, &saved_));
    UNEVEN_CUDA_CHECK(cublasSetMathMode(
        blas_, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  }
  ~TensorMath() { cublasSetMathMode(blas_, saved_); }
  TensorMath(const TensorMath&) = delete;
  TensorMath& operator=(const TensorMath&) = delete;

 private:
  cublasHandle_t blas_;
  cublasMath_t saved_ = CUBLAS_PEDANTIC_MATH;
};

}  // namespace

PromptPlan prompt_plan(const DeviceWeight& w, PromptPrecision precision) {
  PromptPlan plan;
  if (precision == PromptPrecision::kFp32) return plan;  // the fp32 path: no tensor cores
  const bool precise = precision == PromptPrecision::kSplitBf16;
  if (w.dtype == DType::BF16 || w.dtype == DType::F16) {
    plan.tensor_cores = true;
    plan.x_parts = precise ? 2 : 1;
    plan.w_parts = 0;
  } else if (w.dtype != DType::F32 && w.dtype != DType::U32 && w.cols % 32 == 0) {
    plan.tensor_cores = with_quant_decoder(w, [](auto) {});
    plan.x_parts = precise ? 3 : 1;
    plan.w_parts = precise ? 3 : 1;
  }
  return plan;
}

uint64_t PromptPlan::x_bytes(int64_t cols, int64_t tokens) const {
  return kScaleBytes + uint64_t(tokens) * (sizeof(float) + uint64_t(x_parts) * uint64_t(cols) * 2);
}
uint64_t PromptPlan::w_row_bytes(int64_t cols) const { return uint64_t(w_parts) * uint64_t(cols) * 2; }

void prompt_matmul(cublasHandle_t blas, const DeviceWeight& w, const float* x, int64_t batch, float* y,
                   const PromptPlan& plan, const PromptScratch& s, cudaStream_t stream) {
  if (!plan.tensor_cores) fail("CUDA matmul: {} weights have no tensor-core prompt path", w.type().name());
  const int64_t k = w.cols, rows = w.rows;
  if (batch <= 0 || rows == 0 || k == 0) return;
  const uint64_t per_token = plan.x_bytes(k, 1) - kScaleBytes;
  if (s.x_bytes < plan.x_bytes(k, 1)) fail("CUDA matmul: {} bytes of prompt scratch, {} needed", s.x_bytes, plan.x_bytes(k, 1));
  const int64_t tokens = std::min<int64_t>(batch, int64_t((s.x_bytes - kScaleBytes) / per_token));
  const uint64_t w_row = plan.w_row_bytes(k);
  const int64_t chunk = w_row ? std::min<int64_t>(rows, int64_t(s.w_bytes / w_row)) : rows;
  if (chunk < 1) fail("CUDA matmul: {} bytes of dequantization scratch, a row of {} columns needs {}", s.w_bytes, k, w_row);

  const bool half = w.dtype == DType::F16;
  const cudaDataType_t type = half ? CUDA_R_16F : CUDA_R_16BF;
  auto* inv_scale = static_cast<float*>(s.x);
  uint16_t* xs = reinterpret_cast<uint16_t*>(static_cast<uint8_t*>(s.x) +
                                             (uint64_t(tokens) * sizeof(float) + kScaleBytes - 1) / kScaleBytes * kScaleBytes);
  const int64_t ldx = int64_t(plan.x_parts) * k;
  const bool vec_x = reinterpret_cast<uintptr_t>(x) % 16 == 0 && k % 4 == 0;
  TensorMath math(blas);

  for (int64_t t0 = 0; t0 < batch; t0 += tokens) {
    const int64_t nt = std::min(tokens, batch - t0);
    const float* xt = x + t0 * k;
    float* yt = y + t0 * rows;
    const unsigned grid = unsigned(nt);
    if (half) {
      if (vec_x) split_x_kernel<true, true><<<grid, kSplitThreads, 0, stream>>>(xt, k, plan.x_parts, inv_scale, xs);
      else split_x_kernel<true, false><<<grid, kSplitThreads, 0, stream>>>(xt, k, plan.x_parts, inv_scale, xs);
    } else {
      if (vec_x) split_x_kernel<false, true><<<grid, kSplitThreads, 0, stream>>>(xt, k, plan.x_parts, inv_scale, xs);
      else split_x_kernel<false, false><<<grid, kSplitThreads, 0, stream>>>(xt, k, plan.x_parts, inv_scale, xs);
    }
    UNEVEN_CUDA_LAUNCHED();

    if (plan.w_parts == 0) {  // BF16 / F16: the weight as stored, one GEMM per activation part
      gemm16(blas, type, rows, nt, k, 1.0f, w.data, k, xs, ldx, 0.0f, yt, rows);
      if (plan.x_parts == 2)
        gemm16(blas, type, rows, nt, k, half ? 1.0f / kHalfLoScale : 1.0f, w.data, k, xs + k, ldx, 1.0f, yt, rows);
      if (half) {
        const int threads = 256;
        const unsigned g = unsigned(std::min<int64_t>(blocks_for(nt * rows, threads), 65535));
        scale_columns_kernel<<<g, threads, 0, stream>>>(yt, rows, rows, nt, inv_scale);
        UNEVEN_CUDA_LAUNCHED();
      }
      continue;
    }
    // Quantized: a chunk of rows split into bf16 parts, then one GEMM over the stacked depth.
    auto* ws = static_cast<uint16_t*>(s.w);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      with_quant_decoder(w, [&](auto tag) {
        using D = typename decltype(tag)::type;
        const int64_t units = k / D::kElems, total = n * units;
        const int threads = 256;
        const unsigned g = unsigned(std::min<int64_t>(blocks_for(total, threads), 65535));
        const auto* wp = static_cast<const uint8_t*>(w.data);
        if (plan.w_parts == 3)
          split_w_kernel<D, 3><<<g, threads, 0, stream>>>(wp, w.row_bytes(), units, params_of(w), r0, n, ws);
        else
          split_w_kernel<D, 1><<<g, threads, 0, stream>>>(wp, w.row_bytes(), units, params_of(w), r0, n, ws);
        UNEVEN_CUDA_LAUNCHED();
      });
      const int64_t depth = int64_t(plan.w_parts) * k;
      gemm16(blas, CUDA_R_16BF, n, nt, depth, 1.0f, ws, depth, xs, ldx, 0.0f, yt + r0, rows);
    }
  }
}

}  // namespace uneven::cuda
