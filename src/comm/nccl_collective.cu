// The NCCL Collective: all-reduce, broadcast, variable all-gather and barrier on device buffers.
//
// NCCL runs on its own stream, separate from the backend's; every call synchronizes that stream before
// returning (the engine treats collectives as blocking) and device buffers written by the backend are
// complete because the engine downloads / synchronizes before communicating. Known cost: one stream
// synchronization per collective, and no overlap of communication with compute.
#include "comm/nccl_collective.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>
#include <vector>

#include "util/error.h"

namespace uneven {
namespace {

void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess) fail("NCCL collective: {} failed: {}", call, cudaGetErrorString(e));
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(Collective& bootstrap, int device) : rank_(bootstrap.rank()), size_(bootstrap.size()), device_(device) {
    ncclUniqueId id{};
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    bootstrap.broadcast(&id, int64_t(sizeof(id)), 0);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    const ncclResult_t r = ncclCommInitRank(&comm_, size_, id, rank_);
    if (r != ncclSuccess) {
      cudaStreamDestroy(stream_);
      check(r, "ncclCommInitRank");
    }
    const cudaError_t e = cudaMalloc(&one_, sizeof(float));
    if (e != cudaSuccess) {
      ncclCommDestroy(comm_);
      cudaStreamDestroy(stream_);
      check_cuda(e, "cudaMalloc (barrier scratch)");
    }
    check_cuda(cudaMemset(one_, 0, sizeof(float)), "cudaMemset (barrier scratch)");
  }
  ~NcclCollective() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaFree(one_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool takes_device_buffers() const override { return true; }
  std::string name() const override {
    return "nccl (rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ", cuda:" + std::to_string(device_) + ")";
  }

  void all_reduce_sum(float* data, int64_t count) override {
    if (count <= 0) return;
    begin();
    check(ncclAllReduce(data, data, size_t(count), ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce");
    finish("all_reduce_sum");
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    if (bytes <= 0) return;
    if (root < 0 || root >= size_) fail("NCCL broadcast: root {} outside the {} ranks", root, size_);
    begin();
    check(ncclBroadcast(data, data, size_t(bytes), ncclChar, root, comm_, stream_), "ncclBroadcast");
    finish("broadcast");
  }
  // Variable counts: one broadcast per rank into its offset of `out`, fused into one NCCL group.
  void all_gather(const float* local, const std::vector<int64_t>& counts, float* out) override {
    if (int(counts.size()) != size_) fail("NCCL all_gather: {} counts for {} ranks", counts.size(), size_);
    begin();
    check(ncclGroupStart(), "ncclGroupStart");
    int64_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      if (counts[size_t(r)] > 0) {
        const ncclResult_t e = ncclBroadcast(r == rank_ ? local : nullptr, out + offset, size_t(counts[size_t(r)]),
                                             ncclFloat, r, comm_, stream_);
        if (e != ncclSuccess) {
          ncclGroupEnd();
          check(e, "ncclBroadcast (all_gather)");
        }
      }
      offset += counts[size_t(r)];
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    finish("all_gather");
  }
  void barrier() override {
    begin();
    check(ncclAllReduce(one_, one_, 1, ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce (barrier)");
    finish("barrier");
  }

 private:
  void check(ncclResult_t r, const char* call) const {
    if (r != ncclSuccess)
      fail("NCCL: {} failed on rank {} of {} (cuda:{}): {}", call, rank_, size_, device_, ncclGetErrorString(r));
  }
  void begin() const { check_cuda(cudaSetDevice(device_), "cudaSetDevice"); }
  void finish(const char* what) const {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) fail("NCCL {}: stream synchronization failed on rank {}: {}", what, rank_, cudaGetErrorString(e));
  }

  int rank_, size_, device_;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  float* one_ = nullptr;
};

}  // namespace

std::unique_ptr<Collective> make_nccl_collective(Collective& bootstrap, int device) {
  return std::make_unique<NcclCollective>(bootstrap, device);
}

}  // namespace uneven
