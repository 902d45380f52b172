// Opening what a user points at: a GGUF file, a Hugging Face directory, or a config.json for random weights.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "engine/weight_source.h"
#include "model/config.h"
#include "model/tensor_file.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

struct ModelFiles {
  std::string path;
  ModelConfig config;
  std::shared_ptr<const TensorFiles> tensors;  // null for random weights
  std::unique_ptr<WeightSource> weights;
  std::unique_ptr<Tokenizer> tokenizer;        // null when none was found (random weights from a bare config)
};

struct OpenOptions {
  bool random_weights = false;    // build weights from config.json alone
  WeightType random_dtype = DType::F32;  // random_weights: F32, BF16, or a quantized type
  uint64_t seed = 0;
  bool need_tokenizer = true;
  int64_t layers = 0;             // with random_weights: keep only the first `layers` layers (0 = all)
};

// `path` is a .gguf file or a directory with config.json (+ safetensors unless random_weights), or, with
// random_weights, a config.json file. Reads headers only; throws naming the file on any problem.
ModelFiles open_model(const std::string& path, const OpenOptions& options);

}  // namespace uneven
