// make_plan: targets by water-filling, rounding with carry, fitting against memory, and the choice of mode.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <numeric>

#include "plan/apportion.h"
#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
namespace {

// Stands in for unknown bandwidths: with every node equal only ratios of times matter, and none is shown.
constexpr double kAssumedBandwidth = 100.0;
// Auto prefers the plainer equal split unless the asymmetric one is faster by more than this.
constexpr double kEqualTolerance = 0.01;

struct Ctx {
  const ModelConfig& c;
  const PlanRequest& req;
  Alignment align;
  std::vector<double> bandwidth;  // GB/s used for times
  bool bandwidth_known = false;
  Usage full;   // everything on one rank
  Usage fixed;  // what every tensor-parallel rank holds whatever its share (norms, router, gates)
  double split_mem = 0, split_read = 0;
};

struct Outcome {
  bool ok = false;
  Plan plan;
  std::string why;     // when !ok: the constraint and the numbers
  double time = 0.0;   // predicted seconds per token (with assumed bandwidths when unknown)
};

std::string gib(double bytes) { return format_bytes(bytes); }

Alignment alignment_for(const ModelConfig& c, const PlanRequest& req) {
  const int64_t g = req.cost.weights.split_align();
  Alignment a;
  // o_proj / out_proj columns are the input dimension: a head boundary must be a group boundary.
  a.q_heads = g / std::gcd(g, c.head_dim);
  a.linear_v_heads = c.linear_value_head_dim > 0 ? g / std::gcd(g, c.linear_value_head_dim) : 1;
  a.columns = std::lcm(g, req.kernel_width);
  a.vocab = req.kernel_width;
  return a;
}

RankSlices empty_split_slices(const ModelConfig& c) {
  RankSlices s = single_rank_slices(c);
  for (LayerSlices& ls : s.layer) {
    Range none{};
    ls.q_heads = ls.kv_heads = ls.mlp_cols = ls.shared_expert_cols = ls.linear_v_heads = ls.linear_k_heads = none;
    for (Range& e : ls.expert_cols) e = none;
  }
  s.embedding_rows = s.output_rows = {};
  return s;
}

Plan skeleton(const Ctx& x, PlanMode mode) {
  Plan p;
  p.architecture = x.c.architecture;
  p.config_hash = config_fingerprint(x.c);
  p.cost = x.req.cost;
  p.reserve = x.req.reserve;
  p.mode = mode;
  p.align = x.align;
  p.bandwidth_known = x.bandwidth_known;
  for (const NodeSpec& n : x.req.nodes) p.nodes.push_back({n, -1, 0.0, {}, 0.0, ""});
  return p;
}

// Numbers ranks (nodes with a positive target, in request order) and records targets and notes.
std::vector<int> assign_ranks(Plan& p, const std::vector<double>& t, const std::vector<std::string>& notes) {
  std::vector<int> ranked;
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    p.nodes[i].target = t[i];
    p.nodes[i].note = notes[i];
    if (t[i] > 0) {
      p.nodes[i].rank = int(ranked.size());
      ranked.push_back(int(i));
    }
  }
  p.world_size = int(ranked.size());
  return ranked;
}

// Fills usage and times of every rank; returns the plan's predicted time (tensor: slowest rank; pipeline:
// stages one after another).
double fill_usage(const Ctx& x, Plan& p) {
  double slowest = 0, sum = 0;
  for (NodePlan& n : p.nodes) {
    if (n.rank < 0) continue;
    n.usage = rank_usage(x.c, rank_slices(p, x.c, n.rank), x.req.cost);
    n.usage.reserve = x.req.reserve;
    const double t = n.usage.read / (x.bandwidth[size_t(&n - p.nodes.data())] * 1e9);
    n.time_s = x.bandwidth_known ? t : 0.0;
    slowest = std::max(slowest, t);
    sum += t;
  }
  const double time = p.stages.size() > 1 ? sum : slowest;
  p.time_s = x.bandwidth_known ? time : 0.0;
  return time;
}

std::string usage_text(const NodePlan& n) {
  return fmt::format("{} needs {} (weights {}, KV cache {}, state {}, reserve {}) but has {}", n.spec.name,
                     gib(double(n.usage.total())), gib(double(n.usage.weights)), gib(double(n.usage.kv_cache)),
                     gib(double(n.usage.state)), gib(double(n.usage.reserve)), gib(double(n.spec.memory)));
}

const NodePlan* first_over_budget(const Plan& p) {
  for (const NodePlan& n : p.nodes)
    if (n.rank >= 0 && n.usage.total() > n.spec.memory) return &n;
  return nullptr;
}

// Splits every dimension of every layer among the plan's ranks by `t` (targets of the ranked nodes).
void split_tensor_dims(const Ctx& x, Plan& p, const std::vector<double>& t) {
  const ModelConfig& c = x.c;
  Apportioner q(t), lv(t), mlp(t), ex(t), sh(t), vocab(t);
  p.layers.assign(size_t(c.num_layers), {});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSplit& ls = p.layers[size_t(l)];
    if (c.layer_types[size_t(l)] == LayerKind::FullAttention) ls.q_heads = q.split(c.num_heads, x.align.q_heads);
    else ls.linear_v_heads = lv.split(c.linear_num_value_heads, x.align.linear_v_heads);
    if (c.is_moe_layer(l)) {
      ls.expert_cols = ex.split(c.moe_intermediate_size, x.align.columns);
      if (c.shared_expert_intermediate_size > 0) ls.shared_expert_cols = sh.split(c.shared_expert_intermediate_size, x.align.columns);
    } else {
      ls.mlp_cols = mlp.split(c.intermediate_size, x.align.columns);
    }
  }
  p.embedding_rows = p.output_rows = vocab.split(c.vocab_size, x.align.vocab);
}

// The first dimension in which rank position `j` gets nothing over all layers, or "" when it gets a share
// of every dimension the model has.
std::string empty_dimension(const Plan& p, size_t j) {
  struct D { const char* name; std::vector<int64_t> LayerSplit::*field; };
  static constexpr D dims[] = {{"query heads", &LayerSplit::q_heads}, {"linear-attention value heads", &LayerSplit::linear_v_heads},
                               {"MLP columns", &LayerSplit::mlp_cols}, {"expert columns", &LayerSplit::expert_cols},
                               {"shared-expert columns", &LayerSplit::shared_expert_cols}};
  for (const D& d : dims) {
    int64_t total = 0, mine = 0;
    for (const LayerSplit& ls : p.layers) {
      const auto& b = ls.*d.field;
      if (b.empty()) continue;
      total += b.back();
      mine += b[j + 1] - b[j];
    }
    if (total > 0 && mine == 0) return d.name;
  }
  return "";
}

// Tensor parallelism over one stage of all ranked nodes. `fixed_targets` (equal, --split, single) are
// used as given; otherwise targets come from water-filling and are adjusted until every rank fits.
Outcome tensor_attempt(const Ctx& x, PlanMode mode, std::vector<double> fixed_targets) {
  const size_t n = x.req.nodes.size();
  const bool adaptive = fixed_targets.empty();
  std::vector<std::string> notes(n);
  std::vector<bool> left_out(n, false);
  std::vector<double> extra(n, 0.0);  // bytes by which rounding and duplication exceeded the continuous model
  Outcome o;
  std::vector<double> budget(n);
  for (size_t i = 0; i < n; ++i)
    budget[i] = double(x.req.nodes[i].memory) - double(x.req.reserve) - double(x.fixed.total());
  for (size_t i = 0; i < n && adaptive; ++i)
    if (budget[i] <= 0) {
      left_out[i] = true;
      notes[i] = fmt::format("left out: its {} do not hold the reserve {} plus the {} every rank replicates",
                             gib(double(x.req.nodes[i].memory)), gib(double(x.req.reserve)), gib(double(x.fixed.total())));
    }

  for (int iter = 0; iter < 40; ++iter) {
    std::vector<double> t(n, 0.0);
    if (adaptive) {
      std::vector<FillNode> fill(n);
      double caps = 0, usable = 0;
      int used = 0;
      for (size_t i = 0; i < n; ++i) {
        if (left_out[i]) continue;
        fill[i] = {std::max(0.0, (budget[i] - extra[i]) / x.split_mem), x.fixed.read, x.bandwidth[i]};
        caps += fill[i].cap;
        usable += double(x.req.nodes[i].memory);
        ++used;
      }
      if (caps < 1.0) {
        double need = x.split_mem + used * (double(x.fixed.total()) + double(x.req.reserve));
        for (size_t i = 0; i < n; ++i) need += left_out[i] ? 0.0 : extra[i];
        o.why = fmt::format(
            "the cluster is {} short: the model needs {} ({} split across nodes + {} replicated on each of {} nodes + "
            "reserve {} each{}) but the {} usable nodes have {}",
            gib(need - usable), gib(need), gib(x.split_mem), gib(double(x.fixed.total())), used, gib(double(x.req.reserve)),
            iter > 0 ? " + KV heads held twice and rounding" : "", used, gib(usable));
        return o;
      }
      t = water_fill(fill, x.split_read);
    } else {
      t = fixed_targets;
    }
    Plan p = skeleton(x, mode);
    std::vector<int> ranked = assign_ranks(p, t, notes);
    if (ranked.empty()) fail("no node has a positive share");
    Stage st{{0, x.c.num_layers}, {}};
    std::vector<double> rt;
    for (int i : ranked) {
      st.ranks.push_back(p.nodes[size_t(i)].rank);
      rt.push_back(t[size_t(i)]);
    }
    p.stages = {st};
    split_tensor_dims(x, p, rt);

    bool dropped = false;
    for (size_t j = 0; j < ranked.size(); ++j) {
      std::string dim = empty_dimension(p, j);
      if (dim.empty()) continue;
      const NodeSpec& node = x.req.nodes[size_t(ranked[j])];
      if (!adaptive)
        return {false, {}, fmt::format("{} cannot get a non-empty legal share of the {}: its target {:.2f}% rounds to no whole unit in any layer", node.name, dim, 100.0 * t[size_t(ranked[j])]), 0.0};
      left_out[size_t(ranked[j])] = true;
      notes[size_t(ranked[j])] = fmt::format("left out: its share ({:.3f}%) is too small for one unit of the {}", 100.0 * t[size_t(ranked[j])], dim);
      dropped = true;
      break;
    }
    if (dropped) continue;

    o.time = fill_usage(x, p);
    if (const NodePlan* over = first_over_budget(p); over) {
      if (!adaptive) return {false, {}, usage_text(*over), 0.0};
      // Shrink the cap of every node over budget by its excess (plus a little) and plan again.
      for (const NodePlan& np : p.nodes)
        if (np.rank >= 0 && np.usage.total() > np.spec.memory)
          extra[size_t(&np - p.nodes.data())] += double(np.usage.total() - np.spec.memory) + 1e-4 * x.split_mem;
      continue;
    }
    o.ok = true;
    o.plan = std::move(p);
    return o;
  }
  o.why = "rounding did not converge to a split where every node fits";
  return o;
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
    return {false, {}, fmt::format("the model needs {} (weights {}, KV cache {}, state {}, reserve {}) but the largest node has {}: {} short",
                                   gib(need), gib(double(x.full.weights)), gib(double(x.full.kv_cache)), gib(double(x.full.state)),
                                   gib(double(x.req.reserve)), gib(double(largest)), gib(need - double(largest))), 0.0};
  }
  std::vector<double> t(n, 0.0);
  t[size_t(best)] = 1.0;
  Outcome o = tensor_attempt(x, PlanMode::Single, t);
  for (NodePlan& np : o.plan.nodes)
    if (np.rank < 0) np.note = "left out: single-node mode runs on one node";
  return o;
}

// Pipeline: contiguous layers per node, sized by water-filling on memory and speed, rounded to whole layers
// within what each stage can hold. The first stage holds the embedding, the last the final norm and head.
Outcome pipeline_attempt(const Ctx& x, std::vector<double> fixed_targets) {
  const ModelConfig& c = x.c;
  const size_t n = x.req.nodes.size();
  const int64_t L = c.num_layers;
  const RankSlices all = single_rank_slices(c);
  std::vector<double> layer_mem(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    RankSlices s = all;
    s.layers = {l, l + 1};
    s.has_embedding = s.has_output = false;
    layer_mem[size_t(l)] = double(rank_usage(c, s, x.req.cost).total());
  }
  RankSlices ends = all;
  ends.layers = {0, 0};
  ends.has_output = false;
  const double emb_mem = double(rank_usage(c, ends, x.req.cost).total());
  ends.has_embedding = false;
  ends.has_output = true;
  const Usage out_usage = rank_usage(c, ends, x.req.cost);
  double total_mem = emb_mem + double(out_usage.total()), total_read = out_usage.read;
  for (int64_t l = 0; l < L; ++l) total_mem += layer_mem[size_t(l)];
  total_read += x.full.read - out_usage.read;  // layers and the embedding's row

  std::vector<bool> left_out(n, false);
  std::vector<std::string> notes(n);
  Outcome o;
  for (int round = 0; round <= int(n); ++round) {
    std::vector<double> t(n, 0.0);
    if (!fixed_targets.empty()) {
      t = fixed_targets;
    } else {
      std::vector<FillNode> fill(n);
      double caps = 0, usable = 0;
      for (size_t i = 0; i < n; ++i) {
        if (left_out[i]) continue;
        double budget = std::max(0.0, double(x.req.nodes[i].memory) - double(x.req.reserve));
        fill[i] = {budget / total_mem, 0.0, x.bandwidth[i]};
        caps += fill[i].cap;
        usable += budget;
      }
      if (caps < 1.0)
        return {false, {}, fmt::format("the layers, embedding and head need {} but the nodes have {} after reserves: {} short",
                                       gib(total_mem), gib(usable), gib(total_mem - usable)), 0.0};
      t = water_fill(fill, total_read);
    }
    // Each stage ends where the running memory comes closest to the running target, within what the stage
    // can hold and leaving no more than the later stages can hold.
    std::vector<size_t> ranked;
    for (size_t i = 0; i < n; ++i)
      if (t[i] > 0) ranked.push_back(i);
    const size_t m = ranked.size();
    std::vector<double> cap(m);  // bytes each stage can give to layers (after reserve, embedding, head)
    for (size_t k = 0; k < m; ++k)
      cap[k] = double(x.req.nodes[ranked[k]].memory) - double(x.req.reserve) - (k == 0 ? emb_mem : 0.0) -
               (k + 1 == m ? double(out_usage.total()) : 0.0);
    std::vector<double> prefix(size_t(L) + 1, 0.0);  // memory of layers [0, l)
    for (int64_t l = 0; l < L; ++l) prefix[size_t(l) + 1] = prefix[size_t(l)] + layer_mem[size_t(l)];
    std::vector<int64_t> ends_at;
    double target_cum = 0;
    int64_t begin = 0;
    for (size_t k = 0; k < m; ++k) {
      target_cum += t[ranked[k]] * total_mem;
      double later = 0;
      for (size_t j = k + 1; j < m; ++j) later += std::max(0.0, cap[j]);
      int64_t lo = begin, hi = begin;  // feasible ends: lo..hi
      while (hi < L && prefix[size_t(hi) + 1] - prefix[size_t(begin)] <= cap[k]) ++hi;
      while (lo < L && prefix[size_t(L)] - prefix[size_t(lo)] > later) ++lo;
      if (k + 1 == m) lo = L;
      if (lo > hi) {
        const NodeSpec& node = x.req.nodes[ranked[k]];
        return {false, {}, fmt::format("no whole-layer boundary fits: {} would need layers {}-{} ({}) with room for {}", node.name, begin,
                                       lo - 1, gib(prefix[size_t(lo)] - prefix[size_t(begin)]), gib(std::max(0.0, cap[k]))), 0.0};
      }
      int64_t best = lo;
      for (int64_t e = lo; e <= hi; ++e)
        if (std::fabs(emb_mem + prefix[size_t(e)] - target_cum) < std::fabs(emb_mem + prefix[size_t(best)] - target_cum)) best = e;
      ends_at.push_back(best);
      begin = best;
    }
    // A stage without layers: its node is left out (or, with explicit shares, the request is impossible).
    bool dropped = false;
    for (size_t k = 0; k < ranked.size(); ++k) {
      int64_t begin = k == 0 ? 0 : ends_at[k - 1];
      if (ends_at[k] > begin) continue;
      if (!fixed_targets.empty())
        return {false, {}, fmt::format("{}'s share {:.2f}% of {} layers rounds to no whole layer", x.req.nodes[ranked[k]].name,
                                       100.0 * t[ranked[k]], L), 0.0};
      left_out[ranked[k]] = true;
      notes[ranked[k]] = fmt::format("left out: its share ({:.2f}%) is less than one layer", 100.0 * t[ranked[k]]);
      dropped = true;
      break;
    }
    if (dropped) continue;

    Plan p = skeleton(x, PlanMode::Pipeline);
    assign_ranks(p, t, notes);
    p.layers.assign(size_t(L), {});
    for (int64_t l = 0; l < L; ++l) {
      LayerSplit& ls = p.layers[size_t(l)];
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
    auto set_stages = [&] {
      p.stages.clear();
      for (size_t k = 0; k < ranked.size(); ++k)
        p.stages.push_back({{k == 0 ? 0 : ends_at[k - 1], ends_at[k]}, {int(k)}});
    };
    set_stages();
    o.time = fill_usage(x, p);
    if (const NodePlan* over = first_over_budget(p)) return {false, {}, usage_text(*over), 0.0};
    o.ok = true;
    o.plan = std::move(p);
    return o;
  }
  o.why = "no node can hold a whole layer";
  return o;
}

double ms(double s) { return s * 1e3; }

std::string time_text(const Ctx& x, double t) {
  // Unknown bandwidths: the same assumed bandwidth everywhere, so the time is the bytes read.
  return x.bandwidth_known ? fmt::format("{:.2f} ms/token", ms(t)) : fmt::format("{:.2f} GB read per token", t * kAssumedBandwidth);
}

void add_left_out_reasons(Plan& p) {
  for (const NodePlan& n : p.nodes)
    if (n.rank < 0 && !n.note.empty()) p.reasons.push_back(fmt::format("{}: {}", n.spec.name, n.note));
}

std::vector<double> normalized(const std::vector<double>& split, size_t n) {
  if (split.size() != n) fail("--split has {} shares but there are {} nodes", split.size(), n);
  double sum = 0;
  for (double s : split) {
    if (!(s >= 0) || !std::isfinite(s)) fail("--split shares must be non-negative numbers, got {}", s);
    sum += s;
  }
  if (sum <= 0) fail("--split shares must not all be zero");
  std::vector<double> t;
  for (double s : split) t.push_back(s / sum);
  return t;
}

Plan finish(Outcome o, const std::string& mode_reason) {
  if (!o.ok) fail("{}", o.why);
  o.plan.reasons.insert(o.plan.reasons.begin(), mode_reason);
  add_left_out_reasons(o.plan);
  o.plan.hash = plan_content_hash(plan_to_json(o.plan));
  return std::move(o.plan);
}

}  // namespace

Plan make_plan(const ModelConfig& c, const PlanRequest& req) {
  const size_t n = req.nodes.size();
  if (n == 0) fail("no nodes given: a plan needs at least one node (--nodes 128G,48G)");
  if (req.cost.context <= 0) fail("context length must be positive, got {}", req.cost.context);
  if (req.cost.context > c.max_position)
    fail("context length {} exceeds the model's limit of {} tokens (max_position_embeddings)", req.cost.context, c.max_position);
  if (req.cost.batch <= 0) fail("batch size must be positive, got {}", req.cost.batch);
  if (req.kernel_width <= 0) fail("kernel width must be positive, got {}", req.kernel_width);
  if (req.cost.kv_bytes <= 0) fail("KV-cache element size must be positive, got {}", req.cost.kv_bytes);
  int known = 0;
  double known_sum = 0;
  for (const NodeSpec& s : req.nodes) {
    if (s.memory == 0) fail("{} has no memory (0 bytes)", s.name);
    if (s.bandwidth < 0 || !std::isfinite(s.bandwidth)) fail("{} has bandwidth {} GB/s; it must be positive", s.name, s.bandwidth);
    if (s.bandwidth > 0) ++known, known_sum += s.bandwidth;
  }

  Ctx x{c, req, alignment_for(c, req), {}, known == int(n), {}, {}, 0, 0};
  // Unknown bandwidths: all equal when none is known, else the mean of the known ones.
  for (const NodeSpec& s : req.nodes)
    x.bandwidth.push_back(s.bandwidth > 0 ? s.bandwidth : known > 0 ? known_sum / known : kAssumedBandwidth);
  x.full = rank_usage(c, single_rank_slices(c), req.cost);
  x.fixed = rank_usage(c, empty_split_slices(c), req.cost);
  x.split_mem = double(x.full.total()) - double(x.fixed.total());
  x.split_read = x.full.read - x.fixed.read;

  PlanMode mode = req.mode;
  const bool explicit_split = !req.split.empty();
  if (explicit_split && (mode == PlanMode::Equal || mode == PlanMode::Single))
    fail("--split gives explicit shares; it cannot be combined with --mode {}", mode_name(mode));
  if (mode == PlanMode::Auto && explicit_split) mode = PlanMode::Tensor;
  if (mode == PlanMode::Auto && n == 1) mode = PlanMode::Single;

  switch (mode) {
    case PlanMode::Single: return finish(single_attempt(x), "single node: the whole model on one node, as asked");
    case PlanMode::Equal: return finish(tensor_attempt(x, PlanMode::Equal, std::vector<double>(n, 1.0 / double(n))), "equal tensor parallelism, as asked");
    case PlanMode::Tensor:
      return finish(tensor_attempt(x, PlanMode::Tensor, explicit_split ? normalized(req.split, n) : std::vector<double>{}),
                    explicit_split ? "asymmetric tensor parallelism with the shares given by --split" : "asymmetric tensor parallelism, as asked");
    case PlanMode::Pipeline:
      return finish(pipeline_attempt(x, explicit_split ? normalized(req.split, n) : std::vector<double>{}), "pipeline, as asked");
    case PlanMode::Auto: break;
  }

  Outcome equal = tensor_attempt(x, PlanMode::Equal, std::vector<double>(n, 1.0 / double(n)));
  Outcome asym = tensor_attempt(x, PlanMode::Tensor, {});
  Outcome pipe = pipeline_attempt(x, {});
  Outcome single = single_attempt(x);
  std::vector<std::string> rejected;
  std::string reason;
  Outcome chosen;
  if (equal.ok && (!asym.ok || equal.time <= asym.time * (1.0 + kEqualTolerance))) {
    reason = fmt::format("equal tensor parallelism: an equal share fits every node{}",
                         asym.ok ? " and the asymmetric split would not be faster (within 1%)" : "");
    if (asym.ok) rejected.push_back("asymmetric tensor: no faster than the equal split");
    chosen = std::move(equal);
  } else if (asym.ok) {
    reason = equal.ok ? fmt::format("asymmetric tensor parallelism: {:.1f}% faster than the equal split, whose slowest node sets the pace",
                                    100.0 * (equal.time / asym.time - 1.0))
                      : "asymmetric tensor parallelism: the equal split does not fit, the cluster does";
    rejected.push_back(equal.ok ? fmt::format("equal: fits but slower ({} vs {})", time_text(x, equal.time), time_text(x, asym.time))
                                : "equal: " + equal.why);
    chosen = std::move(asym);
  } else if (pipe.ok) {
    reason = "pipeline: no tensor-parallel split fits (KV heads and replicated tensors held on several nodes cost too much), contiguous layers do";
    rejected.push_back("equal: " + equal.why);
    rejected.push_back("asymmetric tensor: " + asym.why);
    chosen = std::move(pipe);
  } else {
    fail("the model does not fit on these {} nodes in any mode: {}", n, asym.why);
  }
  if (chosen.plan.mode != PlanMode::Pipeline)
    rejected.push_back(pipe.ok ? fmt::format("pipeline: fits, but {} vs {} (stages run one after another)", time_text(x, pipe.time),
                                             time_text(x, chosen.time))
                               : "pipeline: " + pipe.why);
  rejected.push_back(single.ok ? fmt::format("single node: fits on {}, but {} vs {} (communication is not modelled)",
                                             single.plan.nodes[size_t(std::find_if(single.plan.nodes.begin(), single.plan.nodes.end(),
                                                                                   [](const NodePlan& np) { return np.rank == 0; }) -
                                                                      single.plan.nodes.begin())].spec.name,
                                             time_text(x, single.time), time_text(x, chosen.time))
                               : "single node: " + single.why);
  for (const std::string& r : rejected) chosen.plan.reasons.push_back("rejected " + r);
  return finish(std::move(chosen), reason);
}

}  // namespace uneven
