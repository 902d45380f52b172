// make_plan: targets by water-filling, rounding with carry, fitting against memory, and the choice of mode.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <numeric>

#include "plan/planner_internal.h"
#include "util/error.h"

namespace uneven {
namespace planner {

std::string gib(double bytes) { return format_bytes(bytes); }

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
  p.link = x.req.link;
  p.comm = comm_cost(p, x.c, x.req.link);
  const double time = (p.stages.size() > 1 ? sum : slowest) + p.comm.seconds;
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

}  // namespace planner

namespace {
using namespace planner;

// Auto prefers the plainer equal split unless the asymmetric one is faster by more than this.
constexpr double kEqualTolerance = 0.01;

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

double ms(double s) { return s * 1e3; }

std::string time_text(const Ctx& x, double t) {
  // Unknown bandwidths: the same assumed bandwidth everywhere, so the time is the bytes read.
  return x.bandwidth_known ? fmt::format("{:.3g} ms/token", ms(t)) : format_bytes(t * kAssumedBandwidth * 1e9) + " read per token";
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

// Asymmetric tensor parallelism with planned shares. When no split over every node fits (each node holds
// whole KV heads and the replicated tensors, which many small nodes may not afford), the smallest nodes are
// left out one at a time, and the plan says so.
Outcome asymmetric_tensor(const Ctx& x) {
  Outcome all = tensor_attempt(x, PlanMode::Tensor, {});
  if (all.ok) return all;
  const size_t n = x.req.nodes.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x.req.nodes[a].memory < x.req.nodes[b].memory; });
  std::vector<std::string> excluded(n);
  for (size_t k = 0; k + 1 < n; ++k) {
    excluded[order[k]] = fmt::format("left out: with it no tensor-parallel split fits ({}); without the {} smallest node(s) one does", all.why, k + 1);
    Outcome o = tensor_attempt(x, PlanMode::Tensor, {}, excluded);
    if (o.ok) return o;
  }
  return all;
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
      return finish(explicit_split ? tensor_attempt(x, PlanMode::Tensor, normalized(req.split, n)) : asymmetric_tensor(x),
                    explicit_split ? "asymmetric tensor parallelism with the shares given by --split" : "asymmetric tensor parallelism, as asked");
    case PlanMode::Pipeline:
      return finish(pipeline_attempt(x, explicit_split ? normalized(req.split, n) : std::vector<double>{}), "pipeline, as asked");
    case PlanMode::Auto: break;
  }

  Outcome equal = tensor_attempt(x, PlanMode::Equal, std::vector<double>(n, 1.0 / double(n)));
  Outcome asym = asymmetric_tensor(x);
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
  // Over a slow link the per-layer syncs of tensor parallelism can cost more than a pipeline's idle stages.
  if (chosen.plan.mode != PlanMode::Pipeline && pipe.ok && x.req.link.modelled() && pipe.time < chosen.time) {
    rejected.clear();
    rejected.push_back(fmt::format("{}: fits, but {} vs {} over this link ({} all-reduces per token, {} of "
                                   "communication vs the pipeline's {})",
                                   mode_name(chosen.plan.mode), time_text(x, chosen.time), time_text(x, pipe.time),
                                   chosen.plan.comm.syncs, fmt::format("{:.3g} ms", ms(chosen.plan.comm.seconds)),
                                   fmt::format("{:.3g} ms", ms(pipe.plan.comm.seconds))));
    reason = fmt::format("pipeline: over this link ({:.0f} us per all-reduce) it is faster than tensor parallelism, "
                         "whose per-layer syncs cost more than the stages' idle time",
                         x.req.link.all_reduce_s * 1e6);
    chosen = std::move(pipe);
  }
  if (chosen.plan.mode != PlanMode::Pipeline)
    rejected.push_back(pipe.ok ? fmt::format("pipeline: fits, but {} vs {} (stages run one after another)", time_text(x, pipe.time),
                                             time_text(x, chosen.time))
                               : "pipeline: " + pipe.why);
  rejected.push_back(single.ok ? fmt::format("single node: fits on {}, but {} vs {} (the other nodes' bandwidth unused)",
                                             single.plan.nodes[size_t(std::find_if(single.plan.nodes.begin(), single.plan.nodes.end(),
                                                                                   [](const NodePlan& np) { return np.rank == 0; }) -
                                                                      single.plan.nodes.begin())].spec.name,
                                             time_text(x, single.time), time_text(x, chosen.time))
                               : "single node: " + single.why);
  for (const std::string& r : rejected) chosen.plan.reasons.push_back("rejected " + r);
  return finish(std::move(chosen), reason);
}

}  // namespace uneven
