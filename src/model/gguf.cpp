// GGUF (v2, v3) reader: header, metadata into JSON, tensor infos with validated offsets, name translation.
#include "model/gguf.h"

#include <sys/mman.h>

#include <array>
#include <cstring>
#include <unordered_set>

#include "model/tensor_file.h"
#include "model/tensor_table.h"
#include "util/error.h"

namespace uneven {

std::optional<DType> dtype_from_ggml_type(uint32_t type_id) {
  switch (type_id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 6: return DType::Q5_0;
    case 7: return DType::Q5_1;
    case 8: return DType::Q8_0;
    case 12: return DType::Q4_K;
    case 13: return DType::Q5_K;
    case 14: return DType::Q6_K;
    case 30: return DType::BF16;
    default: return std::nullopt;  // other quantized and integer types
  }
}

std::optional<uint32_t> ggml_type_from_dtype(DType dtype) {
  for (uint32_t id = 0; id <= 30; ++id)
    if (dtype_from_ggml_type(id) == dtype) return id;
  return std::nullopt;
}

std::string_view ggml_type_name(uint32_t type_id) {
  // Index = GGML type id (ggml.h); ids 4, 5 and 31-33 were removed from GGML.
  static constexpr std::array<std::string_view, 36> names = {
      "F32",     "F16",     "Q4_0",    "Q4_1",    "Q4_2",    "Q4_3",    "Q5_0",    "Q5_1",    "Q8_0",
      "Q8_1",    "Q2_K",    "Q3_K",    "Q4_K",    "Q5_K",    "Q6_K",    "Q8_K",    "IQ2_XXS", "IQ2_XS",
      "IQ3_XXS", "IQ1_S",   "IQ4_NL",  "IQ3_S",   "IQ2_S",   "IQ4_XS",  "I8",      "I16",     "I32",
      "I64",     "F64",     "IQ1_M",   "BF16",    "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",  "TQ2_0"};
  return type_id < names.size() ? names[type_id] : "unknown";
}

namespace {

// llama.cpp's per-layer tensor names (gguf-py/gguf/constants.py, TENSOR_NAMES) and the Hugging Face names
// under model.layers.N. they hold. One table serves every family: where llama.cpp's converter stores a
// tensor transformed, the transform is undone by the architecture table (stacked expert entries, row runs),
// not here.
struct LayerName {
  std::string_view gguf;  // without "blk.N."
  std::string_view hf;    // without "model.layers.N."
};
constexpr LayerName kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"post_attention_norm.weight", "post_attention_layernorm.weight"},  // qwen3next / qwen35 call it so
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    // Mixture of experts: router, experts stacked as 3-D tensors ([E, I, H] gate and up, [E, H, I] down,
    // or gate and up fused as [E, 2I, H]), shared expert and its sigmoid gate.
    {"ffn_gate_inp.weight", "mlp.gate.weight"},
    {"ffn_gate_exps.weight", "mlp.experts.gate_proj"},
    {"ffn_up_exps.weight", "mlp.experts.up_proj"},
    {"ffn_down_exps.weight", "mlp.experts.down_proj"},
    {"ffn_gate_up_exps.weight", "mlp.experts.gate_up_proj"},
    {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"},
    {"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight"},
    // Gated DeltaNet (qwen3next, qwen35): llama.cpp's converter splits in_proj_qkvz into attn_qkv + attn_gate
    // and names dt_bias ssm_dt.bias. ssm_a (= -exp(A_log)) and ssm_conv1d (kernel axis squeezed) are not
    // the Hugging Face values or shapes, so they keep their GGUF names: loading them needs a transform.
    {"attn_qkv.weight", "linear_attn.in_proj_qkv.weight"},
    {"attn_gate.weight", "linear_attn.in_proj_z.weight"},
    {"ssm_ba.weight", "linear_attn.in_proj_ba.weight"},
    {"ssm_beta.weight", "linear_attn.in_proj_b.weight"},
    {"ssm_alpha.weight", "linear_attn.in_proj_a.weight"},
    {"ssm_dt.bias", "linear_attn.dt_bias"},
    {"ssm_norm.weight", "linear_attn.norm.weight"},
    {"ssm_out.weight", "linear_attn.out_proj.weight"},
};

}  // namespace

std::string hf_name_from_gguf(std::string_view name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  // blk.<digits>.<rest>
  constexpr std::string_view blk = "blk.";
  if (name.substr(0, blk.size()) != blk) return std::string(name);
  size_t i = blk.size();
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == blk.size() || i >= name.size() || name[i] != '.') return std::string(name);
  const std::string_view layer = name.substr(blk.size(), i - blk.size());
  const std::string_view rest = name.substr(i + 1);
  for (const LayerName& n : kLayerNames)
    if (rest == n.gguf) return fmt::format("model.layers.{}.{}", layer, n.hf);
  return std::string(name);
}

namespace {

using nlohmann::json;

enum GgufValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Fewest bytes one value of the type occupies (a string: its length; an array: type + count), so that a
// count can be checked against the bytes left before anything is allocated. 0 for unknown types.
uint64_t min_value_bytes(uint32_t type) {
  switch (type) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: case kString: return 8;
    case kArray: return 12;
    default: return 0;
  }
}

constexpr int kMaxArrayNesting = 8;     // GGUF files in the wild nest at most 1; bounds recursion
constexpr uint32_t kMaxDims = 4;        // GGML_MAX_DIMS
constexpr uint64_t kHeaderBytes = 24;   // magic, version, tensor count, metadata count

// Bounds-checked little-endian reads over the mapped file. `where_` names the item being parsed.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  void set_where(std::string where) { where_ = std::move(where); }
  const std::string& where() const { return where_; }

  template <typename T> T read() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string_view string() {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>();
    if (len > left())
      fail("{}: {}: string at offset {} claims {} bytes but only {} bytes remain in the file", path_, where_, at, len,
           left());
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

  // Checks that `count` items of at least `each` bytes can fit in the rest of the file.
  void check_count(uint64_t count, uint64_t each, std::string_view what) const {
    if (count > left() / each)
      fail("{}: {}: {} count {} needs at least {} bytes per item but only {} bytes remain in the file", path_, where_,
           what, count, each, left());
  }

 private:
  void need(uint64_t n) const {
    if (n > left())
      fail("{}: {}: file ends at byte {}, {} bytes short of the {}-byte field at offset {}", path_, where_, size_,
           n - left(), n, pos_);
  }

  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  std::string where_ = "header";
};

json read_value(Cursor& c, uint32_t type, int depth, const std::string& path);

json read_array(Cursor& c, int depth, const std::string& path) {
  if (depth >= kMaxArrayNesting)
    fail("{}: {}: arrays nested deeper than {} levels", path, c.where(), kMaxArrayNesting);
  const uint32_t elem_type = c.read<uint32_t>();
  const uint64_t each = min_value_bytes(elem_type);
  if (each == 0) fail("{}: {}: unknown array element type {}", path, c.where(), elem_type);
  const uint64_t count = c.read<uint64_t>();
  c.check_count(count, each, "array element");
  json::array_t items;
  items.reserve(size_t(count));
  if (elem_type == kString) {  // the common large case (token lists): no per-item dispatch
    for (uint64_t i = 0; i < count; ++i) items.emplace_back(std::string(c.string()));
  } else {
    for (uint64_t i = 0; i < count; ++i) items.push_back(read_value(c, elem_type, depth + 1, path));
  }
  return json(std::move(items));
}

json read_value(Cursor& c, uint32_t type, int depth, const std::string& path) {
  switch (type) {
    case kU8: return c.read<uint8_t>();
    case kI8: return c.read<int8_t>();
    case kU16: return c.read<uint16_t>();
    case kI16: return c.read<int16_t>();
    case kU32: return c.read<uint32_t>();
    case kI32: return c.read<int32_t>();
    case kF32: return c.read<float>();
    case kBool: return c.read<uint8_t>() != 0;
    case kString: return std::string(c.string());
    case kArray: return read_array(c, depth, path);
    case kU64: return c.read<uint64_t>();
    case kI64: return c.read<int64_t>();
    case kF64: return c.read<double>();
    default: fail("{}: {}: unknown value type {}", path, c.where(), type);
  }
}

// The whole file mapped read-only while its header is parsed; unmapped on scope exit.
struct Mapping {
  void* base = MAP_FAILED;
  size_t length = 0;
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, length);
  }
};

uint64_t alignment_from(const json& md, const std::string& path) {
  auto it = md.find("general.alignment");
  if (it == md.end()) return 32;
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
    fail("{}: general.alignment must be a non-negative integer, not {}", path, it->type_name());
  const uint64_t a = it->get<uint64_t>();
  if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
    fail("{}: general.alignment {} is not a power of two between 1 and 2^30", path, a);
  return a;
}

}  // namespace

TensorFiles TensorFiles::open_gguf(const std::string& path) {
  detail::ReadOnlyFile file(path);
  const uint64_t size = file.size();
  if (size < kHeaderBytes)
    fail("{}: file too short for a GGUF header: {} bytes, need at least {}", path, size, kHeaderBytes);
  Mapping map;
  map.length = size_t(size);
  map.base = ::mmap(nullptr, map.length, PROT_READ, MAP_PRIVATE, file.fd(), 0);
  if (map.base == MAP_FAILED) fail("{}: cannot map the file ({} bytes) to read its header", path, size);
  Cursor c(static_cast<const uint8_t*>(map.base), size, path);

  const auto* bytes = static_cast<const uint8_t*>(map.base);
  if (std::memcmp(bytes, "GGUF", 4) != 0)
    fail("{}: not a GGUF file: magic bytes are {:02x} {:02x} {:02x} {:02x}, expected 47 47 55 46 (\"GGUF\")", path,
         bytes[0], bytes[1], bytes[2], bytes[3]);
  c.read<uint32_t>();
  const uint32_t version = c.read<uint32_t>();
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    fail("{}: unsupported GGUF version {} (supported: 2, 3){}", path, version,
         swapped == 2 || swapped == 3 ? "; the file looks big-endian, which is not supported" : "");
  }
  const uint64_t tensor_count = c.read<uint64_t>();
  const uint64_t kv_count = c.read<uint64_t>();
  c.check_count(kv_count, 8 + 4 + 1, "metadata entry");
  c.check_count(tensor_count, 8 + 4 + 4 + 8, "tensor info");

  TensorFiles out;
  out.paths_ = {path};
  out.file_sizes_ = {size};
  out.description_ = path;
  json::object_t& md = out.metadata_.get_ref<json::object_t&>();
  for (uint64_t i = 0; i < kv_count; ++i) {
    c.set_where(fmt::format("metadata entry {}", i));
    std::string key(c.string());
    c.set_where(fmt::format("metadata key '{}'", key));
    const uint32_t type = c.read<uint32_t>();
    json value = read_value(c, type, 0, path);
    if (!md.emplace(key, std::move(value)).second) fail("{}: metadata key '{}' appears twice", path, key);
  }
  const uint64_t alignment = alignment_from(out.metadata_, path);

  std::vector<uint64_t> relative_offsets;
  out.tensors_.reserve(size_t(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    c.set_where(fmt::format("tensor info {}", i));
    TensorInfo t;
    t.file_name = std::string(c.string());
    c.set_where(fmt::format("tensor {}", t.file_name));
    const uint32_t n_dims = c.read<uint32_t>();
    if (n_dims > kMaxDims) fail("{}: tensor {} has {} dimensions; GGUF allows at most {}", path, t.file_name, n_dims, kMaxDims);
    t.shape.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {  // ne[0] is the innermost dimension: reverse into row-major order
      const uint64_t ne = c.read<uint64_t>();
      if (ne > uint64_t(INT64_MAX)) fail("{}: tensor {} has an absurd dimension {} (ne[{}])", path, t.file_name, ne, d);
      t.shape[n_dims - 1 - d] = int64_t(ne);
    }
    const uint32_t type = c.read<uint32_t>();
    const std::optional<DType> dtype = dtype_from_ggml_type(type);
    if (!dtype)
      fail("{}: tensor {} has GGML type {} ({}), which is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", path,
           t.file_name, type, ggml_type_name(type));
    t.dtype = *dtype;
    t.nbytes = detail::checked_nbytes(t.shape, t.type(), path, t.file_name);
    const uint64_t offset = c.read<uint64_t>();
    if (offset % alignment != 0)
      fail("{}: tensor {} has data offset {}, which is not a multiple of the alignment {}", path, t.file_name, offset,
           alignment);
    t.name = hf_name_from_gguf(t.file_name);
    relative_offsets.push_back(offset);
    out.tensors_.push_back(std::move(t));
  }
  // The data section starts at the first multiple of the alignment after the tensor infos; offsets are
  // relative to it.
  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  for (size_t i = 0; i < out.tensors_.size(); ++i) {
    TensorInfo& t = out.tensors_[i];
    if (relative_offsets[i] > size)  // also keeps data_start + offset (<= 2 x size) from wrapping
      fail("{}: tensor {} has data offset {}, beyond the end of the file ({} bytes) by {} bytes", path, t.file_name,
           relative_offsets[i], size, relative_offsets[i] - size);
    t.offset = data_start + relative_offsets[i];  // check_table checks that the whole range is inside the file
  }
  out.index_ = detail::check_table(out.tensors_, out.paths_, out.file_sizes_);
  return out;
}

}  // namespace uneven
