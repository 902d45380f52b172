// Choosing each rank's backend (CPU or a GPU) and, for all-GPU runs, the NCCL collective.
#include "cli/compute_setup.h"

#include <cstdlib>
#include <vector>

#include "compute/kernels.h"
#include "util/error.h"
#ifdef UNEVEN_HAS_CUDA
#include <cuda_runtime_api.h>

#include "comm/nccl_collective.h"
#include "compute/cuda/cuda_backend.h"
#endif

namespace uneven::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    const size_t comma = s.find(',', at);
    out.push_back(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) return out;
    at = comma + 1;
  }
}

std::string entry_for(const std::string& spec, int rank, int world_size) {
  const std::vector<std::string> entries = split_list(spec.empty() ? "cpu" : spec);
  if (entries.size() == 1) return entries[0];
  if (int(entries.size()) != world_size)
    fail("--device lists {} devices but the run has {} ranks (give one for all, or one per rank)", entries.size(),
         world_size);
  return entries[size_t(rank)];
}

}  // namespace

DeviceChoice choose_device(const std::string& spec, int rank, int world_size) {
  const std::string e = entry_for(spec, rank, world_size);
  DeviceChoice d;
  if (e == "cpu") return d;
  if (e != "cuda" && e.rfind("cuda:", 0) != 0)
    fail("--device '{}' is not cpu, cuda or cuda:N", e);
#ifndef UNEVEN_HAS_CUDA
  fail("--device {}: this build has no CUDA backend (configure with -DUNEVEN_CUDA=ON, see scripts/build_cuda.sh)", e);
#else
  d.cuda = true;
  const int count = cuda_device_count();
  if (count == 0) fail("--device {}: rank {} sees no CUDA device", e, rank);
  if (e == "cuda") {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    d.index = (local ? std::atoi(local) : 0) % count;
  } else {
    char* end = nullptr;
    const long n = std::strtol(e.c_str() + 5, &end, 10);
    if (*end != '\0' || end == e.c_str() + 5 || n < 0) fail("--device '{}': the GPU index is not a number", e);
    if (n >= count) fail("--device {}: rank {} sees only {} CUDA device(s)", e, rank, count);
    d.index = int(n);
  }
  return d;
#endif
}

bool all_ranks_on_gpu(const std::string& spec, int world_size) {
  for (int r = 0; r < world_size; ++r) {
    const std::string e = entry_for(spec, r, world_size);
    if (e == "cpu") return false;
  }
  return true;
}

bool mixed_devices(const std::string& spec, int world_size) {
  bool cpu = false, gpu = false;
  for (int r = 0; r < world_size; ++r) (entry_for(spec, r, world_size) == "cpu" ? cpu : gpu) = true;
  return cpu && gpu;
}

double device_read_bandwidth_gbps(const DeviceChoice& device, int threads) {
  if (!device.cuda) {
    ThreadPool pool(threads);
    return kernels::measure_read_bandwidth(pool, size_t(256) << 20, 3) / 1e9;
  }
#ifdef UNEVEN_HAS_CUDA
  return cuda_copy_bandwidth(device.index) / 1e9;
#else
  fail("no CUDA backend in this build (asked for the bandwidth of GPU {})", device.index);
#endif
}

uint64_t gpu_free_memory(int index) {
#ifdef UNEVEN_HAS_CUDA
  size_t free_bytes = 0, total = 0;
  if (cudaSetDevice(index) != cudaSuccess || cudaMemGetInfo(&free_bytes, &total) != cudaSuccess)
    fail("cannot read the free memory of CUDA device {}", index);
  return free_bytes;
#else
  fail("no CUDA backend in this build (asked for the memory of GPU {})", index);
#endif
}

Compute make_compute(const ModelOptions& options, Run& run, ThreadPool& pool, uint64_t memory_cap) {
  Compute c;
  const std::string& device_spec = options.device;
  const DeviceChoice d = choose_device(device_spec, run.comm->rank(), run.comm->size());
  c.session_comm = run.comm.get();
  if (!d.cuda) {
    c.backend = make_cpu_backend(pool);
    return c;
  }
#ifdef UNEVEN_HAS_CUDA
  const std::optional<PromptPrecision> precision = prompt_precision_from_name(options.gpu_prompt_precision);
  if (!precision) fail("--gpu-prompt-precision '{}' is not fp32, split-bf16 or bf16", options.gpu_prompt_precision);
  c.backend = make_cuda_backend(run.model->resident_weights(), d.index, memory_cap, *precision);
  if (run.comm->size() > 1 && all_ranks_on_gpu(device_spec, run.comm->size())) {
    c.device_comm = make_nccl_collective(*run.comm, d.index);
    c.session_comm = c.device_comm.get();
  }
#endif
  return c;
}

}  // namespace uneven::cli
