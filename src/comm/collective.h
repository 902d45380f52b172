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
  // True when the data pointers given to the operations above may (and must) be device memory of the
  // process's GPU (NCCL); otherwise they are host memory.
  virtual bool takes_device_buffers() const { return false; }
};

// One process, no communication: all-reduce and broadcast are no-ops.
std::unique_ptr<Collective> make_local_collective();

}  // namespace uneven

namespace uneven {

// N ranks as N threads of one process (tests, and trying splits without MPI): make_thread_group(n)
// returns one Collective per rank; each must be used from its own thread. Operations are blocking and
// must be called by every rank in the same order, as with MPI.
std::vector<std::unique_ptr<Collective>> make_thread_group(int size);

}  // namespace uneven

namespace uneven {

// True when this process was started by mpirun (OpenMPI / PMIx environment present).
bool launched_by_mpirun();
// Initialises MPI (once per process) and returns the world group.
std::unique_ptr<Collective> make_mpi_collective();

}  // namespace uneven

namespace uneven {

// Ends every rank of the MPI job now (after this rank printed why); used when one rank fails while the
// others may be waiting in a collective, so that nothing hangs.
[[noreturn]] void abort_mpi_job(int exit_code);

// Ends MPI normally (MPI_Finalize) if it was started and not yet ended; every rank must call it.
void finish_mpi();

}  // namespace uneven
