// Host-side launchers of the CUDA kernels (one stream each), shared by the backend and its sources.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "compute/backend.h"
#include "compute/cuda/cuda_backend.h"

namespace uneven::cuda {

// A weight resident on the device: the host view (shape, type) with `data` pointing at device memory.
using DeviceWeight = kernels::WeightView;

// y[r] = W[r] . x for every row (batch 1), streaming W once; fp32 accumulation.
void gemv(const DeviceWeight& w, const float* x, float* y, cudaStream_t stream);
// out[t] = row (rows[t] - first_row) of W as F32 for t < count, when it lies in [0, W.rows); other out
// rows untouched. `rows` holds row ids as floats (exact below 2^24). With rows == nullptr,
// out[t] = row first_row + t (count rows, all in range).
void dequantize_rows(const DeviceWeight& w, int64_t first_row, const float* rows, int64_t count, float* out,
                     cudaStream_t stream);
// Required alignment (bytes) of a device weight's base for the decoders `w`'s type uses.
int64_t weight_alignment(const kernels::WeightView& w);

// Element-wise and row operations (backend.h contracts); all pointers are device memory.
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, int64_t rows, float* out, cudaStream_t s);
void add(float* y, const float* x, int64_t n, cudaStream_t s);
void add_bias(float* y, const float* bias, int64_t n, int64_t rows, cudaStream_t s);
// out[r][i] = silu(gate_up[r][i]) * gate_up[r][cols + i]; out must not overlap gate_up.
void swiglu(const float* gate_up, int64_t cols, int64_t rows, float* out, cudaStream_t s);
void gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t width, float* dst, cudaStream_t s);
void scatter_add_rows(const float* src, const int64_t* rows, const float* weights, int64_t n, int64_t width,
                      float* dst, cudaStream_t s);
void sigmoid_scale_add(const float* src, const float* gates, int64_t rows, int64_t width, float* dst, cudaStream_t s);

// Attention and Gated DeltaNet with the vectors already resolved to device pointers (nullptr: none).
struct AttentionVectors {
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
};
// `for_any_position`: launch sizes cover the whole context and the kernels read the position from
// a.position_value (a recorded step replays at later positions); otherwise sized for a.position.
void attention(const AttentionArgs& a, const AttentionVectors& vec, bool for_any_position, cudaStream_t s);
struct DeltaNetVectors {
  const float* conv = nullptr;
  const float* a_log = nullptr;
  const float* dt_bias = nullptr;
  const float* norm = nullptr;
};
void gated_deltanet(const DeltaNetArgs& a, const DeltaNetVectors& vec, cudaStream_t s);

// ---- Batched products (prompts) on tensor cores (gemm.cu; its header comment has the accuracy) ----
// uneven::PromptPrecision (cuda_backend.h): kFp32 has no tensor-core plan; kSplitBf16 16-bit hi + lo
// parts; kBf16 hi only.
using uneven::PromptPrecision;
// How a weight's batched product runs on tensor cores, and the scratch it needs.
struct PromptPlan {
  bool tensor_cores = false;  // false: no tensor-core path (F32, or a row not in whole 32-element units)
  int x_parts = 0;            // 16-bit blocks of `cols` per token in the activation scratch
  int w_parts = 0;            // bf16 blocks of `cols` per dequantized weight row (0: the weight as stored)
  // Activation scratch bytes for `tokens` tokens (per-token scales included).
  uint64_t x_bytes(int64_t cols, int64_t tokens) const;
  // Weight scratch bytes per dequantized row (0: none).
  uint64_t w_row_bytes(int64_t cols) const;
};
PromptPlan prompt_plan(const DeviceWeight& w, PromptPrecision precision);
struct PromptScratch {
  void* x = nullptr;  // activation parts: tokens are processed in groups that fit
  uint64_t x_bytes = 0;
  void* w = nullptr;  // dequantized rows: processed in chunks that fit (256-byte aligned)
  uint64_t w_bytes = 0;
};
// y (batch x W.rows, fp32) = x (batch x W.cols, fp32) W^T through cublasGemmEx on `blas` (bound to
// `stream`; its math mode is restored afterwards). Scratch: at least x_bytes(cols, 1) and one row.
void prompt_matmul(cublasHandle_t blas, const DeviceWeight& w, const float* x, int64_t batch, float* y,
                   const PromptPlan& plan, const PromptScratch& scratch, cudaStream_t stream);

}  // namespace uneven::cuda
