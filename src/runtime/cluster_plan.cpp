// Planning for the ranks that reported, and every rank's verification of the plan it receives.
#include "runtime/cluster_plan.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
std::string make_cluster_plan_json(const ModelConfig& config, const std::vector<NodeFacts>& nodes,
                                   const ClusterOptions& options) {
  if (!options.plan_file.empty()) {
    std::ifstream in(options.plan_file);
    if (!in) fail("{}: cannot open the plan file", options.plan_file);
    std::stringstream text;
    text << in.rdbuf();
    Plan plan = plan_from_json_text(text.str(), options.plan_file);
    validate_plan(plan, config);
    if (plan.world_size != int(nodes.size()))
      fail("{}: the plan is for {} ranks but {} ranks are running", options.plan_file, plan.world_size, nodes.size());
    // A plan made for other weight types may cut the files' quantization blocks.
    const int64_t g = options.weights.split_align();
    if (plan.align.columns % g != 0 || (plan.align.q_heads * config.head_dim) % g != 0 ||
        (config.linear_value_head_dim > 0 && (plan.align.linear_v_heads * config.linear_value_head_dim) % g != 0))
      fail("{}: the plan was made for {} weights (column unit {}, {} query heads per unit), but the model's files hold "
           "{} weights whose blocks of {} elements every split of an input dimension must keep whole; plan again for "
           "these files", options.plan_file, plan.cost.weights.name, plan.align.columns, plan.align.q_heads,
           options.weights.name, g);
    return plan_to_json_text(plan);
  }
  PlanRequest request;
  for (const NodeFacts& n : nodes)
    request.nodes.push_back({fmt::format("rank {} ({})", n.rank, n.host), n.memory_bytes, n.bandwidth_gbps});
  request.reserve = reserve_or_default(options.reserve, request.nodes);
  request.cost.weights = options.weights;
  request.cost.context = options.context;
  request.cost.batch = options.sequences;
  request.mode = parse_mode(options.mode);
  request.link = options.link;
  request.split = parse_positive_numbers(options.split, "--split");
  if (!request.split.empty() && request.split.size() != nodes.size())
    fail("--split lists {} shares but {} ranks are running", request.split.size(), nodes.size());
  Plan plan = make_plan(config, request);
  if (plan.world_size != int(nodes.size())) {
    std::string why;
    for (const NodePlan& n : plan.nodes)
      if (n.rank < 0) {
        const std::string_view note = n.note, prefix = "left out: ";
        why += fmt::format("; {} is left out: {}", n.spec.name, note.starts_with(prefix) ? note.substr(prefix.size()) : note);
      }
    fail("the plan uses {} of the {} running ranks{} (start fewer ranks)", plan.world_size, nodes.size(), why);
  }
  return plan_to_json_text(plan);
}

RankSetup rank_setup_from_plan_json(const std::string& plan_json, const ModelConfig& config, int rank, int world_size) {
  Plan plan = plan_from_json_text(plan_json, "the plan received from rank 0");
  validate_plan(plan, config);
  if (plan.world_size != world_size)
    fail("the plan is for {} ranks but {} ranks are running", plan.world_size, world_size);
  RankSetup setup;
  setup.slices = rank_slices(plan, config, rank);
  setup.plan_json = plan_json;
  setup.predicted_seconds_per_token = plan.time_s;
  for (int r = 0; r < world_size; ++r) setup.planned.push_back(plan.node_of_rank(r).usage);
  return setup;
}

}  // namespace uneven
