// A rank's slices: the trivial single-rank view (every tensor whole) and the view a plan gives each rank.
#include "plan/rank_slices.h"

#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
namespace {

// Fills one layer's ranges from per-dimension ranges; fields the layer does not have stay empty.
void fill_layer(const ModelConfig& c, int64_t l, Range q, Range mlp, Range experts, Range shared, Range linear_v,
                LayerSlices& ls) {
  if (c.layer_types[size_t(l)] == LayerKind::FullAttention) {
    const int64_t group = c.num_heads / c.num_kv_heads;
    ls.q_heads = q;
    // A KV head is held by every rank whose query heads use it.
    if (!q.empty()) ls.kv_heads = {q.begin / group, (q.end + group - 1) / group};
  } else {
    const int64_t ratio = c.linear_num_value_heads / c.linear_num_key_heads;
    ls.linear_v_heads = linear_v;
    if (!linear_v.empty()) ls.linear_k_heads = {linear_v.begin / ratio, (linear_v.end + ratio - 1) / ratio};
  }
  if (c.is_moe_layer(l)) {
    ls.expert_cols.assign(size_t(c.num_experts), experts);
    if (c.shared_expert_intermediate_size > 0) ls.shared_expert_cols = shared;
  } else {
    ls.mlp_cols = mlp;
  }
}

}  // namespace

RankSlices single_rank_slices(const ModelConfig& c) {
  RankSlices s;
  s.layers = {0, c.num_layers};
  s.layer.resize(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l)
    fill_layer(c, l, {0, c.num_heads}, {0, c.intermediate_size}, {0, c.moe_intermediate_size},
               {0, c.shared_expert_intermediate_size}, {0, c.linear_num_value_heads}, s.layer[size_t(l)]);
  s.embedding_rows = {0, c.vocab_size};
  s.output_rows = {0, c.vocab_size};
  return s;
}

RankSlices rank_slices(const Plan& plan, const ModelConfig& c, int rank) {
  if (plan.config_hash != config_fingerprint(c))
    fail("the plan was made for a different model (config fingerprint {} in the plan, {} for this {} config)",
         plan.config_hash, config_fingerprint(c), c.architecture);
  if (rank < 0 || rank >= plan.world_size)
    fail("rank {} is not in the plan, which has {} ranks", rank, plan.world_size);
  if (int64_t(plan.layers.size()) != c.num_layers)
    fail("the plan splits {} layers but the model has {}", plan.layers.size(), c.num_layers);
  const int si = plan.stage_of_rank(rank);
  const Stage& stage = plan.stages[size_t(si)];
  const size_t j = size_t(rank - stage.ranks.front());  // position within the stage
  if (plan.stages.size() > 1 && stage.ranks.size() > 1)
    fail("rank {}: plans mixing pipeline stages with tensor parallelism are not supported yet", rank);
  auto pick = [&](const std::vector<int64_t>& b, size_t at) -> Range {
    if (b.empty()) return {};
    if (at + 1 >= b.size()) fail("plan boundary list of {} entries has no range for stage position {}", b.size(), at);
    return {b[at], b[at + 1]};
  };

  RankSlices s;
  s.rank = rank;
  s.world_size = plan.world_size;
  s.layers = stage.layers;
  s.layer.resize(size_t(c.num_layers));
  for (int64_t l = stage.layers.begin; l < stage.layers.end; ++l) {
    const LayerSplit& sp = plan.layers[size_t(l)];
    fill_layer(c, l, pick(sp.q_heads, j), pick(sp.mlp_cols, j), pick(sp.expert_cols, j), pick(sp.shared_expert_cols, j),
               pick(sp.linear_v_heads, j), s.layer[size_t(l)]);
  }
  const int last = int(plan.stages.size()) - 1;
  s.has_embedding = si == 0;
  s.has_output = si == last;
  const Range full{0, c.vocab_size};
  Range emb = s.has_embedding ? pick(plan.embedding_rows, j) : Range{};
  Range out = s.has_output ? pick(plan.output_rows, j) : Range{};
  // Ranks without the embedding (or head) mirror the other one, so tied weights see equal ranges.
  if (!s.has_embedding) emb = s.has_output ? out : full;
  if (!s.has_output) out = s.has_embedding ? emb : full;
  s.embedding_rows = emb;
  s.output_rows = out;
  if (plan.stages.size() > 1) {
    for (const Stage& st : plan.stages) s.stage_layers.push_back(st.layers);
  } else if (plan.world_size > 1) {
    for (size_t k = 0; k < stage.ranks.size(); ++k) s.output_rows_by_rank.push_back(pick(plan.output_rows, k));
    s.embedding_split = true;
  }
  return s;
}

RankSlices empty_split_slices(const ModelConfig& config) {
  RankSlices s = single_rank_slices(config);
  for (LayerSlices& ls : s.layer) {
    const Range none{};
    ls.q_heads = ls.kv_heads = ls.mlp_cols = ls.shared_expert_cols = ls.linear_v_heads = ls.linear_k_heads = none;
    for (Range& e : ls.expert_cols) e = none;
  }
  s.embedding_rows = s.output_rows = {};
  return s;
}

}  // namespace uneven
