// Pipeline mode: contiguous whole layers per node, sized by memory and speed; the baseline users compare against.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "plan/apportion.h"
#include "plan/planner_internal.h"

namespace uneven::planner {
namespace {

// Bytes of one stage's pieces: each layer, the embedding (first stage), the final norm and head (last).
struct PipelineCosts {
  std::vector<double> prefix;  // prefix[l]: bytes of layers [0, l)
  double emb = 0;
  Usage out;
  double total = 0, read = 0;  // everything, held and read per token
};

PipelineCosts pipeline_costs(const Ctx& x) {
  const ModelConfig& c = x.c;
  const RankSlices all = single_rank_slices(c);
  PipelineCosts k;
  k.prefix.assign(size_t(c.num_layers) + 1, 0.0);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    RankSlices s = all;
    s.layers = {l, l + 1};
    s.has_embedding = s.has_output = false;
    k.prefix[size_t(l) + 1] = k.prefix[size_t(l)] + double(rank_usage(c, s, x.req.cost).total());
  }
  RankSlices ends = all;
  ends.layers = {0, 0};
  ends.has_output = false;
  k.emb = double(rank_usage(c, ends, x.req.cost).total());
  ends.has_embedding = false;
  ends.has_output = true;
  k.out = rank_usage(c, ends, x.req.cost);
  k.total = k.emb + k.prefix.back() + double(k.out.total());
  k.read = x.full.read;  // a pipeline reads everything once per token, stage after stage
  return k;
}

// The plan for stages ending at `ends` (one per ranked node, the last = num_layers).
Outcome build(const Ctx& x, const std::vector<double>& t, const std::vector<std::string>& notes,
              const std::vector<int64_t>& ends) {
  const ModelConfig& c = x.c;
  Plan p = skeleton(x, PlanMode::Pipeline);
  assign_ranks(p, t, notes);
  p.layers.assign(size_t(c.num_layers), {});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSplit& ls = p.layers[size_t(l)];  // one rank per stage: every dimension whole
    if (c.layer_types[size_t(l)] == LayerKind::FullAttention) ls.q_heads = {0, c.num_heads};
    else ls.linear_v_heads = {0, c.linear_num_value_heads};
    if (c.is_moe_layer(l)) {
      ls.expert_cols = {0, c.moe_intermediate_size};
      if (c.shared_expert_intermediate_size > 0) ls.shared_expert_cols = {0, c.shared_expert_intermediate_size};
    } else {
      ls.mlp_cols = {0, c.intermediate_size};
    }
  }
  p.embedding_rows = p.output_rows = {0, c.vocab_size};
  for (size_t k = 0; k < ends.size(); ++k) p.stages.push_back({{k == 0 ? 0 : ends[k - 1], ends[k]}, {int(k)}});
  Outcome o;
  o.time = fill_usage(x, p);
  if (const NodePlan* over = first_over_budget(p)) return failed(usage_text(*over));
  o.ok = true;
  o.plan = std::move(p);
  return o;
}

// Explicit shares: each stage ends at the layer boundary nearest its running target (in bytes), with at
// least one layer per node; memory is checked afterwards, not traded against the shares asked for.
Outcome explicit_pipeline(const Ctx& x, const PipelineCosts& k, const std::vector<double>& t) {
  const int64_t L = x.c.num_layers;
  std::vector<size_t> ranked;
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] > 0) ranked.push_back(i);
  const int64_t m = int64_t(ranked.size());
  if (L < m)
    return failed(fmt::format("pipeline needs a whole layer per node: the model has {} layers but {} nodes have a positive share", L, m));
  std::vector<int64_t> ends;
  double target = 0;
  int64_t begin = 0;
  for (int64_t s = 0; s < m; ++s) {
    target += t[ranked[size_t(s)]] * k.total;
    const int64_t lo = begin + 1, hi = L - (m - 1 - s);  // leave one layer for every later stage
    int64_t best = s + 1 == m ? L : lo;
    if (s + 1 < m)
      for (int64_t e = lo; e <= hi; ++e)
        if (std::fabs(k.emb + k.prefix[size_t(e)] - target) < std::fabs(k.emb + k.prefix[size_t(best)] - target)) best = e;
    ends.push_back(best);
    begin = best;
  }
  return build(x, t, std::vector<std::string>(t.size()), ends);
}

}  // namespace

// Planned shares: water-filling on memory and speed gives each node its target; stage boundaries are the
// whole-layer positions nearest the running targets among those that still let the later stages hold the
// rest (found by packing the later stages greedily from the end). A node whose stage gets no layer is left
// out and the rest planned again.
Outcome pipeline_attempt(const Ctx& x, const std::vector<double>& fixed_targets) {
  const PipelineCosts k = pipeline_costs(x);
  if (!fixed_targets.empty()) return explicit_pipeline(x, k, fixed_targets);
  const size_t n = x.req.nodes.size();
  const int64_t L = x.c.num_layers;
  const double reserve = double(x.req.reserve);
  std::vector<bool> left_out(n, false);
  std::vector<std::string> notes(n);
  for (size_t round = 0; round <= n; ++round) {
    std::vector<FillNode> fill(n);
    double caps = 0, usable = 0;
    for (size_t i = 0; i < n; ++i) {
      if (left_out[i]) continue;
      const double budget = std::max(0.0, double(x.req.nodes[i].memory) - reserve);
      fill[i] = {budget / k.total, 0.0, x.bandwidth[i]};
      caps += fill[i].cap;
      usable += budget;
    }
    if (caps < 1.0)
      return failed(fmt::format("the cluster is {} short for a pipeline: the layers, embedding and head need {} but the nodes "
                                "in use have {} after the reserve of {} each",
                                gib(k.total - usable), gib(k.total), gib(usable), gib(reserve)));
    const std::vector<double> t = water_fill(fill, k.read);
    std::vector<size_t> ranked;
    for (size_t i = 0; i < n; ++i)
      if (t[i] > 0) ranked.push_back(i);
    const size_t m = ranked.size();
    std::vector<double> cap(m);  // bytes each stage has for layers, after the reserve and the embedding / head
    for (size_t s = 0; s < m; ++s)
      cap[s] = double(x.req.nodes[ranked[s]].memory) - reserve - (s == 0 ? k.emb : 0.0) - (s + 1 == m ? double(k.out.total()) : 0.0);
    // suffix[s]: the first layer stages s.. can hold when each takes as many layers as fit, from the end.
    std::vector<int64_t> suffix(m + 1, L);
    for (size_t s = m; s-- > 0;) {
      int64_t at = suffix[s + 1];
      while (at > 0 && k.prefix[size_t(suffix[s + 1])] - k.prefix[size_t(at) - 1] <= cap[s]) --at;
      suffix[s] = at;
    }
    // A node that cannot even hold the embedding or the head at its end of the pipeline is left out.
    bool dropped = false;
    for (size_t s = 0; s < m; ++s)
      if (cap[s] < 0) {
        left_out[ranked[s]] = dropped = true;
        notes[ranked[s]] = fmt::format("left out: its {} do not hold the reserve and the {} it would hold", gib(double(x.req.nodes[ranked[s]].memory)),
                                       s == 0 ? "embedding" : "output head");
        break;
      }
    if (dropped) continue;
    if (suffix[0] > 0)
      return failed(fmt::format("no split into whole layers fits: with every later stage full, layers 0-{} ({}) are left for {}, "
                                "which has room for {} (the layers, embedding and head need {}, the nodes have {} after reserves)",
                                suffix[0] - 1, gib(k.prefix[size_t(suffix[0])]), x.req.nodes[ranked[0]].name, gib(cap[0]),
                                gib(k.total), gib(usable)));
    std::vector<int64_t> ends;
    double target = 0;
    int64_t begin = 0;
    for (size_t s = 0; s < m; ++s) {
      target += t[ranked[s]] * k.total;
      int64_t hi = begin;
      while (hi < L && k.prefix[size_t(hi) + 1] - k.prefix[size_t(begin)] <= cap[s]) ++hi;
      const int64_t lo = s + 1 == m ? L : std::max(begin, suffix[s + 1]);  // lo <= hi: begin >= suffix[s]
      int64_t best = lo;
      for (int64_t e = lo; e <= hi; ++e)
        if (std::fabs(k.emb + k.prefix[size_t(e)] - target) < std::fabs(k.emb + k.prefix[size_t(best)] - target)) best = e;
      ends.push_back(best);
      begin = best;
    }
    for (size_t s = 0; s < m; ++s)
      if (ends[s] == (s == 0 ? 0 : ends[s - 1])) {
        left_out[ranked[s]] = dropped = true;
        notes[ranked[s]] = fmt::format("left out: its share ({:.2f}%) is less than one layer", 100.0 * t[ranked[s]]);
      }
    if (dropped) continue;
    return build(x, t, notes, ends);
  }
  return failed("no node can hold a whole layer");
}

}  // namespace uneven::planner
