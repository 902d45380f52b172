// Weights of an mlx-lm checkpoint presented under Hugging Face names, quantized ones as interleaved MLX blocks.
//
// mlx-lm saves a quantized matrix as three tensors: `X.weight` (U32 [.., out, in * bits / 32], codes
// packed low bits first), `X.scales` and `X.biases` ([.., out, in / group]). This source presents it as
// one logical tensor `X.weight` of the Hugging Face shape [.., out, in] and type MLX4 / MLX8, whose rows
// are [scale][bias][codes] per group (the in-memory layout of model/dtype.h), so the loader slices it by
// rows or by whole groups like any GGML tensor, and reads only the bytes of the groups it is given.
// It also undoes mlx-lm's renames: `language_model.model.X` -> `model.X`, `language_model.lm_head` ->
// `lm_head`, experts stacked by SwitchGLU (`mlp.switch_mlp.{gate,up,down}_proj`) -> the stacked
// `mlp.experts.gate_up_proj` [E, 2I, H] (gate rows, then up rows, per expert) and `mlp.experts.down_proj`,
// and conv1d kernels [C, K, 1] -> [C, 1, K] (the same bytes).
//
// A logical tensor's bytes are addressed virtually: TensorInfo::offset / row_bytes is the first of its
// flattened rows, so the loader's stacked-entry arithmetic (offset + index * entry bytes) works unchanged.
#include "engine/mlx_source.h"

#include <cstring>
#include <map>

#include "util/error.h"

namespace uneven {
namespace {

using nlohmann::json;

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// One source matrix: plain (weight only) or quantized (weight codes + scales + biases), read as 2-D
// rows of its innermost dimension.
struct Part {
  const TensorInfo* weight = nullptr;
  const TensorInfo* scales = nullptr;
  const TensorInfo* biases = nullptr;
};

// A logical tensor: `entries` stacked entries, each the concatenation of its parts' rows.
struct Logical {
  TensorInfo info;
  std::vector<Part> parts;
  int64_t entries = 1;
  int64_t rows_per_entry = 0;  // sum over parts
  uint64_t row_bytes = 0;
  int64_t cols = 0;
};

// t as 2-D rows of `cols` elements (by default its innermost dimension).
TensorInfo flat(const TensorInfo& t, int64_t cols = 0) {
  TensorInfo f = t;
  if (cols == 0) cols = t.shape.size() >= 2 ? t.shape.back() : 1;
  f.shape = {t.numel() / std::max<int64_t>(1, cols), cols};
  return f;
}

class MlxWeightSource final : public WeightSource {
 public:
  MlxWeightSource(std::shared_ptr<const TensorFiles> files, const json& quantization) : files_(std::move(files)) {
    default_ = group_bits(quantization, "quantization");
    std::map<std::string, const TensorInfo*> by_name;
    for (const TensorInfo& t : files_->tensors()) by_name[t.name] = &t;
    // Quantized and plain matrices, by their mlx-lm module path.
    for (const TensorInfo& t : files_->tensors()) {
      if (!t.name.ends_with(".weight") && !t.name.ends_with(".scales") && !t.name.ends_with(".biases")) {
        add_plain(t, hf_name(t.name));
        continue;
      }
      if (!t.name.ends_with(".weight")) continue;
      const std::string module = t.name.substr(0, t.name.size() - 7);
      auto s = by_name.find(module + ".scales"), b = by_name.find(module + ".biases");
      if (t.dtype != DType::U32) {
        if (s != by_name.end() || b != by_name.end())
          fail("{}: {} has scales/biases but its weight is {}, not U32 codes", describe(), module, dtype_name(t.dtype));
        add_plain(t, hf_name(t.name));
        continue;
      }
      if (s == by_name.end() || b == by_name.end())
        fail("{}: {} holds U32 codes but its {} is missing", describe(), t.name,
             s == by_name.end() ? module + ".scales" : module + ".biases");
      quantized_.push_back({module, &t, s->second, b->second});
    }
    for (const Quantized& q : quantized_) add_quantized(q, quantization);
    stack_switch_mlp();
  }

  const TensorInfo* find(const std::string& name) const override {
    auto it = logical_.find(name);
    return it == logical_.end() ? nullptr : &it->second.info;
  }

  TensorBytes read_rows(const TensorInfo& t, int64_t b, int64_t e) const override {
    const Logical& l = logical_of(t);
    const int64_t first = int64_t(t.offset / l.row_bytes);
    if (b < 0 || e < b || first + e > l.entries * l.rows_per_entry)
      fail("{}: rows [{}, {}) are out of range for tensor {}", describe(), b, e, t.name);
    return gather(l, first + b, first + e, 0, l.cols);
  }

  TensorBytes read_cols(const TensorInfo& t, int64_t b, int64_t e) const override {
    const Logical& l = logical_of(t);
    if (t.shape.size() != 2) fail("{}: tensor {}: column slices need a 2-D tensor", describe(), t.name);
    const int64_t per = t.type().block_elems();
    if (b < 0 || e < b || e > l.cols || b % per != 0 || e % per != 0)
      fail("{}: tensor {}: columns [{}, {}) do not fall on its {} boundaries of {} elements", describe(), t.name, b, e,
           t.type().name(), per);
    const int64_t first = int64_t(t.offset / l.row_bytes);
    return gather(l, first, first + t.shape[0], b, e);
  }

  uint64_t bytes_touched() const override { return files_->data_bytes_touched(); }
  std::string describe() const override { return files_->paths().empty() ? "(no files)" : files_->paths()[0]; }

 private:
  struct GroupBits {
    int64_t group = 0, bits = 0;
  };
  struct Quantized {
    std::string module;
    const TensorInfo *weight, *scales, *biases;
  };

  GroupBits group_bits(const json& q, const std::string& where) const {
    if (!q.is_object() || !q.contains("group_size") || !q.contains("bits") || !q["group_size"].is_number_integer() ||
        !q["bits"].is_number_integer())
      fail("{}: config.json {} must give integer group_size and bits, not {}", describe(), where, q.dump());
    GroupBits g{q["group_size"].get<int64_t>(), q["bits"].get<int64_t>()};
    if (q.contains("mode") && q["mode"] != "affine")
      fail("{}: config.json {}: quantization mode {} is not supported (affine is)", describe(), where, q["mode"].dump());
    if (g.bits != 4 && g.bits != 8)
      fail("{}: config.json {}: {}-bit MLX weights are not supported (4 and 8 are)", describe(), where, g.bits);
    if (g.group != 32 && g.group != 64 && g.group != 128)
      fail("{}: config.json {}: group size {} is not 32, 64 or 128", describe(), where, g.group);
    return g;
  }

  // mlx-lm's names back to Hugging Face's (the loader also tries model.language_model.* itself).
  static std::string hf_name(const std::string& n) {
    if (n.starts_with("language_model.model.")) return n.substr(15);
    if (n.starts_with("language_model.")) return n.substr(15);
    return n;
  }

  void add_plain(const TensorInfo& t, const std::string& name) {
    Logical l;
    l.info = t;
    l.info.name = name;
    // conv1d kernels: mlx [C, K, 1], Hugging Face [C, 1, K]; the same bytes.
    if (name.ends_with("conv1d.weight") && t.shape.size() == 3 && t.shape[2] == 1) l.info.shape = {t.shape[0], 1, t.shape[1]};
    l.parts = {Part{&t, nullptr, nullptr}};
    finish(l, t.shape.size() == 3 && !name.ends_with("conv1d.weight") ? t.shape[0] : 1);
  }

  void add_quantized(const Quantized& q, const json& quantization) {
    // A per-module override of a mixed recipe is keyed by the module path as saved.
    GroupBits g = default_;
    if (quantization.contains(q.module)) {
      const json& o = quantization[q.module];
      if (o.is_boolean() && !o.get<bool>())
        fail("{}: config.json says {} is not quantized, but the file holds its U32 codes", describe(), q.module);
      g = group_bits(o, "quantization." + q.module);
    }
    const TensorInfo &w = *q.weight, &s = *q.scales, &b = *q.biases;
    if (w.shape.size() < 2 || s.shape.size() != w.shape.size() || s.shape != b.shape)
      fail("{}: {}: weight {}, scales {} and biases {} must have the same rank (>= 2), scales and biases the same shape",
           describe(), q.module, shape_text(w.shape), shape_text(s.shape), shape_text(b.shape));
    if (s.dtype != b.dtype || s.dtype == DType::U32)
      fail("{}: {}: scales ({}) and biases ({}) must share one float type", describe(), q.module, dtype_name(s.dtype),
           dtype_name(b.dtype));
    const int64_t in = w.shape.back() * 32 / g.bits;
    std::vector<int64_t> shape = w.shape;
    shape.back() = in;
    std::vector<int64_t> want_scales = shape;
    want_scales.back() = in / g.group;
    if (in % g.group != 0 || s.shape != want_scales)
      fail("{}: {}: {} codes of {} bits per row make rows of {} elements, which in groups of {} need scales and biases "
           "of shape {}, but they are {} (the quantization block in config.json contradicts the tensors)",
           describe(), q.module, w.shape.back(), g.bits, in, g.group, shape_text(want_scales), shape_text(s.shape));
    Logical l;
    l.info = w;
    l.info.name = hf_name(w.name);
    l.info.shape = shape;
    l.info.dtype = g.bits == 4 ? DType::MLX4 : DType::MLX8;
    l.info.group = int32_t(g.group);
    l.info.group_scale = s.dtype;
    l.parts = {Part{&w, &s, &b}};
    finish(l, shape.size() == 3 ? shape[0] : 1);
  }

  // Rows per entry, row bytes and the virtual size; registers the tensor.
  void finish(Logical& l, int64_t entries) {
    l.entries = entries;
    l.cols = l.info.shape.size() >= 2 ? l.info.shape.back() : 1;  // a vector's rows are its elements
    const int64_t rows = l.info.numel() / std::max<int64_t>(1, l.cols);
    l.rows_per_entry = rows / entries;
    l.row_bytes = std::max<uint64_t>(1, l.info.type().bytes(l.cols));
    l.info.offset = 0;
    l.info.nbytes = uint64_t(rows) * l.info.type().bytes(l.cols);
    const std::string name = l.info.name;
    if (!logical_.emplace(name, std::move(l)).second) fail("{}: tensor {} appears twice", describe(), name);
  }

  // SwitchGLU's stacked gate_proj and up_proj [E, I, H] become gate_up_proj [E, 2I, H]; down_proj is
  // renamed. Entry e of the fused tensor is gate rows of expert e, then its up rows.
  void stack_switch_mlp() {
    std::vector<std::string> gates;
    for (const auto& [name, l] : logical_)
      if (name.ends_with("mlp.switch_mlp.gate_proj.weight")) gates.push_back(name);
    for (const std::string& gate_name : gates) {
      const std::string prefix = gate_name.substr(0, gate_name.size() - std::string("switch_mlp.gate_proj.weight").size());
      auto up = logical_.find(prefix + "switch_mlp.up_proj.weight");
      auto down = logical_.find(prefix + "switch_mlp.down_proj.weight");
      Logical& gate = logical_.at(gate_name);
      if (up == logical_.end() || down == logical_.end())
        fail("{}: {} has no matching switch_mlp up_proj / down_proj", describe(), gate_name);
      if (up->second.info.shape != gate.info.shape || up->second.info.type() != gate.info.type())
        fail("{}: {}: switch_mlp gate_proj {} ({}) and up_proj {} ({}) must match to be stacked", describe(), prefix,
             shape_text(gate.info.shape), gate.info.type().name(), shape_text(up->second.info.shape),
             up->second.info.type().name());
      Logical fused = gate;
      fused.info.name = prefix + "experts.gate_up_proj";
      fused.info.shape[1] *= 2;
      fused.parts = {gate.parts[0], up->second.parts[0]};
      fused.rows_per_entry = gate.rows_per_entry * 2;
      fused.info.nbytes = gate.info.nbytes * 2;
      Logical renamed = down->second;
      renamed.info.name = prefix + "experts.down_proj";
      logical_.erase(up);
      logical_.erase(prefix + "switch_mlp.down_proj.weight");
      logical_.erase(gate_name);
      logical_.emplace(fused.info.name, std::move(fused));
      logical_.emplace(renamed.info.name, std::move(renamed));
    }
  }

  const Logical& logical_of(const TensorInfo& t) const {
    // The loader renames stacked entries, but keeps file_name; a fused tensor keeps its gate's.
    for (const auto& [name, l] : logical_)
      if (l.info.file_name == t.file_name && l.info.type() == t.type() && l.cols == (t.shape.size() >= 2 ? t.shape.back() : 1))
        if (t.offset + t.nbytes <= l.info.nbytes) return l;
    fail("{}: tensor {} ({}) is not one this source presented", describe(), t.name, t.file_name);
  }

  // Flattened logical rows [r0, r1), columns [c0, c1) (whole groups), in the in-memory layout.
  TensorBytes gather(const Logical& l, int64_t r0, int64_t r1, int64_t c0, int64_t c1) const {
    const WeightType type = l.info.type();
    const uint64_t out_row = type.bytes(c1 - c0);
    std::vector<uint8_t> out(size_t(uint64_t(r1 - r0) * out_row));
    // Every part of an entry has the same rows (one part, or SwitchGLU's gate and up halves).
    const int64_t part_rows = l.rows_per_entry / int64_t(l.parts.size());
    for (int64_t r = r0; r < r1;) {
      const int64_t entry = r / l.rows_per_entry, within = r % l.rows_per_entry;
      const size_t p = size_t(within / part_rows);
      const int64_t start = within % part_rows, n = std::min(r1 - r, part_rows - start);
      copy_rows(l.parts[p], type, l.cols, entry * part_rows + start, n, c0, c1,
                out.data() + size_t(uint64_t(r - r0) * out_row));
      r += n;
    }
    return TensorBytes::owned(std::move(out));
  }

  void copy_rows(const Part& p, const WeightType& type, int64_t cols, int64_t row, int64_t n, int64_t c0, int64_t c1,
                 uint8_t* out) const {
    const TensorInfo w = flat(*p.weight, is_mlx(type.dtype) ? 0 : cols);
    if (!is_mlx(type.dtype)) {
      TensorBytes b = (c0 == 0 && c1 == w.shape[1]) ? files_->read_rows(w, row, row + n) : slice(w, row, n, c0, c1);
      std::memcpy(out, b.data(), b.size());
      return;
    }
    const int bits = mlx_bits(type.dtype);
    const int64_t words_per_group = type.group * bits / 32, g0 = c0 / type.group, g1 = c1 / type.group;
    const size_t ss = dtype_size(type.scale), code_bytes = size_t(words_per_group) * 4;
    TensorBytes codes = slice(w, row, n, g0 * words_per_group, g1 * words_per_group);
    TensorBytes scales = slice(flat(*p.scales), row, n, g0, g1);
    TensorBytes biases = slice(flat(*p.biases), row, n, g0, g1);
    const int64_t groups = g1 - g0;
    const auto* cp = static_cast<const uint8_t*>(codes.data());
    const auto* sp = static_cast<const uint8_t*>(scales.data());
    const auto* bp = static_cast<const uint8_t*>(biases.data());
    for (int64_t i = 0; i < n * groups; ++i) {
      std::memcpy(out, sp + size_t(i) * ss, ss);
      std::memcpy(out + ss, bp + size_t(i) * ss, ss);
      std::memcpy(out + 2 * ss, cp + size_t(i) * code_bytes, code_bytes);
      out += 2 * ss + code_bytes;
    }
  }

  // Rows [row, row + n) and columns [c0, c1) of a flattened 2-D tensor.
  TensorBytes slice(const TensorInfo& t, int64_t row, int64_t n, int64_t c0, int64_t c1) const {
    TensorInfo rows = t;
    const uint64_t row_bytes = t.nbytes / uint64_t(std::max<int64_t>(1, t.shape[0]));
    rows.offset = t.offset + uint64_t(row) * row_bytes;
    rows.shape = {n, t.shape[1]};
    rows.nbytes = uint64_t(n) * row_bytes;
    if (c0 == 0 && c1 == t.shape[1]) return files_->read_rows(rows, 0, n);
    return files_->read_cols(rows, c0, c1);
  }

  std::shared_ptr<const TensorFiles> files_;
  GroupBits default_;
  std::vector<Quantized> quantized_;
  std::map<std::string, Logical> logical_;
};

}  // namespace

const json* mlx_quantization(const json& config) {
  for (const char* key : {"quantization", "quantization_config"})
    if (config.contains(key) && config[key].is_object() && config[key].contains("bits") && config[key].contains("group_size"))
      return &config[key];
  return nullptr;
}

std::unique_ptr<WeightSource> make_mlx_weight_source(std::shared_ptr<const TensorFiles> files, const json& quantization) {
  return std::make_unique<MlxWeightSource>(std::move(files), quantization);
}

}  // namespace uneven
