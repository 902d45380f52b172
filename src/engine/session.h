// One sequence being generated on one rank: its KV cache, scratch buffers and the forward pass.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/collective.h"
#include "compute/thread_pool.h"
#include "engine/model.h"
#include "engine/rope.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

// Time spent per forward, for the figures that benches print.
struct ForwardTimes {
  double compute_s = 0;
  double comm_s = 0;        // inside collectives: transfers, and waiting for slower ranks to arrive
  int64_t all_reduces = 0;  // of hidden-size vectors per token (two per layer in tensor parallelism)
};

class Session {
 public:
  // `context` is the KV cache length in tokens (at most the model's max_position).
  Session(const Model& model, Collective& comm, ThreadPool& pool, int64_t context);

  // Runs `count` tokens at positions [position(), position() + count) and advances the position.
  // Fills `logits` with vocab_size values for the last token, or count x vocab_size when `all_logits`.
  // Every rank must call it with the same tokens. Throws when the context would overflow.
  void forward(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits = false);

  const Model& model() const { return model_; }
  int64_t position() const { return position_; }
  int64_t context() const { return context_; }
  void reset() { position_ = 0; }
  const ForwardTimes& times() const { return times_; }
  // Bytes of KV cache held by this rank.
  uint64_t kv_cache_bytes() const;

 private:
  void forward_chunk(const TokenId* tokens, int64_t count, std::vector<float>& logits, bool all_logits,
                     int64_t logits_offset);
  void attention_block(int64_t layer, int64_t count);
  void mlp_block(int64_t layer, int64_t count);
  void all_reduce(float* data, int64_t n);
  void broadcast(float* data, int64_t n, int root);

  const Model& model_;
  const ModelConfig& config_;
  Collective& comm_;
  ThreadPool& pool_;
  Rope rope_;
  int64_t context_;
  // Tensor parallelism over several ranks: partial sums meet in the two per-layer all-reduces. A single
  // rank, or a pipeline stage (which holds whole layers), has complete sums already.
  bool sums_partial_results_;
  int64_t position_ = 0;
  int64_t max_q_ = 0;  // most query heads this rank runs in any layer (plans may vary it per layer)
  // Per layer: [kv_local][context][head_dim], one contiguous run per KV head for the attention scan.
  std::vector<std::vector<float>> k_cache_, v_cache_;
  // Scratch for a chunk of up to kMaxChunk tokens.
  std::vector<float> x_, normed_, q_, k_, v_, attn_, proj_, gate_, up_, scores_, cos_, sin_;
  std::vector<float> local_logits_, gathered_;  // vocabulary-split output head
  ForwardTimes times_;
};

}  // namespace uneven
