// Command-line options shared by the subcommands that load a model (generate, bench, tokenize).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/model_files.h"

namespace uneven::cli {

struct ModelOptions {
  std::string model_path;
  bool random_weights = false;
  std::string dtype = "f32";  // random weights only
  int64_t group_size = 64;    // random MLX weights only
  uint64_t weight_seed = 0;
  int threads = 0;
  std::string device = "cpu";  // cpu | cuda | cuda:N, or one per rank (cuda,cpu)
  std::string gpu_prompt_precision = "fp32";  // fp32 | split-bf16 | bf16 (CUDA batched products)
  int64_t context = 0;  // 0: min(model max_position, 4096)
  int64_t layers = 0;   // random weights only: the first N layers of the config (0 = all)

  void add_to(CLI::App& cmd, bool with_compute = true);
  OpenOptions open_options(bool need_tokenizer) const;
  int64_t context_for(const ModelConfig& config) const;
};

// --temp, --top-k, --top-p, --min-p, --seed and --stop: the sampling options of generate and chat.
void add_sampling_options(CLI::App& cmd, SamplingParams& sampling, std::vector<std::string>& stop);

// A progress bar on stderr while loading, drawn only when stderr is a terminal.
LoadProgress terminal_progress(const std::string& label);

}  // namespace uneven::cli
