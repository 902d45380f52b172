// Host-side launchers of the CUDA kernels (one stream each), shared by the backend and its sources.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "compute/backend.h"

namespace uneven::cuda {

// A weight resident on the device: the host view (shape, type) with `data` pointing at device memory.
using DeviceWeight = kernels::WeightView;

// y[r] = W[r] . x for every row (batch 1), streaming W once; fp32 accumulation.
void gemv(const DeviceWeight& w, const float* x, float* y, cudaStream_t stream);
// out[t] = row (rows[t] - first_row) of W as F32 for t < count, when it lies in [0, W.rows); other out
// rows untouched. With rows == nullptr, out[t] = row first_row + t (count rows, all in range).
void dequantize_rows(const DeviceWeight& w, int64_t first_row, const int32_t* rows, int64_t count, float* out,
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
void attention(const AttentionArgs& a, const AttentionVectors& vec, cudaStream_t s);
struct DeltaNetVectors {
  const float* conv = nullptr;
  const float* a_log = nullptr;
  const float* dt_bias = nullptr;
  const float* norm = nullptr;
};
void gated_deltanet(const DeltaNetArgs& a, const DeltaNetVectors& vec, cudaStream_t s);

}  // namespace uneven::cuda
