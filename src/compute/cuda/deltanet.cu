// Gated DeltaNet on the GPU (backend.h DeltaNetArgs): causal conv1d with its state and SiLU, per-head L2
// norms, beta and the log decay, the delta rule token by token (recurrent form, one block per value
// head with the state in registers), and the gated RMSNorm. Mathematically the CPU's chunked form.
#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"

namespace uneven::cuda {
namespace {

constexpr int kRowsPerThread = 32;  // state rows (of dk) each thread of the delta rule holds
constexpr int kDeltaThreads = 512;  // at most 128 registers a thread: the 32 state values stay in registers

// One thread per q|k|v channel, tokens in order (the state is a sliding window of the last inputs).
__global__ void conv_kernel(DeltaNetArgs a, const float* __restrict__ conv, int64_t channels) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= channels) return;
  const int64_t kernel = a.kernel, past = kernel - 1;
  const float* w = conv + ch * kernel;
  float* st = a.conv_state + ch * past;
  for (int64_t t = 0; t < a.count; ++t) {
    float sum = 0;
    for (int64_t j = 0; j < kernel; ++j) {
      const int64_t tau = t - past + j;  // input time relative to this batch
      const float x = tau >= 0 ? a.mixed[tau * a.in_rows + ch] : st[past + tau];
      sum += w[j] * x;
    }
    a.conv_out[t * channels + ch] = sum * (1.0f / (1.0f + expf(-sum)));
  }
  // New state: the last `past` inputs of (old state ++ this batch); ascending j reads only later entries.
  for (int64_t j = 0; j < past; ++j) {
    const int64_t tau = a.count - past + j;
    st[j] = tau >= 0 ? a.mixed[tau * a.in_rows + ch] : st[j + a.count];
  }
}

// Block (t, head): heads [0, k_heads) are queries (scaled by 1/sqrt(dk)), [k_heads, 2 k_heads) keys.
__global__ void l2norm_kernel(DeltaNetArgs a, int64_t channels) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x, h = blockIdx.y, dk = a.dk;
  float* x = a.conv_out + t * channels + h * dk;  // keys follow the queries: head h at h * dk either way
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
  const float scale = h < a.k_heads ? 1.0f / sqrtf(float(dk)) : 1.0f;
  const float inv = scale / sqrtf(block_sum(ss, red) + 1e-6f);
  for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) x[i] *= inv;
}

// beta = sigmoid(b), g = -exp(a_log) * softplus(a + dt_bias) (softplus threshold 20, as torch).
__global__ void gates_kernel(DeltaNetArgs a, const float* __restrict__ a_log, const float* __restrict__ dt_bias,
                             int64_t b_at) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, nv = a.v_heads;
  if (i >= a.count * nv) return;
  const int64_t t = i / nv, j = i % nv;
  const float* row = a.mixed + t * a.in_rows;
  a.beta[i] = sigmoidf_(row[b_at + j]);
  const float x = row[b_at + nv + j] + dt_bias[j];
  a.decay[i] = -expf(a_log[j]) * (x > 20.0f ? x : log1pf(expf(x)));
}

// Block per value head; thread (b, slice) holds column b of state rows [32 slice, 32 slice + 32).
// Per token: S = e^g S; u = S^T k; delta = beta (v - u); S += k delta^T; o = S^T q (sums over slices
// through shared memory, in slice order).
__global__ void __launch_bounds__(kDeltaThreads) delta_kernel(DeltaNetArgs a, int64_t channels) {
  extern __shared__ float sh[];
  const int dk = int(a.dk), dv = int(a.dv), nv = int(a.v_heads), j = int(blockIdx.x);
  const int slices = (dk + kRowsPerThread - 1) / kRowsPerThread;
  float* qk = sh;                    // q then k of the token: 2 dk
  float* red = sh + 2 * dk;          // [slices][dv]
  float* delta = red + slices * dv;  // dv
  const int b = int(threadIdx.x % dv), slice = int(threadIdx.x / dv);
  const int key = int((a.v_head_begin + j) / a.ratio - a.k_head_begin);
  float* S = a.recurrent_state + int64_t(j) * dk * dv;
  float s[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = slice * kRowsPerThread + i;
    s[i] = r < dk ? S[r * dv + b] : 0.0f;
  }
  for (int64_t t = 0; t < a.count; ++t) {
    const float* row = a.conv_out + t * channels;
    for (int i = threadIdx.x; i < dk; i += blockDim.x) {
      qk[i] = row[key * dk + i];
      qk[dk + i] = row[a.k_heads * dk + key * dk + i];
    }
    __syncthreads();
    const float decay = expf(a.decay[t * nv + j]), beta = a.beta[t * nv + j];
    float part = 0;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = slice * kRowsPerThread + i;
      if (r < dk) {
        s[i] *= decay;
        part = fmaf(qk[dk + r], s[i], part);
      }
    }
    red[slice * dv + b] = part;
    __syncthreads();
    if (slice == 0) {
      float u = 0;
      for (int z = 0; z < slices; ++z) u += red[z * dv + b];
      delta[b] = (row[2 * a.k_heads * dk + j * dv + b] - u) * beta;
    }
    __syncthreads();
    const float dl = delta[b];
    part = 0;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = slice * kRowsPerThread + i;
      if (r < dk) {
        s[i] = fmaf(qk[dk + r], dl, s[i]);
        part = fmaf(qk[r], s[i], part);
      }
    }
    red[slice * dv + b] = part;
    __syncthreads();
    if (slice == 0) {
      float o = 0;
      for (int z = 0; z < slices; ++z) o += red[z * dv + b];
      a.core[t * nv * dv + int64_t(j) * dv + b] = o;
    }
    __syncthreads();  // qk and red are rewritten by the next token
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = slice * kRowsPerThread + i;
    if (r < dk) S[r * dv + b] = s[i];
  }
}

// Block (t, value head): RMSNorm of o over dv by `norm`, times silu(z).
__global__ void gated_norm_kernel(DeltaNetArgs a, const float* __restrict__ norm, int64_t z_at) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x, j = blockIdx.y, dv = a.dv;
  float* o = a.core + t * a.v_heads * dv + j * dv;
  const float* z = a.mixed + t * a.in_rows + z_at + j * dv;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) ss = fmaf(o[i], o[i], ss);
  const float scale = 1.0f / sqrtf(block_sum(ss, red) / float(dv) + a.eps);
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) o[i] = o[i] * scale * norm[i] * (z[i] * sigmoidf_(z[i]));
}

}  // namespace

void gated_deltanet(const DeltaNetArgs& a, const DeltaNetVectors& vec, cudaStream_t s) {
  if (a.count == 0 || a.v_heads == 0) return;
  const int64_t channels = 2 * a.k_heads * a.dk + a.v_heads * a.dv;
  const int64_t slices = (a.dk + kRowsPerThread - 1) / kRowsPerThread;
  if (a.kernel < 1 || a.dk < 1 || a.dv < 1 || a.dv * slices > kDeltaThreads)
    fail("CUDA gated DeltaNet: dk {} x dv {} (conv kernel {}) is not supported (needs dv * ceil(dk / 32) <= {})", a.dk,
         a.dv, a.kernel, kDeltaThreads);
  if (a.in_rows < channels + a.v_heads * a.dv + 2 * a.v_heads)
    fail("CUDA gated DeltaNet: rows of {} floats cannot hold {} channels, z and the gates", a.in_rows, channels);

  conv_kernel<<<blocks_for(channels, 128), 128, 0, s>>>(a, vec.conv, channels);
  UNEVEN_CUDA_LAUNCHED();
  const unsigned norm_threads = unsigned(std::min<int64_t>(256, (a.dk + 31) / 32 * 32));
  l2norm_kernel<<<dim3(unsigned(a.count), unsigned(2 * a.k_heads)), norm_threads, 0, s>>>(a, channels);
  UNEVEN_CUDA_LAUNCHED();
  const int64_t b_at = channels + a.v_heads * a.dv;
  gates_kernel<<<blocks_for(a.count * a.v_heads, 128), 128, 0, s>>>(a, vec.a_log, vec.dt_bias, b_at);
  UNEVEN_CUDA_LAUNCHED();
  const size_t shared = size_t(2 * a.dk + slices * a.dv + a.dv) * sizeof(float);
  if (shared > 48 * 1024) fail("CUDA gated DeltaNet: dk {} / dv {} need {} bytes of shared memory", a.dk, a.dv, shared);
  delta_kernel<<<unsigned(a.v_heads), unsigned(a.dv * slices), shared, s>>>(a, channels);
  UNEVEN_CUDA_LAUNCHED();
  const unsigned dv_threads = unsigned(std::min<int64_t>(256, (a.dv + 31) / 32 * 32));
  gated_norm_kernel<<<dim3(unsigned(a.count), unsigned(a.v_heads)), dv_threads, 0, s>>>(a, vec.norm, channels);
  UNEVEN_CUDA_LAUNCHED();
}

}  // namespace uneven::cuda
