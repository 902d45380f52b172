// The tensor-parallel forward pass of the dense decoder family over one rank's slices.
//
// Per layer, the rank computes its query heads (with the KV heads they use) and its MLP columns; the
// outputs of o_proj and down_proj are partial sums over the rank's slice of the contraction dimension,
// so they are all-reduced across ranks before the residual add. With one rank the all-reduce is the
// identity and this is the plain forward pass.
#include "engine/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "compute/kernels.h"
#include "util/error.h"

namespace uneven {
namespace {

constexpr int64_t kMaxChunk = 128;  // prompt tokens per batched forward; bounds scratch memory

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
  const int64_t hd = config_.head_dim;
  k_cache_.resize(size_t(config_.num_layers));
  v_cache_.resize(size_t(config_.num_layers));
  int64_t max_kv = 0, max_mlp = 0;
  for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
    const LayerSlices& ls = s.layer[size_t(l)];
    max_q_ = std::max(max_q_, ls.q_heads.size());
    max_kv = std::max(max_kv, ls.kv_heads.size());
    max_mlp = std::max(max_mlp, ls.mlp_cols.size());
    k_cache_[size_t(l)].assign(size_t(ls.kv_heads.size() * context * hd), 0.0f);
    v_cache_[size_t(l)].assign(size_t(ls.kv_heads.size() * context * hd), 0.0f);
  }
  const int64_t h = config_.hidden_size;
  x_.resize(size_t(kMaxChunk * h));
  normed_.resize(size_t(kMaxChunk * h));
  proj_.resize(size_t(kMaxChunk * h));
  q_.resize(size_t(kMaxChunk * max_q_ * hd));
  attn_.resize(size_t(kMaxChunk * max_q_ * hd));
  k_.resize(size_t(kMaxChunk * max_kv * hd));
  v_.resize(size_t(kMaxChunk * max_kv * hd));
  gate_.resize(size_t(kMaxChunk * max_mlp));
  up_.resize(size_t(kMaxChunk * max_mlp));
  scores_.resize(size_t(max_q_ * context));
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
    const size_t row_bytes = size_t(h) * dtype_size(emb.dtype);
    for (int64_t t = 0; t < count; ++t)
      if (s.embedding_rows.contains(tokens[t]))
        kernels::to_f32(static_cast<const uint8_t*>(emb.data) + size_t(tokens[t] - s.embedding_rows.begin) * row_bytes,
                        emb.dtype, h, x_.data() + t * h);
    if (!pipeline && s.embedding_rows.size() != config_.vocab_size) all_reduce(x_.data(), count * h);
  }

  rope_.tables(position_, count, cos_, sin_);
  if (!pipeline) {
    for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
      attention_block(l, count);
      mlp_block(l, count);
    }
  } else {
    // Stages run in rank order; each hands its activations to the next (the baseline users compare
    // tensor parallelism against: one stage computes while the others wait).
    for (int stage = 0; stage < int(s.stage_layers.size()); ++stage) {
      if (stage == s.rank)
        for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
          attention_block(l, count);
          mlp_block(l, count);
        }
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

void Session::attention_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = config_.hidden_size, hd = config_.head_dim;
  const int64_t nq = ls.q_heads.size(), nkv = ls.kv_heads.size();
  const int64_t group = config_.num_heads / config_.num_kv_heads;
  const float eps = float(config_.rms_norm_eps);
  if (nq == 0) {  // a rank may hold no heads of a layer: it adds zeros to the sum
    std::fill(proj_.begin(), proj_.begin() + count * h, 0.0f);
    all_reduce(proj_.data(), count * h);
    kernels::add(x_.data(), proj_.data(), count * h);
    return;
  }

  kernels::rmsnorm(x_.data(), lw.attn_norm.data(), eps, h, count, normed_.data());
  kernels::matmul(lw.q.view, normed_.data(), count, q_.data(), pool_);
  kernels::matmul(lw.k.view, normed_.data(), count, k_.data(), pool_);
  kernels::matmul(lw.v.view, normed_.data(), count, v_.data(), pool_);
  add_bias(q_.data(), lw.q_bias, count);
  add_bias(k_.data(), lw.k_bias, count);
  add_bias(v_.data(), lw.v_bias, count);
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
      }
    }
  });

  kernels::matmul(lw.o.view, attn_.data(), count, proj_.data(), pool_);
  all_reduce(proj_.data(), count * h);
  kernels::add(x_.data(), proj_.data(), count * h);
}

void Session::mlp_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const int64_t h = config_.hidden_size, cols = model_.slices().layer[size_t(l)].mlp_cols.size();
  if (cols == 0) {  // no MLP columns of this layer here: add zeros to the sum
    std::fill(proj_.begin(), proj_.begin() + count * h, 0.0f);
    all_reduce(proj_.data(), count * h);
    kernels::add(x_.data(), proj_.data(), count * h);
    return;
  }
  kernels::rmsnorm(x_.data(), lw.ffn_norm.data(), float(config_.rms_norm_eps), h, count, normed_.data());
  kernels::matmul(lw.gate.view, normed_.data(), count, gate_.data(), pool_);
  kernels::matmul(lw.up.view, normed_.data(), count, up_.data(), pool_);
  kernels::silu_mul(gate_.data(), up_.data(), count * cols);
  kernels::matmul(lw.down.view, gate_.data(), count, proj_.data(), pool_);
  all_reduce(proj_.data(), count * h);
  kernels::add(x_.data(), proj_.data(), count * h);
}

}  // namespace uneven
