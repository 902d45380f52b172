// The bridge from the planner to a run: plan for the nodes that reported, and read a rank's share back.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/cluster.h"

namespace uneven {

// Rank 0: the plan (as its versioned, hashed JSON text) for these nodes, or the plan file named in
// `options.plan_file` after checking that it fits this model and this number of ranks.
std::string make_cluster_plan_json(const ModelConfig& config, const std::vector<NodeFacts>& nodes,
                                   const ClusterOptions& options);

// Every rank: verifies the plan text's hash and that it is for this model and world size, then returns
// this rank's slices and the figures the bench prints.
RankSetup rank_setup_from_plan_json(const std::string& plan_json, const ModelConfig& config, int rank, int world_size);

}  // namespace uneven
