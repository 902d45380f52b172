// The sequences being generated on one rank: per sequence slot its KV cache, linear-attention state and
// position; scratch buffers and the forward pass over a batch of them.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/collective.h"
#include "compute/backend.h"
#include "compute/thread_pool.h"
#include "engine/model.h"
#include "engine/rope.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

// Weight bytes the forward pass read, by part of the model (a matrix counts once per product, however many
// tokens the product covers: that is what a batched prompt saves).
struct WeightReads {
  double attention = 0;  // full attention projections
  double linear = 0;     // Gated DeltaNet projections, conv1d and per-head vectors
  double mlp = 0;        // dense MLP
  double router = 0;     // routers and shared-expert gates
  double shared = 0;     // shared experts
  double experts = 0;    // routed experts actually run
  double head = 0;       // output head and the embedding rows looked up
  double total() const { return attention + linear + mlp + router + shared + experts + head; }
};

// Time spent per forward, for the figures that benches print.
struct ForwardTimes {
  double compute_s = 0;
  double comm_s = 0;        // inside collectives: transfers, and waiting for slower ranks to arrive
  int64_t all_reduces = 0;  // of hidden-size vectors per token (two per layer in tensor parallelism)
  WeightReads reads;
};

// A run of tokens of one sequence inside a batch: at the slot's next positions.
struct Segment {
  int64_t slot = 0;
  const TokenId* tokens = nullptr;
  int64_t count = 0;
  bool logits = false;  // the logits of its last token are wanted
};

class Session {
 public:
  // `context` is the KV cache length in tokens (at most the model's max_position) of each of `slots`
  // sequences. Runs on `backend` (which must hold the model's weights, see Model::resident_weights), or on
  // the CPU over `pool`.
  Session(const Model& model, Collective& comm, Backend& backend, int64_t context, int64_t slots = 1);
  Session(const Model& model, Collective& comm, ThreadPool& pool, int64_t context, int64_t slots = 1);

  // Runs `count` tokens of slot 0 at positions [position(), position() + count) and advances the position.
  // Fills `logits` with vocab_size values for the last token, or count x vocab_size when `all_logits`.
  // Every rank must call it with the same tokens. Throws when the context would overflow. A batch of
  // tokens runs linear attention in its chunked form, a single token in its recurrent form.
  void forward(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits = false);
  // One forward over several sequences (distinct slots, at most max_chunk() tokens in all): every product
  // reads its weights once for all of them; attention and linear attention run per segment on its slot's
  // cache and state. `logits` gets vocab_size values per segment that wants them, in segment order. Every
  // rank must call it with the same segments. Equal, per sequence, to running each one alone.
  void forward_batch(const std::vector<Segment>& segments, std::vector<float>& logits);

  // Prompt tokens that go through the layers together (longer prompts run in chunks of this many): the
  // backend's prompt_chunk().
  int64_t max_chunk() const { return chunk_; }
  const Model& model() const { return model_; }
  int64_t position(int64_t slot = 0) const { return positions_.at(size_t(slot)); }
  int64_t context() const { return context_; }
  int64_t slots() const { return int64_t(positions_.size()); }
  // Every slot back to position 0 with empty KV cache and zero linear-attention state.
  void reset();
  void reset(int64_t slot);
  const ForwardTimes& times() const { return times_; }
  // Bytes of KV cache (full-attention layers) held by this rank, all slots.
  uint64_t kv_cache_bytes() const;
  // Bytes of Gated DeltaNet recurrent and conv state held by this rank, all slots.
  uint64_t state_bytes() const;

 private:
  Session(const Model& model, Collective& comm, std::unique_ptr<Backend> owned, Backend* backend, int64_t context,
          int64_t slots);
  // One chunk of segments (at most chunk_ tokens): inputs, layers, and the logits of the rows in head_rows
  // (indices into the chunk's tokens, ascending) into out[i][vocab].
  void forward_chunk(const std::vector<Segment>& segments, const std::vector<int64_t>& head_rows, float* out);
  // Embedding, layers and the final norm and output head of head_rows (as above) into logits_ /
  // all_logits_. Operations only: no host memory changes, so a decode step can be recorded.
  void run_chunk(const TokenId* tokens, int64_t count, const std::vector<int64_t>& head_rows);
  void run_layer(int64_t layer, int64_t count);
  void attention_block(int64_t layer, int64_t count);
  void linear_attention_block(int64_t layer, int64_t count);
  void mlp_block(int64_t layer, int64_t count);
  void moe_block(int64_t layer, int64_t count);
  // out[t] = down(silu(gate) * up) of rows x[t]; gate_up holds gate rows then up rows.
  void ffn(const Linear& gate_up, const Linear& down, const float* x, int64_t count, float* out, double& reads);
  // Backend::matmul, counting the matrix's bytes into `reads`.
  void matmul(const Linear& w, const float* x, int64_t count, float* y, double& reads);
  // Partial sums of the block in proj_ meet here; then the residual add.
  void finish_block(int64_t count);
  // Collectives on backend buffers (staged through host memory when the collective takes host memory and
  // the backend's buffers are on a device).
  void all_reduce(float* data, int64_t n);
  void broadcast(float* data, int64_t n, int root);
  // The vocabulary-split output head: gathers every rank's rows of `local` into [row][vocab] host `out`.
  void gather_logits(const float* local, int64_t rows, float* out);
  Buffer buffer(int64_t n) { return Buffer(backend_, n); }

  std::unique_ptr<Backend> owned_backend_;  // the CPU backend when constructed over a thread pool
  const Model& model_;
  const ModelConfig& config_;
  Collective& comm_;
  Backend& backend_;
  bool stage_collectives_;  // device buffers, host-memory collective
  int64_t chunk_;            // tokens per forward chunk
  Rope rope_;
  int64_t context_;
  // Tensor parallelism over several ranks: partial sums meet in the two per-layer all-reduces. A single
  // rank, or a pipeline stage (which holds whole layers), has complete sums already.
  bool sums_partial_results_;
  std::vector<int64_t> positions_;  // per slot: tokens already in its cache
  int64_t max_q_ = 0;  // most query heads this rank runs in any layer (plans may vary it per layer)
  // Backend buffers, per slot and layer (index slot * num_layers + layer): [kv_local][context][head_dim],
  // one contiguous run per KV head.
  std::vector<Buffer> k_cache_, v_cache_;
  // Per slot and linear-attention layer: the last kernel-1 conv inputs of each of the rank's q|k|v
  // channels ([channel][kernel-1], oldest first) and the recurrent state of each value head ([head][dk][dv]).
  std::vector<Buffer> conv_state_, recurrent_state_;
  size_t state_index(int64_t slot, int64_t layer) const { return size_t(slot * config_.num_layers + layer); }
  // The segments of the chunk being run: slot, first token in the chunk, token count, first position.
  struct ChunkSegment {
    int64_t slot, offset, count, position;
  };
  std::vector<ChunkSegment> chunk_segments_;
  // Per chunk, one upload: [segment positions (chunk_) | token ids (chunk_) | cos | sin (chunk_ x rope half
  // each)], all as floats; the operations read them from here, so a recorded decode step replays at any
  // position.
  Buffer inputs_;
  const float* position_value(size_t segment) const { return inputs_.data() + segment; }
  const float* token_values() const { return inputs_.data() + chunk_; }
  const float* cos_values() const { return inputs_.data() + 2 * chunk_; }
  const float* sin_values() const { return cos_values() + chunk_ * rope_.half(); }
  // Scratch for a chunk of up to chunk_ tokens.
  Buffer x_, normed_, q_, k_, v_, attn_, proj_, gate_up_, act_, scores_, q_gate_;
  Buffer mixed_, conv_out_, core_, beta_, decay_;
  Buffer router_logits_, expert_in_, expert_out_, shared_scalar_;
  Buffer logits_, all_logits_;  // the output head's rows of this rank: one position / several
  Buffer head_in_;              // the rows whose logits are wanted, gathered, when they are not the last ones
  // Host memory: inputs, rope tables, routing, staging of collectives and logits.
  std::vector<float> inputs_host_, cos_host_, sin_host_, router_host_, staging_, gathered_;
  std::vector<TokenId> tokens_host_;  // the chunk's tokens, segment after segment
  // The recorded decode step (embedding to logits_, one token), when the backend records and nothing in
  // the step needs the host (no host routing of experts, no collective outside the backend's stream).
  bool records_decode_ = false;
  std::unique_ptr<Backend::Recording> decode_step_;
  WeightReads step_reads_;  // what one recorded step reads (counted while it was recorded)
  std::vector<std::vector<std::pair<int64_t, float>>> routed_;  // per expert: (token, weight) of this batch
  std::vector<int64_t> expert_order_, expert_rows_;
  std::vector<float> expert_weights_;
  ForwardTimes times_;
};

}  // namespace uneven
