// Plan helpers: mode names, rank lookups, and the structural check every received plan passes.
#include "plan/plan.h"

#include <algorithm>
#include <fmt/format.h>

#include "util/error.h"

namespace uneven {

const char* mode_name(PlanMode mode) {
  switch (mode) {
    case PlanMode::Auto: return "auto";
    case PlanMode::Single: return "single";
    case PlanMode::Pipeline: return "pipeline";
    case PlanMode::Equal: return "equal";
    case PlanMode::Tensor: return "tensor";
  }
  return "?";
}

PlanMode parse_mode(const std::string& name) {
  for (PlanMode m : {PlanMode::Auto, PlanMode::Single, PlanMode::Pipeline, PlanMode::Equal, PlanMode::Tensor})
    if (name == mode_name(m)) return m;
  fail("unknown plan mode '{}' (expected auto, tensor, pipeline, equal or single)", name);
}

const NodePlan& Plan::node_of_rank(int rank) const {
  for (const NodePlan& n : nodes)
    if (n.rank == rank) return n;
  fail("plan has no node for rank {} (world size {})", rank, world_size);
}

int Plan::stage_of_rank(int rank) const {
  for (size_t s = 0; s < stages.size(); ++s)
    for (int r : stages[s].ranks)
      if (r == rank) return int(s);
  fail("plan has no stage for rank {}", rank);
}

namespace {

// Boundaries of one dimension: `parts`+1 ascending entries from 0 to size, interior ones multiples of align.
void check_bounds(const std::vector<int64_t>& b, size_t parts, int64_t size, int64_t align, const std::string& what) {
  if (b.size() != parts + 1) fail("plan: {} has {} boundaries, expected {} for {} ranks", what, b.size(), parts + 1, parts);
  if (b.front() != 0 || b.back() != size) fail("plan: {} spans [{}, {}) but the dimension has {}", what, b.front(), b.back(), size);
  for (size_t i = 1; i < b.size(); ++i) {
    if (b[i] < b[i - 1]) fail("plan: {} boundaries descend ({} after {})", what, b[i], b[i - 1]);
    if (b[i] != size && b[i] % align != 0) fail("plan: {} boundary {} is not a multiple of {}", what, b[i], align);
  }
}

}  // namespace

void validate_plan(const Plan& p, const ModelConfig& c) {
  if (p.version != Plan::kVersion) fail("plan: version {} (this build reads {})", p.version, Plan::kVersion);
  if (p.config_hash != config_fingerprint(c))
    fail("plan: made for a different model (fingerprint {}, this {} config has {})", p.config_hash, c.architecture, config_fingerprint(c));
  if (p.mode == PlanMode::Auto) fail("plan: mode must be resolved, not auto");
  // Alignment must keep every row-parallel split on quantization-group boundaries.
  const int64_t g = p.cost.weights.split_align();
  if (p.align.q_heads <= 0 || (p.align.q_heads * c.head_dim) % g != 0)
    fail("plan: query-head unit {} x head_dim {} is not a multiple of the quantization group {}", p.align.q_heads, c.head_dim, g);
  if (p.align.linear_v_heads <= 0 || (c.linear_value_head_dim > 0 && (p.align.linear_v_heads * c.linear_value_head_dim) % g != 0))
    fail("plan: value-head unit {} x {} is not a multiple of the quantization group {}", p.align.linear_v_heads, c.linear_value_head_dim, g);
  if (p.align.columns <= 0 || p.align.columns % g != 0)
    fail("plan: column block {} is not a multiple of the quantization group {}", p.align.columns, g);
  if (p.align.vocab <= 0) fail("plan: vocabulary block {} must be positive", p.align.vocab);

  int ranks = 0;
  for (const NodePlan& n : p.nodes) {
    if (n.rank >= 0 && n.rank != ranks) fail("plan: {} has rank {}, expected {} (ranks follow node order)", n.spec.name, n.rank, ranks);
    if (n.rank >= 0) ++ranks;
  }
  if (ranks != p.world_size || ranks == 0) fail("plan: {} nodes have ranks but world size is {}", ranks, p.world_size);
  if (p.stages.empty()) fail("plan: no stages");
  int64_t layer = 0;
  int next_rank = 0;
  for (const Stage& s : p.stages) {
    if (s.layers.begin != layer || s.layers.end < s.layers.begin)
      fail("plan: stage layers [{}, {}) do not continue from layer {}", s.layers.begin, s.layers.end, layer);
    layer = s.layers.end;
    if (s.ranks.empty()) fail("plan: a stage has no ranks");
    for (int r : s.ranks)
      if (r != next_rank++) fail("plan: stage ranks must be consecutive in order; got rank {}", r);
  }
  if (layer != c.num_layers) fail("plan: stages cover {} layers but the model has {}", layer, c.num_layers);
  if (next_rank != p.world_size) fail("plan: stages hold {} ranks, world size is {}", next_rank, p.world_size);
  if (int64_t(p.layers.size()) != c.num_layers) fail("plan: {} layer splits for {} layers", p.layers.size(), c.num_layers);

  for (const Stage& s : p.stages)
    for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
      const LayerSplit& ls = p.layers[size_t(l)];
      const size_t parts = s.ranks.size();
      const std::string at = fmt::format("layer {} ", l);
      const bool full = c.layer_types[size_t(l)] == LayerKind::FullAttention, moe = c.is_moe_layer(l);
      auto absent = [&](const std::vector<int64_t>& b, const char* name) {
        if (!b.empty()) fail("plan: layer {} has a {} split but no such tensors", l, name);
      };
      if (full) check_bounds(ls.q_heads, parts, c.num_heads, p.align.q_heads, at + "query heads");
      else absent(ls.q_heads, "query-head");
      if (!full) check_bounds(ls.linear_v_heads, parts, c.linear_num_value_heads, p.align.linear_v_heads, at + "value heads");
      else absent(ls.linear_v_heads, "value-head");
      if (moe) {
        check_bounds(ls.expert_cols, parts, c.moe_intermediate_size, p.align.columns, at + "expert columns");
        absent(ls.mlp_cols, "dense MLP");
        if (c.shared_expert_intermediate_size > 0)
          check_bounds(ls.shared_expert_cols, parts, c.shared_expert_intermediate_size, p.align.columns, at + "shared-expert columns");
        else absent(ls.shared_expert_cols, "shared-expert");
      } else {
        check_bounds(ls.mlp_cols, parts, c.intermediate_size, p.align.columns, at + "MLP columns");
        absent(ls.expert_cols, "expert");
        absent(ls.shared_expert_cols, "shared-expert");
      }
    }
  check_bounds(p.embedding_rows, p.stages.front().ranks.size(), c.vocab_size, p.align.vocab, "embedding rows");
  check_bounds(p.output_rows, p.stages.back().ranks.size(), c.vocab_size, p.align.vocab, "output rows");
  if (c.tie_word_embeddings && p.stages.size() == 1 && p.embedding_rows != p.output_rows)
    fail("plan: tied embeddings need the same embedding and output-head rows");

  // The recorded usage must be what this build computes, and fit.
  for (const NodePlan& n : p.nodes) {
    if (n.rank < 0) continue;
    Usage u = rank_usage(c, rank_slices(p, c, n.rank), p.cost);
    u.reserve = p.reserve;
    if (u.weights != n.usage.weights || u.kv_cache != n.usage.kv_cache || u.state != n.usage.state || u.reserve != n.usage.reserve)
      fail("plan: {} records {} of weights, KV cache and state but its slices hold {}", n.spec.name,
           format_bytes(double(n.usage.total())), format_bytes(double(u.total())));
    if (u.total() > n.spec.memory)
      fail("plan: {} needs {} but has {}", n.spec.name, format_bytes(double(u.total())), format_bytes(double(n.spec.memory)));
  }
}

uint64_t reserve_or_default(const std::string& given, const std::vector<NodeSpec>& nodes) {
  return given.empty() ? default_reserve(nodes) : parse_size(given);
}

uint64_t default_reserve(const std::vector<NodeSpec>& nodes) {
  uint64_t smallest = UINT64_MAX;
  for (const NodeSpec& n : nodes) smallest = std::min(smallest, n.memory);
  return std::min<uint64_t>(uint64_t(1) << 30, smallest / 8);
}

}  // namespace uneven
