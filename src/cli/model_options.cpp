// Shared model-loading options and the loading progress bar.
#include "cli/model_options.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "util/error.h"

namespace uneven::cli {

void ModelOptions::add_to(CLI::App& cmd, bool with_compute) {
  cmd.add_option("--model,-m", model_path, "GGUF file, Hugging Face directory, or config.json (with --random-weights)")
      ->required();
  cmd.add_flag("--random-weights", random_weights, "seeded random weights from config.json alone (no weight files)");
  cmd.add_option("--weight-dtype", dtype, "type of random weights: " + std::string(kWeightTypeNames));
  cmd.add_option("--group-size", group_size, "random MLX weights: elements per scale/bias group (32, 64, 128)");
  cmd.add_option("--weight-seed", weight_seed, "seed of random weights");
  cmd.add_option("--layers", layers, "random weights only: keep the first N layers of the config (benches that fit)")
      ->check(CLI::PositiveNumber);
  if (with_compute) {
    cmd.add_option("--threads,-t", threads, "worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
    cmd.add_option("--device", device, "cpu, cuda (a GPU per local rank) or cuda:N; or one per rank, e.g. cuda,cpu");
    cmd.add_option("--gpu-prompt-precision", gpu_prompt_precision,
                   "GPU prompt products: fp32 (default, exact), split-bf16 (tensor cores, ~2^-16), bf16 (fastest)")
        ->check(CLI::IsMember({"fp32", "split-bf16", "bf16"}));
    cmd.add_option("--context,-c", context, "context length in tokens (default: min(model limit, 4096))")
        ->check(CLI::NonNegativeNumber);
  }
}

OpenOptions ModelOptions::open_options(bool need_tokenizer) const {
  OpenOptions o;
  o.random_weights = random_weights;
  const std::optional<WeightType> t = weight_type_from_name(dtype, int32_t(group_size));
  if (!t || t->dtype == DType::F16) fail("--weight-dtype '{}' is not one of {}", dtype, kWeightTypeNames);
  if (!random_weights && dtype != "f32") fail("--weight-dtype {} applies to --random-weights only", dtype);
  o.random_dtype = *t;
  o.seed = weight_seed;
  o.need_tokenizer = need_tokenizer;
  o.layers = layers;
  return o;
}

int64_t ModelOptions::context_for(const ModelConfig& config) const {
  if (context > config.max_position)
    fail("--context {} exceeds the model's limit of {} tokens (max_position_embeddings)", context, config.max_position);
  return context > 0 ? context : std::min<int64_t>(config.max_position, 4096);
}

LoadProgress terminal_progress(const std::string& label) {
  if (!isatty(STDERR_FILENO)) return {};
  return [label](int64_t done, int64_t total) {
    const int width = 30;
    int filled = total > 0 ? int(done * width / total) : width;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%%", label.c_str(), filled, "==============================",
                 width - filled, "", total > 0 ? int(done * 100 / total) : 100);
    if (done == total) std::fprintf(stderr, "\r%*s\r", int(label.size()) + width + 8, "");
    std::fflush(stderr);
  };
}

void add_sampling_options(CLI::App& cmd, SamplingParams& sampling, std::vector<std::string>& stop) {
  cmd.add_option("--temp", sampling.temperature, "temperature (0 = greedy, default)");
  cmd.add_option("--top-k", sampling.top_k, "keep the k most likely tokens (0 = off)");
  cmd.add_option("--top-p", sampling.top_p, "nucleus sampling mass (1 = off)");
  cmd.add_option("--min-p", sampling.min_p, "drop tokens below min_p x the top probability (0 = off)");
  cmd.add_option("--seed", sampling.seed, "sampling seed");
  cmd.add_option("--stop", stop, "stop before this string (repeatable)");
}

}  // namespace uneven::cli
