// CPU kernels (Highway, runtime-dispatched to the best SIMD target of the machine).
#pragma once
#include <cstdint>

#include "compute/thread_pool.h"
#include "model/dtype.h"

namespace uneven::kernels {

// A weight matrix in memory: `rows` x `cols`, row-major, rows contiguous (row stride = the bytes of
// `cols` elements of its type; quantized rows are whole blocks).
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  int32_t group = 0;           // MLX types: elements per scale/bias group
  DType scale = DType::BF16;   // MLX types: scale/bias type
  WeightType type() const { return {dtype, group, scale}; }
  uint64_t row_bytes() const { return type().bytes(cols); }
  uint64_t bytes() const { return uint64_t(rows) * row_bytes(); }
};

// y[b, r] = sum_c W[r, c] * x[b, c] for b in [0, batch): x is batch x W.cols, y is batch x W.rows
// (row-major, F32). Parallel over rows across the pool. For batch 1 this is a matrix-vector product
// bound by reading W once; for batch > 1 W is read once per block of inputs, not once per input.
// If `accumulate` is true, adds into y instead of overwriting it.
void matmul(const WeightView& w, const float* x, int64_t batch, float* y, ThreadPool& pool,
            bool accumulate = false);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], for `rows` rows of length n (in place allowed).
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, int64_t rows, float* out);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);
// In-place softmax of n values (numerically stable: subtracts the max).
void softmax(float* x, int64_t n);
// y[i] += x[i]
void add(float* y, const float* x, int64_t n);
// sum x[i] * y[i]
float dot(const float* x, const float* y, int64_t n);
// y[i] += a * x[i]
void axpy(float a, const float* x, float* y, int64_t n);
// Converts n elements of `src` (dtype) to F32.
void to_f32(const void* src, DType dtype, int64_t n, float* dst);
// Converts n elements (whole blocks) of `src` of any type to F32.
void to_f32(const void* src, const WeightType& type, int64_t n, float* dst);

// Measures the machine's streaming read bandwidth (bytes/s) by summing a buffer much larger than the
// caches with all pool threads, best of `repeats`.
double measure_read_bandwidth(ThreadPool& pool, size_t buffer_bytes = size_t(1) << 30, int repeats = 5);

// Name of the SIMD target the kernels dispatch to on this machine (e.g. "AVX3", "AVX2"), for logs.
const char* simd_target();

}  // namespace uneven::kernels
