// Loading a rank's weights: each tensor of the architecture table, only the slice its plan gives it.
#include "engine/model.h"

#include <algorithm>
#include <cstring>

#include "engine/arch.h"
#include "util/error.h"

namespace uneven {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// RMSNorm weights that the config says are stored as an offset from one.
bool is_offset_norm(Slot s) {
  return s == Slot::FinalNorm || s == Slot::AttnNorm || s == Slot::FfnNorm || s == Slot::QNorm || s == Slot::KNorm;
}

// A tensor as stored, and the rows of it a spec's slice covers.
struct Located {
  TensorInfo info;
  SliceRange range;
};

class Loader {
 public:
  Loader(const ModelConfig& c, const RankSlices& s, const WeightSource& src, ModelWeights& w)
      : config_(c), slices_(s), source_(src), weights_(w) {}

  // Finds the tensor of `spec`: under its own name, or as one entry of a stacked 3-D tensor.
  Located locate(const TensorSpec& spec, int64_t layer) {
    Located out;
    out.range = slice_for(spec, config_, slices_, layer);
    if (const TensorInfo* t = source_.find(spec.name)) {
      if (t->dtype == DType::U32)
        fail("{}: tensor {} holds U32 codes: an MLX-quantized checkpoint, but config.json has no quantization block "
             "(group_size, bits) to read it with", source_.describe(), t->file_name);
      if (t->shape != spec.shape)
        fail("{}: tensor {} (stored as {}) has shape {} but config.json implies {} ({})", source_.describe(), spec.name,
             t->file_name, shape_str(t->shape), shape_str(spec.shape), shape_reason(spec, config_));
      out.info = *t;
      return out;
    }
    // Entry `index` of a stacked tensor: under the checkpoint's own stacked name, else under another
    // layout's (llama.cpp's per-projection stacks).
    std::vector<const StackedSource*> candidates;
    if (spec.stacked) candidates.push_back(&*spec.stacked);
    for (const StackedSource& alt : spec.stacked_alternatives) candidates.push_back(&alt);
    for (const StackedSource* candidate : candidates) {
      const StackedSource& st = *candidate;
      if (const TensorInfo* t = source_.find(st.name)) {
        if (t->shape != st.shape)
          fail("{}: stacked tensor {} (stored as {}) has shape {} but config.json implies {} (num_experts {}, "
               "moe_intermediate_size {}, hidden_size {})", source_.describe(), st.name, t->file_name,
               shape_str(t->shape), shape_str(st.shape), config_.num_experts, config_.moe_intermediate_size,
               config_.hidden_size);
        // Entry `index` is a contiguous [rows, cols] block; the spec's rows start at row_offset inside it.
        const uint64_t entry_bytes = t->nbytes / uint64_t(st.shape[0]);
        out.info = *t;
        out.info.name = spec.name;
        out.info.shape = {st.shape[1], st.shape[2]};
        out.info.offset = t->offset + uint64_t(st.index) * entry_bytes;
        out.info.nbytes = entry_bytes;
        if (!out.range.columns)
          for (Range& r : out.range.runs) r = {r.begin + st.row_offset, r.end + st.row_offset};
        return out;
      }
    }
    if (!candidates.empty()) {
      std::string names;
      for (const StackedSource* st : candidates) names += (names.empty() ? "" : " or ") + st->name;
      fail("{}: tensor {} is missing, and so is the stacked {} that could hold it (required by the {} architecture)",
           source_.describe(), spec.name, names, config_.architecture);
    }
    fail("{}: tensor {} is missing (required by the {} architecture)", source_.describe(), spec.name,
         config_.architecture);
  }

  // The rank's slices of one or more tensors stacked by rows into one matrix (a single row run stays a
  // memory map of the file; several are gathered into one buffer).
  Linear matrix(const std::vector<const TensorSpec*>& specs, int64_t layer) {
    std::vector<Located> parts;
    for (const TensorSpec* spec : specs) parts.push_back(locate(*spec, layer));
    const WeightType type = parts[0].info.type();
    const DType dtype = type.dtype;
    if (dtype == DType::U32)
      fail("{}: tensor {} holds U32 codes: an MLX-quantized checkpoint, but config.json has no quantization block "
           "(group_size, bits) to read it with", source_.describe(), parts[0].info.file_name);
    const int64_t row_elems = parts[0].info.row_elems();
    for (const Located& p : parts) {
      if (p.info.type() != type || p.info.row_elems() != row_elems)
        fail("{}: tensors {} ({}, rows of {}) and {} ({}, rows of {}) must have the same type and row length to be "
             "loaded as one matrix", source_.describe(), parts[0].info.name, type.name(), row_elems, p.info.name,
             p.info.type().name(), p.info.row_elems());
      if (p.range.columns && parts.size() > 1) fail("column slice of {} cannot be stacked with other tensors", p.info.name);
    }
    Linear out;
    out.view.dtype = dtype;
    out.view.group = type.group;
    out.view.scale = type.scale;
    if (parts[0].range.columns) {
      const Located& p = parts[0];
      const Range r = p.range.runs.at(0);
      if (p.info.shape.size() != 2) fail("{}: tensor {} is not 2-D, cannot take its columns", source_.describe(), p.info.name);
      if (r.end > r.begin) out.bytes = source_.read_cols(p.info, r.begin, r.end);
      out.view.rows = p.info.shape[0];
      out.view.cols = r.size();
    } else {
      int64_t rows = 0, runs = 0;
      for (const Located& p : parts) {
        rows += p.range.count();
        runs += int64_t(p.range.runs.size());
      }
      if (runs == 1) {
        for (const Located& p : parts)
          if (!p.range.runs.empty()) out.bytes = source_.read_rows(p.info, p.range.runs[0].begin, p.range.runs[0].end);
      } else if (runs > 1) {
        const size_t row_bytes = size_t(type.bytes(row_elems));
        std::vector<uint8_t> all(size_t(rows) * row_bytes);
        size_t at = 0;
        for (const Located& p : parts)
          for (const Range& r : p.range.runs) {
            TensorBytes b = source_.read_rows(p.info, r.begin, r.end);
            std::memcpy(all.data() + at, b.data(), b.size());
            at += b.size();
          }
        out.bytes = TensorBytes::owned(std::move(all));
      }
      out.view.rows = rows;
      out.view.cols = row_elems;
    }
    if (dtype == DType::F16) {  // no F16 kernels on the hot path: widen once at load
      std::vector<uint8_t> wide(size_t(out.view.rows * out.view.cols) * 4);
      kernels::to_f32(out.bytes.data(), DType::F16, out.view.rows * out.view.cols, reinterpret_cast<float*>(wide.data()));
      out.bytes = TensorBytes::owned(std::move(wide));
      out.view.dtype = DType::F32;
    }
    out.view.data = out.bytes.data();
    weights_.bytes += out.bytes.size();
    return out;
  }

  std::vector<float> vec(const std::vector<const TensorSpec*>& specs, int64_t layer) {
    Linear l = matrix(specs, layer);
    std::vector<float> v(size_t(l.view.rows * l.view.cols));
    kernels::to_f32(l.bytes.data(), l.view.type(), int64_t(v.size()), v.data());
    if (is_offset_norm(specs[0]->slot) && config_.norm_weight_offset != 0.0f)
      for (float& x : v) x += config_.norm_weight_offset;
    return v;
  }

 private:
  const ModelConfig& config_;
  const RankSlices& slices_;
  const WeightSource& source_;
  ModelWeights& weights_;
};

// Where a slot's tensor goes: a vector (widened to F32) or a matrix; null for the other kind.
std::vector<float>* vector_target(ModelWeights& w, LayerWeights& lw, Slot s) {
  switch (s) {
    case Slot::FinalNorm: return &w.final_norm;
    case Slot::AttnNorm: return &lw.attn_norm;
    case Slot::FfnNorm: return &lw.ffn_norm;
    case Slot::QNorm: return &lw.q_norm;
    case Slot::KNorm: return &lw.k_norm;
    case Slot::QBias: return &lw.q_bias;
    case Slot::KBias: return &lw.k_bias;
    case Slot::VBias: return &lw.v_bias;
    case Slot::LinearConv: return &lw.conv;
    case Slot::LinearALog: return &lw.a_log;
    case Slot::LinearDtBias: return &lw.dt_bias;
    case Slot::LinearNorm: return &lw.linear_norm;
    default: return nullptr;
  }
}

Linear* matrix_target(ModelWeights& w, LayerWeights& lw, Slot s, int64_t index) {
  auto expert = [&](std::vector<Linear>& v) -> Linear* {
    if (index < 0 || index >= int64_t(v.size())) return nullptr;
    return &v[size_t(index)];
  };
  switch (s) {
    case Slot::Embedding: return &w.embedding;
    case Slot::Output: return &w.output;
    case Slot::Q: return &lw.q;
    case Slot::K: return &lw.k;
    case Slot::V: return &lw.v;
    case Slot::O: return &lw.o;
    case Slot::MlpGateUp: return &lw.gate_up;
    case Slot::MlpDown: return &lw.down;
    case Slot::LinearIn: return &lw.linear_in;
    case Slot::LinearOut: return &lw.linear_out;
    case Slot::Router: return &lw.router;
    case Slot::SharedGate: return &lw.shared_gate;
    case Slot::SharedGateUp: return &lw.shared_gate_up;
    case Slot::SharedDown: return &lw.shared_down;
    case Slot::ExpertGateUp: return expert(lw.expert_gate_up);
    case Slot::ExpertDown: return expert(lw.expert_down);
    default: return nullptr;
  }
}

// Loads consecutive specs sharing a slot (and expert index) as one target; calls tick per tensor.
template <typename Tick>
void load_specs(Loader& load, ModelWeights& w, LayerWeights& lw, const std::vector<TensorSpec>& specs, int64_t layer,
                const Tick& tick) {
  for (size_t i = 0; i < specs.size();) {
    std::vector<const TensorSpec*> group = {&specs[i]};
    size_t j = i + 1;
    while (j < specs.size() && specs[j].slot == specs[i].slot && specs[j].index == specs[i].index) group.push_back(&specs[j++]);
    const Slot slot = specs[i].slot;
    if (std::vector<float>* v = vector_target(w, lw, slot)) {
      *v = load.vec(group, layer);
    } else if (Linear* m = matrix_target(w, lw, slot, specs[i].index)) {
      *m = load.matrix(group, layer);
    } else {
      fail("architecture table names tensor {} that the loader does not place", specs[i].name);
    }
    for (size_t k = i; k < j; ++k) tick();
    i = j;
  }
}

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
  LayerWeights unused;
  for (const TensorSpec& spec : global_tensors(c)) {
    bool needed = spec.role == SplitRole::EmbeddingRows ? slices_.has_embedding || (c.tie_word_embeddings && slices_.has_output)
                                                        : slices_.has_output;
    // Tied weights serve as the output head too, so they follow the output rows when those differ.
    if (needed) load_specs(load, weights_, unused, {spec}, -1, [] {});
    tick();
  }
  if (c.tie_word_embeddings && slices_.embedding_rows != slices_.output_rows)
    fail("plan for rank {}: tied embeddings need the same embedding and output rows", slices_.rank);

  for (int64_t l = slices_.layers.begin; l < slices_.layers.end; ++l) {
    LayerWeights& lw = weights_.layers[size_t(l)];
    if (c.is_moe_layer(l)) {
      lw.expert_gate_up.resize(size_t(c.num_experts));
      lw.expert_down.resize(size_t(c.num_experts));
    }
    load_specs(load, weights_, lw, layer_tensors(c, l), l, tick);
  }
}

const kernels::WeightView& Model::output_head() const {
  return config_.tie_word_embeddings ? weights_.embedding.view : weights_.output.view;
}

void Model::for_each_matrix(const std::function<void(const Linear&)>& fn) const {
  fn(weights_.embedding);
  fn(weights_.output);
  for (const LayerWeights& l : weights_.layers) {
    for (const Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.linear_in, &l.linear_out, &l.gate_up, &l.down, &l.router,
                            &l.shared_gate, &l.shared_gate_up, &l.shared_down})
      fn(*m);
    for (const Linear& m : l.expert_gate_up) fn(m);
    for (const Linear& m : l.expert_down) fn(m);
  }
}

uint64_t Model::touch_weights() const {
  uint64_t sum = 0;
  for_each_matrix([&](const Linear& m) {
    const auto* p = static_cast<const volatile uint8_t*>(m.bytes.data());
    for (size_t i = 0; i < m.bytes.size(); i += 4096) sum += p[i];
  });
  return sum;
}

ResidentWeights Model::resident_weights() const {
  ResidentWeights r;
  for_each_matrix([&](const Linear& m) {
    if (m.view.data && m.view.rows > 0 && m.view.cols > 0) r.matrices.push_back(m.view);
  });
  auto add = [&](const std::vector<float>& v) {
    if (!v.empty()) r.vectors.push_back(&v);
  };
  add(weights_.final_norm);
  for (const LayerWeights& l : weights_.layers)
    for (const std::vector<float>* v : {&l.attn_norm, &l.ffn_norm, &l.q_norm, &l.k_norm, &l.q_bias, &l.k_bias,
                                        &l.v_bias, &l.conv, &l.a_log, &l.dt_bias, &l.linear_norm})
      add(*v);
  return r;
}

}  // namespace uneven
