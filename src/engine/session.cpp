// The tensor-parallel forward pass over one rank's slices: embedding, layers, head; full attention and the
// MLPs here, Gated DeltaNet in linear_attention.cpp, mixture of experts in moe.cpp.
//
// Per layer, the rank computes its query heads (with the KV heads they use) or its linear-attention value
// heads (with their key heads), then its MLP, expert and shared-expert columns; the outputs of o_proj /
// out_proj and down_proj are partial sums over the rank's slice of the contraction dimension, so they are
// all-reduced across ranks before the residual add (finish_block). With one rank the all-reduce is the
// identity and this is the plain forward pass.
#include "engine/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "compute/kernels.h"
#include "util/error.h"

namespace uneven {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void add_bias(float* rows, const std::vector<float>& bias, int64_t count) {
  if (bias.empty()) return;
  for (int64_t t = 0; t < count; ++t) kernels::add(rows + t * int64_t(bias.size()), bias.data(), int64_t(bias.size()));
}

}  // namespace

Session::Session(const Model& model, Collective& comm, ThreadPool& pool, int64_t context)
    : model_(model), config_(model.config()), comm_(comm), pool_(pool), rope_(model.config()), context_(context),
      sums_partial_results_(comm.size() > 1 && model.slices().stage_layers.empty()) {
  if (context <= 0 || context > config_.max_position)
    fail("context length {} must be between 1 and the model's max_position_embeddings {}", context, config_.max_position);
  const RankSlices& s = model.slices();
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, h = c.hidden_size;
  k_cache_.resize(size_t(c.num_layers));
  v_cache_.resize(size_t(c.num_layers));
  conv_state_.resize(size_t(c.num_layers));
  recurrent_state_.resize(size_t(c.num_layers));
  int64_t max_kv = 0, max_cols = 0, max_in = 0, max_channels = 0, max_v = 0;
  for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
    const LayerSlices& ls = s.layer[size_t(l)];
    const LayerWeights& lw = model.weights().layers[size_t(l)];
    max_q_ = std::max(max_q_, ls.q_heads.size());
    max_kv = std::max(max_kv, ls.kv_heads.size());
    max_cols = std::max({max_cols, ls.mlp_cols.size(), ls.shared_expert_cols.size()});
    for (const Range& e : ls.expert_cols) max_cols = std::max(max_cols, e.size());
    // The KV cache only for full-attention layers (their kv_heads), the state only for linear ones.
    k_cache_[size_t(l)].assign(size_t(ls.kv_heads.size() * context * hd), 0.0f);
    v_cache_[size_t(l)].assign(size_t(ls.kv_heads.size() * context * hd), 0.0f);
    const int64_t nk = ls.linear_k_heads.size(), nv = ls.linear_v_heads.size();
    const int64_t channels = 2 * nk * c.linear_key_head_dim + nv * c.linear_value_head_dim;
    conv_state_[size_t(l)].assign(size_t(channels * std::max<int64_t>(c.linear_conv_kernel_dim - 1, 0)), 0.0f);
    recurrent_state_[size_t(l)].assign(size_t(nv * c.linear_key_head_dim * c.linear_value_head_dim), 0.0f);
    max_in = std::max(max_in, lw.linear_in.view.rows);
    max_channels = std::max(max_channels, channels);
    max_v = std::max(max_v, nv);
  }
  x_.resize(size_t(kMaxChunk * h));
  normed_.resize(size_t(kMaxChunk * h));
  proj_.resize(size_t(kMaxChunk * h));
  q_.resize(size_t(kMaxChunk * max_q_ * hd));
  if (c.attn_output_gate) q_gate_.resize(size_t(kMaxChunk * max_q_ * c.q_rows_per_head()));
  attn_.resize(size_t(kMaxChunk * max_q_ * hd));
  k_.resize(size_t(kMaxChunk * max_kv * hd));
  v_.resize(size_t(kMaxChunk * max_kv * hd));
  gate_up_.resize(size_t(kMaxChunk * 2 * max_cols));
  scores_.resize(size_t(max_q_ * context));
  mixed_.resize(size_t(kMaxChunk * max_in));
  conv_out_.resize(size_t(kMaxChunk * max_channels));
  core_.resize(size_t(kMaxChunk * max_v * c.linear_value_head_dim));
  beta_.resize(size_t(kMaxChunk * max_v));
  decay_.resize(size_t(kMaxChunk * max_v));
  if (c.num_experts > 0) {
    router_logits_.resize(size_t(kMaxChunk * c.num_experts));
    expert_in_.resize(size_t(kMaxChunk * h));
    expert_out_.resize(size_t(kMaxChunk * h));
    shared_scalar_.resize(size_t(kMaxChunk));
    routed_.resize(size_t(c.num_experts));
    expert_order_.resize(size_t(c.num_experts));
  }
}

void Session::reset() {
  position_ = 0;
  // Attention needs no clearing (positions are rewritten before they are read); the recurrences do.
  for (auto& st : conv_state_) std::fill(st.begin(), st.end(), 0.0f);
  for (auto& st : recurrent_state_) std::fill(st.begin(), st.end(), 0.0f);
}

uint64_t Session::state_bytes() const {
  uint64_t n = 0;
  for (size_t l = 0; l < conv_state_.size(); ++l) n += (conv_state_[l].size() + recurrent_state_[l].size()) * sizeof(float);
  return n;
}

uint64_t Session::kv_cache_bytes() const {
  uint64_t n = 0;
  for (size_t l = 0; l < k_cache_.size(); ++l) n += (k_cache_[l].size() + v_cache_[l].size()) * sizeof(float);
  return n;
}

void Session::all_reduce(float* data, int64_t n) {
  if (!sums_partial_results_) return;
  double t0 = now_s();
  comm_.all_reduce_sum(data, n);
  times_.comm_s += now_s() - t0;
  ++times_.all_reduces;
}

void Session::broadcast(float* data, int64_t n, int root) {
  double t0 = now_s();
  comm_.broadcast(data, n * int64_t(sizeof(float)), root);
  times_.comm_s += now_s() - t0;
}

void Session::forward(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits) {
  if (count <= 0) fail("forward called with {} tokens", count);
  if (position_ + count > context_)
    fail("{} tokens at position {} exceed the context length of {} tokens", count, position_, context_);
  for (int64_t i = 0; i < count; ++i)
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
      fail("token id {} at index {} is outside the vocabulary of {} tokens", tokens[i], i, config_.vocab_size);
  const int64_t vocab = config_.vocab_size;
  logits.assign(size_t(all_logits ? count * vocab : vocab), 0.0f);
  for (int64_t done = 0; done < count; done += kMaxChunk) {
    int64_t n = std::min(kMaxChunk, count - done);
    bool last = done + n == count;
    if (all_logits || last) forward_chunk(tokens + done, n, logits, all_logits, all_logits ? done : 0);
    else forward_chunk(tokens + done, n, logits, false, -1);
  }
}

void Session::forward_chunk(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits,
                            int64_t logits_offset) {
  const double t_start = now_s();
  const double comm_before = times_.comm_s;
  const int64_t h = config_.hidden_size;
  const ModelWeights& w = model_.weights();
  const RankSlices& s = model_.slices();

  // Embedding lookup of the rows this rank holds; rows held elsewhere contribute zeros to the all-reduce.
  // In pipeline mode only the first stage embeds; later stages receive activations.
  const bool pipeline = !s.stage_layers.empty();
  std::fill(x_.begin(), x_.begin() + count * h, 0.0f);
  if (s.has_embedding) {
    const kernels::WeightView& emb = w.embedding.view;
    const size_t row_bytes = size_t(emb.type().bytes(h));
    for (int64_t t = 0; t < count; ++t)
      if (s.embedding_rows.contains(tokens[t])) {
        kernels::to_f32(static_cast<const uint8_t*>(emb.data) + size_t(tokens[t] - s.embedding_rows.begin) * row_bytes,
                        emb.type(), h, x_.data() + t * h);
        times_.reads.head += double(row_bytes);
      }
    // Decided for all ranks alike, not by a rank's own share: one that holds the whole vocabulary (a small
    // vocabulary rounded to one rank) must still meet the others that hold none of it.
    if (!pipeline && s.embedding_split) all_reduce(x_.data(), count * h);
  }

  rope_.tables(position_, count, cos_, sin_);
  if (!pipeline) {
    for (int64_t l = s.layers.begin; l < s.layers.end; ++l) run_layer(l, count);
  } else {
    // Stages run in rank order; each hands its activations to the next (the baseline users compare
    // tensor parallelism against: one stage computes while the others wait).
    for (int stage = 0; stage < int(s.stage_layers.size()); ++stage) {
      if (stage == s.rank)
        for (int64_t l = s.layers.begin; l < s.layers.end; ++l) run_layer(l, count);
      if (stage + 1 < int(s.stage_layers.size())) broadcast(x_.data(), count * h, stage);
    }
  }
  position_ += count;

  if (logits_offset >= 0) {
    // Only the positions whose logits are wanted go through the final norm and the output head.
    const int64_t first = all_logits ? 0 : count - 1, rows = count - first;
    const int64_t vocab = config_.vocab_size;
    float* out = logits.data() + logits_offset * vocab;
    if (s.has_output) {
      kernels::rmsnorm(x_.data() + first * h, w.final_norm.data(), float(config_.rms_norm_eps), h, rows, normed_.data());
      const kernels::WeightView& head = model_.output_head();
      times_.reads.head += double(head.bytes());
      if (s.output_rows_by_rank.empty()) {
        kernels::matmul(head, normed_.data(), rows, out, pool_);
      } else {
        // Each rank computes its vocabulary rows; gather them into [position][vocab] order.
        gathered_.resize(size_t(rows * vocab));
        local_logits_.resize(size_t(rows * head.rows));
        kernels::matmul(head, normed_.data(), rows, local_logits_.data(), pool_);
        std::vector<int64_t> counts;
        for (const Range& r : s.output_rows_by_rank) counts.push_back(r.size() * rows);
        double t0 = now_s();
        comm_.all_gather(local_logits_.data(), counts, gathered_.data());
        times_.comm_s += now_s() - t0;
        int64_t at = 0;
        for (const Range& r : s.output_rows_by_rank) {
          for (int64_t p = 0; p < rows; ++p)
            std::copy_n(gathered_.data() + at + p * r.size(), r.size(), out + p * vocab + r.begin);
          at += r.size() * rows;
        }
      }
    }
    if (pipeline) broadcast(out, rows * vocab, int(s.stage_layers.size()) - 1);
  }
  times_.compute_s += (now_s() - t_start) - (times_.comm_s - comm_before);
}

void Session::run_layer(int64_t l, int64_t count) {
  if (config_.layer_types[size_t(l)] == LayerKind::LinearAttention) linear_attention_block(l, count);
  else attention_block(l, count);
  if (config_.is_moe_layer(l)) moe_block(l, count);
  else mlp_block(l, count);
}

void Session::matmul(const Linear& w, const float* x, int64_t count, float* y, double& reads) {
  kernels::matmul(w.view, x, count, y, pool_);
  reads += double(w.view.bytes());
}

void Session::finish_block(int64_t count) {
  const int64_t h = config_.hidden_size;
  all_reduce(proj_.data(), count * h);
  kernels::add(x_.data(), proj_.data(), count * h);
}

void Session::ffn(const Linear& gate_up, const Linear& down, const float* x, int64_t count, float* out, double& reads) {
  const int64_t cols = down.view.cols;
  matmul(gate_up, x, count, gate_up_.data(), reads);
  // Row t holds [gate | up]; the activations are packed to [t][cols] for the down product.
  for (int64_t t = 0; t < count; ++t) {
    float* row = gate_up_.data() + t * 2 * cols;
    kernels::silu_mul(row, row + cols, cols);
    if (t > 0) std::copy_n(row, cols, gate_up_.data() + t * cols);
  }
  matmul(down, gate_up_.data(), count, out, reads);
}

void Session::attention_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = config_.hidden_size, hd = config_.head_dim;
  const int64_t nq = ls.q_heads.size(), nkv = ls.kv_heads.size();
  const int64_t group = config_.num_heads / config_.num_kv_heads;
  const float eps = float(config_.rms_norm_eps);
  if (nq == 0) {  // a rank may hold no heads of a layer: it adds zeros to the sum
    std::fill(proj_.begin(), proj_.begin() + count * h, 0.0f);
    finish_block(count);
    return;
  }

  kernels::rmsnorm(x_.data(), lw.attn_norm.data(), eps, h, count, normed_.data());
  // With the output gate, q_proj yields per head the query then its gate: split them apart.
  const bool gated = config_.attn_output_gate;
  float* q_out = gated ? q_gate_.data() : q_.data();
  matmul(lw.q, normed_.data(), count, q_out, times_.reads.attention);
  matmul(lw.k, normed_.data(), count, k_.data(), times_.reads.attention);
  matmul(lw.v, normed_.data(), count, v_.data(), times_.reads.attention);
  add_bias(q_out, lw.q_bias, count);
  add_bias(k_.data(), lw.k_bias, count);
  add_bias(v_.data(), lw.v_bias, count);
  if (gated)
    for (int64_t t = 0; t < count; ++t)
      for (int64_t j = 0; j < nq; ++j) std::copy_n(q_gate_.data() + (t * nq + j) * 2 * hd, hd, q_.data() + (t * nq + j) * hd);
  if (!lw.q_norm.empty()) {
    kernels::rmsnorm(q_.data(), lw.q_norm.data(), eps, hd, count * nq, q_.data());
    kernels::rmsnorm(k_.data(), lw.k_norm.data(), eps, hd, count * nkv, k_.data());
  }
  const int64_t half = rope_.half();
  std::vector<float>& kc = k_cache_[size_t(l)];
  std::vector<float>& vc = v_cache_[size_t(l)];
  for (int64_t t = 0; t < count; ++t) {
    rope_.apply(q_.data() + t * nq * hd, nq, cos_.data() + t * half, sin_.data() + t * half);
    rope_.apply(k_.data() + t * nkv * hd, nkv, cos_.data() + t * half, sin_.data() + t * half);
    for (int64_t j = 0; j < nkv; ++j) {
      size_t at = size_t((j * context_ + position_ + t) * hd);
      std::copy_n(k_.data() + (t * nkv + j) * hd, hd, kc.data() + at);
      std::copy_n(v_.data() + (t * nkv + j) * hd, hd, vc.data() + at);
    }
  }

  // Causal attention, one task per local query head; token t sees positions [0, position_ + t].
  const float scale = 1.0f / std::sqrt(float(hd));
  pool_.parallel_for(nq, [&](int64_t head_begin, int64_t head_end) {
    for (int64_t j = head_begin; j < head_end; ++j) {
      const int64_t kv_local = (ls.q_heads.begin + j) / group - ls.kv_heads.begin;
      const float* keys = kc.data() + kv_local * context_ * hd;
      const float* values = vc.data() + kv_local * context_ * hd;
      float* scores = scores_.data() + j * context_;
      for (int64_t t = 0; t < count; ++t) {
        const float* q = q_.data() + (t * nq + j) * hd;
        const int64_t visible = position_ + t + 1;
        for (int64_t p = 0; p < visible; ++p) scores[p] = kernels::dot(q, keys + p * hd, hd) * scale;
        kernels::softmax(scores, visible);
        float* out = attn_.data() + (t * nq + j) * hd;
        std::fill(out, out + hd, 0.0f);
        for (int64_t p = 0; p < visible; ++p) kernels::axpy(scores[p], values + p * hd, out, hd);
        if (gated) {
          const float* gate = q_gate_.data() + (t * nq + j) * 2 * hd + hd;
          for (int64_t d = 0; d < hd; ++d) out[d] *= 1.0f / (1.0f + std::exp(-gate[d]));
        }
      }
    }
  });

  matmul(lw.o, attn_.data(), count, proj_.data(), times_.reads.attention);
  finish_block(count);
}

void Session::mlp_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const int64_t h = config_.hidden_size;
  if (model_.slices().layer[size_t(l)].mlp_cols.empty()) {  // no MLP columns of this layer here: add zeros
    std::fill(proj_.begin(), proj_.begin() + count * h, 0.0f);
    finish_block(count);
    return;
  }
  kernels::rmsnorm(x_.data(), lw.ffn_norm.data(), float(config_.rms_norm_eps), h, count, normed_.data());
  ffn(lw.gate_up, lw.down, normed_.data(), count, proj_.data(), times_.reads.mlp);
  finish_block(count);
}

}  // namespace uneven
