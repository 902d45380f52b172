// Bringing up a multi-rank run: exchange node facts, plan on rank 0, broadcast and verify the plan.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "plan/cost.h"
#include "plan/plan.h"
#include <vector>

#include "comm/collective.h"
#include "engine/model_files.h"
#include "plan/cost.h"
#include "plan/rank_slices.h"

namespace uneven {

struct ClusterOptions {
  std::string mem;        // "6G,2G,1G": simulated budgets, one per rank; empty: each rank's MemAvailable
  uint64_t gpu_memory = 0;  // this rank computes on a GPU with this much free memory (0: on the CPU)
  std::string bandwidth;  // "546,273" GB/s per rank; "measure"; empty: measured_bandwidth_gbps, else unknown
  double measured_bandwidth_gbps = 0;  // this rank's, measured at start (0: not measured: see start_run)
  std::string split;      // "5,2,1": explicit target shares
  std::string mode = "auto";  // auto | tensor | equal | pipeline
  std::string plan_file;  // a plan written by `uneven plan --json`; used instead of planning
  int64_t context = 4096;
  int64_t sequences = 1;  // sequences held at once (a server's batch), each with its own KV cache and state
  std::string reserve;    // "256M": memory kept free per rank for activations and the runtime; empty: default_reserve
  WeightFormat weights = parse_dtype("bf16");  // as stored in this model's files; set at start
  LinkSpec link;                               // as measured between the ranks at start
};

// What a rank knows after start-up.
struct RankSetup {
  RankSlices slices;
  std::string plan_json;  // the plan every rank verified (rank 0 prints it on request)
  double predicted_seconds_per_token = 0;
  std::vector<Usage> planned;  // per rank: the plan's weights, KV cache, state and reserve (its memory budget)
};

// A rank's own facts, as sent to rank 0. `open_error` is non-empty when this rank could not open its
// model files (the run then stops on every rank, naming this rank and the cause).
struct NodeFacts {
  int rank = 0;
  std::string host;
  uint64_t memory_bytes = 0;
  double bandwidth_gbps = 0;
  std::string open_error;
  std::string fingerprint;  // FilesFingerprint described
};

// Runs on every rank together. `files` is this rank's local copy of the model (null if opening failed,
// with the reason in `open_error`). Throws the same uneven::Error on every rank when any rank's files
// differ from rank 0's, any rank failed to open them, the plan cannot be made, or its hash is wrong.
RankSetup setup_cluster(Collective& comm, const ModelFiles* files, const std::string& open_error,
                        const ClusterOptions& options);

// Measures the link between the ranks (every rank calls it): the median all-reduce of `hidden` floats and
// the bandwidth of a 1 MiB broadcast from rank 0; rank 0's figures on every rank. One rank: nothing.
LinkSpec measure_link(Collective& comm, int64_t hidden);

// Every rank's string, in rank order, on every rank.
std::vector<std::string> all_gather_strings(Collective& comm, const std::string& mine);

}  // namespace uneven
