// Shared by the planner's translation units (modes, pipeline, tensor): the planning context and helpers.
#pragma once
#include <string>
#include <vector>

#include "plan/plan.h"

namespace uneven::planner {

// Stands in for unknown bandwidths: with every node equal only ratios of times matter, and none is shown.
constexpr double kAssumedBandwidth = 100.0;

// Everything one make_plan call derives once from the config and the request.
struct Ctx {
  const ModelConfig& c;
  const PlanRequest& req;
  Alignment align;
  std::vector<double> bandwidth;  // GB/s used for times (unknown ones filled in)
  bool bandwidth_known = false;
  Usage full;   // everything on one rank
  Usage fixed;  // what every tensor-parallel rank holds whatever its share (norms, router, gates)
  double split_mem = 0, split_read = 0;  // bytes held / read per token of what is split (full - fixed)
};

struct Outcome {
  bool ok = false;
  Plan plan;
  std::string why;    // when !ok: the constraint and the numbers
  double time = 0.0;  // predicted seconds per token (with assumed bandwidths when unknown)
};

inline Outcome failed(std::string why) { return {false, {}, std::move(why), 0.0}; }

std::string gib(double bytes);
Plan skeleton(const Ctx& x, PlanMode mode);
// Numbers ranks (nodes with a positive target, in request order), records targets and notes; returns the
// request indices of the ranked nodes.
std::vector<int> assign_ranks(Plan& p, const std::vector<double>& t, const std::vector<std::string>& notes);
// Fills usage and time of every rank; returns the plan's predicted time (tensor: slowest rank; pipeline:
// stages one after another).
double fill_usage(const Ctx& x, Plan& p);
std::string usage_text(const NodePlan& n);
const NodePlan* first_over_budget(const Plan& p);

// The modes. Fixed targets (equal, --split, single) are used as given; empty ones are planned. `excluded`
// nodes (request order) are left out with the note given.
Outcome tensor_attempt(const Ctx& x, PlanMode mode, const std::vector<double>& fixed_targets,
                       const std::vector<std::string>& excluded = {});
Outcome single_attempt(const Ctx& x);
Outcome pipeline_attempt(const Ctx& x, const std::vector<double>& fixed_targets);

}  // namespace uneven::planner
