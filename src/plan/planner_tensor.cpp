// Tensor parallelism (asymmetric, equal, single node): water-filled targets, carried rounding, fitting to memory.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "plan/apportion.h"
#include "plan/planner_internal.h"
#include "util/error.h"

namespace uneven::planner {
namespace {

// The per-layer split dimensions, for loops that treat them alike.
struct Dim {
  const char* name;
  std::vector<int64_t> LayerSplit::*field;
  int64_t Alignment::*align;
};
constexpr Dim kDims[] = {{"query heads", &LayerSplit::q_heads, &Alignment::q_heads},
                         {"linear-attention value heads", &LayerSplit::linear_v_heads, &Alignment::linear_v_heads},
                         {"MLP columns", &LayerSplit::mlp_cols, &Alignment::columns},
                         {"expert columns", &LayerSplit::expert_cols, &Alignment::columns},
                         {"shared-expert columns", &LayerSplit::shared_expert_cols, &Alignment::columns}};

// With at least as many KV heads (linear key heads) as ranks, query (value) heads are split in whole KV
// groups: no KV head is then held twice, and the carry keeps each rank's total on target. With fewer, some
// duplication is unavoidable and heads are split singly so it stays at one KV head per boundary; the
// apportioner then moves boundaries that crowd into one group to its edge where the carry allows.
Alignment group_alignment(const Ctx& x, int64_t ranks) {
  const ModelConfig& c = x.c;
  Alignment a = x.align;
  if (ranks > 1 && c.num_kv_heads >= ranks) a.q_heads = std::lcm(a.q_heads, c.num_heads / c.num_kv_heads);
  if (ranks > 1 && c.linear_num_key_heads >= ranks)
    a.linear_v_heads = std::lcm(a.linear_v_heads, c.linear_num_value_heads / c.linear_num_key_heads);
  // Column blocks follow the kernel width only while every column dimension still has a block per rank;
  // narrower ones (small experts) halve the block, down to what the weight format requires (its group).
  int64_t narrowest = 0;
  for (int64_t n : {c.intermediate_size, c.moe_intermediate_size, c.shared_expert_intermediate_size})
    if (n > 0) narrowest = narrowest == 0 ? n : std::min(narrowest, n);
  const int64_t floor = x.req.cost.weights.split_align();
  while (narrowest > 0 && narrowest / a.columns < ranks && a.columns / 2 >= floor && (a.columns / 2) % floor == 0)
    a.columns /= 2;
  return a;
}

// Splits every dimension of every layer among the plan's ranks by `t` (targets of the ranked nodes) in units
// of p.align. Each dimension has its own carry, so each rank's total of each dimension tracks its target.
void split_tensor_dims(const Ctx& x, Plan& p, const std::vector<double>& t) {
  const ModelConfig& c = x.c;
  Apportioner q(t), lv(t), mlp(t), ex(t), sh(t), vocab(t);
  p.layers.assign(size_t(c.num_layers), {});
  const int64_t q_group = c.num_kv_heads > 0 ? c.num_heads / c.num_kv_heads : 0;
  const int64_t lv_group = c.linear_num_key_heads > 0 ? c.linear_num_value_heads / c.linear_num_key_heads : 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSplit& ls = p.layers[size_t(l)];
    // Query (value) heads know their KV (key) groups, so boundaries crowding into one group move to its edge.
    if (c.layer_types[size_t(l)] == LayerKind::FullAttention) ls.q_heads = q.split(c.num_heads, p.align.q_heads, q_group);
    else ls.linear_v_heads = lv.split(c.linear_num_value_heads, p.align.linear_v_heads, lv_group);
    if (c.is_moe_layer(l)) {
      ls.expert_cols = ex.split(c.moe_intermediate_size, p.align.columns);
      if (c.shared_expert_intermediate_size > 0) ls.shared_expert_cols = sh.split(c.shared_expert_intermediate_size, p.align.columns);
    } else {
      ls.mlp_cols = mlp.split(c.intermediate_size, p.align.columns);
    }
  }
  p.embedding_rows = p.output_rows = vocab.split(c.vocab_size, p.align.vocab);
}

int64_t held(const Plan& p, const Dim& d, size_t j) {
  int64_t mine = 0;
  for (const LayerSplit& ls : p.layers)
    if (!(ls.*d.field).empty()) mine += (ls.*d.field)[j + 1] - (ls.*d.field)[j];
  return mine;
}

// Explicit shares: a rank whose small share rounded to nothing in a whole dimension takes one unit from the
// nearest rank that can spare one (it keeps some of the dimension), in the layer where that rank holds the
// most. The boundaries between the two move one aligned unit towards the donor, so the ranks in between keep
// their counts and all ranges stay contiguous (a dimension with few units, like the 4 query heads of a
// single full-attention layer over 3 ranks, needs a donor beyond the neighbour). Returns false when no rank
// can spare a unit.
bool give_one_unit(Plan& p, const Dim& d, int64_t align, size_t j) {
  const int64_t ranks = int64_t(p.world_size);
  for (int64_t distance = 1; distance < ranks; ++distance) {
    size_t best_layer = 0;
    int64_t best = 0;
    int side = 0;
    for (int dir : {+1, -1}) {
      const int64_t nb = int64_t(j) + dir * distance;
      if (nb < 0 || nb >= ranks) continue;
      const int64_t total = held(p, d, size_t(nb));
      for (size_t l = 0; l < p.layers.size(); ++l) {
        const auto& b = p.layers[l].*d.field;
        if (b.empty()) continue;
        const int64_t has = b[size_t(nb) + 1] - b[size_t(nb)];
        if (has > best && total > std::min(has, align)) best = has, best_layer = l, side = dir;
      }
    }
    if (side == 0) continue;
    auto& b = p.layers[best_layer].*d.field;
    // Rank j is empty in this layer (its whole dimension is), so b[j] == b[j+1].
    if (side > 0) {
      const size_t donor = j + size_t(distance);
      for (size_t k = j + 1; k <= donor; ++k) b[k] = std::min(b[k] + align, b[donor + 1]);
    } else {
      const size_t donor = j - size_t(distance);
      for (size_t k = donor + 1; k <= j; ++k) b[k] = (b[k] - 1) / align * align;
    }
    return true;
  }
  return false;
}

// The first dimension in which rank position `j` holds nothing over all layers, or nullptr.
const Dim* empty_dimension(const Plan& p, size_t j) {
  for (const Dim& d : kDims) {
    int64_t total = 0;
    for (const LayerSplit& ls : p.layers)
      if (!(ls.*d.field).empty()) total += (ls.*d.field).back();
    if (total > 0 && held(p, d, j) == 0) return &d;
  }
  return nullptr;
}

}  // namespace

// Tensor parallelism over one stage of all ranked nodes. `fixed_targets` (equal, --split, single) are
// used as given; otherwise targets come from water-filling and are adjusted until every rank fits.
Outcome tensor_attempt(const Ctx& x, PlanMode mode, const std::vector<double>& fixed_targets, const std::vector<std::string>& excluded) {
  const size_t n = x.req.nodes.size();
  const bool adaptive = fixed_targets.empty();
  std::vector<std::string> notes(n);
  std::vector<bool> left_out(n, false);
  for (size_t i = 0; i < excluded.size() && i < n; ++i)
    if (!excluded[i].empty()) left_out[i] = true, notes[i] = excluded[i];
  std::vector<double> extra(n, 0.0);  // bytes by which rounding and duplication exceeded the continuous model
  std::vector<double> margin(n, 1e-4 * x.split_mem);  // extra shrink beyond the excess (doubles per repeat)
  // Bytes read per token beyond the continuous model (duplicated KV heads, rounding): fed back as a fixed
  // read so the next water-filling gives such a node less of the rest. A few rounds; the fastest plan wins.
  std::vector<double> extra_read(n, 0.0);
  int refinements = 4;
  Outcome best;
  std::vector<double> budget(n);
  for (size_t i = 0; i < n; ++i)
    budget[i] = double(x.req.nodes[i].memory) - double(x.req.reserve) - double(x.fixed.total());
  for (size_t i = 0; i < n && adaptive; ++i)
    if (budget[i] <= 0 && !left_out[i]) {
      left_out[i] = true;
      notes[i] = fmt::format("left out: its {} do not hold the reserve {} plus the {} every rank replicates",
                             gib(double(x.req.nodes[i].memory)), gib(double(x.req.reserve)), gib(double(x.fixed.total())));
    }

  for (int iter = 0; iter < 60; ++iter) {
    std::vector<double> t(n, 0.0);
    std::vector<std::string> round_notes = notes;  // plus this round's "too slow to help"
    if (adaptive) {
      std::vector<FillNode> fill(n);
      double caps = 0, usable = 0;
      int used = 0;
      for (size_t i = 0; i < n; ++i) {
        if (left_out[i]) continue;
        fill[i] = {std::max(0.0, (budget[i] - extra[i]) / x.split_mem), x.fixed.read + extra_read[i], x.bandwidth[i]};
        caps += fill[i].cap;
        usable += double(x.req.nodes[i].memory);
        ++used;
      }
      if (caps < 1.0) {
        if (best.ok) return best;
        double need = x.split_mem + used * (double(x.fixed.total()) + double(x.req.reserve));
        for (size_t i = 0; i < n; ++i) need += left_out[i] ? 0.0 : extra[i];
        return failed(fmt::format(
            "the cluster is {} short: the model needs {} ({} split across nodes + {} replicated on each of {} nodes + "
            "reserve {} each{}) but the {} usable nodes have {}",
            gib(need - usable), gib(need), gib(x.split_mem), gib(double(x.fixed.total())), used, gib(double(x.req.reserve)),
            iter > 0 ? " + KV heads held twice and rounding" : "", used, gib(usable)));
      }
      t = water_fill(fill, x.split_read);
      // A node the water level passes by is too slow to help: reading its replicated part alone (embedding
      // rows, norms, the shared KV heads) takes longer than the others take for everything.
      for (size_t i = 0; i < n; ++i)
        if (!left_out[i] && t[i] <= 0 && notes[i].empty())
          round_notes[i] = fmt::format("left out: too slow to help; at {:.3g} GB/s, the {} per token every rank reads takes "
                                 "it longer than the faster nodes take for the whole model",
                                 x.bandwidth[i], gib(fill[i].fixed_read));
    } else {
      t = fixed_targets;
    }
    Plan p = skeleton(x, mode);
    std::vector<int> ranked = assign_ranks(p, t, round_notes);
    if (ranked.empty()) fail("no node has a positive share");
    Stage st{{0, x.c.num_layers}, {}};
    std::vector<double> rt;
    for (int i : ranked) {
      st.ranks.push_back(p.nodes[size_t(i)].rank);
      rt.push_back(t[size_t(i)]);
    }
    p.stages = {st};
    p.align = group_alignment(x, int64_t(rt.size()));
    split_tensor_dims(x, p, rt);

    // Every rank gets a non-empty share of every dimension: where its target rounded to nothing it takes a
    // unit from a neighbour. Where no neighbour can spare one, explicit shares are an error; planned ones
    // leave out the smallest such node and plan again.
    int drop = -1;
    std::string drop_note;
    for (size_t j = 0; j < ranked.size(); ++j)
      for (const Dim* d = empty_dimension(p, j); d; d = empty_dimension(p, j)) {
        if (give_one_unit(p, *d, p.align.*d->align, j)) continue;
        const size_t i = size_t(ranked[j]);
        if (!adaptive)
          return failed(fmt::format("{} cannot get a non-empty legal share of the {}: its target {:.2f}% rounds to no whole unit in any "
                                    "layer and no other node can spare one", x.req.nodes[i].name, d->name, 100.0 * t[i]));
        if (drop < 0 || t[i] < t[size_t(drop)]) {
          drop = int(i);
          drop_note = fmt::format("left out: its share ({:.3f}%) is too small for one unit of the {}", 100.0 * t[i], d->name);
        }
        break;
      }
    if (drop >= 0) left_out[size_t(drop)] = true, notes[size_t(drop)] = drop_note;
    const bool dropped = drop >= 0;
    if (dropped) continue;

    Outcome o;
    o.time = fill_usage(x, p);
    if (const NodePlan* over = first_over_budget(p); over) {
      if (!adaptive) return failed(usage_text(*over));
      // Shrink the cap of every node over budget by its excess plus a margin that doubles each time the
      // same node is over again: one unit (a head with its KV cache) can be far larger than the excess, so a
      // fixed margin would take many rounds to move a boundary; doubling converges in a few.
      for (const NodePlan& np : p.nodes) {
        const size_t i = size_t(&np - p.nodes.data());
        if (np.rank < 0 || np.usage.total() <= np.spec.memory) continue;
        extra[i] += double(np.usage.total() - np.spec.memory) + margin[i];
        margin[i] *= 2;
      }
      continue;
    }
    o.ok = true;
    if (!adaptive) {
      o.plan = std::move(p);
      return o;
    }
    for (const NodePlan& np : p.nodes)
      if (np.rank >= 0) {
        const size_t i = size_t(&np - p.nodes.data());
        extra_read[i] = np.usage.read - (x.fixed.read + t[i] * x.split_read);
      }
    if (!best.ok || o.time < best.time) {
      o.plan = std::move(p);
      best = std::move(o);
    }
    if (--refinements < 0) return best;
  }
  if (best.ok) return best;
  return failed("rounding did not converge to a split where every node fits");
}

Outcome single_attempt(const Ctx& x) {
  const size_t n = x.req.nodes.size();
  const double need = double(x.full.total()) + double(x.req.reserve);
  int best = -1;
  for (size_t i = 0; i < n; ++i) {
    if (double(x.req.nodes[i].memory) < need) continue;
    if (best < 0 || x.bandwidth[i] > x.bandwidth[size_t(best)]) best = int(i);
  }
  if (best < 0) {
    uint64_t largest = 0;
    for (const NodeSpec& s : x.req.nodes) largest = std::max(largest, s.memory);
    return failed(fmt::format("the model needs {} (weights {}, KV cache {}, state {}, reserve {}) but the largest node has {}: {} short",
                              gib(need), gib(double(x.full.weights)), gib(double(x.full.kv_cache)), gib(double(x.full.state)),
                              gib(double(x.req.reserve)), gib(double(largest)), gib(need - double(largest))));
  }
  std::vector<double> t(n, 0.0);
  t[size_t(best)] = 1.0;
  Outcome o = tensor_attempt(x, PlanMode::Single, t);
  for (NodePlan& np : o.plan.nodes)
    if (np.rank < 0) np.note = "left out: single-node mode runs on one node";
  return o;
}

}  // namespace uneven::planner
