// Row and element-wise kernels of the CUDA backend: rmsnorm, add, bias, SwiGLU, gather / scatter of rows,
// sigmoid-gated adds. Formulas follow compute/kernels.cpp (libm-accurate expf / sqrtf, no fast math).
#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"

namespace uneven::cuda {
namespace {

constexpr int kThreads = 256;

// Grid of at most 65535 x kThreads threads striding over n (large buffers loop).
unsigned grid_for(int64_t n) { return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks_for(n, kThreads), 65535))); }

#define GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// One block per row; in place allowed: every element is read before the reduction's barrier, written after.
__global__ void rmsnorm_kernel(const float* x, const float* __restrict__ w, float eps, int64_t n, float* out) {
  __shared__ float red[32];
  const float* xr = x + int64_t(blockIdx.x) * n;
  float* o = out + int64_t(blockIdx.x) * n;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  const float scale = 1.0f / sqrtf(block_sum(ss, red) / float(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  GRID_STRIDE(i, n) y[i] += x[i];
}
__global__ void add_bias_kernel(float* y, const float* __restrict__ b, int64_t n, int64_t total) {
  GRID_STRIDE(i, total) y[i] += b[i % n];
}
// silu(g) * u = g * u / (1 + exp(-g)), exp's argument clamped to 88 as on the CPU.
__global__ void swiglu_kernel(const float* __restrict__ gu, int64_t cols, int64_t total, float* __restrict__ out) {
  GRID_STRIDE(i, total) {
    const int64_t r = i / cols, c = i % cols;
    const float g = gu[r * 2 * cols + c], u = gu[r * 2 * cols + cols + c];
    out[i] = g * u / (1.0f + expf(fminf(-g, 88.0f)));
  }
}
__global__ void gather_kernel(const float* __restrict__ src, const int64_t* __restrict__ rows, int64_t width,
                              int64_t total, float* __restrict__ dst) {
  GRID_STRIDE(i, total) dst[i] = src[rows[i / width] * width + i % width];
}
// atomicAdd: a destination row named more than once still gets every contribution.
__global__ void scatter_add_kernel(const float* __restrict__ src, const int64_t* __restrict__ rows,
                                   const float* __restrict__ weights, int64_t width, int64_t total, float* dst) {
  GRID_STRIDE(i, total) {
    const int64_t r = i / width;
    atomicAdd(dst + rows[r] * width + i % width, weights[r] * src[i]);
  }
}
__global__ void sigmoid_scale_add_kernel(const float* __restrict__ src, const float* __restrict__ gates, int64_t width,
                                         int64_t total, float* dst) {
  GRID_STRIDE(i, total) dst[i] += sigmoidf_(gates[i / width]) * src[i];
}

}  // namespace

void rmsnorm(const float* x, const float* weight, float eps, int64_t n, int64_t rows, float* out, cudaStream_t s) {
  if (rows == 0 || n == 0) return;
  if (rows > 0x7fffffff) fail("CUDA rmsnorm: {} rows", rows);
  rmsnorm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, weight, eps, n, out);
  UNEVEN_CUDA_LAUNCHED();
}
void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, s>>>(y, x, n);
  UNEVEN_CUDA_LAUNCHED();
}
void add_bias(float* y, const float* bias, int64_t n, int64_t rows, cudaStream_t s) {
  if (n == 0 || rows == 0) return;
  add_bias_kernel<<<grid_for(n * rows), kThreads, 0, s>>>(y, bias, n, n * rows);
  UNEVEN_CUDA_LAUNCHED();
}
void swiglu(const float* gate_up, int64_t cols, int64_t rows, float* out, cudaStream_t s) {
  if (cols == 0 || rows == 0) return;
  swiglu_kernel<<<grid_for(cols * rows), kThreads, 0, s>>>(gate_up, cols, cols * rows, out);
  UNEVEN_CUDA_LAUNCHED();
}
void gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t width, float* dst, cudaStream_t s) {
  if (n == 0 || width == 0) return;
  gather_kernel<<<grid_for(n * width), kThreads, 0, s>>>(src, rows, width, n * width, dst);
  UNEVEN_CUDA_LAUNCHED();
}
void scatter_add_rows(const float* src, const int64_t* rows, const float* weights, int64_t n, int64_t width,
                      float* dst, cudaStream_t s) {
  if (n == 0 || width == 0) return;
  scatter_add_kernel<<<grid_for(n * width), kThreads, 0, s>>>(src, rows, weights, width, n * width, dst);
  UNEVEN_CUDA_LAUNCHED();
}
void sigmoid_scale_add(const float* src, const float* gates, int64_t rows, int64_t width, float* dst, cudaStream_t s) {
  if (rows == 0 || width == 0) return;
  sigmoid_scale_add_kernel<<<grid_for(rows * width), kThreads, 0, s>>>(src, gates, width, rows * width, dst);
  UNEVEN_CUDA_LAUNCHED();
}

}  // namespace uneven::cuda
