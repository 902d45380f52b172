// Matrix-vector (decode) speed at Llama-3.2-1B shapes, as GB/s of weight read and % of streaming read.
//
// Usage: kernels_bench [threads] [--prompt] [--batch N] [--types f32,bf16,f16,q8_0,q4_k,q6_k,mlx4,...] [--shapes RxC,...] [--hot]
// Each shape is benchmarked over enough copies of the matrix (>= 512 MiB in all) that every product
// reads its weights from memory, not from a cache, as in a real forward pass. "best" sums each copy's
// best time over several passes (like the streaming figure, which keeps each segment's best time);
// "median" uses the median product time. --prompt adds batch-64 (prompt) products in GFLOP/s;
// --batch N sets that batch.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "compute/kernels.h"
#include "quant/quantize.h"
#include "hwy/aligned_allocator.h"

namespace {

using namespace uneven;
using kernels::WeightView;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Shape {
  const char* name;
  int64_t rows, cols;
};

// Fills n elements of dtype `t` with values in [-1, 1) (in parallel: the lm_head copy is 1 GiB).
void fill_random(void* data, DType t, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    uint64_t s = 0x9e3779b97f4a7c15ull ^ uint64_t(b);
    for (int64_t i = b; i < e; ++i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift64
      const float f = float(int32_t(s >> 32)) * 0x1p-31f;
      if (t == DType::F32) {
        static_cast<float*>(data)[i] = f;
      } else {
        static_cast<uint16_t*>(data)[i] = f32_to_bf16(f);  // BF16 bits (also a valid finite F16 scale)
      }
    }
  });
}

struct Timing {
  double best_s;    // sum over copies of each copy's best time: the undisturbed speed
  double median_s;  // median single-product time times copies: what a typical pass sees
};

// Times `passes` passes over `copies` matrices (each `bytes` apart) with input batch `batch`. Each
// product is timed on its own, so a thread descheduled by another process spoils one sample, not a
// whole pass (the build machine is shared).
Timing time_products(const uint8_t* base, size_t bytes, int64_t copies, const Shape& s, const WeightType& t, int64_t batch,
                     ThreadPool& pool, int passes) {
  std::vector<float> x(size_t(s.cols * batch)), y(size_t(s.rows * batch));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 17) * 0.01f - 0.08f;
  std::vector<double> best(size_t(copies), 1e30), all;
  for (int p = 0; p < passes; ++p) {
    for (int64_t c = 0; c < copies; ++c) {
      const double t0 = now_s();
      kernels::matmul(WeightView{base + size_t(c) * bytes, t.dtype, s.rows, s.cols, t.group, t.scale}, x.data(), batch,
                      y.data(), pool);
      const double dt = now_s() - t0;
      best[size_t(c)] = std::min(best[size_t(c)], dt);
      all.push_back(dt);
    }
  }
  std::nth_element(all.begin(), all.begin() + all.size() / 2, all.end());
  Timing r{0.0, all[all.size() / 2] * double(copies)};
  for (double b : best) r.best_s += b;
  return r;
}

// Quantized matrices: one 1 MiB-element stretch of random values is quantized and its bytes repeated
// (the quantizers are too slow to fill gigabytes, and the values do not change the speed).
void fill_quantized(uint8_t* data, const WeightType& t, size_t bytes) {
  const int64_t n = int64_t(1) << 20;
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t st = 0x9e3779b97f4a7c15ull;
  for (float& f : v) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    f = float(int32_t(st >> 32)) * 0x1p-31f;
  }
  std::vector<uint8_t> q(t.bytes(n));
  quant::quantize_row(t, v.data(), n, q.data());
  for (size_t at = 0; at < bytes; at += q.size()) std::memcpy(data + at, q.data(), std::min(q.size(), bytes - at));
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  bool prompt = false;
  int64_t prompt_batch = 64;  // --batch N: the batch of the --prompt products (8: a server's 8 streams)
  bool hot = false;  // --hot: one copy of each matrix, read from cache when it fits (the kernels' own speed)
  std::vector<std::string> shape_names;  // --shapes RxC,... replaces the Llama-3.2-1B shapes
  std::vector<Shape> custom;
  std::vector<WeightType> types = {DType::F32, DType::BF16, DType::F16};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--prompt") == 0) {
      prompt = true;
    } else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
      prompt = true;
      prompt_batch = std::max<int64_t>(2, std::atoll(argv[++i]));
    } else if (std::strcmp(argv[i], "--hot") == 0) {
      hot = true;
    } else if (std::strcmp(argv[i], "--shapes") == 0 && i + 1 < argc) {
      std::string list = argv[++i];
      for (size_t at = 0; at < list.size();) {
        size_t end = list.find(',', at);
        if (end == std::string::npos) end = list.size();
        shape_names.push_back(list.substr(at, end - at));
        at = end + 1;
      }
      for (const std::string& n : shape_names) {
        long long r = 0, c = 0;
        if (std::sscanf(n.c_str(), "%lldx%lld", &r, &c) != 2 || r <= 0 || c <= 0) {
          std::fprintf(stderr, "bad shape '%s' (want ROWSxCOLS)\n", n.c_str());
          return 1;
        }
        custom.push_back({n.c_str(), r, c});
      }
    } else if (std::strcmp(argv[i], "--types") == 0 && i + 1 < argc) {
      types.clear();
      std::string list = argv[++i];
      for (size_t at = 0; at <= list.size();) {
        size_t end = list.find(',', at);
        if (end == std::string::npos) end = list.size();
        const auto t = weight_type_from_name(list.substr(at, end - at));
        if (!t) {
          std::fprintf(stderr, "unknown type '%s' (%s)\n", list.substr(at, end - at).c_str(), std::string(kWeightTypeNames).c_str());
          return 1;
        }
        types.push_back(*t);
        at = end + 1;
      }
    } else {
      threads = std::atoi(argv[i]);
    }
  }
  ThreadPool pool(threads);
  const double stream = kernels::measure_read_bandwidth(pool, size_t(1) << 30, 7) / 1e9;
  std::printf("SIMD target %s, %d threads, streaming read %.1f GB/s\n\n", kernels::simd_target(), pool.size(),
              stream);

  std::vector<Shape> shapes = {{"q/o 2048x2048", 2048, 2048},
                          {"k/v 512x2048", 512, 2048},
                          {"gate/up 8192x2048", 8192, 2048},
                          {"down 2048x8192", 2048, 8192},
                          {"lm_head 128256x2048", 128256, 2048}};
  if (!custom.empty()) shapes = custom;
  const size_t kWorkingSet = hot ? 1 : size_t(512) << 20;
  std::printf("%-20s %-5s %7s %6s %9s %8s %11s %8s\n", "matrix-vector", "dtype", "MB", "copies", "best GB/s",
              "% stream", "median GB/s", "% stream");
  for (const WeightType& t : types) {
    for (const Shape& s : shapes) {
      const size_t bytes = size_t(s.rows) * t.bytes(s.cols);
      const int64_t copies = int64_t(std::max<size_t>(1, (kWorkingSet + bytes - 1) / bytes));
      auto buf = hwy::AllocateAligned<uint8_t>(bytes * size_t(copies));
      if (is_quantized(t.dtype)) fill_quantized(buf.get(), t, bytes * size_t(copies));
      else fill_random(buf.get(), t.dtype, s.rows * s.cols * copies, pool);
      time_products(buf.get(), bytes, copies, s, t, 1, pool, 1);  // warm-up
      const Timing tm = time_products(buf.get(), bytes, copies, s, t, 1, pool, copies == 1 ? 15 : 5);
      const double total = double(bytes) * double(copies) / 1e9;
      std::printf("%-20s %-5s %7.1f %6lld %9.1f %7.0f%% %11.1f %7.0f%%\n", s.name, std::string(dtype_name(t.dtype)).c_str(),
                  double(bytes) / 1e6, (long long)copies, total / tm.best_s, 100.0 * total / tm.best_s / stream,
                  total / tm.median_s, 100.0 * total / tm.median_s / stream);
      if (prompt && s.rows <= 8192) {
        const int64_t batch = prompt_batch, n = std::min<int64_t>(copies, 4);
        const Timing pt = time_products(buf.get(), bytes, n, s, t, batch, pool, 3);
        const double flops = 2.0 * double(s.rows * s.cols * batch) * double(n);
        std::printf("%-20s %-5s   batch %lld: %.1f GFLOP/s (best), %.1f (median)\n", s.name,
                    std::string(dtype_name(t.dtype)).c_str(), (long long)batch, flops / pt.best_s / 1e9,
                    flops / pt.median_s / 1e9);
      }
    }
    std::printf("\n");
  }
  return 0;
}
