// ThreadPool: persistent workers woken per parallel_for; they spin briefly, then sleep on a futex.
//
// Protocol. A job is published by writing its descriptor (fn, n), then storing `claim` =
// generation | chunk count | next index 0 with release order, then bumping `wake` (the futex word).
// Every thread, the caller included, takes chunk indices by CAS on `claim`; a CAS succeeds only while
// the generation is the one the thread woke for and the index is below the count held in the same
// word. The descriptor is read only after a successful CAS: the job then still has a chunk running
// (ours), and the caller rewrites the descriptor only after `remaining` (chunks not yet finished) has
// reached zero, so the read always sees this job's descriptor. A late worker holding an old
// generation can never run a chunk of a newer job. The caller does not wait for idle workers to
// notice a job: a chunk no worker claimed is run by the caller, which keeps latency low when a worker
// is descheduled.
#include "compute/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace uneven {
namespace {

// claim layout: generation (bits 32..63) | chunk count (16..31) | next chunk index (0..15).
constexpr uint64_t kField = 0xffff;
constexpr int kMaxThreads = 0xffff;
inline uint64_t claim_gen(uint64_t c) { return c >> 32; }
inline int64_t claim_count(uint64_t c) { return int64_t((c >> 16) & kField); }
inline int64_t claim_index(uint64_t c) { return int64_t(c & kField); }
// How long an idle worker (or a waiting caller) spins before sleeping: long enough to cover the gap
// between consecutive parallel_for calls of a forward pass, short enough not to burn a core between
// tokens.
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Set while this thread runs a chunk of any pool: a parallel_for issued from inside a chunk runs
// inline on the calling thread, so nesting can neither deadlock nor oversubscribe.
thread_local bool t_in_chunk = false;

// Spins on `pred` for up to kSpin, then blocks on `word` changing from `seen`. Returns when pred().
template <class Pred>
void spin_then_wait(const std::atomic<uint32_t>& word, Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
  }
  for (;;) {
    uint32_t seen = word.load(std::memory_order_acquire);
    if (pred()) return;
    word.wait(seen, std::memory_order_acquire);
  }
}

}  // namespace

struct ThreadPool::Impl {
  using Fn = std::function<void(int64_t, int64_t)>;

  int threads = 1;  // including the caller
  std::vector<std::thread> workers;
  std::mutex call_mutex;  // one parallel_for at a time when several outside threads share a pool

  // Job descriptor of the generation in `claim`; written by the caller only while no chunk runs.
  const Fn* fn = nullptr;
  int64_t n = 0;
  std::atomic<uint64_t> claim{0};      // see the layout above
  std::atomic<uint32_t> wake{0};       // futex word workers sleep on; bumped per job and at stop
  std::atomic<uint32_t> remaining{0};  // chunks of the current job not yet finished (futex word)
  std::atomic<bool> stop{false};
  uint64_t generation = 0;  // caller-side copy, guarded by call_mutex

  std::mutex error_mutex;
  std::exception_ptr error;

  // Claims and runs chunks of the job of generation `gen` until none is left.
  void run_chunks(uint64_t gen) {
    uint64_t c = claim.load(std::memory_order_acquire);
    for (;;) {
      if (claim_gen(c) != gen || claim_index(c) >= claim_count(c)) return;
      if (!claim.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      const int64_t i = claim_index(c), count = claim_count(c);
      c += 1;
      // Balanced contiguous split: chunk i is [n*i/count, n*(i+1)/count).
      const int64_t begin = n * i / count, end = n * (i + 1) / count;
      t_in_chunk = true;
      try {
        (*fn)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      t_in_chunk = false;
      if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) remaining.notify_all();
    }
  }

  void worker_loop() {
    uint64_t seen_gen = 0;
    for (;;) {
      spin_then_wait(wake, [&] {
        return stop.load(std::memory_order_acquire) ||
               claim_gen(claim.load(std::memory_order_acquire)) != seen_gen;
      });
      if (stop.load(std::memory_order_acquire)) return;
      seen_gen = claim_gen(claim.load(std::memory_order_acquire));
      run_chunks(seen_gen);
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl_(std::make_unique<Impl>()) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, kMaxThreads);
  impl_->threads = threads;
  impl_->workers.reserve(size_t(threads - 1));
  for (int i = 1; i < threads; ++i) impl_->workers.emplace_back([this] { impl_->worker_loop(); });
}

ThreadPool::~ThreadPool() {
  impl_->stop.store(true, std::memory_order_release);
  impl_->wake.fetch_add(1, std::memory_order_release);
  impl_->wake.notify_all();
  for (std::thread& t : impl_->workers) t.join();
}

int ThreadPool::size() const { return impl_->threads; }

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(impl_->threads, std::max<int64_t>(1, n / grain));
  if (chunks == 1 || t_in_chunk) {  // serial: one chunk, or nested inside a chunk
    fn(0, n);
    return;
  }
  Impl& s = *impl_;
  std::lock_guard<std::mutex> call_lock(s.call_mutex);
  s.error = nullptr;
  s.fn = &fn;
  s.n = n;
  s.remaining.store(uint32_t(chunks), std::memory_order_relaxed);
  s.generation = s.generation % 0xffffffffu + 1;  // 32 bits, never 0 (the workers' initial value)
  const uint64_t gen = s.generation;
  s.claim.store(gen << 32 | uint64_t(chunks) << 16, std::memory_order_release);
  s.wake.fetch_add(1, std::memory_order_release);
  s.wake.notify_all();  // cheap when no worker sleeps (libstdc++ counts waiters)

  s.run_chunks(gen);
  spin_then_wait(s.remaining, [&] { return s.remaining.load(std::memory_order_acquire) == 0; });
  if (s.error) std::rethrow_exception(s.error);
}

}  // namespace uneven
