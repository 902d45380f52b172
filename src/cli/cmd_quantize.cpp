// `uneven quantize`: GGUF, Hugging Face or seeded random weights to a llama.cpp-style quantized GGUF file or
// an mlx-lm quantized directory, streamed tensor by tensor and row chunk by row chunk.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "util/json_file.h"
#include "cli/commands.h"
#include "engine/arch.h"
#include "engine/weight_source.h"
#include "model/config.h"
#include "model/gguf_names.h"
#include "model/gguf_writer.h"
#include "model/safetensors_writer.h"
#include "model/tensor_file.h"
#include "quant/blocks.h"
#include "quant/quant_mix.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Elements converted to F32 at a time: bounds memory to a few tens of MB whatever the tensor's size.
constexpr int64_t kChunkElems = int64_t(1) << 22;

struct Options {
  std::string model, out, type, config;
  int group = 64;
  bool group_given = false;
  bool random = false;
  uint64_t seed = 0;
  int threads = 0;
};

// What --type asks for: a llama.cpp mix written as GGUF, or MLX affine groups written as an mlx-lm directory.
struct Target {
  bool mlx = false;
  quant::QuantRecipe recipe{};
  std::optional<DType> plain;  // f32 / f16 / bf16: every matrix at that type (e.g. llama.cpp speed baselines)
  int bits = 0;  // MLX
  int group = 0;
};

Target parse_target(const Options& o) {
  Target t;
  if (o.type == "mlx4" || o.type == "mlx8") {
    if (o.group != 32 && o.group != 64 && o.group != 128)
      fail("--group-size {} is not supported (MLX groups of 32, 64 or 128 elements)", o.group);
    t.mlx = true;
    t.bits = o.type == "mlx4" ? 4 : 8;
    t.group = o.group;
    return t;
  }
  if (o.type == "f32" || o.type == "f16" || o.type == "bf16") {
    if (o.group_given) fail("--group-size applies to mlx4 and mlx8 only, not to --type {}", o.type);
    t.plain = o.type == "f32" ? DType::F32 : o.type == "f16" ? DType::F16 : DType::BF16;
    return t;
  }
  const std::optional<quant::QuantRecipe> r = quant::recipe_from_name(o.type);
  if (!r) fail("--type '{}' is not known (known: q8_0, q4_0, q4_k_m, q5_k_m, q6_k, mlx8, mlx4, f32, f16, bf16)", o.type);
  if (o.group_given) fail("--group-size applies to mlx4 and mlx8 only, not to --type {}", o.type);
  t.recipe = *r;
  return t;
}

// One tensor to convert: its canonical name, its name in an output GGUF, and where its values come from.
struct SourceTensor {
  std::string name;       // canonical Hugging Face name (also mlx-lm's for the dense families)
  std::string gguf_name;  // GGUF output: llama.cpp's name (a GGUF input's own name)
  const TensorInfo* info = nullptr;  // null for a generated tensor
  std::vector<float> generated;      // values of a tensor made here (rope_freqs.weight)
  std::vector<int64_t> shape;
  // Llama q/k rows from Hugging Face order (rotated halves) to GGUF's (adjacent pairs), in heads of this
  // many rows, as llama.cpp's converter permutes them; 0 = rows as they are.
  int64_t permute_head_rows = 0;
};

struct Source {
  enum class Kind { Gguf, HfDir, Random } kind = Kind::Gguf;
  std::string path;  // for messages
  ModelConfig config;  // HF and random inputs
  int64_t n_layers = 0, n_experts = 0;
  json config_json;  // config.json as read (HF and random inputs)
  fs::path dir;      // HF input: the directory with tokenizer files
  std::shared_ptr<const TensorFiles> files;
  std::unique_ptr<WeightSource> weights;
  std::vector<SourceTensor> tensors;
};


// The architecture table's tensors of an HF or random model, in table order, checked against the source.
void add_table_tensors(Source& s, const Target& target) {
  const ModelConfig& c = s.config;
  if (!gguf_family_supported(c))
    fail("{}: architecture '{}' is not supported by quantize from Hugging Face or random weights (supported: "
         "dense llama, qwen2, qwen3)", s.path, c.architecture);
  std::vector<TensorSpec> specs = global_tensors(c);
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (auto& spec : layer_tensors(c, l)) specs.push_back(std::move(spec));
  // llama.cpp's Llama reorders q/k rows; Qwen2/Qwen3 run NEOX-style rope on rows as Hugging Face has them.
  const bool permute = !target.mlx && c.architecture == "llama";
  for (const TensorSpec& spec : specs) {
    const TensorInfo* info = s.weights->find(spec.name);
    if (!info) {
      if (spec.optional) continue;
      fail("{}: tensor {} (shape [{}]) is missing", s.path, spec.name, fmt::join(spec.shape, ", "));
    }
    if (info->shape != spec.shape)
      fail("{}: tensor {} has shape [{}] but the config implies [{}] ({})", s.path, spec.name,
           fmt::join(info->shape, ", "), fmt::join(spec.shape, ", "), shape_reason(spec, c));
    if (info->dtype != DType::F32 && info->dtype != DType::F16 && info->dtype != DType::BF16)
      fail("{}: tensor {} is {}; quantize reads F32, F16 or BF16 checkpoints", s.path, spec.name,
           dtype_name(info->dtype));
    SourceTensor t;
    t.name = spec.name;
    t.gguf_name = target.mlx ? spec.name : gguf_name_from_hf(spec.name);
    t.info = info;
    t.shape = info->shape;
    const bool qk = spec.name.find("self_attn.q_proj.") != std::string::npos ||
                    spec.name.find("self_attn.k_proj.") != std::string::npos;
    if (permute && qk) t.permute_head_rows = c.head_dim;
    s.tensors.push_back(std::move(t));
  }
  if (!target.mlx) {
    std::vector<float> factors = llama3_rope_factors(c);
    if (!factors.empty()) {  // llama.cpp's form of Llama 3 rope scaling: a tensor, first as its converter puts it
      SourceTensor t;
      t.name = t.gguf_name = "rope_freqs.weight";
      t.shape = {int64_t(factors.size())};
      t.generated = std::move(factors);
      s.tensors.insert(s.tensors.begin(), std::move(t));
    }
  }
}

Source open_source(const Options& o, const Target& target) {
  Source s;
  std::error_code ec;
  if (o.random) {
    std::string path = !o.config.empty() ? o.config : o.model;
    if (path.empty()) fail("--random-weights needs --config config.json");
    if (!o.config.empty() && !o.model.empty()) fail("--random-weights takes --config alone, not --model as well");
    if (fs::is_directory(path, ec)) path = (fs::path(path) / "config.json").string();
    if (!fs::exists(path, ec)) fail("{}: no such file", path);
    s.kind = Source::Kind::Random;
    s.path = path;
    s.config_json = read_json_file(path);
    s.config = config_from_hf_json(s.config_json, path);
    s.n_layers = s.config.num_layers;
    s.weights = make_random_weight_source(s.config, DType::F32, o.seed);
    add_table_tensors(s, target);
    return s;
  }
  if (o.model.empty()) fail("quantize needs --model PATH (a .gguf file or a Hugging Face directory), or --random-weights --config C.json");
  if (!o.config.empty()) fail("--config is for --random-weights; a model's own config is read from --model");
  s.path = o.model;
  if (!fs::exists(o.model, ec)) fail("{}: no such file or directory", o.model);
  if (fs::is_directory(o.model, ec)) {
    s.kind = Source::Kind::HfDir;
    s.dir = o.model;
    const fs::path config_path = s.dir / "config.json";
    if (!fs::exists(config_path, ec)) fail("{}: directory has no config.json", o.model);
    s.config_json = read_json_file(config_path);
    s.config = config_from_hf_json(s.config_json, config_path.string());
    s.n_layers = s.config.num_layers;
    s.files = std::make_shared<TensorFiles>(TensorFiles::open_safetensors_dir(o.model));
    s.weights = make_file_weight_source(s.files);
    add_table_tensors(s, target);
    return s;
  }
  s.kind = Source::Kind::Gguf;
  if (target.mlx)
    fail("{}: mlx4/mlx8 output is made from a Hugging Face directory or --random-weights; GGUF input is not "
         "supported for MLX types", o.model);
  s.files = std::make_shared<TensorFiles>(TensorFiles::open_gguf(o.model));
  // Requantizing needs no config beyond the block and expert counts, so any architecture's GGUF will do.
  const json& md = s.files->metadata();
  const std::string arch = md.value("general.architecture", "");
  auto count = [&](const std::string& key, bool required) -> int64_t {
    auto it = md.find(key);
    if (it != md.end() && it->is_number_integer()) return it->get<int64_t>();
    if (required) fail("{}: GGUF metadata lacks the integer '{}'", o.model, key);
    return 0;
  };
  if (arch.empty()) fail("{}: GGUF metadata has no general.architecture", o.model);
  s.n_layers = count(arch + ".block_count", true);
  s.n_experts = count(arch + ".expert_count", false);
  s.weights = make_file_weight_source(s.files);
  for (const TensorInfo& info : s.files->tensors()) {
    SourceTensor t;
    t.name = info.name;
    t.gguf_name = info.file_name;
    t.info = &info;
    t.shape = info.shape;
    s.tensors.push_back(std::move(t));
  }
  // llama-quantize's order (its loader's weight map): tensors outside blocks first, then block by block,
  // by name within each; with identical data the output is then byte for byte llama-quantize's file.
  auto block = [](const std::string& n) {
    int64_t b = -1;
    if (n.starts_with("blk.")) {
      b = 0;
      for (size_t i = 4; i < n.size() && n[i] >= '0' && n[i] <= '9'; ++i) b = b * 10 + (n[i] - '0');
    }
    return b;
  };
  std::stable_sort(s.tensors.begin(), s.tensors.end(), [&](const SourceTensor& a, const SourceTensor& b) {
    const int64_t x = block(a.gguf_name), y = block(b.gguf_name);
    return x != y ? x < y : a.gguf_name < b.gguf_name;
  });
  return s;
}

// Runs f(begin, end) over [0, rows) on up to `threads` threads; the first exception is rethrown here.
template <typename F>
void parallel_rows(int64_t rows, int threads, int64_t row_elems, F f) {
  const int64_t n = std::min<int64_t>({int64_t(threads), rows, std::max<int64_t>(1, rows * row_elems / 16384)});
  if (n <= 1) {
    f(int64_t(0), rows);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex m;
  for (int64_t i = 0; i < n; ++i)
    pool.emplace_back([&, i] {
      try {
        f(rows * i / n, rows * (i + 1) / n);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!error) error = std::current_exception();
      }
    });
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// How a tensor is walked: rows of its outermost dimension for matrices (and for permuted 1-D biases, whose
// elements are the rows), else one row of everything (a 1-D tensor may be stored in blocks).
struct RowLayout {
  int64_t rows = 1, elems = 1;
};
RowLayout row_layout(const SourceTensor& t) {
  RowLayout l;
  const bool by_rows = t.shape.size() >= 2 || (t.shape.size() == 1 && t.permute_head_rows > 0);
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (d == 0 && by_rows) l.rows = t.shape[0];
    else l.elems *= t.shape[d];
  }
  return l;
}

// Calls emit(rows_f32, n_rows) for consecutive chunks of a tensor's rows (row_layout), dequantized or
// widened to F32 and, for permuted tensors, reordered into GGUF's row order.
template <typename Emit>
void for_each_chunk(const Source& s, const SourceTensor& t, int threads, Emit emit) {
  const auto [rows, row_elems] = row_layout(t);
  if (!t.info) {
    emit(t.generated.data(), rows);
    return;
  }
  const int64_t unit = t.permute_head_rows > 0 ? t.permute_head_rows : 1;
  if (rows % unit != 0)
    fail("{}: tensor {} has {} rows, not a whole number of heads of {} rows", s.path, t.name, rows, unit);
  const int64_t chunk = std::max<int64_t>(unit, std::max<int64_t>(1, kChunkElems / std::max<int64_t>(row_elems, 1)) / unit * unit);
  const WeightType type = t.info->type();
  const uint64_t row_bytes = type.bytes(row_elems);
  std::vector<float> f32, permuted;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    // A 1-D tensor walked as one row is read whole (the file's rows are its elements).
    TensorBytes bytes = t.shape.size() == 1 && rows == 1 ? s.weights->read_all(*t.info)
                                                        : s.weights->read_rows(*t.info, r0, r0 + n);
    if (bytes.size() != uint64_t(n) * row_bytes)
      fail("{}: tensor {}: rows [{}, {}) read as {} bytes, expected {}", s.path, t.name, r0, r0 + n, bytes.size(),
           uint64_t(n) * row_bytes);
    f32.resize(size_t(n * row_elems));
    const auto* src = bytes.as<uint8_t>();
    parallel_rows(n, threads, row_elems, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const uint8_t* in = src + uint64_t(r) * row_bytes;
        float* out = f32.data() + r * row_elems;
        if (type.dtype == DType::F32) {
          std::memcpy(out, in, size_t(row_elems) * 4);
        } else if (type.dtype == DType::F16 || type.dtype == DType::BF16) {
          for (int64_t i = 0; i < row_elems; ++i) {
            uint16_t h;
            std::memcpy(&h, in + 2 * i, 2);
            out[i] = type.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
          }
        } else {
          quant::dequantize_row_ref(type, in, row_elems, out);
        }
      }
    });
    if (t.permute_head_rows > 0) {
      // Within each head: GGUF row 2j + s is Hugging Face row s * half + j (s = 0, 1).
      const int64_t hd = t.permute_head_rows, half = hd / 2;
      permuted.resize(f32.size());
      for (int64_t h = 0; h < n / hd; ++h)
        for (int64_t j = 0; j < half; ++j)
          for (int64_t sgn = 0; sgn < 2; ++sgn)
            std::memcpy(permuted.data() + (h * hd + 2 * j + sgn) * row_elems,
                        f32.data() + (h * hd + sgn * half + j) * row_elems, size_t(row_elems) * 4);
      f32.swap(permuted);
    }
    emit(static_cast<const float*>(f32.data()), n);
  }
}

// Encodes F32 rows as a plain type (F32, F16, BF16), a GGML block type or MLX blocks into `out` (resized).
void encode_rows(const float* x, int64_t rows, int64_t row_elems, const WeightType& type, int threads,
                 std::vector<uint8_t>& out) {
  const uint64_t row_bytes = type.bytes(row_elems);
  out.resize(size_t(uint64_t(rows) * row_bytes));
  parallel_rows(rows, threads, row_elems, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* in = x + r * row_elems;
      uint8_t* dst = out.data() + uint64_t(r) * row_bytes;
      if (type.dtype == DType::F32) {
        std::memcpy(dst, in, size_t(row_elems) * 4);
      } else if (type.dtype == DType::F16 || type.dtype == DType::BF16) {
        for (int64_t i = 0; i < row_elems; ++i) {
          const uint16_t h = type.dtype == DType::F16 ? f32_to_f16(in[i]) : f32_to_bf16(in[i]);
          std::memcpy(dst + 2 * i, &h, 2);
        }
      } else {
        quant::quantize_row(type, in, row_elems, dst);
      }
    }
  });
}

// Progress on stderr: one line rewritten in place on a terminal, else a line per tenth of the elements.
class Progress {
 public:
  Progress(int64_t total_elems, size_t tensors) : total_(std::max<int64_t>(total_elems, 1)), tensors_(tensors),
                                                  tty_(isatty(STDERR_FILENO)) {}
  void tensor_done(size_t i, const std::string& name, const std::string& type, int64_t elems) {
    done_ += elems;
    const int pct = int(done_ * 100 / total_);
    if (tty_) {
      std::fprintf(stderr, "\rquantize: %3d%% [%zu/%zu] %-40.40s %-6s", pct, i + 1, tensors_, name.c_str(), type.c_str());
      if (i + 1 == tensors_) std::fprintf(stderr, "\n");
    } else if (pct / 10 > last_decile_ || i + 1 == tensors_) {
      last_decile_ = pct / 10;
      std::fprintf(stderr, "quantize: %3d%% [%zu/%zu] %s\n", pct, i + 1, tensors_, name.c_str());
    }
    std::fflush(stderr);
  }

 private:
  int64_t total_, done_ = 0;
  size_t tensors_;
  bool tty_;
  int last_decile_ = 0;
};

struct Summary {
  std::map<std::string, int> per_type;
  uint64_t bytes_in = 0, bytes_out = 0;
  void print(const std::string& out, const std::string& type) const {
    std::string types;
    for (const auto& [name, n] : per_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", name, n);
    int total = 0;
    for (const auto& [name, n] : per_type) total += n;
    std::printf("quantized %d tensors (%s) to %s as %s: %.2f MB in, %.2f MB out\n", total, types.c_str(), out.c_str(),
                type.c_str(), double(bytes_in) / 1e6, double(bytes_out) / 1e6);
  }
};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t source_bytes(const SourceTensor& t) { return t.info ? t.info->nbytes : t.generated.size() * 4; }

// ---- GGUF output

// The recipe's type for every tensor, chosen together: llama.cpp's mixes number attn_v / ffn_down tensors
// across the model and treat token_embd as the head when there is no output.weight.
std::vector<DType> gguf_types(const Target& target, const Source& s) {
  std::vector<quant::TensorRole> roles;
  for (const SourceTensor& t : s.tensors) {
    quant::TensorRole r;
    r.name = t.gguf_name;
    r.n_layers = int(s.n_layers);
    r.n_expert = int(s.n_experts);
    r.n_dims = int(t.shape.size());
    r.row = t.shape.empty() ? 1 : t.shape.back();
    roles.push_back(std::move(r));
  }
  std::vector<DType> types = target.plain ? std::vector<DType>(roles.size(), *target.plain)
                                          : quant::choose_types(target.recipe, roles);
  for (size_t i = 0; i < types.size(); ++i) {
    const SourceTensor& t = s.tensors[i];
    if (t.shape.size() < 2) types[i] = DType::F32;  // norms, biases, rope factors: llama.cpp keeps them F32
    const int64_t per = WeightType{types[i]}.block_elems();
    if (!t.shape.empty() && t.shape.back() % per != 0)
      fail("tensor {}: rows of {} elements are not a whole number of {} blocks ({} elements)", t.gguf_name,
           t.shape.back(), dtype_name(types[i]), per);
  }
  return types;
}

void write_gguf(const Options& o, const Target& target, Source& s, int threads, Summary& sum) {
  GgufFileWriter w(o.out);
  if (s.kind == Source::Kind::Gguf) {
    // Every entry as stored (tokenizer and all), so that llama.cpp finds exactly the types it expects.
    for (GgufKv& kv : read_gguf_metadata_raw(o.model)) w.set(kv.key, std::move(kv.value));
  } else {
    const std::string name = s.kind == Source::Kind::HfDir ? fs::absolute(s.dir).filename().string()
                                                            : fs::path(s.path).stem().string();
    for (GgufKv& kv : gguf_model_metadata(s.config, name)) w.set(kv.key, std::move(kv.value));
    if (s.kind == Source::Kind::Random) {
      // A synthetic SentencePiece vocabulary of the config's size (<unk> <s> </s>, the 256 byte tokens,
      // then "t<i>"): llama.cpp loads and benches such a file (with "none" its tokenizer asserts), and
      // token ids are all a bench needs.
      const int64_t n = s.config.vocab_size;
      std::vector<std::string> tokens;
      std::vector<float> scores;
      std::vector<int32_t> types;
      for (int64_t i = 0; i < n; ++i) {
        if (i < 3) tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) tokens.push_back(fmt::format("<0x{:02X}>", i - 3));
        else tokens.push_back(fmt::format("t{}", i));
        scores.push_back(-float(i));
        types.push_back(i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);  // unknown, control, byte, normal
      }
      w.set("tokenizer.ggml.model", GgufValue::string("llama"));
      w.set("tokenizer.ggml.tokens", GgufValue::strings(tokens));
      w.set("tokenizer.ggml.scores", GgufValue::f32s(scores));
      w.set("tokenizer.ggml.token_type", GgufValue::i32s(types));
      w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(0));
      w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
      w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
    } else {
      std::string why;
      if (auto tok = gguf_tokenizer_from_hf(s.dir.string(), s.config, why)) {
        for (GgufKv& kv : *tok) w.set(kv.key, std::move(kv.value));
      } else {
        std::fprintf(stderr, "warning: %s; the GGUF gets no tokenizer\n", why.c_str());
      }
    }
  }
  // Last, as llama-quantize leaves them (it drops the input's entries and appends its own).
  w.remove("general.quantization_version");
  w.remove("general.file_type");
  w.set("general.quantization_version", GgufValue::u32(2));
  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_BF16 = 32.
  const uint32_t file_type = !target.plain ? quant::recipe_file_type(target.recipe)
                             : *target.plain == DType::F32 ? 0u : *target.plain == DType::F16 ? 1u : 32u;
  w.set("general.file_type", GgufValue::u32(file_type));

  const std::vector<DType> types = gguf_types(target, s);
  int64_t total = 0;
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    w.add_tensor(s.tensors[i].gguf_name, s.tensors[i].shape, types[i]);
    total += numel(s.tensors[i].shape);
  }
  w.begin_data();
  Progress progress(total, s.tensors.size());
  std::vector<uint8_t> encoded;
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    const SourceTensor& t = s.tensors[i];
    const int64_t row_elems = row_layout(t).elems;
    for_each_chunk(s, t, threads, [&](const float* x, int64_t rows) {
      encode_rows(x, rows, row_elems, WeightType{types[i]}, threads, encoded);
      w.write(encoded.data(), encoded.size());
    });
    sum.per_type[std::string(dtype_name(types[i]))]++;
    sum.bytes_in += source_bytes(t);
    progress.tensor_done(i, t.gguf_name, std::string(dtype_name(types[i])), numel(t.shape));
  }
  w.finish();
  sum.bytes_out = w.bytes_written();
}

// ---- MLX output

// mlx-lm casts every floating parameter to config.json's torch_dtype (transformers 5: dtype) before
// quantizing, so scales, biases and unquantized tensors take that type; without one, the source's.
std::optional<DType> mlx_float_dtype(const json& config) {
  const json& j = config.contains("text_config") && config["text_config"].is_object() ? config["text_config"] : config;
  for (const json* c : {&config, &j})
    for (const char* key : {"torch_dtype", "dtype"}) {
      auto it = c->find(key);
      if (it == c->end() || !it->is_string()) continue;
      const std::string v = it->get<std::string>();
      if (v == "float32") return DType::F32;
      if (v == "float16") return DType::F16;
      if (v == "bfloat16") return DType::BF16;
    }
  return std::nullopt;
}

// Like nn.quantize under mlx-lm's predicate: Linear and Embedding weights (every 2-D .weight of the dense
// families) whose rows are a whole number of groups.
bool mlx_quantizes(const SourceTensor& t, int group) {
  return t.shape.size() == 2 && t.name.ends_with(".weight") && t.shape[1] % group == 0;
}

std::string stem_of(const std::string& name) { return name.substr(0, name.size() - std::string(".weight").size()); }

void write_mlx(const Options& o, const Target& target, Source& s, int threads, Summary& sum) {
  const fs::path dir(o.out);
  const fs::path st_path = dir / "model.safetensors";
  SafetensorsFileWriter w(st_path.string());
  w.set_metadata("format", "mlx");
  const std::optional<DType> cast = mlx_float_dtype(s.config_json);
  auto float_type = [&](const SourceTensor& t) { return cast ? *cast : t.info ? t.info->dtype : DType::F32; };
  json weight_map = json::object();
  int64_t total = 0;
  for (const SourceTensor& t : s.tensors) {
    const std::string fdt(dtype_name(float_type(t)));
    if (mlx_quantizes(t, target.group)) {
      const std::string stem = stem_of(t.name);
      w.add_tensor(t.name, "U32", {t.shape[0], t.shape[1] * target.bits / 32});
      w.add_tensor(stem + ".scales", fdt, {t.shape[0], t.shape[1] / target.group});
      w.add_tensor(stem + ".biases", fdt, {t.shape[0], t.shape[1] / target.group});
      for (const char* suffix : {".weight", ".scales", ".biases"}) weight_map[stem + suffix] = "model.safetensors";
    } else {
      w.add_tensor(t.name, fdt, t.shape);
      weight_map[t.name] = "model.safetensors";
    }
    total += numel(t.shape);
  }
  w.begin_data();
  Progress progress(total, s.tensors.size());
  std::vector<uint8_t> encoded, scales, biases;
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    const SourceTensor& t = s.tensors[i];
    const int64_t row_elems = row_layout(t).elems;
    std::string label(dtype_name(float_type(t)));
    if (mlx_quantizes(t, target.group)) {
      // Blocks come out as [scale][bias][packed]; the packed parts stream into .weight while the scales and
      // biases (2/group of the elements) wait for their own tensors, which follow it in the file.
      const WeightType q{target.bits == 4 ? DType::MLX4 : DType::MLX8, target.group, float_type(t)};
      const size_t ss = dtype_size(q.scale), packed = size_t(target.group) * target.bits / 8;
      const int64_t groups = row_elems / target.group;
      scales.clear();
      biases.clear();
      std::vector<uint8_t> weight;
      for_each_chunk(s, t, threads, [&](const float* x, int64_t rows) {
        encode_rows(x, rows, row_elems, q, threads, encoded);
        weight.resize(size_t(rows * groups) * packed);
        for (int64_t g = 0; g < rows * groups; ++g) {
          const uint8_t* block = encoded.data() + size_t(g) * size_t(q.block_bytes());
          scales.insert(scales.end(), block, block + ss);
          biases.insert(biases.end(), block + ss, block + 2 * ss);
          std::memcpy(weight.data() + size_t(g) * packed, block + 2 * ss, packed);
        }
        w.write(weight.data(), weight.size());
      });
      w.write(scales.data(), scales.size());
      w.write(biases.data(), biases.size());
      label = q.name();
    } else {
      for_each_chunk(s, t, threads, [&](const float* x, int64_t rows) {
        encode_rows(x, rows, row_elems, WeightType{float_type(t)}, threads, encoded);
        w.write(encoded.data(), encoded.size());
      });
    }
    sum.per_type[label]++;
    sum.bytes_in += source_bytes(t);
    progress.tensor_done(i, t.name, label, numel(t.shape));
  }
  w.finish();
  sum.bytes_out = 8 + w.data_bytes();

  // As mlx-lm's save: an index even for one file, and config.json with the quantization block twice.
  int64_t params = 0;
  for (const SourceTensor& t : s.tensors) params += numel(t.shape);
  const json index = {{"metadata", {{"total_size", w.data_bytes()}, {"total_parameters", params}}},
                      {"weight_map", weight_map}};
  json config = s.config_json;
  config.erase("_name_or_path");
  const json quant = {{"group_size", target.group}, {"bits", target.bits}, {"mode", "affine"}};
  config["quantization"] = quant;
  config["quantization_config"] = quant;
  for (const auto& [name, text] : {std::pair{"model.safetensors.index.json", index.dump(4)},
                                   std::pair{"config.json", config.dump(4)}}) {
    std::ofstream f(dir / name);
    f << text << "\n";
    if (!f.flush()) fail("{}: write failed", (dir / name).string());
  }
  if (s.kind == Source::Kind::HfDir)
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                             "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                             "chat_template.json", "generation_config.json"}) {
      std::error_code ec;
      if (!fs::exists(s.dir / name, ec)) continue;
      fs::copy_file(s.dir / name, dir / name, fs::copy_options::overwrite_existing, ec);
      if (ec) fail("{}: cannot copy {} into it: {}", dir.string(), (s.dir / name).string(), ec.message());
    }
}

// Checks the output path before any work: a GGUF target is a file (not a directory, not the input); an
// MLX target is a new or empty directory. Returns true when the MLX directory was created here.
bool prepare_output(const Options& o, const Target& target) {
  if (o.out.empty()) fail("quantize needs --out PATH");
  std::error_code ec;
  const fs::path out(o.out);
  if (!target.mlx) {
    if (fs::is_directory(out, ec)) fail("{}: is a directory; --type {} writes one GGUF file", o.out, o.type);
    const fs::path parent = fs::absolute(out).parent_path();
    if (!fs::is_directory(parent, ec)) fail("{}: directory {} does not exist", o.out, parent.string());
    if (!o.model.empty() && fs::exists(out, ec) && fs::equivalent(out, o.model, ec))
      fail("{}: is the input file; write the quantized model elsewhere", o.out);
    return false;
  }
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) fail("{}: exists and is not a directory; --type {} writes an MLX directory", o.out, o.type);
    if (!fs::is_empty(out, ec)) fail("{}: directory is not empty; --type {} writes a new MLX directory", o.out, o.type);
    return false;
  }
  fs::create_directories(out, ec);
  if (ec) fail("{}: cannot create the directory: {}", o.out, ec.message());
  return true;
}

int run(const Options& o) {
  const Target target = parse_target(o);
  Source s = open_source(o, target);
  const bool created = prepare_output(o, target);
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  Summary sum;
  try {
    if (target.mlx) write_mlx(o, target, s, threads, sum);
    else write_gguf(o, target, s, threads, sum);
  } catch (...) {
    std::error_code ec;
    if (created) fs::remove_all(o.out, ec);  // no half-written model directory left behind
    throw;
  }
  sum.print(o.out, o.type);
  return 0;
}

}  // namespace

Action register_quantize(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("quantize", "quantize a model into a GGUF file (llama.cpp mixes) or an MLX directory");
  cmd->add_option("--model,-m", o->model, "input: a .gguf file or a Hugging Face directory");
  cmd->add_option("--out,-o", o->out, "output: a .gguf file (q types) or a new directory (mlx types)")->required();
  cmd->add_option("--type", o->type, "q8_0, q4_0, q4_k_m, q5_k_m, q6_k, mlx8, mlx4, or unquantized f32, f16, bf16")->required();
  auto* group = cmd->add_option("--group-size", o->group, "MLX group size: 32, 64 or 128 (default 64)");
  cmd->add_flag("--random-weights", o->random, "quantize seeded random weights of --config's shape (no downloads)");
  cmd->add_option("--config", o->config, "with --random-weights: the config.json to take shapes from");
  cmd->add_option("--seed", o->seed, "seed of the random weights");
  cmd->add_option("--threads,-t", o->threads, "worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
  return [o, group]() -> int {
    o->group_given = group->count() > 0;
    return run(*o);
  };
}

}  // namespace uneven::cli
