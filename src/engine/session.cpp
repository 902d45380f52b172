// The tensor-parallel forward pass over one rank's slices: embedding, layers, head; full attention and the
// MLPs here, Gated DeltaNet in linear_attention.cpp, mixture of experts in moe.cpp. Written once against
// the Backend seam: the same code runs on the CPU and on a GPU.
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

#include "util/error.h"

namespace uneven {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Session::Session(const Model& model, Collective& comm, Backend& backend, int64_t context, int64_t slots)
    : Session(model, comm, nullptr, &backend, context, slots) {}

Session::Session(const Model& model, Collective& comm, ThreadPool& pool, int64_t context, int64_t slots)
    : Session(model, comm, make_cpu_backend(pool), nullptr, context, slots) {}

Session::Session(const Model& model, Collective& comm, std::unique_ptr<Backend> owned, Backend* backend,
                 int64_t context, int64_t slots)
    : owned_backend_(std::move(owned)), model_(model), config_(model.config()), comm_(comm),
      backend_(backend ? *backend : *owned_backend_),
      stage_collectives_(backend_.device_memory() && !comm.takes_device_buffers()),
      chunk_(std::max<int64_t>(1, backend_.prompt_chunk())), rope_(model.config()),
      context_(context), sums_partial_results_(comm.size() > 1 && model.slices().stage_layers.empty()) {
  if (context <= 0 || context > config_.max_position)
    fail("context length {} must be between 1 and the model's max_position_embeddings {}", context, config_.max_position);
  if (slots <= 0 || slots > 4096) fail("a session holds 1 to 4096 sequences, asked for {}", slots);
  positions_.assign(size_t(slots), 0);
  if (comm.takes_device_buffers() && !backend_.device_memory())
    fail("the {} collective works on device buffers, but the {} backend keeps them in host memory", comm.name(),
         backend_.name());
  const RankSlices& s = model.slices();
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, h = c.hidden_size;
  const size_t states = size_t(slots * c.num_layers);
  k_cache_.resize(states);
  v_cache_.resize(states);
  conv_state_.resize(states);
  recurrent_state_.resize(states);
  int64_t max_kv = 0, max_cols = 0, max_in = 0, max_channels = 0, max_v = 0;
  for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
    const LayerSlices& ls = s.layer[size_t(l)];
    const LayerWeights& lw = model.weights().layers[size_t(l)];
    max_q_ = std::max(max_q_, ls.q_heads.size());
    max_kv = std::max(max_kv, ls.kv_heads.size());
    max_cols = std::max({max_cols, ls.mlp_cols.size(), ls.shared_expert_cols.size()});
    for (const Range& e : ls.expert_cols) max_cols = std::max(max_cols, e.size());
    // The KV cache only for full-attention layers (their kv_heads), the state only for linear ones.
    const int64_t nk = ls.linear_k_heads.size(), nv = ls.linear_v_heads.size();
    const int64_t channels = 2 * nk * c.linear_key_head_dim + nv * c.linear_value_head_dim;
    for (int64_t slot = 0; slot < slots; ++slot) {
      const size_t i = state_index(slot, l);
      k_cache_[i] = buffer(ls.kv_heads.size() * context * hd);
      v_cache_[i] = buffer(ls.kv_heads.size() * context * hd);
      conv_state_[i] = buffer(channels * std::max<int64_t>(c.linear_conv_kernel_dim - 1, 0));
      recurrent_state_[i] = buffer(nv * c.linear_key_head_dim * c.linear_value_head_dim);
    }
    max_in = std::max(max_in, lw.linear_in.view.rows);
    max_channels = std::max(max_channels, channels);
    max_v = std::max(max_v, nv);
  }
  x_ = buffer(chunk_ * h);
  normed_ = buffer(chunk_ * h);
  proj_ = buffer(chunk_ * h);
  q_ = buffer(chunk_ * max_q_ * hd);
  if (c.attn_output_gate) q_gate_ = buffer(chunk_ * max_q_ * c.q_rows_per_head());
  attn_ = buffer(chunk_ * max_q_ * hd);
  k_ = buffer(chunk_ * max_kv * hd);
  v_ = buffer(chunk_ * max_kv * hd);
  gate_up_ = buffer(chunk_ * 2 * max_cols);
  act_ = buffer(chunk_ * max_cols);
  scores_ = buffer(max_q_ * context);
  mixed_ = buffer(chunk_ * max_in);
  conv_out_ = buffer(chunk_ * max_channels);
  core_ = buffer(chunk_ * max_v * c.linear_value_head_dim);
  beta_ = buffer(chunk_ * max_v);
  decay_ = buffer(chunk_ * max_v);
  if (c.vocab_size >= (int64_t(1) << 24) || context >= (int64_t(1) << 24))
    fail("a vocabulary of {} tokens and a context of {} must both stay below 2^24 (ids travel as floats)",
         c.vocab_size, context);
  inputs_ = buffer(2 * chunk_ + 2 * chunk_ * rope_.half());
  if (s.has_output) logits_ = buffer(model.output_head().rows);
  head_in_ = buffer(chunk_ * h);
  records_decode_ = backend_.can_record() && comm.size() == 1 && c.num_experts == 0;
  if (c.num_experts > 0) {
    router_logits_ = buffer(chunk_ * c.num_experts);
    expert_in_ = buffer(chunk_ * h);
    expert_out_ = buffer(chunk_ * h);
    shared_scalar_ = buffer(chunk_);
    routed_.resize(size_t(c.num_experts));
    expert_order_.resize(size_t(c.num_experts));
  }
}

void Session::reset() {
  for (int64_t slot = 0; slot < slots(); ++slot) reset(slot);
}

void Session::reset(int64_t slot) {
  if (slot < 0 || slot >= slots()) fail("sequence slot {} is outside the session's {} slots", slot, slots());
  positions_[size_t(slot)] = 0;
  // Attention needs no clearing (positions are rewritten before they are read); the recurrences do.
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const size_t i = state_index(slot, l);
    if (conv_state_[i].size() > 0) backend_.fill_zero(conv_state_[i].data(), conv_state_[i].size());
    if (recurrent_state_[i].size() > 0) backend_.fill_zero(recurrent_state_[i].data(), recurrent_state_[i].size());
  }
}

uint64_t Session::state_bytes() const {
  uint64_t n = 0;
  for (size_t l = 0; l < conv_state_.size(); ++l) n += uint64_t(conv_state_[l].size() + recurrent_state_[l].size()) * sizeof(float);
  return n;
}

uint64_t Session::kv_cache_bytes() const {
  uint64_t n = 0;
  for (size_t l = 0; l < k_cache_.size(); ++l) n += uint64_t(k_cache_[l].size() + v_cache_[l].size()) * sizeof(float);
  return n;
}

void Session::all_reduce(float* data, int64_t n) {
  if (!sums_partial_results_) return;
  double t0 = now_s();
  if (stage_collectives_) {
    staging_.resize(size_t(n));
    backend_.download(staging_.data(), data, n);
    comm_.all_reduce_sum(staging_.data(), n);
    backend_.upload(data, staging_.data(), n);
  } else {
    comm_.all_reduce_sum(data, n);
  }
  times_.comm_s += now_s() - t0;
  ++times_.all_reduces;
}

void Session::broadcast(float* data, int64_t n, int root) {
  double t0 = now_s();
  if (stage_collectives_) {
    staging_.resize(size_t(n));
    if (comm_.rank() == root) backend_.download(staging_.data(), data, n);
    comm_.broadcast(staging_.data(), n * int64_t(sizeof(float)), root);
    backend_.upload(data, staging_.data(), n);
  } else {
    comm_.broadcast(data, n * int64_t(sizeof(float)), root);
  }
  times_.comm_s += now_s() - t0;
}

void Session::gather_logits(const float* local, int64_t rows, float* out) {
  const RankSlices& s = model_.slices();
  const int64_t vocab = config_.vocab_size;
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (const Range& r : s.output_rows_by_rank) {
    counts.push_back(r.size() * rows);
    total += counts.back();
  }
  gathered_.resize(size_t(total));
  double t0 = now_s();
  if (backend_.device_memory() && comm_.takes_device_buffers()) {
    Buffer all = buffer(total);
    comm_.all_gather(local, counts, all.data());
    backend_.download(gathered_.data(), all.data(), total);
  } else if (backend_.device_memory()) {
    staging_.resize(size_t(counts[size_t(s.rank)]));
    backend_.download(staging_.data(), local, int64_t(staging_.size()));
    comm_.all_gather(staging_.data(), counts, gathered_.data());
  } else {
    comm_.all_gather(local, counts, gathered_.data());
  }
  times_.comm_s += now_s() - t0;
  // Each rank's block is [position][its rows]; interleave them into [position][vocab].
  int64_t at = 0;
  for (const Range& r : s.output_rows_by_rank) {
    for (int64_t p = 0; p < rows; ++p)
      std::copy_n(gathered_.data() + at + p * r.size(), r.size(), out + p * vocab + r.begin);
    at += r.size() * rows;
  }
}

namespace {

void check_tokens(const TokenId* tokens, int64_t count, int64_t vocab) {
  for (int64_t i = 0; i < count; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("token id {} at index {} is outside the vocabulary of {} tokens", tokens[i], i, vocab);
}

}  // namespace

void Session::forward(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits) {
  if (count <= 0) fail("forward called with {} tokens", count);
  if (positions_[0] + count > context_)
    fail("{} tokens at position {} exceed the context length of {} tokens", count, positions_[0], context_);
  check_tokens(tokens, count, config_.vocab_size);
  const int64_t vocab = config_.vocab_size;
  logits.assign(size_t(all_logits ? count * vocab : vocab), 0.0f);
  std::vector<int64_t> head_rows;
  for (int64_t done = 0; done < count; done += chunk_) {
    const int64_t n = std::min(chunk_, count - done);
    head_rows.clear();
    if (all_logits)
      for (int64_t t = 0; t < n; ++t) head_rows.push_back(t);
    else if (done + n == count)
      head_rows.push_back(n - 1);
    forward_chunk({Segment{0, tokens + done, n, false}}, head_rows, logits.data() + (all_logits ? done * vocab : 0));
  }
}

void Session::forward_batch(const std::vector<Segment>& segments, std::vector<float>& logits) {
  if (segments.empty()) fail("forward_batch called with no segments");
  int64_t total = 0, wanted = 0;
  std::vector<bool> seen(size_t(slots()), false);
  std::vector<int64_t> head_rows;
  for (const Segment& g : segments) {
    if (g.slot < 0 || g.slot >= slots()) fail("sequence slot {} is outside the session's {} slots", g.slot, slots());
    if (seen[size_t(g.slot)]) fail("slot {} appears twice in one batch", g.slot);
    seen[size_t(g.slot)] = true;
    if (g.count <= 0) fail("a segment of slot {} has {} tokens", g.slot, g.count);
    if (positions_[size_t(g.slot)] + g.count > context_)
      fail("{} tokens at position {} of slot {} exceed the context length of {} tokens", g.count,
           positions_[size_t(g.slot)], g.slot, context_);
    check_tokens(g.tokens, g.count, config_.vocab_size);
    total += g.count;
    if (g.logits) {
      head_rows.push_back(total - 1);
      ++wanted;
    }
  }
  if (total > chunk_) fail("a batch of {} tokens is more than the {} tokens of one chunk", total, chunk_);
  logits.assign(size_t(wanted * config_.vocab_size), 0.0f);
  forward_chunk(segments, head_rows, logits.data());
}

namespace {

void add_reads(WeightReads& into, const WeightReads& a, const WeightReads& b, double sign) {
  into.attention += sign * (a.attention - b.attention);
  into.linear += sign * (a.linear - b.linear);
  into.mlp += sign * (a.mlp - b.mlp);
  into.router += sign * (a.router - b.router);
  into.shared += sign * (a.shared - b.shared);
  into.experts += sign * (a.experts - b.experts);
  into.head += sign * (a.head - b.head);
}

}  // namespace

void Session::forward_chunk(const std::vector<Segment>& segments, const std::vector<int64_t>& head_rows, float* out) {
  const double t_start = now_s();
  const double comm_before = times_.comm_s;
  const RankSlices& s = model_.slices();
  const bool pipeline = !s.stage_layers.empty();

  // This chunk's inputs, in one upload: each segment's first position, the tokens, and rope tables for
  // every token at its own sequence's position.
  chunk_segments_.clear();
  tokens_host_.clear();
  const int64_t half = rope_.half();
  inputs_host_.assign(size_t(inputs_.size()), 0.0f);
  float* cos_at = inputs_host_.data() + (cos_values() - inputs_.data());
  float* sin_at = inputs_host_.data() + (sin_values() - inputs_.data());
  for (const Segment& g : segments) {
    const int64_t offset = int64_t(tokens_host_.size()), position = positions_[size_t(g.slot)];
    chunk_segments_.push_back({g.slot, offset, g.count, position});
    inputs_host_[chunk_segments_.size() - 1] = float(position);
    tokens_host_.insert(tokens_host_.end(), g.tokens, g.tokens + g.count);
    rope_.tables(position, g.count, cos_host_, sin_host_);
    std::copy(cos_host_.begin(), cos_host_.end(), cos_at + offset * half);
    std::copy(sin_host_.begin(), sin_host_.end(), sin_at + offset * half);
  }
  const int64_t count = int64_t(tokens_host_.size());
  for (int64_t t = 0; t < count; ++t) inputs_host_[size_t(chunk_ + t)] = float(tokens_host_[size_t(t)]);
  backend_.upload(inputs_.data(), inputs_host_.data(), inputs_.size());

  // Only the rows whose logits are wanted go through the final norm and the output head.
  const int64_t rows = int64_t(head_rows.size());
  const int64_t local_rows = s.has_output ? rows : 0;
  if (local_rows > 1 && all_logits_.size() < local_rows * model_.output_head().rows)
    all_logits_ = buffer(local_rows * model_.output_head().rows);
  const std::vector<int64_t> no_rows;
  if (count == 1 && local_rows == 1 && records_decode_) {
    // Decode: the first step is recorded, every step replays the recording (one launch per token).
    if (!decode_step_) {
      const WeightReads before = times_.reads;
      backend_.begin_recording();
      try {
        run_chunk(tokens_host_.data(), 1, head_rows);
      } catch (...) {
        backend_.end_recording();  // leave the backend usable; the error goes on
        throw;
      }
      decode_step_ = backend_.end_recording();
      add_reads(step_reads_, times_.reads, before, 1.0);
    } else {
      add_reads(times_.reads, step_reads_, WeightReads{}, 1.0);
    }
    decode_step_->replay();
  } else {
    run_chunk(tokens_host_.data(), count, s.has_output ? head_rows : no_rows);
  }
  for (const Segment& g : segments) positions_[size_t(g.slot)] += g.count;

  if (rows > 0) {
    const int64_t vocab = config_.vocab_size;
    const float* local = local_rows > 1 ? all_logits_.data() : logits_.data();
    if (local_rows > 0) {
      if (!s.output_rows_by_rank.empty()) gather_logits(local, rows, out);
      else backend_.download(out, local, rows * vocab);
    }
    if (pipeline) {
      // The last stage's logits (host memory) reach every stage.
      const int root = int(s.stage_layers.size()) - 1;
      double t0 = now_s();
      if (comm_.takes_device_buffers()) {
        Buffer all = buffer(rows * vocab);
        if (comm_.rank() == root) backend_.upload(all.data(), out, rows * vocab);
        comm_.broadcast(all.data(), rows * vocab * int64_t(sizeof(float)), root);
        backend_.download(out, all.data(), rows * vocab);
      } else {
        comm_.broadcast(out, rows * vocab * int64_t(sizeof(float)), root);
      }
      times_.comm_s += now_s() - t0;
    }
  }
  backend_.synchronize();
  times_.compute_s += (now_s() - t_start) - (times_.comm_s - comm_before);
}

void Session::run_chunk(const TokenId* tokens, int64_t count, const std::vector<int64_t>& head_rows) {
  const int64_t h = config_.hidden_size;
  const ModelWeights& w = model_.weights();
  const RankSlices& s = model_.slices();

  // Embedding lookup of the rows this rank holds; rows held elsewhere contribute zeros to the all-reduce.
  // In pipeline mode only the first stage embeds; later stages receive activations.
  const bool pipeline = !s.stage_layers.empty();
  backend_.fill_zero(x_.data(), count * h);
  if (s.has_embedding) {
    const kernels::WeightView& emb = w.embedding.view;
    backend_.embed(emb, s.embedding_rows.begin, token_values(), count, x_.data());
    for (int64_t t = 0; t < count; ++t)
      if (s.embedding_rows.contains(tokens[t])) times_.reads.head += double(emb.row_bytes());
    // Decided for all ranks alike, not by a rank's own share: one that holds the whole vocabulary (a small
    // vocabulary rounded to one rank) must still meet the others that hold none of it.
    if (!pipeline && s.embedding_split) all_reduce(x_.data(), count * h);
  }

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
  const int64_t n = int64_t(head_rows.size());
  if (n > 0) {
    // The wanted rows are the chunk's last n (a prompt, a single sequence's step) or gathered.
    const bool last_rows = head_rows.front() == count - n && head_rows.back() == count - 1;
    const float* in = x_.data() + (count - n) * h;
    if (!last_rows) {
      backend_.gather_rows(x_.data(), head_rows.data(), n, h, head_in_.data());
      in = head_in_.data();
    }
    backend_.rmsnorm(in, w.final_norm, float(config_.rms_norm_eps), h, n, normed_.data());
    const kernels::WeightView& head = model_.output_head();
    times_.reads.head += double(head.bytes());
    backend_.matmul(head, normed_.data(), n, n > 1 ? all_logits_.data() : logits_.data());
  }
}

void Session::run_layer(int64_t l, int64_t count) {
  if (config_.layer_types[size_t(l)] == LayerKind::LinearAttention) linear_attention_block(l, count);
  else attention_block(l, count);
  if (config_.is_moe_layer(l)) moe_block(l, count);
  else mlp_block(l, count);
}

void Session::matmul(const Linear& w, const float* x, int64_t count, float* y, double& reads) {
  backend_.matmul(w.view, x, count, y);
  reads += double(w.view.bytes());
}

void Session::finish_block(int64_t count) {
  const int64_t h = config_.hidden_size;
  all_reduce(proj_.data(), count * h);
  backend_.add(x_.data(), proj_.data(), count * h);
}

void Session::ffn(const Linear& gate_up, const Linear& down, const float* x, int64_t count, float* out, double& reads) {
  matmul(gate_up, x, count, gate_up_.data(), reads);
  // Row t holds [gate | up]; the activations are packed to [t][cols] for the down product.
  backend_.swiglu(gate_up_.data(), down.view.cols, count, act_.data());
  matmul(down, act_.data(), count, out, reads);
}

void Session::attention_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = config_.hidden_size;
  if (ls.q_heads.empty()) {  // a rank may hold no heads of a layer: it adds zeros to the sum
    backend_.fill_zero(proj_.data(), count * h);
    finish_block(count);
    return;
  }

  backend_.rmsnorm(x_.data(), lw.attn_norm, float(config_.rms_norm_eps), h, count, normed_.data());
  // With the output gate, q_proj yields per head the query then its gate.
  const bool gated = config_.attn_output_gate;
  float* q_out = gated ? q_gate_.data() : q_.data();
  matmul(lw.q, normed_.data(), count, q_out, times_.reads.attention);
  matmul(lw.k, normed_.data(), count, k_.data(), times_.reads.attention);
  matmul(lw.v, normed_.data(), count, v_.data(), times_.reads.attention);
  if (!lw.q_bias.empty()) backend_.add_bias(q_out, lw.q_bias, count);
  if (!lw.k_bias.empty()) backend_.add_bias(k_.data(), lw.k_bias, count);
  if (!lw.v_bias.empty()) backend_.add_bias(v_.data(), lw.v_bias, count);

  // Attention is per sequence: each segment attends over its own slot's cache from its own position.
  const int64_t nq = ls.q_heads.size(), nkv = ls.kv_heads.size(), hd = config_.head_dim;
  const int64_t q_in_width = nq * (gated ? 2 : 1) * hd;
  for (size_t i = 0; i < chunk_segments_.size(); ++i) {
    const ChunkSegment& g = chunk_segments_[i];
    const size_t state = state_index(g.slot, l);
    AttentionArgs a;
    a.count = g.count;
    a.position = g.position;
    a.context = context_;
    a.q_heads = nq;
    a.kv_heads = nkv;
    a.head_dim = hd;
    a.q_head_begin = ls.q_heads.begin;
    a.kv_head_begin = ls.kv_heads.begin;
    a.group = config_.num_heads / config_.num_kv_heads;
    a.gated = gated;
    a.q_in = q_out + g.offset * q_in_width;
    a.q = q_.data() + g.offset * nq * hd;
    a.k = k_.data() + g.offset * nkv * hd;
    a.v = v_.data() + g.offset * nkv * hd;
    a.q_norm = &lw.q_norm;
    a.k_norm = &lw.k_norm;
    a.eps = float(config_.rms_norm_eps);
    a.position_value = position_value(i);
    a.cos = cos_values() + g.offset * rope_.half();
    a.sin = sin_values() + g.offset * rope_.half();
    a.rope_half = rope_.half();
    a.rope_interleaved = config_.rope_interleaved;
    a.k_cache = k_cache_[state].data();
    a.v_cache = v_cache_[state].data();
    a.scores = scores_.data();
    a.out = attn_.data() + g.offset * nq * hd;
    backend_.attention(a);
  }

  matmul(lw.o, attn_.data(), count, proj_.data(), times_.reads.attention);
  finish_block(count);
}

void Session::mlp_block(int64_t l, int64_t count) {
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const int64_t h = config_.hidden_size;
  if (model_.slices().layer[size_t(l)].mlp_cols.empty()) {  // no MLP columns of this layer here: add zeros
    backend_.fill_zero(proj_.data(), count * h);
    finish_block(count);
    return;
  }
  backend_.rmsnorm(x_.data(), lw.ffn_norm, float(config_.rms_norm_eps), h, count, normed_.data());
  ffn(lw.gate_up, lw.down, normed_.data(), count, proj_.data(), times_.reads.mlp);
  finish_block(count);
}

}  // namespace uneven
