// The forward pass on one GPU (CUDA backend) against the CPU on every model the CPU engine passes: the
// same greedy ids, and logits within 1e-4 (or twice the CPU's own spread across SIMD targets, where the
// model amplifies rounding more) of the CPU's fp32 run of the same weights (quantized weights
// dequantized to F32 for that run, since the CPU's integer kernels round activations the way llama.cpp
// does and the GPU does not). Skips without a GPU. Fixtures: tests/data and $UNEVEN_SHARED (default
// ../shared beside the checkout).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <tuple>

#include <hwy/targets.h>

#include "compute/cuda/cuda_backend.h"
#include "engine/model_files.h"
#include "engine_test_util.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
// The checkout (compiled in; $UNEVEN_SOURCE_DIR when the binary runs from a copy on another machine).
fs::path source_dir() {
  const char* env = std::getenv("UNEVEN_SOURCE_DIR");
  return env && *env ? fs::path(env) : fs::path(UNEVEN_SOURCE_DIR);
}
const fs::path kSource = source_dir();

fs::path shared_dir() {
  const char* env = std::getenv("UNEVEN_SHARED");
  return env && *env ? fs::path(env) : kSource / "../shared";
}

// The same tensors with every matrix converted to F32 on read: the CPU's fp32 reference of a quantized
// (or BF16) model. The loader may hand back an entry of a stacked tensor (its own name, shape and offset
// inside the stack, see Model's locate); such an entry maps back to the same entry of the stored stack.
class DequantizedSource final : public WeightSource {
 public:
  explicit DequantizedSource(const WeightSource& inner) : inner_(inner) {}
  const TensorInfo* find(const std::string& name) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = infos_.find(name);
    if (it != infos_.end()) return &it->second.f32;
    const TensorInfo* t = inner_.find(name);
    if (!t) return nullptr;
    Pair p{*t, *t};
    if (t->dtype != DType::U32) {
      p.f32.dtype = DType::F32;
      p.f32.group = 0;
      p.f32.nbytes = uint64_t(t->numel()) * 4;
    }
    by_file_name_[t->file_name] = p;
    return &infos_.emplace(name, p).first->second.f32;
  }
  TensorBytes read_rows(const TensorInfo& t, int64_t begin, int64_t end) const override {
    const TensorInfo original = stored(t);
    return convert(original, inner_.read_rows(original, begin, end), (end - begin) * original.row_elems());
  }
  TensorBytes read_cols(const TensorInfo& t, int64_t begin, int64_t end) const override {
    const TensorInfo original = stored(t);
    return convert(original, inner_.read_cols(original, begin, end), original.rows() * (end - begin));
  }
  uint64_t bytes_touched() const override { return inner_.bytes_touched(); }
  std::string describe() const override { return inner_.describe() + " (dequantized to F32)"; }

 private:
  struct Pair {
    TensorInfo stored, f32;
  };
  TensorInfo stored(const TensorInfo& t) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = infos_.find(t.name);
    if (it != infos_.end() && it->second.f32.offset == t.offset) return it->second.stored;
    const Pair& stack = by_file_name_.at(t.file_name);  // an entry of a stacked tensor
    const uint64_t entries = stack.f32.nbytes / t.nbytes;
    TensorInfo entry = stack.stored;
    entry.name = t.name;
    entry.shape = t.shape;
    entry.nbytes = stack.stored.nbytes / entries;
    entry.offset = stack.stored.offset + (t.offset - stack.f32.offset) / t.nbytes * entry.nbytes;
    return entry;
  }
  static TensorBytes convert(const TensorInfo& original, TensorBytes bytes, int64_t elems) {
    if (original.dtype == DType::F32 || original.dtype == DType::U32) return bytes;
    std::vector<uint8_t> out(size_t(elems) * 4);
    kernels::to_f32(bytes.data(), original.type(), elems, reinterpret_cast<float*>(out.data()));
    return TensorBytes::owned(std::move(out));
  }
  const WeightSource& inner_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, Pair> infos_, by_file_name_;
};

// Prompt logits at every position and greedy ids of `steps` decode steps.
struct RunResult {
  std::vector<float> prompt_logits;
  std::vector<TokenId> greedy;
  std::vector<float> decode_logits;  // of every decode step, concatenated
};

RunResult run(Session& s, const std::vector<TokenId>& prompt, int steps) {
  RunResult r;
  s.reset();
  s.forward(prompt.data(), int64_t(prompt.size()), r.prompt_logits, true);
  const int64_t vocab = s.model().config().vocab_size;
  std::vector<float> logits(r.prompt_logits.end() - vocab, r.prompt_logits.end());
  for (int i = 0; i < steps; ++i) {
    r.greedy.push_back(TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    s.forward(&r.greedy.back(), 1, logits);
    r.decode_logits.insert(r.decode_logits.end(), logits.begin(), logits.end());
  }
  return r;
}

float max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Dense models decode through a recorded step (CUDA graph) replayed at each position; `context` sets how
// the recorded attention splits the cache (64: one split; 512: several, most of them empty early on).
// Prompts run in fp32 (1e-4 of the CPU) and on tensor cores over split 16-bit parts (1e-3).
void check_model(const fs::path& path, int64_t context = 64) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  SCOPED_TRACE(path.string());
  ASSERT_TRUE(fs::exists(path)) << path;
  OpenOptions options;
  options.need_tokenizer = false;
  ModelFiles files = open_model(path.string(), options);
  const ModelConfig& c = files.config;
  const RankSlices slices = single_rank_slices(c);
  DequantizedSource fp32_source(*files.weights);
  Model reference_model(c, slices, fp32_source);
  Model model(c, slices, *files.weights);

  // A prompt over two forward chunks would need 129+ tokens; 40 covers the batched paths and stays fast.
  std::vector<TokenId> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(TokenId((i * 7919 + 3) % c.vocab_size));
  auto comm = make_local_collective();
  ThreadPool pool(2);
  Session cpu(reference_model, *comm, pool, context);
  const RunResult want = run(cpu, prompt, 16);
  // The model's own rounding spread: the CPU again with other SIMD targets (other reduction orders, same
  // math). Random tiny hybrids amplify ulp-level differences: on Qwen3.5 / Qwen3-Next fixtures AVX-512 vs
  // SSE4 alone moves logits by up to ~8e-4. The GPU's reduction orders differ from the CPU's far more
  // (GEMM blocking of every product) than one SIMD width from another, so the bound is 4x that spread
  // where it exceeds the base tolerance; the transformers check below holds the hybrids to 1e-4 as well.
  float spread = 0;
  for (int64_t target : {int64_t(HWY_SSE4), int64_t(HWY_AVX2)}) {
    hwy::SetSupportedTargetsForTest(target);
    const RunResult other = run(cpu, prompt, 16);
    spread = std::max({spread, max_abs(other.prompt_logits, want.prompt_logits),
                       max_abs(other.decode_logits, want.decode_logits)});
  }
  hwy::SetSupportedTargetsForTest(0);

  for (const auto& [precision, name, tol] : {std::tuple{PromptPrecision::kFp32, "fp32", 1e-4f},
                                             std::tuple{PromptPrecision::kSplitBf16, "split-bf16", 1e-3f}}) {
    auto backend = make_cuda_backend(model.resident_weights(), 0, 0, precision);
    Session gpu(model, *comm, *backend, context);
    const RunResult got = run(gpu, prompt, 16);
    const float d_prompt = max_abs(got.prompt_logits, want.prompt_logits);
    const float d_decode = max_abs(got.decode_logits, want.decode_logits);
    const float bound = std::max(tol, 4 * spread);
    std::printf("%s on %s, %s prompts: max |logit - CPU fp32| prompt %.3g, decode %.3g (CPU: SSE4/AVX2 vs %s %.3g)\n",
                path.filename().c_str(), backend->name().c_str(), name, double(d_prompt), double(d_decode),
                kernels::simd_target(), double(spread));
    EXPECT_LE(d_prompt, bound) << name;
    EXPECT_LE(d_decode, bound) << name;
    EXPECT_EQ(got.greedy, want.greedy) << name;
  }
}

TEST(GpuDecode, RecordedStepsOverALongContextMatchCpu) { check_model(kSource / "tests/data/hf/qwen3", 512); }

// The shared fixtures carry transformers' logits at the first and last prompt position and its greedy ids:
// the GPU (fp32 prompts) meets them as the CPU does (hybrid_test), to 1e-4.
void check_against_transformers(const fs::path& dir) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_TRUE(fs::exists(dir / "reference.json")) << dir;
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  const auto prompt_ids = ref["prompt_ids"].get<std::vector<TokenId>>();
  const auto greedy_ids = ref["greedy_ids"].get<std::vector<TokenId>>();
  const auto first = ref["logits_first_position"].get<std::vector<float>>();
  const auto last = ref["logits_last_position"].get<std::vector<float>>();
  OpenOptions options;
  options.need_tokenizer = false;
  ModelFiles files = open_model(dir.string(), options);
  const ModelConfig& c = files.config;
  Model model(c, single_rank_slices(c), *files.weights);
  auto comm = make_local_collective();
  auto backend = make_cuda_backend(model.resident_weights(), 0);
  Session gpu(model, *comm, *backend, int64_t(prompt_ids.size() + greedy_ids.size() + 1));
  std::vector<float> logits;
  gpu.forward(prompt_ids.data(), int64_t(prompt_ids.size()), logits, true);
  const size_t vocab = size_t(c.vocab_size);
  const std::vector<float> got_first(logits.begin(), logits.begin() + vocab), got_last(logits.end() - vocab, logits.end());
  const float d_first = max_abs(got_first, first), d_last = max_abs(got_last, last);
  std::printf("%s on %s: max |logit - transformers| first position %.3g, last %.3g\n", dir.filename().c_str(),
              backend->name().c_str(), double(d_first), double(d_last));
  EXPECT_LE(d_first, 1e-4f);
  EXPECT_LE(d_last, 1e-4f);
  EXPECT_EQ(testing::greedy(gpu, prompt_ids, greedy_ids.size()), greedy_ids);
}

TEST(GpuReference, Qwen3MoeMatchesTransformers) { check_against_transformers(shared_dir() / "fixtures/hf/qwen3_moe"); }
TEST(GpuReference, Qwen35MoeMatchesTransformers) {
  check_against_transformers(shared_dir() / "fixtures/hf/qwen3_5_moe_text");
}

class HfFixture : public ::testing::TestWithParam<std::string> {};
TEST_P(HfFixture, MatchesCpu) { check_model(kSource / "tests/data/hf" / GetParam()); }
INSTANTIATE_TEST_SUITE_P(Gpu, HfFixture,
                         ::testing::Values("llama3_scaled", "llama_tied", "qwen2", "qwen2_bf16", "qwen3",
                                           "qwen3_5_moe_stacked", "qwen3_5_text", "qwen3_5_vl", "qwen3_moe_e16",
                                           "qwen3_next"));

class MlxFixture : public ::testing::TestWithParam<std::string> {};
TEST_P(MlxFixture, MatchesCpu) { check_model(kSource / "tests/data/mlx" / GetParam()); }
INSTANTIATE_TEST_SUITE_P(Gpu, MlxFixture,
                         ::testing::Values("qwen2_bf16_4bit_g64", "qwen3_4bit_g32", "qwen3_5_moe_4bit_g32",
                                           "qwen3_8bit_g64", "qwen3_moe_4bit_g32", "qwen3_next_4bit_g32"));

class SharedFixture : public ::testing::TestWithParam<std::string> {};
TEST_P(SharedFixture, MatchesCpu) { check_model(shared_dir() / GetParam()); }
INSTANTIATE_TEST_SUITE_P(Gpu, SharedFixture,
                         ::testing::Values("models/stories260K/stories260K.gguf", "fixtures/hf/qwen3_moe",
                                           "fixtures/hf/qwen3_5_moe_text", "fixtures/gguf/k256-f32.gguf",
                                           "fixtures/gguf/k256-Q8_0.gguf", "fixtures/gguf/k256-Q4_0.gguf",
                                           "fixtures/gguf/k256-Q4_K_M.gguf", "fixtures/gguf/k256-Q5_K_M.gguf",
                                           "fixtures/gguf/k256-Q6_K.gguf"),
                         [](const auto& info) {
                           std::string n = fs::path(info.param).stem().string();
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace uneven
