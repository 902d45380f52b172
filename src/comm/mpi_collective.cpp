// The MPI collective group (OpenMPI): one process per rank, started by mpirun.
#include <mpi.h>

#include <cstdlib>
#include <exception>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
// OpenMPI keeps what MPI_Init allocates until the process ends, and frees little of it at MPI_Finalize;
// its components also allocate lazily on a first collective call. Those blocks are not this program's
// leaks, so the leak checker ignores what is allocated inside MPI calls (this program allocates nothing there).
#define UNEVEN_IGNORE_LEAKS_HERE __lsan::ScopedDisabler ignore_mpi_leaks
// MPI_Finalize stops OpenMPI's helper threads and leaves some of their blocks unreferenced; the leak check
// runs just before it instead of at exit (later calls are no-ops).
#define UNEVEN_CHECK_LEAKS_NOW __lsan_do_leak_check()
#else
#define UNEVEN_IGNORE_LEAKS_HERE
#define UNEVEN_CHECK_LEAKS_NOW
#endif

#include "comm/collective.h"
#include "util/error.h"

namespace uneven {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("MPI {} failed: {}", what, std::string(text, size_t(len)));
}

class MpiCollective final : public Collective {
 public:
  MpiCollective() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // Only the main thread talks to MPI; the thread pool never does.
      int provided = 0;
      UNEVEN_IGNORE_LEAKS_HERE;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
      owns_init_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  // While an exception unwinds, other ranks may still be inside a collective: finalizing here could wait
  // for them forever. The error path ends MPI instead (abort_mpi_job, or finish_mpi when all ranks agree).
  ~MpiCollective() override {
    if (owns_init_ && std::uncaught_exceptions() == 0) finish_mpi();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* data, int64_t count) override {
    UNEVEN_IGNORE_LEAKS_HERE;
    check(MPI_Allreduce(MPI_IN_PLACE, data, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= size_) fail("broadcast from rank {} in a group of {} ranks", root, size_);
    UNEVEN_IGNORE_LEAKS_HERE;
    check(MPI_Bcast(data, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }
  void all_gather(const float* local, const std::vector<int64_t>& counts, float* out) override {
    if (int(counts.size()) != size_) fail("all_gather with {} counts in a group of {} ranks", counts.size(), size_);
    std::vector<int> n(counts.size()), displs(counts.size());
    int at = 0;
    for (size_t r = 0; r < counts.size(); ++r) {
      n[r] = int(counts[r]);
      displs[r] = at;
      at += n[r];
    }
    const void* send = out + displs[size_t(rank_)] == local ? MPI_IN_PLACE : local;
    UNEVEN_IGNORE_LEAKS_HERE;
    check(MPI_Allgatherv(send, n[size_t(rank_)], MPI_FLOAT, out, n.data(), displs.data(), MPI_FLOAT, MPI_COMM_WORLD),
          "all-gather");
  }
  void barrier() override {
    UNEVEN_IGNORE_LEAKS_HERE;
    check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
  }
  std::string name() const override { return "mpi"; }

 private:
  int rank_ = 0, size_ = 1;
  bool owns_init_ = false;
};

}  // namespace

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

void finish_mpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  UNEVEN_CHECK_LEAKS_NOW;
  UNEVEN_IGNORE_LEAKS_HERE;
  MPI_Finalize();
}

void abort_mpi_job(int exit_code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

std::unique_ptr<Collective> make_mpi_collective() { return std::make_unique<MpiCollective>(); }

}  // namespace uneven
