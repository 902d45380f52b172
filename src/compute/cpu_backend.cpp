// The CPU backend: buffers in host memory and the Highway kernels, parallel over a thread pool. Also the
// reference semantics the CUDA backend is tested against.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "compute/backend.h"
#include "compute/kernels.h"
#include "compute/thread_pool.h"
#include "util/error.h"

namespace uneven {
namespace {

constexpr int64_t kDeltaChunk = 64;  // tokens per chunk of the parallel form, as transformers uses

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with its default threshold of 20.
float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

void l2_normalize(float* x, int64_t n, float scale) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  const float inv = scale / std::sqrt(sum + 1e-6f);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

// Rotates the first 2*half values of each of `heads` vectors of head_dim at one position.
void rotate(float* x, int64_t heads, int64_t head_dim, int64_t half, bool interleaved, const float* cos,
            const float* sin) {
  for (int64_t head = 0; head < heads; ++head) {
    float* v = x + head * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      // Interleaved (GGUF/llama2.c) pairs are (2i, 2i+1); transformers pairs (i, i + rotary_dim/2).
      float* a = interleaved ? v + 2 * i : v + i;
      float* b = interleaved ? v + 2 * i + 1 : v + i + half;
      const float x0 = *a, x1 = *b;
      *a = x0 * cos[i] - x1 * sin[i];
      *b = x1 * cos[i] + x0 * sin[i];
    }
  }
}

// Where one value head's inputs are for a chunk of tokens.
struct HeadInputs {
  const float* q;     // [t * stride], l2-normalised and scaled by 1/sqrt(dk)
  const float* k;     // [t * stride], l2-normalised
  const float* v;     // [t * stride]
  int64_t stride;     // floats between tokens (one conv-output row)
  const float* beta;  // [t * beta_stride]
  const float* g;     // log decay per token
  int64_t beta_stride;
  float* out;  // [t * out_stride], dv values
  int64_t out_stride;
};

// One token at a time: S = exp(g) S; S += k (beta (v - S^T k))^T; o = S^T q. State S is [dk][dv].
void recurrent_step(const HeadInputs& in, int64_t t, float* S, int64_t dk, int64_t dv, float* kv_mem) {
  const float* q = in.q + t * in.stride;
  const float* k = in.k + t * in.stride;
  const float* v = in.v + t * in.stride;
  const float decay = std::exp(in.g[t * in.beta_stride]), beta = in.beta[t * in.beta_stride];
  std::fill(kv_mem, kv_mem + dv, 0.0f);
  for (int64_t a = 0; a < dk; ++a) {
    float* row = S + a * dv;
    for (int64_t b = 0; b < dv; ++b) row[b] *= decay;
    kernels::axpy(k[a], row, kv_mem, dv);
  }
  for (int64_t b = 0; b < dv; ++b) kv_mem[b] = (v[b] - kv_mem[b]) * beta;  // delta
  float* o = in.out + t * in.out_stride;
  std::fill(o, o + dv, 0.0f);
  for (int64_t a = 0; a < dk; ++a) {
    float* row = S + a * dv;
    kernels::axpy(k[a], kv_mem, row, dv);
    kernels::axpy(q[a], row, o, dv);
  }
}

// The same recurrence for tokens [t0, t1) (at most kDeltaChunk) in its parallel form. With G the running
// sum of g inside the chunk and S0 the state before it:
//   delta_i = beta_i (v_i - e^{G_i} S0^T k_i) - sum_{j<i} beta_i e^{G_i-G_j} (k_i.k_j) delta_j
//   o_i     = e^{G_i} S0^T q_i + sum_{j<=i} e^{G_i-G_j} (q_i.k_j) delta_j
//   S       = e^{G_last} S0 + sum_j e^{G_last-G_j} k_j delta_j^T
// (every exponent is <= 0, so nothing overflows). G is summed in double: strong decays make it large and
// negative within a chunk, and G_i - G_j of two float sums would lose the digits the weights depend on.
// `scratch` holds kDeltaChunk * (dv + 2) floats.
void chunk_step(const HeadInputs& in, int64_t t0, int64_t t1, float* S, int64_t dk, int64_t dv, float* scratch) {
  const int64_t n = t1 - t0;
  double* G = reinterpret_cast<double*>(scratch);  // kDeltaChunk doubles
  float* delta = scratch + 2 * kDeltaChunk;       // [n][dv]
  double run = 0;
  for (int64_t i = 0; i < n; ++i) G[i] = run += double(in.g[(t0 + i) * in.beta_stride]);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = t0 + i;
    const float* k = in.k + t * in.stride;
    const float* q = in.q + t * in.stride;
    const float beta = in.beta[t * in.beta_stride], eg = float(std::exp(G[i]));
    float* d = delta + i * dv;
    float* o = in.out + t * in.out_stride;
    std::fill(d, d + dv, 0.0f);
    std::fill(o, o + dv, 0.0f);
    for (int64_t a = 0; a < dk; ++a) {  // S0^T k_i and S0^T q_i
      kernels::axpy(k[a], S + a * dv, d, dv);
      kernels::axpy(q[a], S + a * dv, o, dv);
    }
    const float* v = in.v + t * in.stride;
    for (int64_t b = 0; b < dv; ++b) {
      d[b] = beta * (v[b] - eg * d[b]);
      o[b] *= eg;
    }
    for (int64_t j = 0; j < i; ++j) {
      const float* kj = in.k + (t0 + j) * in.stride;
      const float w = float(std::exp(G[i] - G[j]));
      kernels::axpy(-beta * w * kernels::dot(k, kj, dk), delta + j * dv, d, dv);
    }
    for (int64_t j = 0; j <= i; ++j) {
      const float* kj = in.k + (t0 + j) * in.stride;
      kernels::axpy(float(std::exp(G[i] - G[j])) * kernels::dot(q, kj, dk), delta + j * dv, o, dv);
    }
  }
  const float e_last = float(std::exp(G[n - 1]));
  for (int64_t a = 0; a < dk * dv; ++a) S[a] *= e_last;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = in.k + (t0 + j) * in.stride;
    const float w = float(std::exp(G[n - 1] - G[j]));
    for (int64_t a = 0; a < dk; ++a) kernels::axpy(w * kj[a], delta + j * dv, S + a * dv, dv);
  }
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}
  std::string name() const override { return std::string("cpu (") + kernels::simd_target() + ")"; }
  bool device_memory() const override { return false; }

  float* allocate(int64_t n) override {
    if (n < 0) fail("cannot allocate {} floats", n);
    return n == 0 ? nullptr : new float[size_t(n)]();
  }
  void release(float* p) override { delete[] p; }
  void upload(float* dst, const float* host, int64_t n) override { copy(dst, host, n); }
  void download(float* host, const float* src, int64_t n) override { copy(host, src, n); }
  void fill_zero(float* x, int64_t n) override { std::fill(x, x + n, 0.0f); }
  void synchronize() override {}
  double measure_read_bandwidth() override { return kernels::measure_read_bandwidth(pool_); }

  void matmul(const kernels::WeightView& w, const float* x, int64_t batch, float* y) override {
    kernels::matmul(w, x, batch, y, pool_);
  }

  void embed(const kernels::WeightView& table, int64_t first_row, const float* tokens, int64_t count,
             float* x) override {
    const size_t row_bytes = size_t(table.row_bytes());
    for (int64_t t = 0; t < count; ++t) {
      const int64_t row = int64_t(tokens[t]) - first_row;
      if (row < 0 || row >= table.rows) continue;
      kernels::to_f32(static_cast<const uint8_t*>(table.data) + size_t(row) * row_bytes, table.type(), table.cols,
                      x + t * table.cols);
    }
  }

  void rmsnorm(const float* x, const std::vector<float>& weight, float eps, int64_t n, int64_t rows,
               float* out) override {
    kernels::rmsnorm(x, weight.data(), eps, n, rows, out);
  }
  void add(float* y, const float* x, int64_t n) override { kernels::add(y, x, n); }
  void add_bias(float* y, const std::vector<float>& bias, int64_t rows) override {
    const int64_t n = int64_t(bias.size());
    for (int64_t r = 0; r < rows; ++r) kernels::add(y + r * n, bias.data(), n);
  }
  void swiglu(const float* gate_up, int64_t cols, int64_t rows, float* out) override {
    for (int64_t t = 0; t < rows; ++t) {
      const float* row = gate_up + t * 2 * cols;
      float* o = out + t * cols;
      std::copy_n(row, cols, o);
      kernels::silu_mul(o, row + cols, cols);
    }
  }
  void gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t width, float* dst) override {
    for (int64_t i = 0; i < n; ++i) std::copy_n(src + rows[i] * width, width, dst + i * width);
  }
  void scatter_add_rows(const float* src, const int64_t* rows, const float* weights, int64_t n, int64_t width,
                        float* dst) override {
    for (int64_t i = 0; i < n; ++i) kernels::axpy(weights[i], src + i * width, dst + rows[i] * width, width);
  }
  void sigmoid_scale_add(const float* src, const float* gates, int64_t rows, int64_t width, float* dst) override {
    for (int64_t r = 0; r < rows; ++r) kernels::axpy(sigmoid(gates[r]), src + r * width, dst + r * width, width);
  }

  void attention(const AttentionArgs& a) override;
  void gated_deltanet(const DeltaNetArgs& a) override;

 private:
  static void copy(float* dst, const float* src, int64_t n) {
    if (n > 0 && dst != src) std::memmove(dst, src, size_t(n) * sizeof(float));
  }
  ThreadPool& pool_;
  std::vector<float> delta_scratch_;
};

void CpuBackend::attention(const AttentionArgs& a) {
  const int64_t hd = a.head_dim, nq = a.q_heads, nkv = a.kv_heads, count = a.count;
  const int64_t q_stride = (a.gated ? 2 : 1) * hd;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t j = 0; j < nq; ++j) std::copy_n(a.q_in + (t * nq + j) * q_stride, hd, a.q + (t * nq + j) * hd);
  if (a.q_norm && !a.q_norm->empty()) {
    kernels::rmsnorm(a.q, a.q_norm->data(), a.eps, hd, count * nq, a.q);
    kernels::rmsnorm(a.k, a.k_norm->data(), a.eps, hd, count * nkv, a.k);
  }
  for (int64_t t = 0; t < count; ++t) {
    const float* cos = a.cos + t * a.rope_half;
    const float* sin = a.sin + t * a.rope_half;
    rotate(a.q + t * nq * hd, nq, hd, a.rope_half, a.rope_interleaved, cos, sin);
    rotate(a.k + t * nkv * hd, nkv, hd, a.rope_half, a.rope_interleaved, cos, sin);
    for (int64_t j = 0; j < nkv; ++j) {
      const size_t at = size_t((j * a.context + a.position + t) * hd);
      std::copy_n(a.k + (t * nkv + j) * hd, hd, a.k_cache + at);
      std::copy_n(a.v + (t * nkv + j) * hd, hd, a.v_cache + at);
    }
  }
  // Causal attention, one task per local query head; token t sees positions [0, position + t].
  const float scale = 1.0f / std::sqrt(float(hd));
  pool_.parallel_for(nq, [&](int64_t head_begin, int64_t head_end) {
    for (int64_t j = head_begin; j < head_end; ++j) {
      const int64_t kv_local = (a.q_head_begin + j) / a.group - a.kv_head_begin;
      const float* keys = a.k_cache + kv_local * a.context * hd;
      const float* values = a.v_cache + kv_local * a.context * hd;
      float* scores = a.scores + j * a.context;
      for (int64_t t = 0; t < count; ++t) {
        const float* q = a.q + (t * nq + j) * hd;
        const int64_t visible = a.position + t + 1;
        for (int64_t p = 0; p < visible; ++p) scores[p] = kernels::dot(q, keys + p * hd, hd) * scale;
        kernels::softmax(scores, visible);
        float* out = a.out + (t * nq + j) * hd;
        std::fill(out, out + hd, 0.0f);
        for (int64_t p = 0; p < visible; ++p) kernels::axpy(scores[p], values + p * hd, out, hd);
        if (a.gated) {
          const float* gate = a.q_in + (t * nq + j) * q_stride + hd;
          for (int64_t d = 0; d < hd; ++d) out[d] *= sigmoid(gate[d]);
        }
      }
    }
  });
}

void CpuBackend::gated_deltanet(const DeltaNetArgs& a) {
  const int64_t count = a.count, nk = a.k_heads, nv = a.v_heads, dk = a.dk, dv = a.dv, kernel = a.kernel;
  const int64_t in_rows = a.in_rows, channels = 2 * nk * dk + nv * dv;
  const int64_t z_at = channels, b_at = channels + nv * dv, a_at = b_at + nv;
  const float* mixed = a.mixed;

  // Causal depthwise conv over the q|k|v channels; the state holds each channel's last kernel-1 inputs.
  const int64_t past = kernel - 1;
  pool_.parallel_for(channels, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      const float* w = a.conv->data() + ch * kernel;
      float* st = a.conv_state + ch * past;
      for (int64_t t = 0; t < count; ++t) {
        float sum = 0;
        for (int64_t j = 0; j < kernel; ++j) {
          const int64_t tau = t - past + j;  // input time relative to this batch
          const float x = tau >= 0 ? mixed[tau * in_rows + ch] : st[past + tau];
          sum += w[j] * x;
        }
        a.conv_out[t * channels + ch] = sum * sigmoid(sum);  // SiLU
      }
      // New state: the last `past` inputs of (old state ++ this batch).
      for (int64_t j = 0; j < past; ++j) {
        const int64_t tau = count - past + j;
        st[j] = tau >= 0 ? mixed[tau * in_rows + ch] : st[j + count];
      }
    }
  });

  // q and k normalised per key head (q also scaled by 1/sqrt(dk)); beta and the log decay per value head.
  const float q_scale = 1.0f / std::sqrt(float(dk));
  for (int64_t t = 0; t < count; ++t) {
    float* row = a.conv_out + t * channels;
    for (int64_t j = 0; j < nk; ++j) {
      l2_normalize(row + j * dk, dk, q_scale);
      l2_normalize(row + nk * dk + j * dk, dk, 1.0f);
    }
    const float* m = mixed + t * in_rows;
    for (int64_t j = 0; j < nv; ++j) {
      a.beta[t * nv + j] = sigmoid(m[b_at + j]);
      a.decay[t * nv + j] = -std::exp((*a.a_log)[size_t(j)]) * softplus(m[a_at + j] + (*a.dt_bias)[size_t(j)]);
    }
  }

  // The delta rule per value head; value head v uses key head v / ratio.
  delta_scratch_.resize(size_t(nv * kDeltaChunk * (dv + 2)));
  pool_.parallel_for(nv, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t key_local = (a.v_head_begin + j) / a.ratio - a.k_head_begin;
      HeadInputs in{a.conv_out + key_local * dk, a.conv_out + nk * dk + key_local * dk,
                    a.conv_out + 2 * nk * dk + j * dv, channels, a.beta + j, a.decay + j, nv,
                    a.core + j * dv, nv * dv};
      float* S = a.recurrent_state + j * dk * dv;
      float* scratch = delta_scratch_.data() + j * kDeltaChunk * (dv + 2);
      if (count == 1) {
        recurrent_step(in, 0, S, dk, dv, scratch);
      } else {
        for (int64_t t0 = 0; t0 < count; t0 += kDeltaChunk)
          chunk_step(in, t0, std::min(count, t0 + kDeltaChunk), S, dk, dv, scratch);
      }
    }
  });

  // Gated RMSNorm over each value head: norm(o) * w * silu(z).
  for (int64_t t = 0; t < count; ++t) {
    float* o = a.core + t * nv * dv;
    const float* z = mixed + t * in_rows + z_at;
    kernels::rmsnorm(o, a.norm->data(), a.eps, dv, nv, o);
    for (int64_t i = 0; i < nv * dv; ++i) o[i] *= z[i] * sigmoid(z[i]);
  }
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) { return std::make_unique<CpuBackend>(pool); }

}  // namespace uneven
