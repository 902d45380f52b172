// GGUF files quantized by llama.cpp itself: their tensors decode to the F32 original, the kernels agree
// with the scalar decoder, and greedy decoding follows llama.cpp's own run up to its first near-tie.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "comm/collective.h"
#include "compute/kernels.h"
#include "engine/model_files.h"
#include "engine/session.h"
#include "engine_test_util.h"
#include "model/tensor_file.h"
#include "quant/activations.h"
#include "quant/blocks.h"

namespace uneven {
namespace {
namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(UNEVEN_SOURCE_DIR) / ".." / "shared" / "fixtures" / "gguf";

std::vector<float> decode(const TensorFiles& f, const TensorInfo& t) {
  TensorBytes b = f.read_all(t);
  std::vector<float> out(size_t(t.numel()));
  quant::dequantize_row_ref(t.type(), b.data(), t.numel(), out.data());
  return out;
}

double relative_rms(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    ref += double(want[i]) * want[i];
  }
  return std::sqrt(err / ref);
}

// Relative RMS error each format reaches on these (uniform random) weights, with a margin: a wrong
// block decoding (a swapped nibble, a misread scale) gives errors of order 1.
double error_bound(DType t) {
  switch (t) {
    case DType::Q8_0: return 0.01;
    case DType::Q6_K: return 0.02;
    case DType::Q5_K: case DType::Q5_0: case DType::Q5_1: return 0.04;
    case DType::Q4_K: case DType::Q4_0: case DType::Q4_1: return 0.08;
    default: return 1e-7;
  }
}

class LlamaCppQuantized : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaCppQuantized, TensorsDecodeToTheF32Original) {
  const TensorFiles original = TensorFiles::open_gguf((kFixtures / "k256-f32.gguf").string());
  const TensorFiles quantized = TensorFiles::open_gguf((kFixtures / ("k256-" + GetParam() + ".gguf")).string());
  int checked = 0;
  for (const TensorInfo& t : quantized.tensors()) {
    const TensorInfo& o = original.get(t.name);
    ASSERT_EQ(t.shape, o.shape) << t.name;
    const double e = relative_rms(decode(quantized, t), decode(original, o));
    EXPECT_LT(e, error_bound(t.dtype)) << t.file_name << " " << dtype_name(t.dtype);
    if (is_quantized(t.dtype)) ++checked;
  }
  if (GetParam() != "f32") {
    EXPECT_GE(checked, 7) << "expected every matrix quantized";
  }
}

// The SIMD matrix-vector and batched products equal the product of the scalar-decoded weights with the
// activations rounded as llama.cpp rounds them (quant/activations.h).
TEST_P(LlamaCppQuantized, KernelsMatchTheScalarDecoder) {
  const TensorFiles f = TensorFiles::open_gguf((kFixtures / ("k256-" + GetParam() + ".gguf")).string());
  ThreadPool pool(2);
  for (const TensorInfo& t : f.tensors()) {
    if (t.shape.size() != 2 || !is_quantized(t.dtype)) continue;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    TensorBytes b = f.read_all(t);
    std::vector<float> w = decode(f, t);
    for (int64_t batch : {1, 3, 9}) {
      std::vector<float> x(size_t(batch * cols)), y(size_t(batch * rows));
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37 * double(i) + 1.0);
      kernels::WeightView v{b.data(), t.dtype, rows, cols, t.group, t.group_scale};
      kernels::matmul(v, x.data(), batch, y.data(), pool);
      std::vector<float> sums(size_t(cols / 16));
      for (int64_t bi = 0; bi < batch; ++bi)
        quant::round_activations(t.dtype, x.data() + bi * cols, cols, x.data() + bi * cols, sums.data());
      for (int64_t bi = 0; bi < batch; ++bi)
        for (int64_t r = 0; r < rows; ++r) {
          double want = 0, scale = 0;
          for (int64_t c = 0; c < cols; ++c) {
            want += double(w[size_t(r * cols + c)]) * x[size_t(bi * cols + c)];
            scale += std::fabs(double(w[size_t(r * cols + c)]) * x[size_t(bi * cols + c)]);
          }
          ASSERT_NEAR(y[size_t(bi * rows + r)], want, 2e-6 * scale + 1e-7)
              << t.file_name << " " << dtype_name(t.dtype) << " batch " << batch << " row " << r;
        }
    }
  }
}

struct RefRun {
  std::string prompt;
  std::vector<TokenId> prompt_ids, greedy_ids;
  std::vector<double> margins;
};

std::vector<RefRun> read_refs(const fs::path& path) {
  std::ifstream in(path);
  std::vector<RefRun> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    out.push_back({j.at("prompt"), j.at("prompt_ids"), j.at("greedy_ids"), j.at("margins")});
  }
  return out;
}

// What counts as a near-tie. This random 3-layer model amplifies tiny numeric differences: quantized
// weights move its log-probabilities by 0.2-0.4 from the F32 model's, and llama.cpp rounds activations
// to 8-bit blocks (as we do for GGML weights), which turns its F16 KV cache's 1e-3 differences into whole
// rounding steps. Measured: our F32 run agrees with llama.cpp's to 0.01 in log-probability, our
// quantized runs to ~0.14, and llama.cpp's own AVX-512 build departs from these (AVX2-made) references
// before their first 0.05-margin step on 2 of 16 prompts of Q8_0, Q4_0 and Q6_K. So every step is fed
// llama.cpp's own token (teacher forcing, so one near-tie does not end the comparison); our argmax must
// equal llama.cpp's at every step it wins by at least 1.0, and at 98% of the steps it wins by 0.3
// (measured: 100% and 99.1-99.8%). A decoding error (a wrong scale or nibble order) changes logits by
// whole units and fails both at once.
constexpr double kNearTie = 0.3, kClearWin = 1.0;

TEST_P(LlamaCppQuantized, GreedyIdsFollowLlamaCpp) {
  const std::string name = "k256-" + GetParam();
  ModelFiles files = open_model((kFixtures / (name + ".gguf")).string(), {});
  Model model(files.config, single_rank_slices(files.config), *files.weights);
  auto comm = make_local_collective();
  ThreadPool pool(2);
  Session session(model, *comm, pool, 128);
  int compared = 0, agreed = 0, steps = 0;
  for (const RefRun& r : read_refs(kFixtures / (name + ".ref.jsonl"))) {
    std::vector<float> logits;
    session.reset();
    session.forward(r.prompt_ids.data(), int64_t(r.prompt_ids.size()), logits);
    for (size_t i = 0; i < r.greedy_ids.size(); ++i, ++steps) {
      const TokenId ours = TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (r.margins[i] >= kClearWin) {
        EXPECT_EQ(ours, r.greedy_ids[i]) << name << " prompt \"" << r.prompt << "\" step " << i << " (llama.cpp margin "
                                         << r.margins[i] << ")";
      }
      if (r.margins[i] >= kNearTie) {
        ++compared;
        agreed += ours == r.greedy_ids[i];
      }
      session.forward(&r.greedy_ids[i], 1, logits);
    }
  }
  EXPECT_GT(compared, steps * 3 / 4) << "too few steps above the near-tie margin to compare";
  EXPECT_GE(agreed, compared * 98 / 100) << name << ": " << agreed << " of " << compared << " steps agree";
}

INSTANTIATE_TEST_SUITE_P(Types, LlamaCppQuantized, ::testing::Values("Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "f32"));

}  // namespace
}  // namespace uneven
