// Kernels against scalar double-precision references, on every SIMD target this CPU supports.
//
// Tolerances: matmul and dot are compared relative to sum |a_i b_i| (the condition of the sum; fp32
// with a different summation order is off by well under 1e-6 of it); rmsnorm, silu_mul and
// softmax relative to each value (a few fp32 ulp); add and to_f32 must be bit-exact, axpy within an
// ulp of the fused result (exact on FMA targets).
#include "compute/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "hwy/targets.h"

namespace uneven::kernels {
namespace {

constexpr double kSumTol = 2e-6;   // matmul, dot: relative to sum |a_i b_i| (worst seen: 4e-7)
constexpr double kElemTol = 4e-6;  // rmsnorm, silu_mul, softmax: relative to the value

const int64_t kSizes[] = {1, 7, 63, 64, 65, 1000};

// Runs `body` once per SIMD target that is compiled in and supported here (e.g. AVX3, AVX2, SSE4),
// forcing the kernels' dispatch to that target.
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

std::vector<float> random_floats(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

// A weight matrix in one dtype, with its exact values as doubles for the reference.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<double> values;
  WeightView view;
};

Weights make_weights(std::mt19937& rng, DType t, int64_t rows, int64_t cols) {
  Weights w;
  const size_t n = size_t(rows * cols);
  w.bytes.resize(n * dtype_size(t));
  w.values.resize(n);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      float f = dist(rng);
      std::memcpy(w.bytes.data() + 4 * i, &f, 4);
      w.values[i] = f;
      continue;
    }
    uint16_t h;
    if (t == DType::BF16) {
      h = f32_to_bf16(dist(rng));
    } else {  // f16 bit patterns with exponents 0..20: zeros, subnormals and normals up to ~2^5
      h = uint16_t((rng() & 0x8000u) | ((rng() % 21) << 10) | (rng() & 0x3ffu));
    }
    std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    w.values[i] = t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
  w.view = WeightView{w.bytes.data(), t, rows, cols};
  return w;
}

TEST(Kernels, ReportsTheDispatchedTarget) {
  EXPECT_STREQ(simd_target(), hwy::TargetName(hwy::SupportedAndGeneratedTargets().front()));
}

TEST(Matmul, MatchesDoubleReferenceForAllDtypesShapesBatchesAndPools) {
  std::mt19937 rng(1234);
  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int t : {1, 2, 3}) pools.push_back(std::make_unique<ThreadPool>(t));
  // 4500 columns exceed the batched paths' column blocks (2048 tiled; 768 at 8 inputs direct), so blocking
  // and its tail are covered. Batches 2 and 8 take the direct small-batch path (8: its limit on AVX-512),
  // 5 that or the tiled one by target, 9 and 33 the tiled one.
  std::vector<int64_t> col_sizes(std::begin(kSizes), std::end(kSizes));
  col_sizes.push_back(4500);
  double worst = 0.0;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t rows : kSizes) {
      for (int64_t cols : col_sizes) {
        for (int64_t batch : {1, 2, 5, 8, 9, 33}) {
          if (rows * cols * batch > 1'500'000 && !(rows == 7 && cols == 4500)) continue;  // keep it fast
          SCOPED_TRACE(testing::Message() << dtype_name(dtype) << " " << rows << "x" << cols << " batch " << batch);
          Weights w = make_weights(rng, dtype, rows, cols);
          const std::vector<float> x = random_floats(rng, batch * cols);
          const std::vector<float> y0 = random_floats(rng, batch * rows);
          std::vector<double> ref(size_t(batch * rows)), mag(size_t(batch * rows));
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t r = 0; r < rows; ++r) {
              double s = 0, m = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double p = w.values[size_t(r * cols + c)] * double(x[size_t(b * cols + c)]);
                s += p;
                m += std::fabs(p);
              }
              ref[size_t(b * rows + r)] = s;
              mag[size_t(b * rows + r)] = m;
            }
          for_each_target([&] {
            // Every pool overwriting, and one pool accumulating.
            for (int run = 0; run < 4; ++run) {
              ThreadPool& pool = *pools[size_t(std::min(run, 2))];
              const bool accumulate = run == 3;
              SCOPED_TRACE(testing::Message() << pool.size() << " threads, accumulate " << accumulate);
              std::vector<float> y = accumulate ? y0 : std::vector<float>(y0.size(), std::nanf(""));
              matmul(w.view, x.data(), batch, y.data(), pool, accumulate);
              for (size_t i = 0; i < y.size(); ++i) {
                const double expect = ref[i] + (accumulate ? double(y0[i]) : 0.0);
                const double scale = mag[i] + (accumulate ? std::fabs(double(y0[i])) : 0.0) + 1e-30;
                const double err = std::fabs(double(y[i]) - expect) / scale;
                worst = std::max(worst, err);
                ASSERT_LE(err, kSumTol) << "output " << i << ": got " << y[i] << ", want " << expect;
              }
            }
          });
          if (HasFatalFailure()) return;
        }
      }
    }
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
  std::printf("matmul worst error relative to sum|w x|: %.3g\n", worst);
}

// BF16 products of rows <= 4096 columns read one row at a time or four interleaved, whichever the first
// products of the process (>= 1 MiB each) time faster (matmul.cpp); the two must give identical bits, so
// that the trial, and the machine, never change a result. 30 products span the trials and the choice.
TEST(Matmul, Bf16RowGroupingTrialsNeverChangeTheResult) {
  std::mt19937 rng(99);
  ThreadPool pool(2);
  for_each_target([&] {
    const int64_t rows = 515, cols = 2050;  // 2.1 MB; a tail of rows (515 = 4 * 128 + 3) and of columns
    const Weights w = make_weights(rng, DType::BF16, rows, cols);
    const std::vector<float> x = random_floats(rng, cols);
    std::vector<float> first(static_cast<size_t>(rows)), y(static_cast<size_t>(rows));
    matmul(w.view, x.data(), 1, first.data(), pool);
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += w.values[size_t(r * cols + c)] * x[size_t(c)];
        mag += std::abs(w.values[size_t(r * cols + c)] * x[size_t(c)]);
      }
      ASSERT_LE(std::abs(first[size_t(r)] - ref), kSumTol * mag) << "row " << r;
    }
    for (int rep = 0; rep < 30; ++rep) {
      matmul(w.view, x.data(), 1, y.data(), pool);
      ASSERT_EQ(std::memcmp(y.data(), first.data(), y.size() * sizeof(float)), 0) << "product " << rep;
    }
  });
}

TEST(Matmul, EmptyContractionGivesZeros) {
  ThreadPool pool(2);
  float x = 1.0f, y[3] = {5, 5, 5};
  matmul(WeightView{nullptr, DType::F32, 3, 0}, &x, 1, y, pool);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(Elementwise, RmsNormMatchesReferenceAndWorksInPlace) {
  std::mt19937 rng(1);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const int64_t rows = 3;
    const std::vector<float> x = random_floats(rng, rows * n, -3.0f, 3.0f);
    const std::vector<float> weight = random_floats(rng, n, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<double> ref(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(r * n + i)]) * x[size_t(r * n + i)];
      const double scale = 1.0 / std::sqrt(ss / double(n) + eps);
      for (int64_t i = 0; i < n; ++i) ref[size_t(r * n + i)] = x[size_t(r * n + i)] * scale * weight[size_t(i)];
    }
    for_each_target([&] {
      std::vector<float> out(x.size()), inplace = x;
      rmsnorm(x.data(), weight.data(), eps, n, rows, out.data());
      rmsnorm(inplace.data(), weight.data(), eps, n, rows, inplace.data());
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], kElemTol * std::fabs(ref[i]) + 1e-7) << i;
        ASSERT_EQ(inplace[i], out[i]) << i;
      }
    });
  }
}

TEST(Elementwise, SiluMulMatchesReferenceIncludingLargeInputs) {
  std::mt19937 rng(2);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    std::vector<float> gate = random_floats(rng, n, -12.0f, 12.0f);
    const std::vector<float> up = random_floats(rng, n, -2.0f, 2.0f);
    if (n > 4) gate[0] = 100.0f, gate[1] = -100.0f, gate[2] = 0.0f, gate[3] = -89.0f;  // exp's edges
    std::vector<double> ref(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[size_t(i)];
      ref[size_t(i)] = g / (1.0 + std::exp(-g)) * up[size_t(i)];
    }
    for_each_target([&] {
      std::vector<float> out = gate;
      silu_mul(out.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(out[size_t(i)], ref[size_t(i)], kElemTol * std::fabs(ref[size_t(i)]) + 1e-30) << i;
    });
  }
}

TEST(Elementwise, SoftmaxMatchesReferenceWithMaskedAndLargeValues) {
  std::mt19937 rng(3);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    std::vector<float> x = random_floats(rng, n, -30.0f, 30.0f);
    if (n > 3) x[1] = -std::numeric_limits<float>::infinity(), x[2] = 80.0f;  // a masked and a dominant entry
    const double mx = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - mx);
    for_each_target([&] {
      std::vector<float> out = x;
      softmax(out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = std::exp(double(x[size_t(i)]) - mx) / sum;
        ASSERT_NEAR(out[size_t(i)], ref, kElemTol * ref + 1e-37) << i;
      }
    });
  }
}

TEST(Elementwise, AddAxpyAreExactAndDotIsAccurate) {
  std::mt19937 rng(4);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const std::vector<float> x = random_floats(rng, n), y0 = random_floats(rng, n);
    const float a = 0.37f;
    double dref = 0, dmag = 0;
    for (int64_t i = 0; i < n; ++i) {
      dref += double(x[size_t(i)]) * y0[size_t(i)];
      dmag += std::fabs(double(x[size_t(i)]) * y0[size_t(i)]);
    }
    for_each_target([&] {
      std::vector<float> sum = y0, ax = y0;
      add(sum.data(), x.data(), n);
      axpy(a, x.data(), ax.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(sum[size_t(i)], y0[size_t(i)] + x[size_t(i)]) << i;
        // One rounding (FMA targets) or two (SSE4): within an ulp of the fused result.
        const float fused = std::fma(a, x[size_t(i)], y0[size_t(i)]);
        ASSERT_NEAR(ax[size_t(i)], fused, 0x1p-23 * (std::fabs(a * x[size_t(i)]) + std::fabs(y0[size_t(i)]))) << i;
      }
      EXPECT_NEAR(dot(x.data(), y0.data(), n), dref, kSumTol * dmag);
    });
  }
}

TEST(Elementwise, ToF32IsBitExactForEveryHalfPattern) {
  std::vector<uint16_t> all(65536 + 7);  // odd length: exercises the tail
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::mt19937 rng(5);
  const std::vector<float> f32 = random_floats(rng, 1000);
  for_each_target([&] {
    for (DType t : {DType::BF16, DType::F16}) {
      SCOPED_TRACE(dtype_name(t));
      std::vector<float> out(all.size());
      to_f32(all.data(), t, int64_t(all.size()), out.data());
      for (size_t i = 0; i < all.size(); ++i) {
        const float ref = t == DType::BF16 ? bf16_to_f32(all[i]) : f16_to_f32(all[i]);
        if (std::isnan(ref)) {
          ASSERT_TRUE(std::isnan(out[i])) << i;
        } else {
          ASSERT_EQ(std::memcmp(&out[i], &ref, 4), 0) << "pattern " << i << ": " << out[i] << " vs " << ref;
        }
      }
    }
    std::vector<float> copy(f32.size());
    to_f32(f32.data(), DType::F32, int64_t(f32.size()), copy.data());
    EXPECT_EQ(copy, f32);
  });
}

}  // namespace
}  // namespace uneven::kernels
