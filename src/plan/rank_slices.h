// What one rank holds of every tensor, as decided by a plan: the only input loader, kernels, KV cache and
// communication use to know their share (no `dim / world_size` anywhere else).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace uneven {

// Half-open range [begin, end) of whole units (heads, columns, rows, layers).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  bool contains(int64_t i) const { return i >= begin && i < end; }
  bool operator==(const Range&) const = default;
};

struct LayerSlices {
  // Attention: the query heads this rank computes, and the KV heads it holds (all KV groups its query
  // heads use; a KV head may be held by several ranks when their query heads share its group).
  Range q_heads;
  Range kv_heads;
  // Dense MLP: intermediate columns (rows of gate_proj/up_proj, columns of down_proj).
  Range mlp_cols;
  // MoE: intermediate columns of each routed expert (index = expert) and of the shared expert.
  std::vector<Range> expert_cols;
  Range shared_expert_cols;
  // Gated DeltaNet: value heads computed here and the key heads they use (value head v uses key head
  // v / (value heads / key heads); a key head may be held by several ranks, like a KV head).
  Range linear_v_heads;
  Range linear_k_heads;
};

struct RankSlices {
  int rank = 0;
  int world_size = 1;
  // Layers this rank runs: all layers in tensor parallelism, a contiguous stage in pipeline mode.
  Range layers;
  // Indexed by absolute layer number; entries outside `layers` are empty.
  std::vector<LayerSlices> layer;
  // Rows (vocabulary entries) of the embedding and of the output head held by this rank; the full
  // vocabulary when replicated.
  Range embedding_rows;
  Range output_rows;
  // Tensor mode over several ranks: the embedding rows partition the vocabulary among the ranks (one may
  // hold all of it and the others none), so every rank looks up its rows and the lookups are summed.
  // False: each rank holds every row it looks up (one rank, a pipeline stage, or a replicated embedding).
  bool embedding_split = false;
  // Pipeline mode: whether this rank holds the embedding (first stage) / final norm and head (last stage).
  bool has_embedding = true;
  bool has_output = true;
  // Pipeline mode: the layers of every rank's stage, in rank order (empty in tensor mode). Activations
  // pass from stage to stage in this order.
  std::vector<Range> stage_layers;
  // Output-head rows of every rank, in rank order, when the head is split along the vocabulary (empty
  // when every rank holds the whole head); logits are gathered in this order.
  std::vector<Range> output_rows_by_rank;
};

// Everything on one rank: the plan of a single-node run (equal to rank_slices of a one-node plan). Fields a
// layer does not have are empty: q/kv heads on linear-attention layers, linear heads on full-attention
// layers, mlp_cols on MoE layers, experts on dense layers.
RankSlices single_rank_slices(const ModelConfig& config);

// What a tensor-parallel rank holds whatever its share: the layers and their replicated parts (norms,
// routers) with every split range empty. rank_usage of it is the fixed cost every such rank pays.
RankSlices empty_split_slices(const ModelConfig& config);

struct Plan;
// What rank `rank` holds under `plan` (src/plan/plan.h). A rank may hold an empty range of a dimension in
// some layers (a small share spread over many layers); it then holds none of that layer's tensors of that
// dimension and adds zeros to the all-reduce.
RankSlices rank_slices(const Plan& plan, const ModelConfig& config, int rank);

}  // namespace uneven
