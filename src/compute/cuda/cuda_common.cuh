// Shared by the CUDA sources: error checks that throw uneven::Error, and warp/block reductions.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "util/error.h"

namespace uneven::cuda {

// Every CUDA runtime / cuBLAS call goes through these: a failure becomes an Error naming the call and
// CUDA's message (never an abort), so the CLI reports it like any other runtime failure.
inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) fail("CUDA: {} failed at {}:{}: {} ({})", call, file, line, cudaGetErrorString(e), int(e));
}
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: {} failed at {}:{}: {} ({})", call, file, line, cublasGetStatusString(s), int(s));
}
#define UNEVEN_CUDA_CHECK(call) ::uneven::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: configuration errors show up here, execution errors at the next synchronization.
#define UNEVEN_CUDA_LAUNCHED() ::uneven::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 floats; the block may call this again right after (the second barrier protects it).
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < warps; ++w) total += shared[w];  // same order in every thread: identical results
  return total;
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace uneven::cuda
