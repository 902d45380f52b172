// Gated DeltaNet (Qwen3-Next, Qwen3.5 linear attention) over the rank's value heads and the key heads they
// use: causal depthwise conv1d with its state, SiLU, L2-normalised q and k, the gated delta rule (chunked for
// a batch of tokens, recurrent for one), the gated RMSNorm with z, and out_proj (a partial sum).
#include <algorithm>
#include <cmath>

#include "compute/kernels.h"
#include "engine/session.h"

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

// Where one value head's inputs are for a chunk of tokens.
struct HeadInputs {
  const float* q;     // [t * q_stride], l2-normalised and scaled by 1/sqrt(dk)
  const float* k;     // [t * q_stride], l2-normalised
  const float* v;     // [t * q_stride]
  int64_t stride;     // floats between tokens (one conv-output row)
  const float* beta;  // [t * beta_stride]
  const float* g;     // log decay per token
  int64_t beta_stride;
  float* out;         // [t * out_stride], dv values
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

}  // namespace

void Session::linear_attention_block(int64_t l, int64_t count) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = c.hidden_size, dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t nk = ls.linear_k_heads.size(), nv = ls.linear_v_heads.size();
  const int64_t ratio = c.linear_value_heads_per_key_head(), kernel = c.linear_conv_kernel_dim;
  if (nv == 0) {  // no value heads of this layer here: add zeros to the sum
    std::fill(proj_.begin(), proj_.begin() + count * h, 0.0f);
    finish_block(count);
    return;
  }
  kernels::rmsnorm(x_.data(), lw.attn_norm.data(), float(c.rms_norm_eps), h, count, normed_.data());
  // Rows of linear_in: q | k (the rank's key heads), v | z (its value heads), b | a (one per value head).
  matmul(lw.linear_in, normed_.data(), count, mixed_.data(), times_.reads.linear);
  times_.reads.linear += double(lw.conv.size() + lw.a_log.size() + lw.dt_bias.size() + lw.linear_norm.size()) * 4.0;
  const int64_t in_rows = lw.linear_in.view.rows, channels = 2 * nk * dk + nv * dv;
  const int64_t z_at = channels, b_at = channels + nv * dv, a_at = b_at + nv;

  // Causal depthwise conv over the q|k|v channels; the state holds each channel's last kernel-1 inputs.
  std::vector<float>& state = conv_state_[size_t(l)];
  const int64_t past = kernel - 1;
  pool_.parallel_for(channels, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      const float* w = lw.conv.data() + ch * kernel;
      float* st = state.data() + ch * past;
      for (int64_t t = 0; t < count; ++t) {
        float sum = 0;
        for (int64_t j = 0; j < kernel; ++j) {
          const int64_t tau = t - past + j;  // input time relative to this batch
          const float x = tau >= 0 ? mixed_[size_t(tau * in_rows + ch)] : st[past + tau];
          sum += w[j] * x;
        }
        conv_out_[size_t(t * channels + ch)] = sum * (1.0f / (1.0f + std::exp(-sum)));  // SiLU
      }
      // New state: the last `past` inputs of (old state ++ this batch).
      for (int64_t j = 0; j < past; ++j) {
        const int64_t tau = count - past + j;
        st[j] = tau >= 0 ? mixed_[size_t(tau * in_rows + ch)] : st[j + count];
      }
    }
  });

  // q and k normalised per key head (q also scaled by 1/sqrt(dk)); beta and the log decay per value head.
  const float q_scale = 1.0f / std::sqrt(float(dk));
  for (int64_t t = 0; t < count; ++t) {
    float* row = conv_out_.data() + t * channels;
    for (int64_t j = 0; j < nk; ++j) {
      l2_normalize(row + j * dk, dk, q_scale);
      l2_normalize(row + nk * dk + j * dk, dk, 1.0f);
    }
    const float* mixed = mixed_.data() + t * in_rows;
    for (int64_t j = 0; j < nv; ++j) {
      beta_[size_t(t * nv + j)] = sigmoid(mixed[b_at + j]);
      decay_[size_t(t * nv + j)] = -std::exp(lw.a_log[size_t(j)]) * softplus(mixed[a_at + j] + lw.dt_bias[size_t(j)]);
    }
  }

  // The delta rule per value head; value head v uses key head v / ratio.
  std::vector<float>& rec = recurrent_state_[size_t(l)];
  delta_scratch_.resize(size_t(nv * kDeltaChunk * (dv + 2)));
  pool_.parallel_for(nv, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t key_local = (ls.linear_v_heads.begin + j) / ratio - ls.linear_k_heads.begin;
      HeadInputs in{conv_out_.data() + key_local * dk, conv_out_.data() + nk * dk + key_local * dk,
                    conv_out_.data() + 2 * nk * dk + j * dv, channels, beta_.data() + j, decay_.data() + j, nv,
                    core_.data() + j * dv, nv * dv};
      float* S = rec.data() + j * dk * dv;
      float* scratch = delta_scratch_.data() + j * kDeltaChunk * (dv + 2);
      if (count == 1) {
        recurrent_step(in, 0, S, dk, dv, scratch);
      } else {
        for (int64_t t0 = 0; t0 < count; t0 += kDeltaChunk)
          chunk_step(in, t0, std::min(count, t0 + kDeltaChunk), S, dk, dv, scratch);
      }
    }
  });

  // Gated RMSNorm over each value head: norm(o) * w * silu(z); then out_proj over the rank's heads.
  const float eps = float(c.rms_norm_eps);
  for (int64_t t = 0; t < count; ++t) {
    float* o = core_.data() + t * nv * dv;
    const float* z = mixed_.data() + t * in_rows + z_at;
    kernels::rmsnorm(o, lw.linear_norm.data(), eps, dv, nv, o);
    for (int64_t i = 0; i < nv * dv; ++i) o[i] *= z[i] * sigmoid(z[i]);
  }
  matmul(lw.linear_out, core_.data(), count, proj_.data(), times_.reads.linear);
  finish_block(count);
}

}  // namespace uneven
