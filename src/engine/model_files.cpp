// Detects the model format at a path and opens config, tensor table and tokenizer from it.
#include "engine/model_files.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/mlx_source.h"
#include "util/error.h"

namespace uneven {

namespace fs = std::filesystem;

ModelFiles open_model(const std::string& path, const OpenOptions& options) {
  ModelFiles m;
  m.path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or directory", path);
  const bool is_dir = fs::is_directory(path, ec);
  const bool gguf = !is_dir && path.ends_with(".gguf");
  if (gguf) {
    auto tensors = std::make_shared<TensorFiles>(TensorFiles::open_gguf(path));
    m.config = config_from_gguf_metadata(tensors->metadata(), path);
    // llama.cpp writes models with tied embeddings (Llama-3.2-1B, Qwen3-0.6B, ...) without output.weight and
    // uses token_embd.weight as the output head; so do we.
    if (!tensors->find("lm_head.weight")) m.config.tie_word_embeddings = true;
    // llama.cpp's converter turns Llama 3 rope scaling into per-frequency factors in a tensor.
    if (const TensorInfo* f = tensors->find("rope_freqs.weight")) {
      const int64_t want = m.config.rotary_dim() / 2;
      if (f->dtype != DType::F32 || f->numel() != want)
        fail("{}: rope_freqs.weight is {} of {} values, but rotary dimension {} needs {} F32 factors", path,
             dtype_name(f->dtype), f->numel(), m.config.rotary_dim(), want);
      TensorBytes b = tensors->read_all(*f);
      m.config.rope_freq_factors.assign(b.as<float>(), b.as<float>() + want);
      for (float v : m.config.rope_freq_factors)
        if (!(v > 0.0f) || !std::isfinite(v)) fail("{}: rope_freqs.weight holds a factor {} (must be positive)", path, v);
    }
    if (options.need_tokenizer) m.tokenizer = tokenizer_from_gguf_metadata(tensors->metadata(), path);
    m.tensors = tensors;
  } else {
    const fs::path dir = is_dir ? fs::path(path) : fs::path(path).parent_path();
    const fs::path config_path = is_dir ? dir / "config.json" : fs::path(path);
    if (!fs::exists(config_path, ec))
      fail("{}: not a .gguf file and no config.json found (looked for {})", path, config_path.string());
    m.config = load_hf_config(config_path.string());
    if (!options.random_weights) m.tensors = std::make_shared<TensorFiles>(TensorFiles::open_safetensors_dir(dir.string()));
    if (options.need_tokenizer) {
      if (fs::exists(dir / "tokenizer.json", ec)) m.tokenizer = tokenizer_from_hf_dir(dir.string());
      else if (!options.random_weights) fail("{}: no tokenizer.json beside config.json", dir.string());
    }
  }
  if (options.layers > 0) {
    // A model of fewer layers computes something else; only benches of random weights may ask for it.
    if (!options.random_weights) fail("{}: --layers is only for --random-weights (a checkpoint runs all its layers)", path);
    if (options.layers > m.config.num_layers)
      fail("{}: --layers {} exceeds the model's {} layers", path, options.layers, m.config.num_layers);
    m.config.num_layers = options.layers;
    m.config.layer_types.resize(size_t(options.layers));
    if (!m.config.layer_is_moe.empty()) m.config.layer_is_moe.resize(size_t(options.layers));
  }
  if (options.random_weights) {
    m.weights = make_random_weight_source(m.config, options.random_dtype, options.seed);
  } else {
    if (!m.tensors) fail("{}: no weights", path);
    m.weights = make_file_weight_source(m.tensors);
    if (!gguf) {
      const fs::path dir = is_dir ? fs::path(path) : fs::path(path).parent_path();
      std::ifstream in(dir / "config.json");
      const nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
      if (const nlohmann::json* q = config.is_object() ? mlx_quantization(config) : nullptr) {
        m.weights = make_mlx_weight_source(m.tensors, *q);
        // mlx-lm adds the 1 of (1 + w) RMSNorms to the weights when it converts a checkpoint.
        m.config.norm_weight_offset = 0.0f;
      }
    }
  }
  if (m.tokenizer && m.tokenizer->vocab_size() > m.config.vocab_size)
    fail("{}: the tokenizer has {} tokens but the model's vocabulary is {}", path, m.tokenizer->vocab_size(),
         m.config.vocab_size);
  return m;
}

}  // namespace uneven
