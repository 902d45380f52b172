// `uneven quantize` and its writers: GGUF / safetensors writer round trips, HF <-> GGUF names, stories260K to
// llama.cpp mixes, random weights to GGUF and MLX, Hugging Face fixtures to MLX and GGUF, and bad input.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "engine/arch.h"
#include "engine/weight_source.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/gguf_names.h"
#include "model/gguf_writer.h"
#include "model/safetensors_writer.h"
#include "quant/blocks.h"
#include "quant/quant_mix.h"
#include "quant/quantize.h"
#include "test_files.h"
#include "tokenizer/tokenizer.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const fs::path kSource = UNEVEN_SOURCE_DIR;
const std::string kStories = (kSource / "models/stories260K.gguf").string();
const fs::path kHf = kSource / "tests/data/hf";

// Relative RMS error a format may leave on weights like these (uniform-ish or trained, not outlier-heavy).
double tolerance(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1e-3;
    case DType::BF16: return 8e-3;
    case DType::Q8_0: case DType::MLX8: return 0.01;
    case DType::Q6_K: return 0.02;
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: return 0.05;
    default: return 0.12;  // 4-bit types
  }
}

double rel_rms(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += double(got[i] - want[i]) * (got[i] - want[i]);
    ref += double(want[i]) * want[i];
  }
  return ref == 0 ? std::sqrt(err) : std::sqrt(err / ref);
}

// Every element of a tensor as F32, whatever its stored type.
std::vector<float> values(const TensorBytes& bytes, const TensorInfo& t) {
  std::vector<float> out(size_t(t.numel()));
  const int64_t row = t.shape.empty() ? 1 : t.shape.back();
  const uint64_t row_bytes = t.type().bytes(row);
  for (int64_t r = 0; r < t.numel() / row; ++r)
    quant::dequantize_row_ref(t.type(), bytes.as<uint8_t>() + uint64_t(r) * row_bytes, row, out.data() + r * row);
  return out;
}
std::vector<float> values(const TensorFiles& f, const TensorInfo& t) { return values(f.read_all(t), t); }
std::vector<float> values(const WeightSource& w, const TensorInfo& t) { return values(w.read_all(t), t); }

// Llama q/k rows in GGUF order from Hugging Face order: GGUF row 2j + s of a head is HF row s * half + j.
std::vector<float> permute_heads(const std::vector<float>& hf, int64_t rows, int64_t cols, int64_t head_dim) {
  std::vector<float> out(hf.size());
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < rows / head_dim; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t s = 0; s < 2; ++s)
        std::copy_n(hf.begin() + (h * head_dim + s * half + j) * cols, cols, out.begin() + (h * head_dim + 2 * j + s) * cols);
  return out;
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file read whole (the MLX outputs hold U32, which the model reader does not take).
struct Safetensors {
  json header;
  std::string data;
  explicit Safetensors(const fs::path& path) {
    const std::string all = read_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, all.data(), 8);
    header = json::parse(all.substr(8, n));
    data = all.substr(8 + n);
  }
  std::string bytes(const std::string& name) const {
    const auto& o = header.at(name).at("data_offsets");
    return data.substr(o[0].get<size_t>(), o[1].get<size_t>() - o[0].get<size_t>());
  }
  std::vector<float> floats(const std::string& name) const {
    const std::string dtype = header.at(name).at("dtype"), b = bytes(name);
    std::vector<float> out;
    for (size_t i = 0; i < b.size(); i += dtype == "F32" ? 4 : 2) {
      if (dtype == "F32") {
        float f;
        std::memcpy(&f, b.data() + i, 4);
        out.push_back(f);
      } else {
        uint16_t h;
        std::memcpy(&h, b.data() + i, 2);
        out.push_back(dtype == "F16" ? f16_to_f32(h) : bf16_to_f32(h));
      }
    }
    return out;
  }
  // w = scale * q + bias over groups of `group`, q unpacked from little-endian uint32 words.
  std::vector<float> dequantized(const std::string& stem, int bits, int group) const {
    const std::string w = bytes(stem + ".weight");
    const std::vector<float> scales = floats(stem + ".scales"), biases = floats(stem + ".biases");
    std::vector<float> out(w.size() * 8 / bits);
    for (size_t i = 0; i < out.size(); ++i) {
      const uint8_t byte = uint8_t(w[i * bits / 8]);
      const int q = bits == 8 ? byte : (byte >> (4 * (i % 2))) & 15;
      out[i] = scales[i / group] * float(q) + biases[i / group];
    }
    return out;
  }
};

void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType type, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(rel_rms(got, want), tolerance(type)) << what << " stored as " << dtype_name(type);
}

// ---- writers and names

TEST(GgufFileWriter, RoundTripsThroughTheReader) {
  ScratchDir dir;
  const std::string path = dir.file("w.gguf");
  std::vector<float> a(2 * 3 * 32), b(64);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.25f - 7;
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(i);
  std::vector<uint8_t> q(WeightType{DType::Q8_0}.bytes(64));
  quant::quantize_row(WeightType{DType::Q8_0}, b.data(), 64, q.data());
  {
    GgufFileWriter w(path);
    w.set("general.alignment", GgufValue::u32(64));
    w.set("k.u8", GgufValue::u8(200));
    w.set("k.i32", GgufValue::i32(-5));
    w.set("k.u64", GgufValue::u64(1ull << 40));
    w.set("k.f32", GgufValue::f32(0.5f));
    w.set("k.f64", GgufValue::f64(0.25));
    w.set("k.bool", GgufValue::boolean(true));
    w.set("k.str", GgufValue::string("hello"));
    w.set("k.strs", GgufValue::strings({"a", "", "ccc"}));
    w.set("k.i32s", GgufValue::i32s({1, -2, 3}));
    w.set("k.f32s", GgufValue::f32s({1.5f}));
    w.set("k.i32", GgufValue::i32(-6));  // replaces in place
    w.add_tensor("a", {2, 3, 32}, DType::F32);
    w.add_tensor("q", {2, 32}, DType::Q8_0);
    w.add_tensor("empty", {0, 32}, DType::F32);
    w.begin_data();
    w.write(a.data(), 100);  // pieces of any size
    w.write(reinterpret_cast<const uint8_t*>(a.data()) + 100, a.size() * 4 - 100);
    w.write(q.data(), q.size());
    w.finish();
  }
  EXPECT_FALSE(fs::exists(path + ".part"));
  TensorFiles f = TensorFiles::open_gguf(path);
  const json& md = f.metadata();
  EXPECT_EQ(md["k.u8"], 200);
  EXPECT_EQ(md["k.i32"], -6);
  EXPECT_EQ(md["k.u64"], 1ull << 40);
  EXPECT_EQ(md["k.f32"], 0.5);
  EXPECT_EQ(md["k.f64"], 0.25);
  EXPECT_EQ(md["k.bool"], true);
  EXPECT_EQ(md["k.str"], "hello");
  EXPECT_EQ(md["k.strs"], json({"a", "", "ccc"}));
  EXPECT_EQ(md["k.i32s"], json({1, -2, 3}));
  EXPECT_EQ(md["k.f32s"], json({1.5}));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].shape, (std::vector<int64_t>{2, 3, 32}));
  EXPECT_EQ(values(f, f.tensors()[0]), a);
  EXPECT_EQ(f.tensors()[1].dtype, DType::Q8_0);
  EXPECT_EQ(f.tensors()[1].offset % 64, 0u);
  expect_close(values(f, f.tensors()[1]), b, DType::Q8_0, "q");
  EXPECT_EQ(f.tensors()[2].nbytes, 0u);

  // The raw reader gives back each entry as written, in order.
  const std::vector<GgufKv> raw = read_gguf_metadata_raw(path);
  ASSERT_EQ(raw.size(), 11u);
  EXPECT_EQ(raw[2].key, "k.i32");
  EXPECT_EQ(raw[2].value.type, GgufType::I32);
  EXPECT_EQ(raw[2].value.payload, GgufValue::i32(-6).payload);
  EXPECT_EQ(raw[9].value.payload, GgufValue::i32s({1, -2, 3}).payload);
}

TEST(GgufFileWriter, RefusesWrongByteCountsAndLeavesNoFile) {
  ScratchDir dir;
  const std::string path = dir.file("bad.gguf");
  std::vector<float> x(64, 1.0f);
  {
    GgufFileWriter w(path);
    w.add_tensor("t", {2, 32}, DType::F32);
    expect_error([&] { w.add_tensor("t", {2, 32}, DType::F32); }, {"bad.gguf", "tensor t declared twice"});
    expect_error([&] { w.add_tensor("odd", {2, 33}, DType::Q8_0); }, {"odd", "33", "whole number of blocks"});
    w.begin_data();
    w.write(x.data(), 100);
    expect_error([&] { w.finish(); }, {"tensor t received 100 of its 256 bytes"});
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".part"));
  GgufFileWriter w(path);
  w.add_tensor("t", {2, 32}, DType::F32);
  w.begin_data();
  w.write(x.data(), 256);
  expect_error([&] { w.write(x.data(), 4); }, {"4 bytes of tensor data beyond the last of 1 tensors"});
}

TEST(SafetensorsFileWriter, RoundTripsThroughTheReader) {
  ScratchDir dir;
  const std::string path = dir.file("w.safetensors");
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {f32_to_bf16(0.5f), f32_to_bf16(-2.0f), f32_to_bf16(3.0f)};
  {
    SafetensorsFileWriter w(path);
    w.set_metadata("format", "mlx");
    w.add_tensor("a", "F32", {2, 3});
    w.add_tensor("b", "BF16", {3});
    w.begin_data();
    w.write(a.data(), 24);
    w.write(b.data(), 6);
    w.finish();
  }
  const std::string all = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(json::parse(all.substr(8, n))["__metadata__"]["format"], "mlx");
  TensorFiles f = TensorFiles::open_safetensors_files({path});
  EXPECT_EQ(values(f, *f.find("a")), a);
  EXPECT_EQ(values(f, *f.find("b")), (std::vector<float>{0.5f, -2.0f, 3.0f}));

  SafetensorsFileWriter bad(dir.file("bad.safetensors"));
  expect_error([&] { bad.add_tensor("x", "I64", {2}); }, {"bad.safetensors", "tensor x", "'I64'"});
  bad.add_tensor("x", "U32", {2});
  bad.begin_data();
  expect_error([&] { bad.finish(); }, {"0 of 8 data bytes written; tensor x is incomplete"});
}

TEST(GgufNames, InvertHfNameFromGgufForTheDenseFamilies) {
  for (const char* fixture : {"qwen2", "qwen3", "llama3_scaled"}) {
    const ModelConfig c = load_hf_config((kHf / fixture / "config.json").string());
    ASSERT_TRUE(gguf_family_supported(c)) << fixture;
    std::vector<TensorSpec> specs = global_tensors(c);
    for (auto& s : layer_tensors(c, 1)) specs.push_back(s);
    for (const TensorSpec& s : specs) EXPECT_EQ(hf_name_from_gguf(gguf_name_from_hf(s.name)), s.name) << fixture;
  }
  EXPECT_EQ(gguf_name_from_hf("model.layers.12.self_attn.q_proj.bias"), "blk.12.attn_q.bias");
  EXPECT_EQ(gguf_name_from_hf("lm_head.weight"), "output.weight");
  expect_error([] { gguf_name_from_hf("model.layers.0.mlp.experts.3.gate_proj.weight"); }, {"experts.3.gate_proj", "no GGUF name"});
  expect_error([] { gguf_name_from_hf("model.layers.x.self_attn.q_proj.weight"); }, {"no GGUF name"});
  EXPECT_FALSE(gguf_family_supported(load_hf_config((kHf / "qwen3_moe_e16/config.json").string())));
}

// ---- stories260K (a real trained llama GGUF) to llama.cpp mixes

void check_stories(const std::string& type) {
  ScratchDir dir;
  const std::string out = dir.file("out.gguf");
  CliOutput run = run_uneven("quantize --model " + kStories + " --out " + out + " --type " + type + " --threads 3");
  ASSERT_EQ(run.exit_code, 0) << run.text;
  EXPECT_NE(run.text.find("quantized 48 tensors ("), std::string::npos) << run.text;
  const TensorFiles in = TensorFiles::open_gguf(kStories), got = TensorFiles::open_gguf(out);
  ASSERT_EQ(got.tensors().size(), in.tensors().size());

  const quant::QuantRecipe recipe = *quant::recipe_from_name(type);
  std::vector<quant::TensorRole> roles;
  for (const TensorInfo& t : in.tensors()) {
    quant::TensorRole r;
    r.name = t.file_name;
    r.n_layers = 5;
    r.n_dims = int(t.shape.size());
    r.row = t.shape.back();
    roles.push_back(r);
  }
  const std::vector<DType> want = quant::choose_types(recipe, roles);
  bool any_quantized = false;
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const TensorInfo& a = in.tensors()[i];
    const TensorInfo* found = got.find(a.name);  // in llama-quantize's order, not necessarily the input's
    ASSERT_NE(found, nullptr) << a.file_name;
    const TensorInfo& b = *found;
    EXPECT_EQ(b.file_name, a.file_name);
    EXPECT_EQ(b.shape, a.shape) << a.file_name;
    EXPECT_EQ(b.dtype, a.shape.size() < 2 ? DType::F32 : want[i]) << a.file_name;
    any_quantized = any_quantized || is_quantized(b.dtype);
    expect_close(values(got, b), values(in, a), b.dtype, a.file_name);
  }
  EXPECT_TRUE(any_quantized);

  // Metadata: every input entry byte for byte and in order (tokenizer included), plus the two overrides.
  const std::vector<GgufKv> raw_in = read_gguf_metadata_raw(kStories), raw_out = read_gguf_metadata_raw(out);
  size_t j = 0;
  for (const GgufKv& kv : raw_in) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version") continue;
    while (j < raw_out.size() && raw_out[j].key != kv.key) ++j;
    ASSERT_LT(j, raw_out.size()) << kv.key << " missing or out of order";
    EXPECT_EQ(raw_out[j].value.type, kv.value.type) << kv.key;
    EXPECT_EQ(raw_out[j].value.payload, kv.value.payload) << kv.key;
  }
  json md_in = in.metadata(), md_out = got.metadata();
  EXPECT_EQ(md_out["general.file_type"], quant::recipe_file_type(recipe));
  EXPECT_EQ(md_out["general.quantization_version"], 2);
  for (json* m : {&md_in, &md_out}) {
    m->erase("general.file_type");
    m->erase("general.quantization_version");
  }
  EXPECT_EQ(md_out, md_in);
  EXPECT_EQ(md_out["tokenizer.ggml.tokens"].size(), 512u);
}

TEST(QuantizeCmd, StoriesToQ8_0) { check_stories("q8_0"); }
TEST(QuantizeCmd, StoriesToQ4_K_M) { check_stories("q4_k_m"); }
TEST(QuantizeCmd, StoriesToQ6_K) { check_stories("q6_k"); }

TEST(QuantizeCmd, QuantizedStoriesStillTellTheStory) {
  ScratchDir dir;
  ASSERT_EQ(run_uneven("quantize -m " + kStories + " -o " + dir.file("q8.gguf") + " --type q8_0").exit_code, 0);
  CliOutput gen = run_uneven("generate --model " + dir.file("q8.gguf") + " --prompt 'Once upon a time' -n 12 --threads 1");
  ASSERT_EQ(gen.exit_code, 0) << gen.text;
  EXPECT_EQ(gen.text.rfind(", there was a little girl named Lily.", 0), 0u) << gen.text;
}

// ---- against llama.cpp itself (skipped where ../shared or tools/llamacpp are absent)

const fs::path kK256 = kSource / "../shared/fixtures/gguf";

// llama-quantize's files made from k256-f32.gguf: the same header byte for byte (metadata with the two
// overrides last, tensor order, types, offsets); Q8_0, whose rounding has no search, is the same file.
TEST(QuantizeCmd, MatchesLlamaQuantizeOnK256) {
  if (!fs::exists(kK256 / "k256-f32.gguf")) GTEST_SKIP() << kK256 << " not found";
  for (const char* type : {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"}) {
    SCOPED_TRACE(type);
    ScratchDir dir;
    std::string lower = type;
    for (char& ch : lower) ch = char(std::tolower(ch));
    const std::string out = dir.file("k.gguf"), theirs = (kK256 / fmt::format("k256-{}.gguf", type)).string();
    CliOutput run = run_uneven("quantize -m " + (kK256 / "k256-f32.gguf").string() + " -o " + out + " --type " + lower);
    ASSERT_EQ(run.exit_code, 0) << run.text;
    const std::string mine = read_bytes(out), ref = read_bytes(theirs);
    ASSERT_EQ(mine.size(), ref.size());
    const TensorFiles f = TensorFiles::open_gguf(theirs);
    uint64_t data_start = ref.size();
    for (const TensorInfo& t : f.tensors()) data_start = std::min(data_start, t.offset);
    EXPECT_EQ(mine.substr(0, data_start), ref.substr(0, data_start));
    if (std::string(type) == "Q8_0") EXPECT_TRUE(mine == ref) << "Q8_0 file differs from llama-quantize's";
  }
}

// llama.cpp (node-llama-cpp's prebuilt CPU build) loads Hugging Face fixtures converted to Q8_0 and decodes
// them as transformers does, up to the first near-tie (a top-2 margin under 0.06, where Q8_0 may flip it).
TEST(QuantizeCmd, LlamaCppRunsConvertedFixtures) {
  const fs::path greedy = kSource / "tools/llamacpp/greedy.mjs";
  if (!fs::exists(greedy) || !fs::exists(kSource / "tools/llamacpp/node_modules/node-llama-cpp") ||
      run_shell("command -v node").exit_code != 0)
    GTEST_SKIP() << "llama.cpp via " << greedy << " not available";
  for (const char* fixture : {"llama3_scaled", "llama_tied", "qwen2_bf16", "qwen3"}) {
    SCOPED_TRACE(fixture);
    ScratchDir dir;
    const json ref = read_json(kHf / fixture / "reference.json");
    ASSERT_EQ(run_uneven("quantize -m " + (kHf / fixture).string() + " -o " + dir.file("m.gguf") + " --type q8_0").exit_code, 0);
    write_file(dir.file("p.jsonl"), json({{"prompt_ids", ref["prompt_ids"]}}).dump() + "\n");
    CliOutput run = run_shell("node " + greedy.string() + " --model " + dir.file("m.gguf") + " --prompts " +
                              dir.file("p.jsonl") + " --n 12 --threads 2");
    ASSERT_EQ(run.exit_code, 0) << run.text;
    ASSERT_TRUE(run.json.is_object()) << run.text;
    const auto& ids = run.json["greedy_ids"];
    const auto& margins = run.json["margins"];
    size_t compared = 0;
    for (; compared < ids.size() && margins[compared].get<double>() >= 0.06; ++compared)
      EXPECT_EQ(ids[compared], ref["greedy_ids"][compared]) << "step " << compared;
    EXPECT_GE(compared, 1u) << run.text;
  }
}

// ---- random weights

// A small config of the given family; head_dim 64 and hidden 256 keep every matrix a whole number of k-quant
// super-blocks, except down_proj (intermediate 320) which exercises the recipes' fallbacks.
json tiny_config(const std::string& family) {
  json c = {{"model_type", family}, {"hidden_size", 256}, {"intermediate_size", 320}, {"num_hidden_layers", 2},
            {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 64}, {"vocab_size", 300},
            {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0},
            {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  if (family == "llama")
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 512}};
  return c;
}

TEST(QuantizeCmd, RandomWeightsToGguf) {
  ScratchDir dir;
  const json cj = tiny_config("llama");
  write_file(dir.file("config.json"), cj.dump());
  const std::string out = dir.file("r.gguf");
  CliOutput run = run_uneven("quantize --random-weights --config " + dir.file("config.json") + " --seed 7 --out " + out +
                             " --type q4_k_m --threads 2");
  ASSERT_EQ(run.exit_code, 0) << run.text;
  const TensorFiles got = TensorFiles::open_gguf(out);
  const ModelConfig c = config_from_hf_json(cj, "tiny");
  const ModelConfig back = config_from_gguf_metadata(got.metadata(), out);
  EXPECT_EQ(back.architecture, "llama");
  EXPECT_EQ(back.hidden_size, 256);
  EXPECT_EQ(back.intermediate_size, 320);
  EXPECT_EQ(back.num_layers, 2);
  EXPECT_EQ(back.num_heads, 4);
  EXPECT_EQ(back.num_kv_heads, 2);
  EXPECT_EQ(back.head_dim, 64);
  EXPECT_EQ(back.vocab_size, 300);
  EXPECT_EQ(back.max_position, 4096);
  EXPECT_FLOAT_EQ(float(back.rope_theta), 500000.0f);
  EXPECT_FLOAT_EQ(float(back.rms_norm_eps), 1e-5f);
  // A synthetic SentencePiece vocabulary of the config's size, so llama.cpp can load and bench the file.
  EXPECT_EQ(got.metadata()["tokenizer.ggml.model"], "llama");
  ASSERT_EQ(got.metadata()["tokenizer.ggml.tokens"].size(), 300u);
  EXPECT_EQ(got.metadata()["tokenizer.ggml.tokens"][1], "<s>");
  EXPECT_EQ(got.metadata()["tokenizer.ggml.tokens"][3 + 0x41], "<0x41>");
  EXPECT_EQ(got.metadata()["general.file_type"], 15);

  // Llama 3 rope scaling becomes llama.cpp's rope_freqs.weight: 1 for short wavelengths, the factor for long ones.
  const TensorInfo* freqs = got.find("rope_freqs.weight");
  ASSERT_NE(freqs, nullptr);
  const std::vector<float> f = values(got, *freqs);
  ASSERT_EQ(f.size(), 32u);
  EXPECT_EQ(f.front(), 1.0f);
  EXPECT_EQ(f.back(), 8.0f);

  auto source = make_random_weight_source(c, DType::F32, 7);
  std::vector<TensorSpec> specs = global_tensors(c);
  for (int64_t l = 0; l < 2; ++l)
    for (auto& s : layer_tensors(c, l)) specs.push_back(s);
  ASSERT_EQ(got.tensors().size(), specs.size() + 1);
  for (const TensorSpec& s : specs) {
    const TensorInfo* t = got.find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->file_name, gguf_name_from_hf(s.name));
    EXPECT_EQ(t->shape, s.shape) << s.name;
    std::vector<float> want = values(*source, *source->find(s.name));
    if (s.name.find("q_proj") != std::string::npos || s.name.find("k_proj") != std::string::npos)
      want = permute_heads(want, s.shape[0], s.shape[1], 64);
    expect_close(values(got, *t), want, t->dtype, s.name);
    if (s.shape.size() == 1) EXPECT_EQ(t->dtype, DType::F32) << s.name;
  }
  std::vector<quant::TensorRole> roles;
  for (const TensorInfo& t : got.tensors()) {
    quant::TensorRole r;
    r.name = t.file_name;
    r.n_layers = 2;
    r.n_dims = int(t.shape.size());
    r.row = t.shape.back();
    roles.push_back(r);
  }
  const std::vector<DType> types = quant::choose_types(quant::QuantRecipe::Q4_K_M, roles);
  for (size_t i = 0; i < types.size(); ++i)
    EXPECT_EQ(got.tensors()[i].dtype, got.tensors()[i].shape.size() < 2 ? DType::F32 : types[i]) << got.tensors()[i].file_name;
  EXPECT_EQ(got.find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::Q4_K);
  // Rows of 320 hold no 256-element super-block: the recipe falls back to a 32-block type.
  EXPECT_EQ(WeightType{got.find("model.layers.0.mlp.down_proj.weight")->dtype}.block_elems(), 32);
}

TEST(QuantizeCmd, RandomWeightsToMlx) {
  ScratchDir dir;
  const json cj = tiny_config("qwen3");
  write_file(dir.file("config.json"), cj.dump());
  const fs::path out = dir.file("mlx");
  CliOutput run = run_uneven("quantize --random-weights --config " + dir.file("config.json") + " --out " + out.string() +
                             " --type mlx4 --group-size 32");
  ASSERT_EQ(run.exit_code, 0) << run.text;
  const json config = read_json(out / "config.json");
  EXPECT_EQ(config["quantization"], json({{"group_size", 32}, {"bits", 4}, {"mode", "affine"}}));
  EXPECT_EQ(config["quantization_config"], config["quantization"]);
  EXPECT_EQ(config["hidden_size"], 256);
  EXPECT_FALSE(fs::exists(out / "tokenizer.json"));
  const Safetensors st(out / "model.safetensors");
  const ModelConfig c = config_from_hf_json(cj, "tiny");
  auto source = make_random_weight_source(c, DType::F32, 0);
  // mlx-lm casts to the config's torch_dtype (bfloat16) before quantizing: scales and norms are BF16.
  for (const TensorSpec& s : layer_tensors(c, 1)) {
    const std::vector<float> want = values(*source, *source->find(s.name));
    if (s.shape.size() == 2) {
      const std::string stem = s.name.substr(0, s.name.size() - 7);
      EXPECT_EQ(st.header[s.name]["dtype"], "U32");
      EXPECT_EQ(st.header[s.name]["shape"], json({s.shape[0], s.shape[1] / 8}));
      EXPECT_EQ(st.header[stem + ".scales"]["dtype"], "BF16");
      EXPECT_EQ(st.header[stem + ".biases"]["shape"], json({s.shape[0], s.shape[1] / 32}));
      expect_close(st.dequantized(stem, 4, 32), want, DType::MLX4, s.name);
    } else {
      EXPECT_EQ(st.header[s.name]["dtype"], "BF16") << s.name;
      expect_close(st.floats(s.name), want, DType::BF16, s.name);
    }
  }
  const json index = read_json(out / "model.safetensors.index.json");
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.scales"], "model.safetensors");
  EXPECT_EQ(index["metadata"]["total_size"], st.data.size());
}

// ---- Hugging Face fixtures

TEST(QuantizeCmd, HfFixtureToMlxAsMlxLmLaysItOut) {
  for (const auto& [fixture, bits, group] : {std::tuple{"qwen3", 4, 32}, std::tuple{"llama_tied", 8, 64}}) {
    SCOPED_TRACE(fixture);
    ScratchDir dir;
    const fs::path out = dir.file("mlx"), in = kHf / fixture;
    CliOutput run = run_uneven(fmt::format("quantize --model {} --out {} --type mlx{} --group-size {}", in.string(),
                                           out.string(), bits, group));
    ASSERT_EQ(run.exit_code, 0) << run.text;
    json config = read_json(out / "config.json"), original = read_json(in / "config.json");
    EXPECT_EQ(config["quantization"], json({{"group_size", group}, {"bits", bits}, {"mode", "affine"}}));
    EXPECT_EQ(config["quantization_config"], config["quantization"]);
    config.erase("quantization");
    config.erase("quantization_config");
    EXPECT_EQ(config, original);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
      EXPECT_EQ(read_bytes(out / f), read_bytes(in / f)) << f;

    const Safetensors st(out / "model.safetensors");
    EXPECT_EQ(st.header["__metadata__"]["format"], "mlx");
    const TensorFiles src = TensorFiles::open_safetensors_dir(in.string());
    size_t expected_entries = 1;  // __metadata__
    for (const TensorInfo& t : src.tensors()) {
      const std::vector<float> want = values(src, t);
      if (t.shape.size() == 2 && t.shape[1] % group == 0) {
        const std::string stem = t.name.substr(0, t.name.size() - 7);
        EXPECT_EQ(st.header[t.name]["shape"], json({t.shape[0], t.shape[1] * bits / 32})) << t.name;
        EXPECT_EQ(st.header[stem + ".scales"]["dtype"], "F32") << t.name;  // float32 checkpoints keep F32 scales
        EXPECT_EQ(st.header[stem + ".scales"]["shape"], json({t.shape[0], t.shape[1] / group})) << t.name;
        expect_close(st.dequantized(stem, bits, group), want, bits == 4 ? DType::MLX4 : DType::MLX8, t.name);
        expected_entries += 3;
      } else {
        EXPECT_EQ(st.header[t.name]["dtype"], "F32") << t.name;
        EXPECT_EQ(st.floats(t.name), want) << t.name;
        expected_entries += 1;
      }
    }
    EXPECT_EQ(st.header.size(), expected_entries);
  }
}

TEST(QuantizeCmd, HfFixtureToGgufKeepsConfigAndTokenizer) {
  for (const char* fixture : {"qwen3", "llama_tied"}) {
    SCOPED_TRACE(fixture);
    ScratchDir dir;
    const fs::path in = kHf / fixture;
    const std::string out = dir.file("m.gguf");
    CliOutput run = run_uneven("quantize --model " + in.string() + " --out " + out + " --type q8_0");
    ASSERT_EQ(run.exit_code, 0) << run.text;
    const TensorFiles got = TensorFiles::open_gguf(out), src = TensorFiles::open_safetensors_dir(in.string());
    const ModelConfig want = load_hf_config((in / "config.json").string());
    const ModelConfig back = config_from_gguf_metadata(got.metadata(), out);
    EXPECT_EQ(back.architecture, want.architecture);
    EXPECT_EQ(back.hidden_size, want.hidden_size);
    EXPECT_EQ(back.intermediate_size, want.intermediate_size);
    EXPECT_EQ(back.num_layers, want.num_layers);
    EXPECT_EQ(back.num_heads, want.num_heads);
    EXPECT_EQ(back.num_kv_heads, want.num_kv_heads);
    EXPECT_EQ(back.head_dim, want.head_dim);
    EXPECT_EQ(back.vocab_size, want.vocab_size);
    EXPECT_EQ(back.max_position, want.max_position);
    EXPECT_FLOAT_EQ(float(back.rope_theta), float(want.rope_theta));
    EXPECT_FLOAT_EQ(float(back.rms_norm_eps), float(want.rms_norm_eps));
    EXPECT_EQ(back.bos_token_id, want.bos_token_id);

    // The tokenizer written as tokenizer.ggml.* encodes as tokenizer.json does.
    auto hf = tokenizer_from_hf_dir(in.string());
    auto gg = tokenizer_from_gguf_metadata(got.metadata(), out);
    const std::string text = read_json(in / "reference.json")["prompt"];
    EXPECT_EQ(gg->encode(text), hf->encode(text));
    EXPECT_EQ(gg->encode(text + " 12345 <|im_end|>\n\n  x", false), hf->encode(text + " 12345 <|im_end|>\n\n  x", false));

    // Tensors: llama's q/k rows reordered for adjacent-pair rope; qwen's as they are.
    for (const TensorInfo& t : src.tensors()) {
      const TensorInfo* g = got.find(t.name);
      ASSERT_NE(g, nullptr) << t.name;
      std::vector<float> w = values(src, t);
      const bool qk = t.name.find("q_proj") != std::string::npos || t.name.find("k_proj") != std::string::npos;
      if (want.architecture == "llama" && qk) w = permute_heads(w, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, want.head_dim);
      expect_close(values(got, *g), w, g->dtype, t.name);
    }
  }
}

// ---- bad input

TEST(QuantizeCmd, BadInputIsRefusedWithClearErrors) {
  ScratchDir dir;
  write_file(dir.file("file"), std::string(64, 'x'));
  fs::create_directories(dir.file("full"));
  write_file(dir.file("full/a"), "x");
  const std::string qwen3 = (kHf / "qwen3").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"-m " + kStories + " -o " + dir.file("o.gguf") + " --type q3_k", "--type 'q3_k' is not known"},
      {"-m " + qwen3 + " -o " + dir.file("o") + " --type mlx4 --group-size 48", "--group-size 48 is not supported"},
      {"-m " + kStories + " -o " + dir.file("o.gguf") + " --type q8_0 --group-size 32", "--group-size applies to mlx4 and mlx8 only"},
      {"-m " + dir.file("missing.gguf") + " -o " + dir.file("o.gguf") + " --type q8_0", "missing.gguf: no such file or directory"},
      {"-m " + qwen3 + " -o " + dir.file("file") + " --type mlx8", "file: exists and is not a directory"},
      {"-m " + qwen3 + " -o " + dir.file("full") + " --type mlx8", "full: directory is not empty"},
      {"-m " + kStories + " -o " + dir.str() + " --type q8_0", "is a directory; --type q8_0 writes one GGUF file"},
      {"-m " + kStories + " -o " + dir.file("nodir/o.gguf") + " --type q8_0", "does not exist"},
      {"-m " + kStories + " -o " + kStories + " --type q8_0", "is the input file"},
      {"-m " + kStories + " -o " + dir.file("o") + " --type mlx4", "GGUF input is not supported for MLX types"},
      {"--random-weights -o " + dir.file("o.gguf") + " --type q8_0", "--random-weights needs --config"},
      {"-m " + (kHf / "qwen3_moe_e16").string() + " -o " + dir.file("o.gguf") + " --type q8_0", "architecture 'qwen3_moe' is not supported"},
      {"-m " + dir.file("file") + " -o " + dir.file("o.gguf") + " --type q8_0", "not a GGUF file"},
  };
  for (const auto& [args, message] : cases) {
    CliOutput out = run_uneven("quantize " + args);
    EXPECT_EQ(out.exit_code, 1) << args << "\n" << out.text;
    EXPECT_NE(out.text.find(message), std::string::npos) << args << "\n" << out.text;
  }
  EXPECT_FALSE(fs::exists(dir.file("o.gguf")));
  EXPECT_FALSE(fs::exists(dir.file("o")));

  // An unsupported input dtype is named with its tensor.
  SafetensorsWriter bad;
  bad.tensor("model.embed_tokens.weight", "I64", {2}, std::string(16, '\0'));
  fs::create_directories(dir.file("i64"));
  bad.write(dir.file("i64/model.safetensors"));
  write_file(dir.file("i64/config.json"), tiny_config("qwen3").dump());
  CliOutput out = run_uneven("quantize -m " + dir.file("i64") + " -o " + dir.file("o.gguf") + " --type q8_0");
  EXPECT_EQ(out.exit_code, 1) << out.text;
  EXPECT_NE(out.text.find("model.embed_tokens.weight has dtype I64"), std::string::npos) << out.text;
}

}  // namespace
}  // namespace uneven::testing
