// Quantized matmul (every GGML block type and MLX group layout) on every SIMD target this CPU supports.
//
// The reference is the scalar decoder (quant::dequantize_row_ref) dotted in double with the activations
// rounded by quant::round_activations (for GGML weights; MLX weights meet x as it is). The kernels
// round the activations themselves (in SIMD, to integer codes on x86), so an activation code off by one
// anywhere moves a result by ~1e-4 of sum |w x|, far outside the 2e-6 tolerance: inputs include exact
// rounding ties (x * (1 / scale) = k + 1/2, both rounding rules), all-zero blocks, and blocks whose
// largest magnitude occurs with both signs (Q8_K keys its scale on the first one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "compute/kernels.h"
#include "compute/thread_pool.h"
#include "hwy/targets.h"
#include "quant/activations.h"
#include "quant/blocks.h"
#include "quant/quantize.h"

namespace uneven::kernels {
namespace {

constexpr double kSumTol = 2e-6;  // relative to sum |w x|, as for the float dtypes (tests/kernels_test.cpp)
double g_worst = 0.0;              // largest error seen, relative to sum |w x|

template <class F>
void for_each_target(F body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    ASSERT_STREQ(simd_target(), hwy::TargetName(target));
    body();
    if (testing::Test::HasFatalFailure()) break;
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Activations with the awkward cases in the first blocks, then random values.
std::vector<float> make_inputs(std::mt19937& rng, int64_t batch, int64_t cols) {
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> x(size_t(batch * cols));
  for (float& v : x) v = dist(rng);
  for (int64_t b = 0; b < batch; ++b) {
    float* r = x.data() + b * cols;
    // Block 0 (32 / 256 elements): largest magnitude 127 with both signs, -127 first, so Q8_0's scale
    // is 1 and Q8_K's iscale is 1 (the first extreme is -127): every k + 0.5 is a tie.
    r[0] = -127.0f;
    r[1] = 127.0f;
    for (int64_t i = 2; i < 32; ++i) r[i] = float(int64_t(rng() % 200) - 100) + 0.5f;
    if (cols >= 512) {
      for (int64_t i = 32; i < 256; ++i) r[i] = float(int64_t(rng() % 200) - 100) + 0.5f;
      for (int64_t i = 256; i < 512; ++i) r[i] = 0.0f;  // an all-zero Q8_K block (and Q8_0 blocks)
    }
    if (cols >= 768) {  // largest magnitude first positive, then negative
      r[512] = 3.0f;
      r[600] = -3.0f;
    }
    if (b % 2 == 1)  // small magnitudes: scales far from 1
      for (int64_t i = 0; i < cols; ++i) r[i] *= 1e-3f;
  }
  return x;
}

struct Case {
  WeightType type;
  int64_t rows, cols;
};

void check(const Case& c, std::mt19937& rng, const std::vector<std::unique_ptr<ThreadPool>>& pools) {
  const WeightType& t = c.type;
  SCOPED_TRACE(testing::Message() << t.name() << " " << c.rows << "x" << c.cols);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> wv(size_t(c.rows * c.cols));
  for (float& v : wv) v = dist(rng);
  std::vector<uint8_t> bytes(size_t(c.rows) * t.bytes(c.cols));
  quant::quantize_row(t, wv.data(), c.rows * c.cols, bytes.data());
  std::vector<float> w(wv.size());
  quant::dequantize_row_ref(t, bytes.data(), c.rows * c.cols, w.data());
  const WeightView view{bytes.data(), t.dtype, c.rows, c.cols, t.group, t.scale};
  for (int64_t batch : {1, 3, 9}) {
    SCOPED_TRACE(testing::Message() << "batch " << batch);
    const std::vector<float> x = make_inputs(rng, batch, c.cols);
    std::vector<float> xr = x;
    std::vector<float> sums(size_t(c.cols / 16 + 1));
    if (!is_mlx(t.dtype))
      for (int64_t b = 0; b < batch; ++b)
        quant::round_activations(t.dtype, x.data() + b * c.cols, c.cols, xr.data() + b * c.cols, sums.data());
    // Q4_1 / Q5_1 meet Q8_1 blocks, whose min term llama.cpp takes from the block's stored f16 sum
    // (round_activations' sums16), not from the rounded values; the decode kernels do the same, so the
    // reference does too. (The batched path dots dequantized tiles with the rounded values, so there
    // the plain reference holds; the two differ by the f16 rounding of the block sums.)
    const bool q8_1 = (t.dtype == DType::Q4_1 || t.dtype == DType::Q5_1) && batch == 1;
    std::vector<float> stored_sums(size_t(batch * (c.cols / 32)));
    if (q8_1)
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> tmp(size_t(c.cols));
        quant::round_activations(t.dtype, x.data() + b * c.cols, c.cols, tmp.data(), sums.data());
        for (int64_t k = 0; k < c.cols / 32; ++k) stored_sums[size_t(b * (c.cols / 32) + k)] = sums[size_t(2 * k)];
      }
    std::vector<double> ref(size_t(batch * c.rows)), mag(ref.size());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < c.rows; ++r) {
        double s = 0, m = 0;
        for (int64_t k = 0; k < c.cols; ++k) {
          const double p = double(w[size_t(r * c.cols + k)]) * xr[size_t(b * c.cols + k)];
          s += p;
          m += std::fabs(p);
        }
        if (q8_1)
          for (int64_t k = 0; k < c.cols / 32; ++k) {
            uint16_t h;
            std::memcpy(&h, bytes.data() + size_t(r) * t.bytes(c.cols) + size_t(k) * t.bytes(32) + 2, 2);
            double xs = 0;
            for (int64_t i = 0; i < 32; ++i) xs += xr[size_t(b * c.cols + 32 * k + i)];
            const double mv = f16_to_f32(h), stored = stored_sums[size_t(b * (c.cols / 32) + k)];
            s += mv * (stored - xs);
            m += std::fabs(mv * stored);
          }
        ref[size_t(b * c.rows + r)] = s;
        mag[size_t(b * c.rows + r)] = m;
      }
    const std::vector<float> y0(ref.size(), 0.25f);
    for_each_target([&] {
      for (int run = 0; run < 3; ++run) {
        ThreadPool& pool = *pools[size_t(std::min(run, 1))];
        const bool accumulate = run == 2;
        std::vector<float> y = accumulate ? y0 : std::vector<float>(y0.size(), std::nanf(""));
        matmul(view, x.data(), batch, y.data(), pool, accumulate);
        for (size_t i = 0; i < y.size(); ++i) {
          const double want = ref[i] + (accumulate ? 0.25 : 0.0);
          const double err = std::fabs(double(y[i]) - want) / (mag[i] + (accumulate ? 0.25 : 0.0) + 1e-30);
          g_worst = std::max(g_worst, err);
          ASSERT_LE(err, kSumTol) << "output " << i << " (" << pool.size() << " threads, accumulate " << accumulate
                                  << "): got " << y[i] << ", want " << want;
        }
      }
    });
    if (testing::Test::HasFatalFailure()) return;
  }
}

TEST(QuantKernels, MatchTheScalarDecoderOnEveryTarget) {
  std::mt19937 rng(77);
  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int n : {1, 2}) pools.push_back(std::make_unique<ThreadPool>(n));
  std::vector<WeightType> types = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                   DType::Q4_K, DType::Q5_K, DType::Q6_K};
  for (DType bits : {DType::MLX4, DType::MLX8})
    for (int32_t g : {32, 64, 128})
      for (DType s : {DType::BF16, DType::F16, DType::F32}) types.emplace_back(bits, g, s);
  for (const WeightType& t : types) {
    for (int64_t rows : {1, 5, 37}) {
      for (int64_t cols : {256, 768, 2304}) {
        check({t, rows, cols}, rng, pools);
        if (HasFatalFailure()) return;
      }
    }
  }
  // One long row (8192 columns, a Llama down projection) and a batch wide enough to block columns.
  for (const WeightType& t : {WeightType(DType::Q8_0), WeightType(DType::Q4_K), WeightType(DType::Q5_K),
                              WeightType(DType::Q6_K), WeightType(DType::MLX4, 64, DType::BF16)}) {
    check({t, 6, 8192}, rng, pools);
    if (HasFatalFailure()) return;
  }
  RecordProperty("worst_relative_error", std::to_string(g_worst));
  std::printf("quantized matmul worst error relative to sum|w x|: %.3g\n", g_worst);
}

}  // namespace
}  // namespace uneven::kernels
