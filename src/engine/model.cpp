// Loading a rank's weights: each tensor of the architecture table, only the slice its plan gives it.
#include "engine/model.h"

#include <algorithm>

#include "engine/arch.h"
#include "util/error.h"

namespace uneven {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class Loader {
 public:
  Loader(const ModelConfig& c, const RankSlices& s, const WeightSource& src, ModelWeights& w)
      : config_(c), slices_(s), source_(src), weights_(w) {}

  const TensorInfo& info(const TensorSpec& spec) {
    const TensorInfo* t = source_.find(spec.name);
    if (!t) fail("{}: tensor {} is missing (required by the {} architecture)", source_.describe(), spec.name,
                 config_.architecture);
    if (t->shape != spec.shape)
      fail("{}: tensor {} (stored as {}) has shape {} but config.json implies {}", source_.describe(), spec.name,
           t->file_name, shape_str(t->shape), shape_str(spec.shape));
    return *t;
  }

  Linear linear(const TensorSpec& spec, int64_t layer) {
    const TensorInfo& t = info(spec);
    SliceRange r = slice_for(spec, config_, slices_, layer);
    Linear out;
    if (r.end > r.begin)  // an empty share reads nothing
      out.bytes = r.columns ? source_.read_cols(t, r.begin, r.end) : source_.read_rows(t, r.begin, r.end);
    out.view.rows = r.columns ? t.shape[0] : r.end - r.begin;
    out.view.cols = r.columns ? r.end - r.begin : t.row_elems();
    out.view.dtype = t.dtype;
    if (t.dtype == DType::F16) {  // no F16 kernels on the hot path: widen once at load
      std::vector<uint8_t> wide(size_t(out.view.rows * out.view.cols) * 4);
      kernels::to_f32(out.bytes.data(), DType::F16, out.view.rows * out.view.cols, reinterpret_cast<float*>(wide.data()));
      out.bytes = TensorBytes::owned(std::move(wide));
      out.view.dtype = DType::F32;
    }
    out.view.data = out.bytes.data();
    weights_.bytes += out.bytes.size();
    return out;
  }

  std::vector<float> vec(const TensorSpec& spec, int64_t layer) {
    Linear l = linear(spec, layer);
    std::vector<float> v(size_t(l.view.rows * l.view.cols));
    kernels::to_f32(l.bytes.data(), l.view.dtype, int64_t(v.size()), v.data());
    return v;
  }

 private:
  const ModelConfig& config_;
  const RankSlices& slices_;
  const WeightSource& source_;
  ModelWeights& weights_;
};

// Where each per-layer tensor of the architecture table goes in LayerWeights.
const std::pair<const char*, std::vector<float> LayerWeights::*> kVectors[] = {
    {"input_layernorm.weight", &LayerWeights::attn_norm}, {"post_attention_layernorm.weight", &LayerWeights::ffn_norm},
    {"self_attn.q_norm.weight", &LayerWeights::q_norm},   {"self_attn.k_norm.weight", &LayerWeights::k_norm},
    {"self_attn.q_proj.bias", &LayerWeights::q_bias},     {"self_attn.k_proj.bias", &LayerWeights::k_bias},
    {"self_attn.v_proj.bias", &LayerWeights::v_bias},
};
const std::pair<const char*, Linear LayerWeights::*> kMatrices[] = {
    {"self_attn.q_proj.weight", &LayerWeights::q}, {"self_attn.k_proj.weight", &LayerWeights::k},
    {"self_attn.v_proj.weight", &LayerWeights::v}, {"self_attn.o_proj.weight", &LayerWeights::o},
    {"mlp.gate_proj.weight", &LayerWeights::gate}, {"mlp.up_proj.weight", &LayerWeights::up},
    {"mlp.down_proj.weight", &LayerWeights::down},
};

}  // namespace

Model::Model(ModelConfig config, RankSlices slices, const WeightSource& source, const LoadProgress& progress)
    : config_(std::move(config)), slices_(std::move(slices)) {
  const ModelConfig& c = config_;
  if (int64_t(slices_.layer.size()) != c.num_layers)
    fail("plan for rank {} covers {} layers but the model has {}", slices_.rank, slices_.layer.size(), c.num_layers);
  Loader load(c, slices_, source, weights_);
  int64_t total = 0, done = 0;
  for (int64_t l = slices_.layers.begin; l < slices_.layers.end; ++l) total += int64_t(layer_tensors(c, l).size());
  total += int64_t(global_tensors(c).size());
  auto tick = [&] {
    ++done;
    if (progress) progress(done, total);
  };

  weights_.layers.resize(size_t(c.num_layers));
  for (const TensorSpec& spec : global_tensors(c)) {
    bool needed = spec.role == SplitRole::EmbeddingRows ? slices_.has_embedding || (c.tie_word_embeddings && slices_.has_output)
                                                        : slices_.has_output;
    if (needed) {
      if (spec.role == SplitRole::EmbeddingRows) {
        // Tied weights serve as the output head too, so they follow the output rows when those differ.
        weights_.embedding = load.linear(spec, -1);
      } else if (spec.role == SplitRole::OutputRows) {
        weights_.output = load.linear(spec, -1);
      } else {
        weights_.final_norm = load.vec(spec, -1);
      }
    }
    tick();
  }
  if (c.tie_word_embeddings && slices_.embedding_rows != slices_.output_rows)
    fail("plan for rank {}: tied embeddings need the same embedding and output rows", slices_.rank);

  for (int64_t l = slices_.layers.begin; l < slices_.layers.end; ++l) {
    LayerWeights& lw = weights_.layers[size_t(l)];
    const std::string p = layer_prefix(l);
    for (const TensorSpec& spec : layer_tensors(c, l)) {
      const std::string role = spec.name.substr(p.size());
      if (auto v = std::find_if(std::begin(kVectors), std::end(kVectors), [&](auto& e) { return role == e.first; });
          v != std::end(kVectors)) {
        lw.*(v->second) = load.vec(spec, l);
      } else if (auto m = std::find_if(std::begin(kMatrices), std::end(kMatrices), [&](auto& e) { return role == e.first; });
                 m != std::end(kMatrices)) {
        lw.*(m->second) = load.linear(spec, l);
      } else {
        fail("architecture table names tensor {} that the loader does not place", spec.name);
      }
      tick();
    }
  }
}

const kernels::WeightView& Model::output_head() const {
  return config_.tie_word_embeddings ? weights_.embedding.view : weights_.output.view;
}

}  // namespace uneven

namespace uneven {

uint64_t Model::touch_weights() const {
  uint64_t sum = 0;
  auto touch = [&](const TensorBytes& b) {
    const auto* p = static_cast<const volatile uint8_t*>(b.data());
    for (size_t i = 0; i < b.size(); i += 4096) sum += p[i];
  };
  touch(weights_.embedding.bytes);
  touch(weights_.output.bytes);
  for (const LayerWeights& l : weights_.layers)
    for (const auto& m : kMatrices) touch((l.*(m.second)).bytes);
  return sum;
}

}  // namespace uneven
