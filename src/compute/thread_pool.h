// A fixed pool of worker threads that runs one parallel-for at a time (the caller participates).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

namespace uneven {

class ThreadPool {
 public:
  // threads <= 0: the machine's hardware concurrency.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;
  // Calls fn(begin, end) on disjoint chunks covering [0, n), at most one chunk per thread (chunks are
  // contiguous and balanced; `grain` is the minimum chunk length). Blocks until all chunks are done.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uneven
