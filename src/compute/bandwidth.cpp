// measure_read_bandwidth: the streaming read rate of the machine (sum of a large buffer, all threads).
//
// It is the yardstick for matmul at batch 1, which cannot read weights faster than this. The buffer is
// written first by the same threads that later read it (so pages are mapped, and on NUMA machines
// placed near their readers). It is read in 16 MiB segments (still far larger than a core's L2), each
// split across the pool the same way in every repeat.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "compute/kernels.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "compute/bandwidth.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace uneven::kernels::bandwidth_impl::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of n floats (n a multiple of 8 vectors); eight accumulators keep many loads in flight.
float SumFloats(const float* HWY_RESTRICT p, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = int64_t(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  auto a4 = hn::Zero(d), a5 = hn::Zero(d), a6 = hn::Zero(d), a7 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N) {
    a0 = hn::Add(a0, hn::Load(d, p + i));
    a1 = hn::Add(a1, hn::Load(d, p + i + N));
    a2 = hn::Add(a2, hn::Load(d, p + i + 2 * N));
    a3 = hn::Add(a3, hn::Load(d, p + i + 3 * N));
    a4 = hn::Add(a4, hn::Load(d, p + i + 4 * N));
    a5 = hn::Add(a5, hn::Load(d, p + i + 5 * N));
    a6 = hn::Add(a6, hn::Load(d, p + i + 6 * N));
    a7 = hn::Add(a7, hn::Load(d, p + i + 7 * N));
  }
  auto s = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  float sum = hn::GetLane(hn::SumOfLanes(d, s));
  for (; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace uneven::kernels::bandwidth_impl::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace uneven::kernels {
namespace bandwidth_impl {
HWY_EXPORT(SumFloats);
}

double measure_read_bandwidth(ThreadPool& pool, size_t buffer_bytes, int repeats) {
  constexpr int64_t kPage = 4096 / sizeof(float);                    // chunks start on page boundaries
  constexpr int64_t kSegment = (int64_t(16) << 20) / sizeof(float);  // 16 MiB, timed on its own
  const int64_t n = std::max<int64_t>(kPage, int64_t(buffer_bytes / sizeof(float)) / kPage * kPage);
  hwy::AlignedFreeUniquePtr<float[]> buf = hwy::AllocateAligned<float>(size_t(n));
  float* p = buf.get();
  pool.parallel_for(n / kPage, [&](int64_t b, int64_t e) { std::fill(p + b * kPage, p + e * kPage, 1.0f); });

  // Each segment is timed separately and keeps its best time over the repeats, so a thread being
  // descheduled (other processes on the machine) spoils one segment's sample, not the whole figure.
  auto sum_fn = HWY_DYNAMIC_DISPATCH(bandwidth_impl::SumFloats);
  std::atomic<double> sink{0.0};  // keeps the sums observable so the reads cannot be elided
  std::vector<double> best(size_t((n + kSegment - 1) / kSegment), 1e30);
  for (int rep = 0; rep < std::max(1, repeats); ++rep) {
    for (size_t seg = 0; seg < best.size(); ++seg) {
      const int64_t begin = int64_t(seg) * kSegment, len = std::min(kSegment, n - begin);
      const auto t0 = std::chrono::steady_clock::now();
      pool.parallel_for(len / kPage, [&](int64_t b, int64_t e) {
        const float s = sum_fn(p + begin + b * kPage, (e - b) * kPage);
        double cur = sink.load(std::memory_order_relaxed);
        while (!sink.compare_exchange_weak(cur, cur + s, std::memory_order_relaxed)) {
        }
      });
      best[seg] = std::min(best[seg], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  double total = 0.0;
  for (double t : best) total += t;
  return double(n) * sizeof(float) / total;
}

}  // namespace uneven::kernels
#endif  // HWY_ONCE
