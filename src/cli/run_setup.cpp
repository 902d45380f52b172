// Shared start of multi-rank-capable subcommands: relaunch, open, plan, load.
#include "cli/run_setup.h"

#include <cstdio>
#include <cstdlib>

#include "cli/compute_setup.h"
#include "cli/launcher.h"
#include "engine/weight_format.h"
#include "runtime/node_info.h"
#include "util/error.h"

namespace uneven::cli {

void DistributedOptions::add_to(CLI::App& cmd) {
  cmd.add_option("--ranks", ranks, "start this many local ranks under mpirun (default 1)")->check(CLI::Range(1, 4096));
  cmd.add_option("--mem", cluster.mem, "per-rank memory budgets, e.g. 6G,2G,1G (default: each rank's free memory)");
  cmd.add_option("--bandwidth", cluster.bandwidth, "per-rank memory bandwidth in GB/s, e.g. 546,273, or `measure` (each rank measures its own at start; "
                 "the default when GPU and CPU ranks are mixed)");
  cmd.add_option("--split", cluster.split, "explicit target shares per rank, e.g. 5,2,1");
  cmd.add_option("--mode", cluster.mode, "auto | tensor | equal | pipeline")
      ->check(CLI::IsMember({"auto", "tensor", "equal", "pipeline"}));
  cmd.add_option("--reserve", cluster.reserve,
                 "memory kept free per rank for activations and the runtime, e.g. 256M (default: 1G, or an eighth "
                 "of the smallest rank's memory if less)");
  cmd.add_option("--peer-timeout", peer_timeout_s,
                 "seconds without a heartbeat from a rank before the job ends naming it (default 5; 0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--plan", cluster.plan_file, "use this plan (from `uneven plan --json`) instead of planning");
}

uint64_t gpu_memory_cap(const DistributedOptions& dist, const Collective& comm) {
  if (dist.cluster.mem.empty()) return 0;
  const std::vector<uint64_t> budgets = parse_sizes(dist.cluster.mem);
  if (int(budgets.size()) != comm.size())
    fail("--mem lists {} budgets but the run has {} ranks", budgets.size(), comm.size());
  return budgets[size_t(comm.rank())];
}

Run start_run(const ModelOptions& model_opts, const DistributedOptions& dist, bool need_tokenizer) {
  Run run;
  const bool distributed = launched_by_mpirun();
  run.comm = distributed ? make_mpi_collective() : make_local_collective();
  const bool leader = run.comm->rank() == 0;
  // From here on a rank that goes silent (link down, host frozen) ends the job within the timeout instead
  // of leaving the others in a collective forever.
  if (distributed && dist.peer_timeout_s > 0)
    run.watchdog = std::make_unique<PeerWatchdog>(*run.comm, PeerWatchdogOptions{0.25, dist.peer_timeout_s});
  if (!distributed) {
    run.files = open_model(model_opts.model_path, model_opts.open_options(need_tokenizer));
    run.setup.slices = single_rank_slices(run.files.config);
    // Alone there is no plan to check memory: at least the cache and state of every sequence must fit.
    CostModel cost;
    cost.context = model_opts.context_for(run.files.config);
    cost.batch = dist.cluster.sequences;
    cost.weights = stored_weight_format(run.files.config, *run.files.weights);
    Usage need = rank_usage(run.files.config, run.setup.slices, cost);
    const uint64_t available = available_memory_bytes();
    need.reserve = reserve_or_default(dist.cluster.reserve, {NodeSpec{"this machine", available, 0}});
    run.setup.planned = {need};  // the budget a one-rank plan would give it, for the memory report
    if (available > 0 && need.kv_cache + need.state > available)
      fail("{} sequence(s) at a context of {} tokens need {} of KV cache and state, but {} of memory is available; "
           "give a smaller --context{}", cost.batch, cost.context, format_bytes(double(need.kv_cache + need.state)),
           format_bytes(double(available)), cost.batch > 1 ? " or --max-batch" : "");
  } else {
    // Every rank opens its own local copy; a failure is reported through the cluster set-up so that all
    // ranks stop together with the same message.
    std::string open_error;
    try {
      run.files = open_model(model_opts.model_path, model_opts.open_options(need_tokenizer && leader));
    } catch (const Error& e) {
      open_error = e.what();
    }
    ClusterOptions cluster = dist.cluster;
    if (open_error.empty()) cluster.context = model_opts.context_for(run.files.config);
    const DeviceChoice device = choose_device(model_opts.device, run.comm->rank(), run.comm->size());
    if (device.cuda) cluster.gpu_memory = gpu_free_memory(device.index);
    // Ranks on different kinds of device (a GPU beside a CPU) differ in speed by 10-100x: the plan
    // splits by measured bandwidth unless given; between alike devices only when asked (`measure`), since
    // equal devices measured on a busy machine would split unevenly by noise.
    if (cluster.bandwidth == "measure" ||
        (cluster.bandwidth.empty() && mixed_devices(model_opts.device, run.comm->size())))
      cluster.measured_bandwidth_gbps = device_read_bandwidth_gbps(device, model_opts.threads);
    run.setup = setup_cluster(*run.comm, open_error.empty() ? &run.files : nullptr, open_error, cluster);
  }
  const uint64_t resident_before = resident_memory_bytes();
  const uint64_t read_before = process_read_bytes(), mapped_before = resident_file_bytes();
  run.model = std::make_unique<Model>(run.files.config, run.setup.slices, *run.files.weights,
                                      leader ? terminal_progress("loading") : LoadProgress{});
  // Mapped weights become resident when first read: touch every page once so the figure is honest.
  run.model->touch_weights();
  const uint64_t resident_after = resident_memory_bytes();
  run.resident_weight_bytes = resident_after > resident_before ? resident_after - resident_before : 0;
  run.file_bytes_read = run.files.tensors ? run.files.tensors->data_bytes_touched() : 0;
  // The kernel's count of the same thing, independent of the loader's bookkeeping: bytes read with
  // pread plus pages of mapped files touched while loading (every page of a mapping is touched above).
  run.os_file_bytes_loaded = (process_read_bytes() - read_before) + (resident_file_bytes() - mapped_before);
  return run;
}

int run_distributed(const DistributedOptions& dist, const std::function<int()>& body) {
  if (!launched_by_mpirun()) {
    if (dist.ranks > 1) return relaunch_under_mpirun(dist.ranks);
    return body();  // errors go to main()'s handler
  }
  const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const std::string rank = env_rank ? env_rank : "?";
  try {
    return body();
  } catch (const AgreedError& e) {
    // Every rank has the same message: rank 0 reports it, and all end MPI normally.
    if (rank == "0") {
      std::fprintf(stderr, "error: %s\n", e.what());
      std::fflush(stderr);
    }
    finish_mpi();
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: rank %s: %s\n", rank.c_str(), e.what());
    std::fflush(stderr);
    abort_mpi_job(1);
  }
}

}  // namespace uneven::cli
