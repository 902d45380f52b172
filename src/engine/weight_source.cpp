// Weight sources: a thin adapter over TensorFiles, and counter-based seeded random weights.
#include "engine/weight_source.h"

#include <cmath>
#include <cstring>
#include <thread>
#include <unordered_map>

#include "engine/arch.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace uneven {
namespace {

class FileWeightSource final : public WeightSource {
 public:
  explicit FileWeightSource(std::shared_ptr<const TensorFiles> files) : files_(std::move(files)) {}
  // Multimodal checkpoints keep the language model under model.language_model.* (the vision tower under
  // model.visual.* and multi-token prediction under mtp.* are never asked for, so never read).
  const TensorInfo* find(const std::string& name) const override {
    if (const TensorInfo* t = files_->find(name)) return t;
    if (name.starts_with("model.")) return files_->find("model.language_model." + name.substr(6));
    return nullptr;
  }
  TensorBytes read_rows(const TensorInfo& t, int64_t b, int64_t e) const override { return files_->read_rows(t, b, e); }
  TensorBytes read_cols(const TensorInfo& t, int64_t b, int64_t e) const override { return files_->read_cols(t, b, e); }
  uint64_t bytes_touched() const override { return files_->data_bytes_touched(); }
  std::string describe() const override { return files_->paths().empty() ? "(no files)" : files_->paths()[0]; }

 private:
  std::shared_ptr<const TensorFiles> files_;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

class RandomWeightSource final : public WeightSource {
 public:
  RandomWeightSource(const ModelConfig& c, const WeightType& type, uint64_t seed) : seed_(seed) {
    auto add = [&](const TensorSpec& spec) {
      TensorInfo info;
      info.name = info.file_name = spec.name;
      info.shape = spec.shape;
      const WeightType t = random_tensor_type(type, spec);
      info.dtype = t.dtype;
      info.group = t.group;
      info.group_scale = t.scale;
      info.nbytes = uint64_t(info.numel() / t.block_elems()) * uint64_t(t.block_bytes());
      bool is_norm = spec.name.find("norm") != std::string::npos;
      bool is_bias = spec.name.ends_with(".bias");
      // Norm weights near 1 as the forward pass applies them: offset norms store w - 1; the gated norm of
      // linear attention multiplies by w itself.
      const bool gated_norm = spec.slot == Slot::LinearNorm;
      Params p;
      p.name_hash = splitmix64(fnv1a(spec.name) ^ seed_);
      p.offset = is_norm ? (gated_norm ? 1.0f : 1.0f - c.norm_weight_offset) : 0.0f;
      p.scale = is_norm ? 0.1f : is_bias ? 0.02f : std::sqrt(3.0f / float(spec.shape.back()));
      params_[spec.name] = p;
      tensors_[spec.name] = info;
    };
    for (const auto& spec : global_tensors(c)) add(spec);
    for (int64_t l = 0; l < c.num_layers; ++l)
      for (const auto& spec : layer_tensors(c, l)) add(spec);
  }

  const TensorInfo* find(const std::string& name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  TensorBytes read_rows(const TensorInfo& t, int64_t b, int64_t e) const override {
    if (b < 0 || e > t.rows() || b > e) fail("random weights: rows [{}, {}) outside tensor {} of {} rows", b, e, t.name, t.rows());
    return generate(t, e - b, t.row_elems(), [&](int64_t r, int64_t c) { return (b + r) * t.row_elems() + c; });
  }
  TensorBytes read_cols(const TensorInfo& t, int64_t b, int64_t e) const override {
    if (t.shape.size() != 2 || b < 0 || e > t.shape[1] || b > e)
      fail("random weights: columns [{}, {}) outside tensor {}", b, e, t.name);
    return generate(t, t.shape[0], e - b, [&](int64_t r, int64_t c) { return r * t.shape[1] + b + c; });
  }
  uint64_t bytes_touched() const override { return touched_; }
  std::string describe() const override { return "random weights (seed " + std::to_string(seed_) + ")"; }

 private:
  struct Params {
    uint64_t name_hash = 0;
    float offset = 0, scale = 1;
  };

  // Quantized random weights: matrices whose rows hold whole blocks of the requested type, falling back
  // as llama.cpp's quantizer does for narrow rows (k-quants to Q5_0 / Q5_1 / Q8_0, then F32); routers,
  // conv1d kernels and vectors stay F32. MLX types quantize rows divisible by the group, others stay F32.
  static WeightType random_tensor_type(const WeightType& requested, const TensorSpec& spec) {
    if (!is_quantized(requested.dtype)) return requested;
    const WeightType plain{DType::F32};
    if (spec.shape.size() < 2 || spec.slot == Slot::LinearConv || spec.slot == Slot::Router || spec.slot == Slot::SharedGate)
      return plain;
    const int64_t cols = spec.shape.back();
    WeightType t = requested;
    if (cols % t.block_elems() == 0) return t;
    if (is_mlx(t.dtype)) return plain;
    t.dtype = t.dtype == DType::Q4_K ? DType::Q5_0 : t.dtype == DType::Q5_K ? DType::Q5_1
            : t.dtype == DType::Q6_K ? DType::Q8_0 : t.dtype;
    return cols % t.block_elems() == 0 ? t : plain;
  }

  template <typename IndexFn>
  TensorBytes generate(const TensorInfo& t, int64_t rows, int64_t cols, IndexFn index) const {
    const Params& p = params_.at(t.name);
    const WeightType type = t.type();
    if (cols % type.block_elems() != 0)
      fail("random weights: {} columns of tensor {} are not whole {} blocks", cols, t.name, type.name());
    const size_t row_bytes = size_t(type.bytes(cols));
    std::vector<uint8_t> bytes(size_t(rows) * row_bytes);
    auto fill_rows = [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          uint64_t bits = splitmix64(p.name_hash + uint64_t(index(r, c)));
          float u = float(int64_t(bits >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));  // [-1, 1)
          row[size_t(c)] = p.offset + p.scale * u;
        }
        uint8_t* out = bytes.data() + size_t(r) * row_bytes;
        if (type.dtype == DType::F32) {
          std::memcpy(out, row.data(), row_bytes);
        } else if (type.dtype == DType::BF16 || type.dtype == DType::F16) {
          for (int64_t c = 0; c < cols; ++c) {
            uint16_t h = f32_to_bf16(row[size_t(c)]);  // F16 random weights are generated as BF16 values
            std::memcpy(out + 2 * c, &h, 2);
          }
        } else {
          quant::quantize_row(type, row.data(), cols, out);
        }
      }
    };
    int64_t threads = rows * cols > (1 << 20) ? std::max(1u, std::thread::hardware_concurrency()) : 1;
    std::vector<std::thread> pool;
    for (int64_t i = 1; i < threads; ++i) pool.emplace_back(fill_rows, rows * i / threads, rows * (i + 1) / threads);
    fill_rows(0, rows / threads);
    for (auto& th : pool) th.join();
    touched_ += bytes.size();
    return TensorBytes::owned(std::move(bytes));
  }

  uint64_t seed_;
  std::unordered_map<std::string, TensorInfo> tensors_;
  std::unordered_map<std::string, Params> params_;
  mutable uint64_t touched_ = 0;
};

}  // namespace

std::unique_ptr<WeightSource> make_file_weight_source(std::shared_ptr<const TensorFiles> files) {
  return std::make_unique<FileWeightSource>(std::move(files));
}

std::unique_ptr<WeightSource> make_random_weight_source(const ModelConfig& config, const WeightType& type, uint64_t seed) {
  if (type.dtype == DType::F16) fail("random weights: F16 is not offered; use F32 or BF16");
  if (is_mlx(type.dtype) && type.group != 32 && type.group != 64 && type.group != 128)
    fail("random weights: MLX group size {} is not 32, 64 or 128", type.group);
  return std::make_unique<RandomWeightSource>(config, type, seed);
}

}  // namespace uneven
