// Gated DeltaNet on the GPU (backend.h DeltaNetArgs), following the CPU's arithmetic: causal conv1d with
// its state and SiLU, per-head L2 norms, beta and the log decay, the delta rule (recurrent form for one
// token, the CPU's chunked form in chunks of 64 tokens otherwise; one block per value head), gated RMSNorm.
#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"

namespace uneven::cuda {
namespace {

constexpr int kRowsPerThread = 32;  // state rows (of dk) each thread of the delta rule holds
constexpr int kDeltaThreads = 512;  // at most 128 registers a thread: the 32 state values stay in registers
constexpr int kDeltaChunk = 64;     // tokens per chunk of the parallel form: the CPU's kDeltaChunk
constexpr int kChunkThreads = 512;  // threads of the chunk kernel (at most; dv columns times token groups)

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

// The chunked (parallel) form for count > 1, as CpuBackend's chunk_step: tokens [t0, t0 + n), n <= 64,
// with G the running sum of g inside the chunk (in double) and S0 the state before it:
//   delta_i = beta_i (v_i - e^{G_i} S0^T k_i) - sum_{j<i} beta_i e^{G_i-G_j} (k_i.k_j) delta_j
//   o_i     = e^{G_i} S0^T q_i + sum_{j<=i} e^{G_i-G_j} (q_i.k_j) delta_j
//   S       = e^{G_last} S0 + sum_j e^{G_last-G_j} k_j delta_j^T
// Every e^x is float(exp(double x)), as the CPU computes it. Block per value head; thread (b, group)
// owns value column b (b < dv) and tokens / state rows group, group + groups, ...; threads past
// dv * groups (padding to whole warps) only join the dot products. The state stays in global memory,
// where every thread reads whole columns in row order (the CPU's order of the S0^T k sums).
// Shared memory (cap = min(count, 64) tokens): G [cap] doubles, then floats eg [cap] (e^{G_i}), wl [cap]
// (e^{G_last-G_j}), D [cap][dv] (S0^T k_i, then delta_i), ck [cap][cap] and cq [cap][cap] (the
// coefficients of the j-sums: ck[i][j] = -beta_i e^{G_i-G_j} k_i.k_j for j < i, cq[i][j] =
// e^{G_i-G_j} q_i.k_j for j <= i).
__global__ void __launch_bounds__(kChunkThreads) delta_chunk_kernel(DeltaNetArgs a, int64_t channels, int cap,
                                                                     int groups) {
  extern __shared__ double shd[];
  const int dk = int(a.dk), dv = int(a.dv), nv = int(a.v_heads), head = int(blockIdx.x);
  double* G = shd;
  float* eg = reinterpret_cast<float*>(G + cap);
  float* wl = eg + cap;
  float* D = wl + cap;
  float* ck = D + cap * dv;
  float* cq = ck + cap * cap;
  const int b = int(threadIdx.x) % dv, group = int(threadIdx.x) / dv;
  const bool column = group < groups;  // false only for the padding threads
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x) >> 5;
  const int key = int((a.v_head_begin + head) / a.ratio - a.k_head_begin);
  const int64_t q_at = int64_t(key) * dk, k_at = (a.k_heads + key) * dk, v_at = 2 * a.k_heads * dk + head * dv;
  float* S = a.recurrent_state + int64_t(head) * dk * dv;  // [dk][dv]; S0 until the update at the chunk's end
  for (int64_t t0 = 0; t0 < a.count; t0 += kDeltaChunk) {
    const int n = int(min(int64_t(kDeltaChunk), a.count - t0));
    const float* rows = a.conv_out + t0 * channels;  // row i of the chunk at rows + i * channels
    // G in double, summed in token order by one thread (the CPU's order); the g staged through eg.
    for (int i = threadIdx.x; i < n; i += blockDim.x) eg[i] = a.decay[(t0 + i) * nv + head];
    __syncthreads();
    if (threadIdx.x == 0) {
      double run = 0;
      for (int i = 0; i < n; ++i) G[i] = run += double(eg[i]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      eg[i] = float(exp(G[i]));
      wl[i] = float(exp(G[n - 1] - G[i]));
    }
    // The j-sum coefficients, a warp per pair (i, j <= i); dots in float through a warp reduction.
    for (int p = warp; p < n * n; p += warps) {
      const int i = p / n, j = p % n;
      if (j > i) continue;  // warp-uniform
      const float* ki = rows + int64_t(i) * channels + k_at;
      const float* qi = rows + int64_t(i) * channels + q_at;
      const float* kj = rows + int64_t(j) * channels + k_at;
      float kk = 0, qk = 0;
      for (int r = lane; r < dk; r += 32) {
        kk = fmaf(ki[r], kj[r], kk);
        qk = fmaf(qi[r], kj[r], qk);
      }
      kk = warp_sum(kk);
      qk = warp_sum(qk);
      if (lane == 0) {
        const float w = float(exp(G[i] - G[j])), beta = a.beta[(t0 + i) * nv + head];
        cq[i * cap + j] = w * qk;
        if (j < i) ck[i * cap + j] = -beta * w * kk;
      }
    }
    __syncthreads();  // eg, wl, ck, cq ready
    // S0^T k_i into D and e^{G_i} S0^T q_i into the output row (finished below by the same thread), with
    // the sums over state rows in increasing order; then D[i] = beta_i (v_i - e^{G_i} S0^T k_i). No
    // contraction into fma where the CPU multiplies and subtracts separately.
    if (column) {
      for (int i = group; i < n; i += groups) {
        const float* ki = rows + int64_t(i) * channels + k_at;
        const float* qi = rows + int64_t(i) * channels + q_at;
        float u = 0, o = 0;
        for (int r = 0; r < dk; ++r) {
          const float s = S[r * dv + b];
          u = fmaf(ki[r], s, u);
          o = fmaf(qi[r], s, o);
        }
        const float beta = a.beta[(t0 + i) * nv + head], v = rows[int64_t(i) * channels + v_at + b];
        D[i * dv + b] = __fmul_rn(beta, __fsub_rn(v, __fmul_rn(eg[i], u)));
        a.core[(t0 + i) * nv * dv + int64_t(head) * dv + b] = __fmul_rn(o, eg[i]);
      }
    }
    __syncthreads();  // D holds beta_i (v_i - e^{G_i} S0^T k_i) for every i
    // The deltas in token order: column b depends only on column b, so one thread per column, no barrier.
    if (group == 0) {
      for (int i = 1; i < n; ++i) {
        float d = D[i * dv + b];
        for (int j = 0; j < i; ++j) d = fmaf(ck[i * cap + j], D[j * dv + b], d);
        D[i * dv + b] = d;
      }
    }
    __syncthreads();  // D holds delta_i for every i; S0 is no longer read (the S0^T sums are done)
    if (column) {
      // Outputs: o_i += sum_{j<=i} cq[i][j] delta_j in increasing j.
      for (int i = group; i < n; i += groups) {
        float* out = a.core + (t0 + i) * nv * dv + int64_t(head) * dv + b;
        float o = *out;
        for (int j = 0; j <= i; ++j) o = fmaf(cq[i * cap + j], D[j * dv + b], o);
        *out = o;
      }
      // State: S = e^{G_last} S0, then += (e^{G_last-G_j} k_j[r]) delta_j[b] in increasing j.
      const float e_last = eg[n - 1];
      for (int r = group; r < dk; r += groups) {
        float s = __fmul_rn(S[r * dv + b], e_last);
        for (int j = 0; j < n; ++j) s = fmaf(wl[j] * rows[int64_t(j) * channels + k_at + r], D[j * dv + b], s);
        S[r * dv + b] = s;
      }
    }
    __syncthreads();  // the next chunk reads the new state and rewrites the shared arrays
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
  if (a.count == 1) {
    delta_kernel<<<unsigned(a.v_heads), unsigned(a.dv * slices), shared, s>>>(a, channels);
  } else {
    const int cap = int(std::min<int64_t>(a.count, kDeltaChunk));
    const int groups = int(std::max<int64_t>(1, kChunkThreads / a.dv));
    const unsigned threads = unsigned((a.dv * groups + 31) / 32 * 32);
    // G, eg, wl, D, ck, cq (delta_chunk_kernel): 66,560 bytes for dv 128 and a full chunk, so above the
    // default 48 KB; an opt-in the device grants (H200: 227 KB).
    const size_t bytes = size_t(cap) * sizeof(double) + size_t(2 * cap + cap * a.dv + 2 * cap * cap) * sizeof(float);
    int device = 0, optin = 0;
    UNEVEN_CUDA_CHECK(cudaGetDevice(&device));
    UNEVEN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (threads > unsigned(kChunkThreads) || bytes > size_t(optin))
      fail("CUDA gated DeltaNet: dv {} needs {} threads and {} bytes of shared memory per head (device: {})", a.dv,
           threads, bytes, optin);
    if (bytes > 48 * 1024)
      UNEVEN_CUDA_CHECK(
          cudaFuncSetAttribute(delta_chunk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    delta_chunk_kernel<<<unsigned(a.v_heads), threads, bytes, s>>>(a, channels, cap, groups);
  }
  UNEVEN_CUDA_LAUNCHED();
  const unsigned dv_threads = unsigned(std::min<int64_t>(256, (a.dv + 31) / 32 * 32));
  gated_norm_kernel<<<dim3(unsigned(a.count), unsigned(a.v_heads)), dv_threads, 0, s>>>(a, vec.norm, channels);
  UNEVEN_CUDA_LAUNCHED();
}

}  // namespace uneven::cuda
