// Loading a model for a run on one rank or many: the shared start of `generate` and `bench`.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>

#include "cli/model_options.h"
#include "comm/collective.h"
#include "comm/peer_watchdog.h"
#include "runtime/cluster.h"

namespace uneven::cli {

struct DistributedOptions {
  int ranks = 1;  // > 1 and not under mpirun: start mpirun with this many local ranks
  double peer_timeout_s = 5.0;  // a rank silent this long is lost and the job ends (0: never)
  ClusterOptions cluster;
  void add_to(CLI::App& cmd);
};

struct Run {
  std::unique_ptr<Collective> comm;
  std::unique_ptr<PeerWatchdog> watchdog;  // multi-rank runs: ends the job when a rank goes silent
  ModelFiles files;
  RankSetup setup;
  std::unique_ptr<Model> model;
  uint64_t resident_weight_bytes = 0;  // growth of the resident set while the weights were loaded
  uint64_t file_bytes_read = 0;        // tensor bytes this rank read or mapped from its model files
  uint64_t os_file_bytes_loaded = 0;   // the kernel's count while loading: pread bytes + mapped file pages
  bool leader() const { return comm->rank() == 0; }
};

// Opens the model on this rank and, under mpirun, sets up the cluster (plan, checks) before loading
// this rank's slices. Single process: everything on one rank.
Run start_run(const ModelOptions& model, const DistributedOptions& dist, bool need_tokenizer);

// This rank's --mem entry (0 when --mem is not given): on a GPU rank, the cap of its device memory.
uint64_t gpu_memory_cap(const DistributedOptions& dist, const Collective& comm);

// Runs a subcommand body: relaunches under mpirun for --ranks N; under MPI, an error on any rank is
// printed with the rank's number and ends the whole job (no rank is left waiting).
int run_distributed(const DistributedOptions& dist, const std::function<int()>& body);

}  // namespace uneven::cli
