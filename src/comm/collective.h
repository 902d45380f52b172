// The collective group every rank's forward pass talks through: single process, MPI (and NCCL later).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace uneven {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place element-wise sum over all ranks; every rank ends with the same values.
  virtual void all_reduce_sum(float* data, int64_t count) = 0;
  // Copies `bytes` bytes from `root` to every rank.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // Gathers variable-length float blocks: rank r contributes counts[r] floats; result is the
  // concatenation in rank order (sum of counts) on every rank.
  virtual void all_gather(const float* local, const std::vector<int64_t>& counts, float* out) = 0;
  virtual void barrier() = 0;
  virtual std::string name() const = 0;
};

// One process, no communication: all-reduce and broadcast are no-ops.
std::unique_ptr<Collective> make_local_collective();

}  // namespace uneven
