// Where a rank computes: `--device cpu|cuda|cuda:N` (or one entry per rank, e.g. cuda,cpu), the backend
// and the collective its session adds partial sums through (NCCL when every rank is on a GPU).
#pragma once
#include <memory>
#include <string>

#include "cli/run_setup.h"
#include "compute/backend.h"
#include "compute/thread_pool.h"

namespace uneven::cli {

struct DeviceChoice {
  bool cuda = false;
  int index = 0;  // the GPU of a cuda rank
};

// The entry of `spec` for this rank (one entry for all, or one per rank). "cuda" alone takes the GPU of
// the rank's local index on its host, modulo the GPUs it sees. Throws on a bad spec, a build without CUDA,
// or a GPU that is not there.
DeviceChoice choose_device(const std::string& spec, int rank, int world_size);
// True when every rank's entry of `spec` is a GPU.
bool all_ranks_on_gpu(const std::string& spec, int world_size);
// True when some ranks' entries of `spec` are GPUs and others the CPU: ranks of speeds far apart, which
// the planner must know to split by speed (memory alone would give a CPU rank as much as a GPU).
bool mixed_devices(const std::string& spec, int world_size);
// Free memory of a GPU in bytes (the budget a GPU rank plans with).
uint64_t gpu_free_memory(int index);
// The rate this rank's device reads memory at, GB/s, measured now in about a tenth of a second: the CPU's
// streaming read with `threads` threads (0: all cores) over 256 MiB, or the GPU's device copy rate.
double device_read_bandwidth_gbps(const DeviceChoice& device, int threads);

struct Compute {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Collective> device_comm;  // NCCL over run.comm, when every rank is on a GPU
  Collective* session_comm = nullptr;       // what the session sums through
};

// The backend of this rank for the loaded model (options.device; its weights copied to the GPU for cuda;
// `memory_cap` bytes, 0 = none, caps the GPU memory it may take) and the session's collective.
Compute make_compute(const ModelOptions& options, Run& run, ThreadPool& pool, uint64_t memory_cap);

}  // namespace uneven::cli
