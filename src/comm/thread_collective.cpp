// An in-process collective group: ranks are threads that meet at a barrier and share one buffer.
#include <barrier>
#include <cstring>

#include "comm/collective.h"
#include "util/error.h"

namespace uneven {
namespace {

struct SharedState {
  explicit SharedState(int n) : size(n), sync(n), slots(size_t(n), nullptr) {}
  int size;
  std::barrier<> sync;
  std::vector<const void*> slots;  // each rank's input pointer for the current operation
};

class ThreadCollective final : public Collective {
 public:
  ThreadCollective(std::shared_ptr<SharedState> state, int rank) : state_(std::move(state)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return state_->size; }

  void all_reduce_sum(float* data, int64_t count) override {
    // Every rank sums all inputs in rank order into a private buffer, so all ranks get identical bits;
    // inputs must stay untouched until everyone has read them (second barrier).
    publish(data);
    scratch_.assign(size_t(count), 0.0f);
    for (int r = 0; r < size(); ++r) {
      const float* src = static_cast<const float*>(state_->slots[size_t(r)]);
      for (int64_t i = 0; i < count; ++i) scratch_[size_t(i)] += src[i];
    }
    state_->sync.arrive_and_wait();
    std::memcpy(data, scratch_.data(), size_t(count) * sizeof(float));
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= size()) fail("broadcast from rank {} in a group of {} ranks", root, size());
    publish(data);
    if (rank_ != root) std::memcpy(data, state_->slots[size_t(root)], size_t(bytes));
    state_->sync.arrive_and_wait();
  }

  void all_gather(const float* local, const std::vector<int64_t>& counts, float* out) override {
    if (int(counts.size()) != size()) fail("all_gather with {} counts in a group of {} ranks", counts.size(), size());
    publish(local);
    int64_t at = 0;
    for (int r = 0; r < size(); ++r) {
      // A rank may contribute nothing (an empty vocabulary share), and then its pointer may be null.
      if (counts[size_t(r)] > 0 && (r != rank_ || out + at != local))
        std::memmove(out + at, state_->slots[size_t(r)], size_t(counts[size_t(r)]) * sizeof(float));
      at += counts[size_t(r)];
    }
    state_->sync.arrive_and_wait();
  }

  void barrier() override { state_->sync.arrive_and_wait(); }
  std::string name() const override { return "threads"; }

 private:
  void publish(const void* p) {
    state_->slots[size_t(rank_)] = p;
    state_->sync.arrive_and_wait();
  }

  std::shared_ptr<SharedState> state_;
  int rank_;
  std::vector<float> scratch_;
};

}  // namespace

std::vector<std::unique_ptr<Collective>> make_thread_group(int size) {
  if (size < 1) fail("a thread group needs at least 1 rank, got {}", size);
  auto state = std::make_shared<SharedState>(size);
  std::vector<std::unique_ptr<Collective>> group;
  for (int r = 0; r < size; ++r) group.push_back(std::make_unique<ThreadCollective>(state, r));
  return group;
}

}  // namespace uneven
