// Multi-rank start-up: every rank sends its facts, rank 0 checks them and plans, every rank verifies.
#include "runtime/cluster.h"

#include <algorithm>
#include <chrono>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "engine/weight_format.h"
#include "plan/cost.h"
#include "runtime/cluster_plan.h"
#include "runtime/node_info.h"
#include "util/error.h"

namespace uneven {

std::vector<std::string> all_gather_strings(Collective& comm, const std::string& mine) {
  std::vector<std::string> out(size_t(comm.size()));
  for (int root = 0; root < comm.size(); ++root) {
    std::string s = root == comm.rank() ? mine : std::string();
    int64_t length = int64_t(s.size());
    comm.broadcast(&length, sizeof length, root);
    s.resize(size_t(length));
    comm.broadcast(s.data(), length, root);
    out[size_t(root)] = std::move(s);
  }
  return out;
}

namespace {

std::string hostname() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

NodeFacts local_facts(const Collective& comm, const ModelFiles* files, const std::string& open_error,
                      const ClusterOptions& options) {
  NodeFacts f;
  f.rank = comm.rank();
  f.host = hostname();
  f.open_error = open_error;
  try {
    if (!options.mem.empty()) {
      const std::vector<uint64_t> budgets = parse_sizes(options.mem);
      if (int(budgets.size()) != comm.size())
        fail("--mem lists {} budgets but the run has {} ranks", budgets.size(), comm.size());
      f.memory_bytes = budgets[size_t(comm.rank())];
      if (options.gpu_memory > 0 && f.memory_bytes > options.gpu_memory)
        fail("--mem gives rank {} {:.2f} GB, but its GPU has only {:.2f} GB free", comm.rank(),
             double(f.memory_bytes) / 1e9, double(options.gpu_memory) / 1e9);
    } else {
      // A GPU rank holds its weights and cache in device memory; a CPU rank in host memory.
      f.memory_bytes = options.gpu_memory > 0 ? options.gpu_memory : available_memory_bytes();
    }
    if (options.bandwidth.empty() || options.bandwidth == "measure") {
      f.bandwidth_gbps = options.measured_bandwidth_gbps;
    } else {
      const std::vector<double> bw = parse_positive_numbers(options.bandwidth, "--bandwidth", "GB/s");
      if (int(bw.size()) != comm.size())
        fail("--bandwidth lists {} values but the run has {} ranks", bw.size(), comm.size());
      f.bandwidth_gbps = bw[size_t(comm.rank())];
    }
    if (files && files->tensors) f.fingerprint = fingerprint(*files->tensors).describe(files->tensors->paths());
  } catch (const std::exception& e) {
    if (f.open_error.empty()) f.open_error = e.what();
  }
  return f;
}

// The planner's name for the dtype the model's matrices are stored in (F16 is widened to F32 at load).

}  // namespace

LinkSpec measure_link(Collective& comm, int64_t hidden) {
  LinkSpec link;
  if (comm.size() < 2 || hidden <= 0) return link;
  auto now = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  std::vector<float> v(size_t(hidden), 0.0f);
  for (int i = 0; i < 3; ++i) comm.all_reduce_sum(v.data(), hidden);
  std::vector<double> times;
  for (int i = 0; i < 21; ++i) {
    const double t0 = now();
    comm.all_reduce_sum(v.data(), hidden);
    times.push_back(now() - t0);
  }
  std::vector<uint8_t> bulk(size_t(1) << 20);
  comm.broadcast(bulk.data(), int64_t(bulk.size()), 0);
  // The fastest of 5 bulk transfers: a rank descheduled during one (a busy machine) makes that one slow,
  // never fast, and a plan made on one slow sample would price every transfer as if the link were that slow.
  std::vector<double> bulk_times;
  for (int i = 0; i < 5; ++i) {
    comm.barrier();
    const double t0 = now();
    comm.broadcast(bulk.data(), int64_t(bulk.size()), 0);
    comm.barrier();
    bulk_times.push_back(now() - t0);
  }
  // The latency's median, then rank 0's figures for everyone (each rank timed its own view of the same exchanges).
  std::nth_element(times.begin(), times.begin() + 10, times.end());
  const double fastest_bulk = *std::min_element(bulk_times.begin(), bulk_times.end());
  double figures[2] = {times[10], double(bulk.size()) / fastest_bulk};
  comm.broadcast(figures, sizeof figures, 0);
  link.all_reduce_s = figures[0];
  link.bandwidth = figures[1];
  return link;
}

RankSetup setup_cluster(Collective& comm, const ModelFiles* files, const std::string& open_error,
                        const ClusterOptions& options) {
  // The link first (a few milliseconds): every rank takes part, at rank 0's hidden size (0 when rank 0
  // could not open its files: nothing is measured and the error below stops every rank).
  int64_t hidden = comm.rank() == 0 && files ? files->config.hidden_size : 0;
  comm.broadcast(&hidden, sizeof hidden, 0);
  const LinkSpec link = options.plan_file.empty() ? measure_link(comm, hidden) : LinkSpec{};
  NodeFacts mine = local_facts(comm, files, open_error, options);
  nlohmann::json mine_json = {{"rank", mine.rank},          {"host", mine.host},
                              {"memory", mine.memory_bytes}, {"bandwidth", mine.bandwidth_gbps},
                              {"error", mine.open_error},    {"fingerprint", mine.fingerprint}};
  std::vector<std::string> gathered = all_gather_strings(comm, mine_json.dump());

  // Rank 0 decides: either an error every rank reports, or the plan every rank loads.
  std::string verdict;  // JSON: {"error": ...} or {"plan": ...}
  if (comm.rank() == 0) {
    std::vector<NodeFacts> nodes;
    std::string problems;
    for (const auto& g : gathered) {
      auto j = nlohmann::json::parse(g);
      NodeFacts n;
      n.rank = j["rank"];
      n.host = j["host"];
      n.memory_bytes = j["memory"];
      n.bandwidth_gbps = j["bandwidth"];
      n.open_error = j["error"];
      n.fingerprint = j["fingerprint"];
      if (!n.open_error.empty())
        problems += fmt::format("\n  rank {} ({}): {}", n.rank, n.host, n.open_error);
      else if (n.rank != 0 && mine.open_error.empty() && n.fingerprint != mine.fingerprint)
        problems += fmt::format("\n  rank {} ({}) has different model files: {}\n    rank 0 has: {}", n.rank, n.host,
                                n.fingerprint, mine.fingerprint);
      nodes.push_back(std::move(n));
    }
    if (!problems.empty()) {
      verdict = nlohmann::json{{"error", "cannot start on " + std::to_string(comm.size()) + " ranks:" + problems}}.dump();
    } else {
      try {
        ClusterOptions planned = options;
        planned.weights = stored_weight_format(files->config, *files->weights);
        planned.link = link;
        verdict = nlohmann::json{{"plan", make_cluster_plan_json(files->config, nodes, planned)}}.dump();
      } catch (const Error& e) {
        verdict = nlohmann::json{{"error", std::string("cannot plan the split: ") + e.what()}}.dump();
      }
    }
  }
  int64_t length = int64_t(verdict.size());
  comm.broadcast(&length, sizeof length, 0);
  verdict.resize(size_t(length));
  comm.broadcast(verdict.data(), length, 0);
  auto decision = nlohmann::json::parse(verdict);
  if (decision.contains("error")) throw AgreedError(decision["error"].get<std::string>());

  // Every rank verifies the plan's hash and takes its own slices from it.
  RankSetup setup;
  setup.plan_json = decision["plan"].get<std::string>();
  std::string problem;
  try {
    if (!files) fail("no model files");
    setup = rank_setup_from_plan_json(setup.plan_json, files->config, comm.rank(), comm.size());
  } catch (const Error& e) {
    problem = e.what();
  }
  // Agree on success: a rank that rejects the plan stops everyone, naming itself.
  std::vector<std::string> problems = all_gather_strings(comm, problem);
  for (int r = 0; r < comm.size(); ++r)
    if (!problems[size_t(r)].empty())
      throw AgreedError(fmt::format("rank {} rejects the plan: {}", r, problems[size_t(r)]));
  return setup;
}

}  // namespace uneven
