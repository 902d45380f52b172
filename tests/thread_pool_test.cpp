// ThreadPool: every index covered exactly once, chunk shape, exceptions, nesting, reuse and teardown.
#include "compute/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace uneven {
namespace {

TEST(ThreadPool, SizeDefaultsToHardwareConcurrency) {
  ThreadPool pool;
  EXPECT_EQ(pool.size(), int(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(ThreadPool(3).size(), 3);
}

TEST(ThreadPool, CoversEveryIndexExactlyOnceInBalancedChunks) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 7, 100, 10007}) {
      for (int64_t grain : {1, 3, 1000}) {
        SCOPED_TRACE(testing::Message() << "threads " << threads << " n " << n << " grain " << grain);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::mutex m;
        std::vector<std::pair<int64_t, int64_t>> chunks;
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
              std::lock_guard<std::mutex> lock(m);
              chunks.emplace_back(b, e);
            },
            grain);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "index " << i;
        const int64_t expected_chunks = std::min<int64_t>(threads, std::max<int64_t>(1, n / grain));
        ASSERT_EQ(int64_t(chunks.size()), expected_chunks);
        for (auto [b, e] : chunks) {
          EXPECT_LT(b, e);
          if (expected_chunks > 1) {
            EXPECT_GE(e - b, grain);
          }
          EXPECT_LE(e - b, n / expected_chunks + 1);  // balanced
        }
      }
    }
  }
}

TEST(ThreadPool, ZeroAndNegativeLengthsCallNothing) {
  ThreadPool pool(3);
  int calls = 0;
  pool.parallel_for(0, [&](int64_t, int64_t) { ++calls; });
  pool.parallel_for(-5, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(ThreadPool, RethrowsAChunkExceptionInTheCallerAndStaysUsable) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t bad : {int64_t(0), int64_t(999)}) {  // caller's chunk and (usually) a worker's
      EXPECT_THROW(pool.parallel_for(1000,
                                     [&](int64_t b, int64_t e) {
                                       if (b <= bad && bad < e) throw std::runtime_error("chunk failed");
                                     }),
                   std::runtime_error);
    }
    EXPECT_THROW(pool.parallel_for(1000, [](int64_t, int64_t) { throw std::logic_error("all"); }), std::logic_error);
    std::atomic<int64_t> sum{0};
    pool.parallel_for(1000, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

TEST(ThreadPool, NestedCallsRunInlineAndCoverEverything) {
  ThreadPool pool(3);
  constexpr int64_t kOuter = 9, kInner = 50;
  std::vector<std::atomic<int>> hits(kOuter * kInner);
  pool.parallel_for(kOuter, [&](int64_t ob, int64_t oe) {
    for (int64_t o = ob; o < oe; ++o)
      pool.parallel_for(kInner, [&](int64_t ib, int64_t ie) {
        for (int64_t i = ib; i < ie; ++i) hits[size_t(o * kInner + i)].fetch_add(1);
      });
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPool, ManyBackToBackCallsStayCorrect) {
  // Stresses the generation protocol: late workers must never run chunks of a newer call.
  ThreadPool pool(3);
  std::vector<int64_t> data(64);
  for (int iter = 0; iter < 20000; ++iter) {
    const int64_t n = 1 + iter % 64;
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) data[size_t(i)] += i + 1;
    });
  }
  for (int64_t i = 0; i < 64; ++i) {
    int64_t calls = 0;  // calls whose n covered index i
    for (int iter = 0; iter < 20000; ++iter) calls += (1 + iter % 64) > i;
    EXPECT_EQ(data[size_t(i)], calls * (i + 1)) << "index " << i;
  }
}

TEST(ThreadPool, WakesSleepingWorkersAndShutsDownWhileIdle) {
  auto pool = std::make_unique<ThreadPool>(3);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the spin: workers sleep
    std::atomic<int> chunks{0};
    std::vector<std::atomic<int>> hits(300);
    pool->parallel_for(300, [&](int64_t b, int64_t e) {
      chunks.fetch_add(1);
      for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
    });
    EXPECT_EQ(chunks.load(), 3);
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  pool.reset();  // must join sleeping workers without hanging
}

TEST(ThreadPool, SeveralOutsideThreadsMayShareOnePool) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int iter = 0; iter < 500; ++iter)
        pool.parallel_for(10, [&](int64_t b, int64_t e) { total += e - b; });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(total.load(), 3 * 500 * 10);
}

}  // namespace
}  // namespace uneven
