// CUDA matmul bench: decode GEMV GB/s per weight type and shape, against the device copy bandwidth of
// the same run, and prompt GEMM TFLOP/s (precise and fast, see gemm.cu), on GPU 0.
//   cuda_matmul_bench [types=bf16,q8_0,q4_k,mlx4] [batch=2048]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compute/cuda/cuda_backend.h"
#include "compute/thread_pool.h"
#include "model/dtype.h"
#include "quant/quantize.h"

using namespace uneven;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<uint8_t> make_bytes(const WeightType& t, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint8_t> out(size_t(rows) * t.bytes(cols));
  const uint64_t rb = t.bytes(cols);
  for (int64_t r = 0; r < rows; ++r) {
    if (r < 64) for (float& v : row) v = u(rng);  // 64 distinct rows, repeated: quantizing 8B params is slow
    uint8_t* dst = out.data() + uint64_t(r) * rb;
    if (r >= 64) { std::memcpy(dst, out.data() + uint64_t(r % 64) * rb, rb); continue; }
    if (t.dtype == DType::F32) std::memcpy(dst, row.data(), rb);
    else if (t.dtype == DType::BF16 || t.dtype == DType::F16)
      for (int64_t c = 0; c < cols; ++c) {
        const uint16_t h = t.dtype == DType::F16 ? f32_to_f16(row[size_t(c)]) : f32_to_bf16(row[size_t(c)]);
        std::memcpy(dst + 2 * c, &h, 2);
      }
    else quant::quantize_row(t, row.data(), cols, dst);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) { std::printf("no CUDA device\n"); return 0; }
  std::string types = argc > 1 ? argv[1] : "bf16,q8_0,q4_k,mlx4";
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 2048;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {16384, 2048}, {2048, 8192}, {128256, 2048},
                                                           {4096, 4096}, {28672, 4096}, {4096, 14336}, {128256, 4096}};
  auto probe = make_cuda_backend({}, 0);
  const double copy = probe->measure_read_bandwidth();
  std::printf("device %s, copy bandwidth %.0f GB/s (read + written)\n", probe->name().c_str(), copy / 1e9);
  probe.reset();
  size_t at = 0;
  while (at <= types.size()) {
    const size_t comma = std::min(types.find(',', at), types.size());
    const std::string name = types.substr(at, comma - at);
    at = comma + 1;
    const auto type = weight_type_from_name(name, 64);
    if (!type) { std::printf("unknown type %s\n", name.c_str()); return 1; }
    for (auto [rows, cols] : shapes) {
      std::vector<uint8_t> bytes = make_bytes(*type, rows, cols);
      kernels::WeightView w{bytes.data(), type->dtype, rows, cols, type->group, type->scale};
      ResidentWeights res;
      res.matrices.push_back(w);
      auto gpu = make_cuda_backend(res, 0);
      Buffer x(*gpu, batch * cols), y(*gpu, batch * rows);
      std::vector<float> hx(size_t(batch * cols), 0.01f);
      gpu->upload(x.data(), hx.data(), batch * cols);
      const int reps = 50;
      gpu->matmul(w, x.data(), 1, y.data());
      gpu->synchronize();
      double t0 = now_s();
      for (int i = 0; i < reps; ++i) gpu->matmul(w, x.data(), 1, y.data());
      gpu->synchronize();
      const double gemv_s = (now_s() - t0) / reps;
      gpu->matmul(w, x.data(), batch, y.data());
      gpu->synchronize();
      t0 = now_s();
      for (int i = 0; i < 3; ++i) gpu->matmul(w, x.data(), batch, y.data());
      gpu->synchronize();
      const double gemm_s = (now_s() - t0) / 3;
      std::printf("%-5s %6lld x %-6lld %7.1f MB  gemv %7.1f us %6.0f GB/s (%3.0f%% of copy)  gemm[%lld] %6.1f TFLOP/s\n",
                  name.c_str(), (long long)rows, (long long)cols, w.bytes() / 1e6, gemv_s * 1e6, w.bytes() / gemv_s / 1e9,
                  100.0 * w.bytes() / gemv_s / copy, (long long)batch, 2.0 * rows * cols * batch / gemm_s / 1e12);
      std::fflush(stdout);
    }
  }
}
