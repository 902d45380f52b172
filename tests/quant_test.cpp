// Quantizer round trips for every block type, llama.cpp-style mix choices, and cross-checks against
// files quantized by llama.cpp itself (../shared/fixtures/gguf).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <array>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "model/tensor_file.h"
#include "quant/blocks.h"
#include "quant/quant_mix.h"
#include "quant/quantize.h"
#include "test_files.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
using quant::QuantRecipe;

const fs::path kGgufFixtures = fs::path(UNEVEN_SOURCE_DIR) / "../shared/fixtures/gguf";

WeightType ggml(DType t) { return {t, 0, DType::BF16}; }

std::vector<uint8_t> quantize(const WeightType& t, const std::vector<float>& x) {
  std::vector<uint8_t> q(t.bytes(int64_t(x.size())));
  quant::quantize_row(t, x.data(), int64_t(x.size()), q.data());
  return q;
}
std::vector<float> dequantize(const WeightType& t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  quant::dequantize_row_ref(t, q.data(), int64_t(n), y.data());
  return y;
}
double rel_rms(const std::vector<float>& x, const float* y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
    s += double(x[i]) * x[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

// Deterministic test data of n elements.
enum class Dist { Normal, Uniform, Outliers };
std::vector<float> data(Dist d, size_t n, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    switch (d) {
      case Dist::Normal: x[i] = normal(rng); break;
      case Dist::Uniform: x[i] = uniform(rng); break;
      // Mostly small values with one large outlier in ~1% of positions (LLM weights' typical shape).
      case Dist::Outliers: x[i] = (rng() % 100 == 0) ? 20.0f * normal(rng) : 0.05f * normal(rng); break;
    }
  }
  return x;
}

const DType kGgmlTypes[] = {DType::Q8_0, DType::Q6_K, DType::Q5_K, DType::Q4_K, DType::Q5_0,
                            DType::Q5_1, DType::Q4_0, DType::Q4_1};

// Relative RMS error bounds: about 1.25x what these quantizers measure on 64k elements of each
// distribution (normal / uniform / outliers; measured values in the comments).
struct Bound { DType t; double normal, uniform, outliers; };
const Bound kBounds[] = {
    {DType::Q8_0, 0.0068, 0.0047, 0.0111},  // 0.0054 0.0038 0.0089
    {DType::Q6_K, 0.0223, 0.0165, 0.0116},  // 0.0178 0.0132 0.0092
    {DType::Q5_K, 0.0440, 0.0335, 0.0195},  // 0.0352 0.0268 0.0156
    {DType::Q4_K, 0.0887, 0.0675, 0.0259},  // 0.0709 0.0540 0.0207
    {DType::Q5_0, 0.0538, 0.0389, 0.0195},  // 0.0430 0.0311 0.0156 (llama.cpp's reference rule)
    {DType::Q5_1, 0.0428, 0.0328, 0.0158},  // 0.0342 0.0262 0.0126
    {DType::Q4_0, 0.1085, 0.0810, 0.0295},  // 0.0868 0.0648 0.0236 (llama.cpp's reference rule)
    {DType::Q4_1, 0.0878, 0.0673, 0.0206},  // 0.0702 0.0539 0.0165
};

TEST(Quantize, RoundTripErrorPerFormat) {
  const size_t n = 65536;
  for (const Bound& b : kBounds) {
    for (auto [dist, bound, label] : {std::tuple{Dist::Normal, b.normal, "normal"}, std::tuple{Dist::Uniform, b.uniform, "uniform"},
                                      std::tuple{Dist::Outliers, b.outliers, "outliers"}}) {
      const auto x = data(dist, n);
      const auto y = dequantize(ggml(b.t), quantize(ggml(b.t), x), n);
      const double e = rel_rms(x, y.data());
      std::printf("  %-5s %-8s rel rms %.5f (bound %.5f)\n", std::string(dtype_name(b.t)).c_str(), label, e, bound);
      EXPECT_LT(e, bound) << dtype_name(b.t) << " " << label;
    }
  }
}

// Lower bit widths must not beat higher ones of the same family.
TEST(Quantize, MoreBitsAreMoreAccurate) {
  const auto x = data(Dist::Normal, 16384, 3);
  auto err = [&](DType t) { return rel_rms(x, dequantize(ggml(t), quantize(ggml(t), x), x.size()).data()); };
  EXPECT_LT(err(DType::Q8_0), err(DType::Q6_K));
  EXPECT_LT(err(DType::Q6_K), err(DType::Q5_K));
  EXPECT_LT(err(DType::Q5_K), err(DType::Q4_K));
  EXPECT_LT(err(DType::Q5_0), err(DType::Q4_0));
  EXPECT_LT(err(DType::Q5_1), err(DType::Q4_1));
}

// Q8_0: d = amax / 127 per block, so every element is within half a (stored) step.
TEST(Quantize, Q8_0MaxErrorIsHalfAStep) {
  for (Dist dist : {Dist::Normal, Dist::Uniform, Dist::Outliers}) {
    const auto x = data(dist, 4096, 5);
    const auto q = quantize(ggml(DType::Q8_0), x);
    const auto y = dequantize(ggml(DType::Q8_0), q, x.size());
    for (size_t b = 0; b < x.size() / 32; ++b) {
      quant::BlockQ8_0 blk;
      std::memcpy(&blk, q.data() + b * sizeof blk, sizeof blk);
      const float d = f16_to_f32(blk.d);
      // half a step, plus the half-precision rounding of d carried over up to 127 steps
      const float bound = d * (0.5f + 127.0f / 2048.0f) + 1e-7f;
      for (size_t i = 32 * b; i < 32 * b + 32; ++i) ASSERT_LE(std::fabs(y[i] - x[i]), bound) << "block " << b;
    }
  }
}

// Q8_0 is a fixed point of quantize(dequantize(.)): a re-quantized model does not drift.
TEST(Quantize, Q8_0RequantizationIsStable) {
  for (Dist dist : {Dist::Normal, Dist::Uniform, Dist::Outliers}) {
    const auto x = data(dist, 8192, 9);
    const auto q = quantize(ggml(DType::Q8_0), x);
    const auto y = dequantize(ggml(DType::Q8_0), q, x.size());
    EXPECT_EQ(quantize(ggml(DType::Q8_0), y), q);
  }
}

// The other formats are not exact fixed points (a search may pick another scale for the decoded
// values), but re-quantizing must not make the error grow noticeably.
TEST(Quantize, RequantizationDoesNotDrift) {
  const auto x = data(Dist::Normal, 8192, 13);
  for (DType t : kGgmlTypes) {
    const auto q = quantize(ggml(t), x);
    const auto y = dequantize(ggml(t), q, x.size());
    const auto y2 = dequantize(ggml(t), quantize(ggml(t), y), x.size());
    EXPECT_LT(rel_rms(x, y2.data()), 1.1 * rel_rms(x, y.data())) << dtype_name(t);
  }
}

// Real weights are small (std ~0.02): the half-precision scales fall into half's coarse subnormal range
// for k-quant super-blocks, which the quantizers absorb (scales rounded up, sub-block scales taken
// against the stored value), so the relative error does not grow as the data shrinks.
TEST(Quantize, SmallMagnitudesKeepRelativeAccuracy) {
  const auto x = data(Dist::Normal, 16384, 23);
  for (DType t : kGgmlTypes) {
    const double e1 = rel_rms(x, dequantize(ggml(t), quantize(ggml(t), x), x.size()).data());
    for (float scale : {0.02f, 0.005f}) {
      std::vector<float> small(x);
      for (float& v : small) v *= scale;
      const double e = rel_rms(small, dequantize(ggml(t), quantize(ggml(t), small), small.size()).data());
      EXPECT_LT(e, 1.02 * e1) << dtype_name(t) << " scaled by " << scale;
    }
  }
}

TEST(Quantize, Deterministic) {
  const auto x = data(Dist::Outliers, 4096, 21);
  for (DType t : kGgmlTypes) EXPECT_EQ(quantize(ggml(t), x), quantize(ggml(t), x)) << dtype_name(t);
}

// All-zero blocks decode to exact zeros; constant blocks decode to (nearly) the constant.
TEST(Quantize, ZeroAndConstantBlocks) {
  std::vector<WeightType> types;
  for (DType t : kGgmlTypes) types.push_back(ggml(t));
  for (DType s : {DType::F32, DType::F16, DType::BF16})
    for (DType m : {DType::MLX4, DType::MLX8}) types.push_back({m, 64, s});
  for (const WeightType& t : types) {
    const std::vector<float> zeros(512, 0.0f);
    for (float v : dequantize(t, quantize(t, zeros), zeros.size())) ASSERT_EQ(v, 0.0f) << t.name();
    for (float c : {0.75f, -3.0f, 1e-3f}) {
      const std::vector<float> same(512, c);
      const auto y = dequantize(t, quantize(t, same), same.size());
      for (float v : y) ASSERT_NEAR(v, c, std::fabs(c) * 0.01) << t.name() << " constant " << c;
    }
  }
}

// Huge, tiny and mixed-magnitude finite values never produce inf or NaN (half-precision scales
// saturate instead of overflowing).
TEST(Quantize, ExtremeValuesStayFinite) {
  std::vector<std::vector<float>> cases = {
      std::vector<float>(512, 3.0e38f), std::vector<float>(512, -3.0e38f), std::vector<float>(512, 1e-40f)};
  std::vector<float> mixed = data(Dist::Normal, 512, 1);
  for (size_t i = 0; i < mixed.size(); i += 7) mixed[i] = (i % 2 ? 1 : -1) * 3.4e38f;
  cases.push_back(mixed);
  std::vector<float> big = data(Dist::Normal, 512, 2);
  for (float& v : big) v *= 1e6f;
  cases.push_back(big);
  std::vector<WeightType> types;
  for (DType t : kGgmlTypes) types.push_back(ggml(t));
  for (DType s : {DType::F32, DType::F16, DType::BF16})
    for (DType m : {DType::MLX4, DType::MLX8}) types.push_back({m, 32, s});
  for (const WeightType& t : types) {
    for (size_t c = 0; c < cases.size(); ++c) {
      for (float v : dequantize(t, quantize(t, cases[c]), cases[c].size())) ASSERT_TRUE(std::isfinite(v)) << t.name() << " case " << c;
    }
  }
  // F32 MLX scales keep the range of float values: a huge group still round-trips closely.
  const WeightType f32_scales{DType::MLX8, 32, DType::F32};
  EXPECT_LT(rel_rms(big, dequantize(f32_scales, quantize(f32_scales, big), big.size()).data()), 0.01);
}

// mlx affine groups: every group size and scale type; 8-bit is within half a step (plus the scale
// dtype's rounding of scale and bias), 4-bit is within its RMS bound.
TEST(Quantize, MlxGroupsAndScaleTypes) {
  const auto x = data(Dist::Normal, 8192, 17);
  for (int group : {32, 64, 128}) {
    for (DType s : {DType::BF16, DType::F16, DType::F32}) {
      for (DType m : {DType::MLX4, DType::MLX8}) {
        const WeightType t{m, group, s};
        const auto q = quantize(t, x);
        ASSERT_EQ(q.size(), t.bytes(int64_t(x.size())));
        const auto y = dequantize(t, q, x.size());
        const double e = rel_rms(x, y.data());
        // ~1.25x measured: MLX4 0.081 / 0.092 / 0.101 for groups 32 / 64 / 128, MLX8 0.0047 .. 0.0060.
        const double bound = m == DType::MLX4 ? (group == 32 ? 0.1015 : group == 64 ? 0.115 : 0.1265) : 0.0075;
        EXPECT_LT(e, bound) << t.name();
        std::printf("  %-40s rel rms %.5f\n", t.name().c_str(), e);
        // Per group: |err| <= |scale| / 2 for values inside the covered range; mlx shrinks the scale
        // to edge / round(edge / scale) so that zero is exact, which can leave up to another half step
        // uncovered at the far end (|edge| >= range / 2, so the shrink is at most 1/(2 * n_bins/2) of
        // it); plus what rounding the bias (|b| <= amax) and the scale (times up to n_bins, covering
        // <= 2 amax) to the dtype moves the range by: relative 2^-8 for BF16, 2^-11 for F16.
        const double rel = s == DType::BF16 ? 1.0 / 256 : s == DType::F16 ? 1.0 / 2048 : 1e-6;
        for (size_t g = 0; g < x.size() / group; ++g) {
          const uint8_t* p = q.data() + g * t.block_bytes();
          float scale;
          if (s == DType::F32) {
            std::memcpy(&scale, p, 4);
          } else {
            uint16_t h;
            std::memcpy(&h, p, 2);
            scale = s == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
          }
          double amax = 0;
          for (int i = 0; i < group; ++i) amax = std::max(amax, std::fabs(double(x[g * group + i])));
          const double limit = std::fabs(scale) * (1 + 1e-5) + rel * 3 * amax + 1e-6;
          for (int i = 0; i < group; ++i) {
            const size_t k = g * group + i;
            ASSERT_LE(std::fabs(double(y[k]) - x[k]), limit) << t.name() << " group " << g;
          }
        }
      }
    }
  }
}

// mlx's edge rule: the extreme with the larger magnitude is represented exactly (with F32 scales), and
// so is zero whenever the group straddles it.
TEST(Quantize, MlxEdgeAndZeroAreExact) {
  std::vector<float> x = data(Dist::Uniform, 64, 4);
  x[5] = -2.0f;  // the larger-magnitude extreme
  x[9] = 0.0f;
  const WeightType t{DType::MLX4, 64, DType::F32};
  const auto y = dequantize(t, quantize(t, x), x.size());
  EXPECT_FLOAT_EQ(y[5], -2.0f);
  EXPECT_NEAR(y[9], 0.0f, 1e-6);
}

TEST(Quantize, PlainTypesConvert) {
  const auto x = data(Dist::Normal, 256, 8);
  EXPECT_EQ(dequantize(ggml(DType::F32), quantize(ggml(DType::F32), x), x.size()), x);
  const auto h = dequantize(ggml(DType::F16), quantize(ggml(DType::F16), x), x.size());
  const auto b = dequantize(ggml(DType::BF16), quantize(ggml(DType::BF16), x), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(h[i], f16_to_f32(f32_to_f16(x[i])));
    EXPECT_EQ(b[i], bf16_to_f32(f32_to_bf16(x[i])));
  }
}

TEST(Quantize, RejectsPartialBlocks) {
  std::vector<float> x(300, 1.0f);
  std::vector<uint8_t> out(4096);
  testing::expect_error([&] { quant::quantize_row(ggml(DType::Q4_K), x.data(), 300, out.data()); }, {"300", "Q4_K", "256"});
  testing::expect_error([&] { quant::quantize_row(ggml(DType::Q8_0), x.data(), 40, out.data()); }, {"40", "Q8_0", "32"});
  testing::expect_error([&] { quant::quantize_row({DType::MLX4, 64, DType::BF16}, x.data(), 96, out.data()); }, {"96", "64"});
  testing::expect_error([&] { quant::quantize_row({DType::MLX4, 4, DType::BF16}, x.data(), 8, out.data()); }, {"group 4"});
  testing::expect_error([&] { quant::quantize_row({DType::MLX8, 32, DType::Q8_0}, x.data(), 32, out.data()); }, {"Q8_0"});
}

// ---- mixes -----------------------------------------------------------------------------------------

quant::TensorRole role(const std::string& name, int n_layers, int64_t row, int n_dims = 2) {
  quant::TensorRole r;
  r.name = name;
  r.n_layers = n_layers;
  r.row = row;
  r.n_dims = n_dims;
  return r;
}

// A dense llama-shaped model's tensors (GGUF names), hidden h, FFN f.
std::vector<quant::TensorRole> llama_roles(int n_layers, int64_t h, int64_t f, bool with_output = true) {
  std::vector<quant::TensorRole> roles = {role("token_embd.weight", n_layers, h), role("output_norm.weight", n_layers, h, 1)};
  if (with_output) roles.push_back(role("output.weight", n_layers, h));
  for (int l = 0; l < n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight"})
      roles.push_back(role(p + n, n_layers, h));
    roles.push_back(role(p + "ffn_down.weight", n_layers, f));
    roles.push_back(role(p + "attn_norm.weight", n_layers, h, 1));
    roles.push_back(role(p + "ffn_norm.weight", n_layers, h, 1));
  }
  return roles;
}

DType type_of(const std::vector<quant::TensorRole>& roles, const std::vector<DType>& types, const std::string& name) {
  for (size_t i = 0; i < roles.size(); ++i)
    if (roles[i].name == name) return types[i];
  ADD_FAILURE() << "no tensor " << name;
  return DType::F32;
}

TEST(QuantMix, RecipeNamesAndFileTypes) {
  EXPECT_EQ(quant::recipe_from_name("q4_k_m"), QuantRecipe::Q4_K_M);
  EXPECT_EQ(quant::recipe_from_name("Q5_K_M"), QuantRecipe::Q5_K_M);
  EXPECT_EQ(quant::recipe_from_name("q8_0"), QuantRecipe::Q8_0);
  EXPECT_EQ(quant::recipe_from_name("Q4_0"), QuantRecipe::Q4_0);
  EXPECT_EQ(quant::recipe_from_name("q6_k"), QuantRecipe::Q6_K);
  EXPECT_FALSE(quant::recipe_from_name("q4_k"));
  EXPECT_FALSE(quant::recipe_from_name("q3_k_m"));
  // llama.h: LLAMA_FTYPE_MOSTLY_Q4_0 = 2, _Q8_0 = 7, _Q4_K_M = 15, _Q5_K_M = 17, _Q6_K = 18.
  EXPECT_EQ(quant::recipe_file_type(QuantRecipe::Q4_0), 2u);
  EXPECT_EQ(quant::recipe_file_type(QuantRecipe::Q8_0), 7u);
  EXPECT_EQ(quant::recipe_file_type(QuantRecipe::Q4_K_M), 15u);
  EXPECT_EQ(quant::recipe_file_type(QuantRecipe::Q5_K_M), 17u);
  EXPECT_EQ(quant::recipe_file_type(QuantRecipe::Q6_K), 18u);
}

// llama.cpp (src/llama-quant.cpp, llama_tensor_get_type_impl): under Q4_K_M, attn_v and ffn_down get
// Q6_K where use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2, output.weight gets
// Q6_K, and (untied) token_embd keeps Q4_K; norms stay F32.
TEST(QuantMix, Q4_K_M_ThreeLayers) {
  const auto roles = llama_roles(3, 256, 768);
  const auto types = quant::choose_types(QuantRecipe::Q4_K_M, roles);
  // n = 3: n/8 = 0 and 7n/8 = 2, so only layer 2 uses more bits.
  for (int l = 0; l < 3; ++l) {
    const DType more = l == 2 ? DType::Q6_K : DType::Q4_K;
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".attn_v.weight"), more) << l;
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".ffn_down.weight"), more) << l;
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".attn_q.weight"), DType::Q4_K);
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".attn_norm.weight"), DType::F32);
  }
  EXPECT_EQ(type_of(roles, types, "output.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, types, "token_embd.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(roles, types, "output_norm.weight"), DType::F32);
}

TEST(QuantMix, Q4_K_M_TwentyEightLayers) {
  const auto roles = llama_roles(28, 3584, 18944);
  const auto types = quant::choose_types(QuantRecipe::Q4_K_M, roles);
  // n = 28: layers < 3, >= 24, and 3 + 3k + 2 (5, 8, ..., 23).
  const std::vector<int> more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27};
  for (int l = 0; l < 28; ++l) {
    const bool m = std::find(more.begin(), more.end(), l) != more.end();
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".attn_v.weight"), m ? DType::Q6_K : DType::Q4_K) << l;
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".ffn_down.weight"), m ? DType::Q6_K : DType::Q4_K) << l;
    EXPECT_EQ(type_of(roles, types, "blk." + std::to_string(l) + ".ffn_up.weight"), DType::Q4_K) << l;
  }
  EXPECT_EQ(type_of(roles, types, "output.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, types, "token_embd.weight"), DType::Q4_K);
  // Q5_K_M: the same layers at Q6_K, the rest Q5_K.
  const auto t5 = quant::choose_types(QuantRecipe::Q5_K_M, roles);
  EXPECT_EQ(type_of(roles, t5, "blk.5.attn_v.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, t5, "blk.6.ffn_down.weight"), DType::Q5_K);
  EXPECT_EQ(type_of(roles, t5, "output.weight"), DType::Q6_K);
  // Q4_0 / Q8_0 / Q6_K have no more-bits layers; the head is Q6_K except under Q8_0.
  const auto t40 = quant::choose_types(QuantRecipe::Q4_0, roles);
  EXPECT_EQ(type_of(roles, t40, "blk.0.attn_v.weight"), DType::Q4_0);
  EXPECT_EQ(type_of(roles, t40, "output.weight"), DType::Q6_K);
  const auto t8 = quant::choose_types(QuantRecipe::Q8_0, roles);
  EXPECT_EQ(type_of(roles, t8, "blk.0.ffn_down.weight"), DType::Q8_0);
  EXPECT_EQ(type_of(roles, t8, "output.weight"), DType::Q8_0);
}

// stories260K: hidden 64 and FFN 172 (5 layers). tensor_type_fallback: Q4_K -> Q5_0 and Q6_K -> Q8_0
// for 64-wide rows; 172 is not a multiple of 32 either, so ffn_down is F16. output.weight: 64 is not a
// multiple of Q4_K's 256, so Q8_0.
TEST(QuantMix, Q4_K_M_FallbackForNarrowRows) {
  const auto roles = llama_roles(5, 64, 172);
  const auto types = quant::choose_types(QuantRecipe::Q4_K_M, roles);
  // n = 5: more bits on layers 2 and 4.
  for (int l = 0; l < 5; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    EXPECT_EQ(type_of(roles, types, p + "attn_v.weight"), l == 2 || l == 4 ? DType::Q8_0 : DType::Q5_0) << l;
    EXPECT_EQ(type_of(roles, types, p + "attn_q.weight"), DType::Q5_0);
    EXPECT_EQ(type_of(roles, types, p + "ffn_gate.weight"), DType::Q5_0);
    EXPECT_EQ(type_of(roles, types, p + "ffn_down.weight"), DType::F16) << l;
  }
  EXPECT_EQ(type_of(roles, types, "output.weight"), DType::Q8_0);
  EXPECT_EQ(type_of(roles, types, "token_embd.weight"), DType::Q5_0);
  // Q5_K falls back to Q5_1; Q6_K to Q8_0.
  const auto t5 = quant::choose_types(QuantRecipe::Q5_K_M, roles);
  EXPECT_EQ(type_of(roles, t5, "blk.0.attn_q.weight"), DType::Q5_1);
  const auto t6 = quant::choose_types(QuantRecipe::Q6_K, roles);
  EXPECT_EQ(type_of(roles, t6, "blk.0.attn_q.weight"), DType::Q8_0);
  EXPECT_EQ(type_of(roles, t6, "blk.0.ffn_down.weight"), DType::F16);
  // Q4_0's block is 32, so a 64-wide head is Q6_K -> (fallback) Q8_0.
  const auto t40 = quant::choose_types(QuantRecipe::Q4_0, roles);
  EXPECT_EQ(type_of(roles, t40, "output.weight"), DType::Q8_0);
  EXPECT_EQ(type_of(roles, t40, "blk.0.ffn_down.weight"), DType::F16);
}

// Without output.weight the embedding is the head and gets the head's type.
TEST(QuantMix, TiedEmbeddingsGetTheHeadType) {
  const auto roles = llama_roles(4, 256, 512, /*with_output=*/false);
  EXPECT_EQ(type_of(roles, quant::choose_types(QuantRecipe::Q4_K_M, roles), "token_embd.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, quant::choose_types(QuantRecipe::Q8_0, roles), "token_embd.weight"), DType::Q8_0);
}

// Tensors llama.cpp never quantizes, and MoE expert / 8-expert rules.
TEST(QuantMix, UnquantizedTensorsAndExperts) {
  const QuantRecipe r = QuantRecipe::Q4_K_M;
  EXPECT_EQ(quant::choose_type(r, role("blk.0.ffn_gate_inp.weight", 24, 2048)), DType::F32);  // router
  EXPECT_EQ(quant::choose_type(r, role("blk.0.ssm_conv1d.weight", 24, 4)), DType::F32);
  EXPECT_EQ(quant::choose_type(r, role("blk.0.ssm_a", 24, 256)), DType::F32);       // no ".weight"
  EXPECT_EQ(quant::choose_type(r, role("blk.0.ssm_dt.bias", 24, 32, 1)), DType::F32);
  EXPECT_EQ(quant::choose_type(r, role("blk.0.attn_q_norm.weight", 24, 128, 1)), DType::F32);
  EXPECT_EQ(quant::choose_type(r, role("blk.0.attn_k_norm.weight", 24, 128, 2)), DType::F32);
  EXPECT_EQ(quant::choose_type(r, role("blk.0.ffn_gate_exps.weight", 24, 2048, 3)), DType::Q4_K);
  // Expert ffn_down follows the block index: layer 0 of 24 is a more-bits layer, 3 is not.
  quant::TensorRole down0 = role("blk.0.ffn_down_exps.weight", 24, 768, 3), down3 = role("blk.3.ffn_down_exps.weight", 24, 768, 3);
  down0.n_expert = down3.n_expert = 128;
  EXPECT_EQ(quant::choose_type(r, down0), DType::Q6_K);
  EXPECT_EQ(quant::choose_type(r, down3), DType::Q4_K);
  // Mixtral-like (8 experts): attn_v and attn_k Q8_0, attn_output Q5_K.
  quant::TensorRole v = role("blk.3.attn_v.weight", 32, 4096), k = role("blk.3.attn_k.weight", 32, 4096),
                    o = role("blk.3.attn_output.weight", 32, 4096);
  v.n_expert = k.n_expert = o.n_expert = 8;
  EXPECT_EQ(quant::choose_type(r, v), DType::Q8_0);
  EXPECT_EQ(quant::choose_type(r, k), DType::Q8_0);
  EXPECT_EQ(quant::choose_type(r, o), DType::Q5_K);
  // A fused attn_qkv is attention-value-like (counted and promoted like attn_v).
  EXPECT_EQ(quant::choose_type(r, role("blk.3.attn_qkv.weight", 32, 3072)), DType::Q6_K);  // 3 < 32 / 8
  EXPECT_EQ(quant::choose_type(r, role("blk.5.attn_qkv.weight", 32, 3072)), DType::Q4_K);  // (5 - 4) % 3 != 2
}

// A hybrid model numbers attn_v over the blocks that have one: 3 of 12 blocks (3, 7, 11) have full
// attention, so n = 3 and only the third (block 11) uses more bits, not blocks 0-1 / 11 by index.
TEST(QuantMix, HybridAttnVCountsOnlyAttentionBlocks) {
  std::vector<quant::TensorRole> roles;
  for (int l = 0; l < 12; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    if (l % 4 == 3) roles.push_back(role(p + "attn_v.weight", 12, 256));
    roles.push_back(role(p + "ffn_down.weight", 12, 256));
  }
  roles.push_back(role("output.weight", 12, 256));
  const auto types = quant::choose_types(QuantRecipe::Q4_K_M, roles);
  EXPECT_EQ(type_of(roles, types, "blk.3.attn_v.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(roles, types, "blk.7.attn_v.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(roles, types, "blk.11.attn_v.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, types, "blk.0.ffn_down.weight"), DType::Q6_K);  // 12 layers: < 1, >= 10, 3k+1+2
  EXPECT_EQ(type_of(roles, types, "blk.3.ffn_down.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(roles, types, "blk.4.ffn_down.weight"), DType::Q4_K);
}

// ---- cross-checks against llama.cpp ----------------------------------------------------------------

struct LlamaFile { const char* file; QuantRecipe recipe; };
const LlamaFile kLlamaFiles[] = {{"k256-Q8_0.gguf", QuantRecipe::Q8_0},
                                 {"k256-Q4_0.gguf", QuantRecipe::Q4_0},
                                 {"k256-Q4_K_M.gguf", QuantRecipe::Q4_K_M},
                                 {"k256-Q5_K_M.gguf", QuantRecipe::Q5_K_M},
                                 {"k256-Q6_K.gguf", QuantRecipe::Q6_K}};

// The fixture's weights are uniform random, so each format's error is about that of uniform data.
double uniform_bound(DType t) {
  for (const Bound& b : kBounds)
    if (b.t == t) return b.uniform;
  return 0;
}

#define REQUIRE_FIXTURES()                                                                      \
  if (!fs::exists(kGgufFixtures / "k256-f32.gguf")) GTEST_SKIP() << kGgufFixtures << " missing"

// (a) Our reference dequantizer decodes llama.cpp's blocks: within the format's error of the original.
// (b) Our quantizer of the original is no worse than 1.15x llama.cpp's round-trip error per tensor.
// (c) Q8_0 is llama.cpp's bit for bit.
TEST(QuantLlamaCpp, DecodesAndMatchesLlamaCppQuantizer) {
  REQUIRE_FIXTURES();
  const TensorFiles f32 = TensorFiles::open_gguf((kGgufFixtures / "k256-f32.gguf").string());
  for (const LlamaFile& lf : kLlamaFiles) {
    const TensorFiles q = TensorFiles::open_gguf((kGgufFixtures / lf.file).string());
    double worst = 0;
    int64_t differ = 0, blocks = 0;
    for (const TensorInfo& t : q.tensors()) {
      if (!is_quantized(t.dtype)) continue;
      const TensorInfo& o = f32.get(t.name, t.shape);
      ASSERT_EQ(o.dtype, DType::F32);
      const TensorBytes ob = f32.read_all(o), qb = q.read_all(t);
      const int64_t n = o.numel();
      const std::vector<float> x(ob.as<float>(), ob.as<float>() + n);
      std::vector<float> theirs(n);
      quant::dequantize_row_ref(t.type(), qb.data(), n, theirs.data());
      const double e_llama = rel_rms(x, theirs.data());
      EXPECT_LT(e_llama, uniform_bound(t.dtype)) << lf.file << " " << t.file_name;
      const auto mine = quantize(t.type(), x);
      const double e_ours = rel_rms(x, dequantize(t.type(), mine, size_t(n)).data());
      EXPECT_LT(e_ours, 1.15 * e_llama) << lf.file << " " << t.file_name;
      worst = std::max(worst, e_ours / e_llama);
      if (t.dtype == DType::Q8_0) {
        const int64_t bb = t.type().block_bytes();
        for (int64_t b = 0; b < n / 32; ++b, ++blocks)
          differ += std::memcmp(mine.data() + b * bb, qb.as<uint8_t>() + b * bb, size_t(bb)) != 0;
      }
    }
    std::printf("  %-18s worst ours/llama.cpp error ratio %.4f\n", lf.file, worst);
    if (blocks > 0) {
      std::printf("  %-18s Q8_0 blocks differing from llama.cpp: %lld of %lld\n", lf.file, (long long)differ, (long long)blocks);
      EXPECT_EQ(differ, 0) << lf.file;
    }
  }
}

// Per-type error of ours vs llama.cpp summed over every tensor of each file (printed for the record).
TEST(QuantLlamaCpp, ErrorSummaryPerType) {
  REQUIRE_FIXTURES();
  const TensorFiles f32 = TensorFiles::open_gguf((kGgufFixtures / "k256-f32.gguf").string());
  for (const LlamaFile& lf : kLlamaFiles) {
    const TensorFiles q = TensorFiles::open_gguf((kGgufFixtures / lf.file).string());
    std::map<std::string, std::array<double, 3>> sums;  // type -> {err llama, err ours, signal}
    for (const TensorInfo& t : q.tensors()) {
      if (!is_quantized(t.dtype)) continue;
      const TensorBytes ob = f32.read_all(f32.get(t.name)), qb = q.read_all(t);
      const int64_t n = t.numel();
      const float* x = ob.as<float>();
      std::vector<float> theirs(n), ours(n);
      quant::dequantize_row_ref(t.type(), qb.data(), n, theirs.data());
      std::vector<uint8_t> mine(t.type().bytes(n));
      quant::quantize_row(t.type(), x, n, mine.data());
      quant::dequantize_row_ref(t.type(), mine.data(), n, ours.data());
      auto& s = sums[std::string(dtype_name(t.dtype))];
      for (int64_t i = 0; i < n; ++i) {
        s[0] += (double(theirs[i]) - x[i]) * (double(theirs[i]) - x[i]);
        s[1] += (double(ours[i]) - x[i]) * (double(ours[i]) - x[i]);
        s[2] += double(x[i]) * x[i];
      }
    }
    for (const auto& [type, s] : sums) {
      std::printf("  %-18s %-5s rel rms llama.cpp %.5f ours %.5f (ratio %.4f)\n", lf.file, type.c_str(),
                  std::sqrt(s[0] / s[2]), std::sqrt(s[1] / s[2]), std::sqrt(s[1] / s[0]));
      EXPECT_LT(std::sqrt(s[1] / s[0]), 1.05) << lf.file << " " << type;
    }
  }
}

// (d) The mix: every tensor's type in llama.cpp's files is what choose_types picks.
TEST(QuantLlamaCpp, MixMatchesLlamaCppFiles) {
  REQUIRE_FIXTURES();
  for (const LlamaFile& lf : kLlamaFiles) {
    const TensorFiles q = TensorFiles::open_gguf((kGgufFixtures / lf.file).string());
    ASSERT_EQ(q.metadata().value("general.file_type", 0u), quant::recipe_file_type(lf.recipe)) << lf.file;
    const int n_layers = q.metadata().value("llama.block_count", 0);
    ASSERT_GT(n_layers, 0);
    std::vector<quant::TensorRole> roles;
    for (const TensorInfo& t : q.tensors()) {
      quant::TensorRole r = role(t.file_name, n_layers, t.shape.back(), int(t.shape.size()));
      r.n_expert = q.metadata().value("llama.expert_count", 0);
      roles.push_back(r);
    }
    const auto types = quant::choose_types(lf.recipe, roles);
    for (size_t i = 0; i < roles.size(); ++i)
      EXPECT_EQ(dtype_name(types[i]), dtype_name(q.tensors()[i].dtype)) << lf.file << " " << roles[i].name;
  }
}

}  // namespace
}  // namespace uneven
