// GGUF reader tests: the real stories260K file, metadata of every value type, tensor values and slices,
// name translation, and rejection of malformed files with messages that name file, tensor and numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/gguf.h"
#include "model/tensor_file.h"
#include "test_files.h"

namespace uneven {
namespace {

using testing::Bytes;
using testing::expect_error;
using testing::GgufWriter;
using testing::ScratchDir;

const std::string kStories = std::string(UNEVEN_SOURCE_DIR) + "/models/stories260K.gguf";

TEST(Gguf, OpensTheRealStories260KFile) {
  TensorFiles f = TensorFiles::open_gguf(kStories);
  EXPECT_EQ(f.tensors().size(), 48u);  // embeddings, final norm, output head + 9 per layer x 5 layers
  const TensorInfo& embed = f.get("model.embed_tokens.weight", {512, 64});
  EXPECT_EQ(embed.file_name, "token_embd.weight");
  EXPECT_EQ(embed.dtype, DType::F32);
  EXPECT_EQ(embed.nbytes, 512u * 64 * 4);
  EXPECT_EQ(f.get("lm_head.weight").shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(f.get("model.norm.weight").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(f.get("model.layers.4.mlp.gate_proj.weight").shape, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(f.get("model.layers.4.mlp.down_proj.weight").shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(f.get("model.layers.0.self_attn.k_proj.weight").shape, (std::vector<int64_t>{32, 64}));  // 4 KV heads x 8
  EXPECT_EQ(f.get("model.layers.2.input_layernorm.weight").file_name, "blk.2.attn_norm.weight");
  for (const TensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.file_name;

  const nlohmann::json& md = f.metadata();
  EXPECT_EQ(md.at("general.architecture"), "llama");
  EXPECT_EQ(md.at("llama.embedding_length").get<int64_t>(), 64);
  EXPECT_EQ(md.at("llama.block_count").get<int64_t>(), 5);
  ASSERT_TRUE(md.at("tokenizer.ggml.tokens").is_array());
  EXPECT_EQ(md.at("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(md.at("tokenizer.ggml.tokens")[0], "<unk>");
  EXPECT_EQ(md.at("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(f.data_bytes_touched(), 0u);  // opening reads headers only

  // Row 3 of the embedding matrix, mapped, equals the same bytes taken from the whole tensor.
  TensorBytes all = f.read_all(embed);
  TensorBytes row = f.read_rows(embed, 3, 4);
  ASSERT_EQ(row.size(), 64u * 4);
  EXPECT_EQ(0, std::memcmp(row.data(), all.as<uint8_t>() + 3 * 64 * 4, row.size()));
  EXPECT_EQ(f.data_bytes_touched(), embed.nbytes + 64 * 4);
}

TEST(Gguf, TranslatesLlamaNamesToHuggingFaceNames) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"},
      {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"},
      {"blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"},
      {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.attn_q_norm.weight", "model.layers.3.self_attn.q_norm.weight"},
      {"blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight"},
      {"blk.7.ffn_gate.weight", "model.layers.7.mlp.gate_proj.weight"},
      {"blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"},
      {"blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"},
      // Unknown or malformed names stay as they are.
      {"rope_freqs.weight", "rope_freqs.weight"},
      {"blk.7.ffn_gate_chexps.weight", "blk.7.ffn_gate_chexps.weight"},
      {"blk.x.attn_q.weight", "blk.x.attn_q.weight"},
      {"blk..attn_q.weight", "blk..attn_q.weight"},
      {"blk.3.attn_q", "blk.3.attn_q"},
      {"blk.3.attn_q.scale", "blk.3.attn_q.scale"},
  };
  for (const auto& [gguf, hf] : cases) EXPECT_EQ(hf_name_from_gguf(gguf), hf) << gguf;
}

TEST(Gguf, ReadsMetadataOfEveryValueType) {
  ScratchDir dir;
  GgufWriter w;
  w.kv_raw("u8", 0, Bytes().put<uint8_t>(200).b)
      .kv_raw("i8", 1, Bytes().put<int8_t>(-100).b)
      .kv_raw("u16", 2, Bytes().put<uint16_t>(60000).b)
      .kv_raw("i16", 3, Bytes().put<int16_t>(-30000).b)
      .kv_u32("u32", 4000000000u)
      .kv_raw("i32", 5, Bytes().put<int32_t>(-2000000000).b)
      .kv_f32("f32", 1.5f)
      .kv_raw("bool", 7, Bytes().put<uint8_t>(1).b)
      .kv_str("str", "héllo")
      .kv_raw("u64", 10, Bytes().put<uint64_t>(18000000000000000000ull).b)
      .kv_raw("i64", 11, Bytes().put<int64_t>(-9000000000000000000ll).b)
      .kv_raw("f64", 12, Bytes().put<double>(-0.125).b)
      .kv_raw("ints", 9, Bytes().put<uint32_t>(5).put<uint64_t>(3).put<int32_t>(7).put<int32_t>(-8).put<int32_t>(9).b)
      .kv_strs("strs", {"a", "", "ccc"})
      .kv_raw("nested", 9,
              Bytes().put<uint32_t>(9).put<uint64_t>(2)
                  .put<uint32_t>(0).put<uint64_t>(2).put<uint8_t>(1).put<uint8_t>(2)
                  .put<uint32_t>(8).put<uint64_t>(1).str("x").b)
      .kv_raw("empty", 9, Bytes().put<uint32_t>(6).put<uint64_t>(0).b);
  w.write(dir.file("m.gguf"));
  TensorFiles f = TensorFiles::open_gguf(dir.file("m.gguf"));
  EXPECT_TRUE(f.tensors().empty());
  const nlohmann::json expected = {
      {"u8", 200}, {"i8", -100}, {"u16", 60000}, {"i16", -30000}, {"u32", 4000000000u}, {"i32", -2000000000},
      {"f32", 1.5}, {"bool", true}, {"str", "héllo"}, {"u64", 18000000000000000000ull},
      {"i64", -9000000000000000000ll}, {"f64", -0.125}, {"ints", {7, -8, 9}}, {"strs", {"a", "", "ccc"}},
      {"nested", {{1, 2}, {"x"}}}, {"empty", nlohmann::json::array()}};
  EXPECT_EQ(f.metadata(), expected) << f.metadata().dump();
}

// Three tensors: F32 [2, 3], F16 [4], BF16 [3, 2] (shapes row-major; the writer takes GGML ne order).
GgufWriter three_tensor_file() {
  GgufWriter w;
  w.kv_str("general.architecture", "llama").kv_strs("tokenizer.ggml.tokens", {"<s>", "</s>", "a"});
  w.tensor("blk.0.attn_q.weight", {3, 2}, 0, testing::f32_bytes({1, 2, 3, 4, 5, 6}));
  w.tensor("output_norm.weight", {4}, 1, testing::u16_bytes({0x3c00, 0xc000, 0x3800, 0x0001}));
  w.tensor("blk.0.ffn_up.weight", {2, 3}, 30,
           testing::u16_bytes({f32_to_bf16(1.5f), f32_to_bf16(-3.25f), f32_to_bf16(0.f), f32_to_bf16(100.f),
                               f32_to_bf16(-0.5f), f32_to_bf16(7.f)}));
  return w;
}

TEST(Gguf, ReadsF32F16Bf16TensorsWithReversedShapes) {
  ScratchDir dir;
  three_tensor_file().write(dir.file("m.gguf"));
  TensorFiles f = TensorFiles::open_gguf(dir.file("m.gguf"));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("tokenizer.ggml.tokens").size(), 3u);

  const TensorInfo& q = f.get("model.layers.0.self_attn.q_proj.weight", {2, 3});
  EXPECT_EQ(q.dtype, DType::F32);
  EXPECT_EQ(q.file_name, "blk.0.attn_q.weight");
  TensorBytes qb = f.read_all(q);
  EXPECT_EQ(std::vector<float>(qb.as<float>(), qb.as<float>() + 6), (std::vector<float>{1, 2, 3, 4, 5, 6}));

  const TensorInfo& norm = f.get("model.norm.weight", {4});
  EXPECT_EQ(norm.dtype, DType::F16);
  TensorBytes nb = f.read_all(norm);
  EXPECT_EQ(f16_to_f32(nb.as<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(f16_to_f32(nb.as<uint16_t>()[1]), -2.0f);
  EXPECT_EQ(f16_to_f32(nb.as<uint16_t>()[2]), 0.5f);
  EXPECT_EQ(f16_to_f32(nb.as<uint16_t>()[3]), std::ldexp(1.0f, -24));  // smallest subnormal

  const TensorInfo& up = f.get("model.layers.0.mlp.up_proj.weight", {3, 2});
  EXPECT_EQ(up.dtype, DType::BF16);
  TensorBytes ub = f.read_all(up);
  EXPECT_EQ(bf16_to_f32(ub.as<uint16_t>()[1]), -3.25f);
  EXPECT_EQ(bf16_to_f32(ub.as<uint16_t>()[3]), 100.f);
  // Offsets are absolute, aligned to 32, and the data follows in order.
  EXPECT_EQ(q.offset % 32, 0u);
  EXPECT_EQ(norm.offset, q.offset + 32);
  EXPECT_EQ(up.offset, norm.offset + 32);
}

TEST(Gguf, HonoursGeneralAlignmentAndAcceptsVersion2) {
  ScratchDir dir;
  GgufWriter w = three_tensor_file();
  w.version = 2;
  w.alignment = 64;
  w.kv_u32("general.alignment", 64);
  w.write(dir.file("m.gguf"));
  TensorFiles f = TensorFiles::open_gguf(dir.file("m.gguf"));
  for (const TensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % 64, 0u) << t.name;
  EXPECT_EQ(f.get("model.norm.weight").offset, f.get("model.layers.0.self_attn.q_proj.weight").offset + 64);
  TensorBytes b = f.read_all(f.get("model.layers.0.mlp.up_proj.weight"));
  EXPECT_EQ(bf16_to_f32(b.as<uint16_t>()[5]), 7.f);
}

TEST(Gguf, RowAndColumnSlicesReadOnlyTheirBytes) {
  ScratchDir dir;
  std::vector<float> m(8 * 5);  // [8, 5]: element (r, c) = 10 r + c
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 5; ++c) m[size_t(r * 5 + c)] = float(10 * r + c);
  GgufWriter w;
  w.tensor("w", {5, 8}, 0, testing::f32_bytes(m));
  w.write(dir.file("m.gguf"));
  TensorFiles f = TensorFiles::open_gguf(dir.file("m.gguf"));
  const TensorInfo& t = f.get("w", {8, 5});

  TensorBytes rows = f.read_rows(t, 2, 5);
  ASSERT_EQ(rows.size(), 3u * 5 * 4);
  EXPECT_EQ(rows.as<float>()[0], 20.f);
  EXPECT_EQ(rows.as<float>()[14], 44.f);
  EXPECT_EQ(f.data_bytes_touched(), 60u);

  TensorBytes cols = f.read_cols(t, 1, 3);
  ASSERT_EQ(cols.size(), 8u * 2 * 4);
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(cols.as<float>()[r * 2], float(10 * r + 1));
    EXPECT_EQ(cols.as<float>()[r * 2 + 1], float(10 * r + 2));
  }
  EXPECT_EQ(f.data_bytes_touched(), 60u + 64u);
  EXPECT_EQ(f.read_rows(t, 4, 4).size(), 0u);
  EXPECT_EQ(f.read_cols(t, 5, 5).size(), 0u);
  EXPECT_EQ(f.data_bytes_touched(), 124u);

  // Moving keeps the mapping alive and leaves the source empty.
  TensorBytes moved = std::move(rows);
  EXPECT_EQ(rows.data(), nullptr);
  EXPECT_EQ(rows.size(), 0u);
  EXPECT_EQ(moved.as<float>()[5], 30.f);
  TensorBytes assigned = f.read_rows(t, 0, 1);
  assigned = std::move(moved);  // releases the old mapping
  EXPECT_EQ(assigned.as<float>()[14], 44.f);
  TensorBytes owned_moved = std::move(cols);
  EXPECT_EQ(owned_moved.as<float>()[15], 72.f);

  const std::string file = dir.file("m.gguf");
  expect_error([&] { f.read_rows(t, 3, 9); }, {file, "tensor w", "rows [3, 9)", "[8, 5]"});
  expect_error([&] { f.read_rows(t, -1, 2); }, {"rows [-1, 2)"});
  expect_error([&] { f.read_rows(t, 4, 3); }, {"rows [4, 3)"});
  expect_error([&] { f.read_cols(t, 2, 6); }, {"tensor w", "columns [2, 6)", "[8, 5]"});
  expect_error([&] { f.get("nope"); }, {file, "no tensor named nope"});
  expect_error([&] { f.get("w", {5, 8}); }, {file, "tensor w", "[8, 5]", "[5, 8]"});
}

TEST(Gguf, ColumnSlicesNeedTwoDimensions) {
  ScratchDir dir;
  three_tensor_file().write(dir.file("m.gguf"));
  TensorFiles f = TensorFiles::open_gguf(dir.file("m.gguf"));
  expect_error([&] { f.read_cols(f.get("model.norm.weight"), 0, 1); }, {"model.norm.weight", "2-D", "[4]"});
}

// Writes `w` (or raw bytes) and expects open_gguf to fail with all of `parts` in the message.
void expect_gguf_error(const std::string& bytes, const std::vector<std::string>& parts) {
  ScratchDir dir;
  const std::string path = dir.file("bad.gguf");
  testing::write_file(path, bytes);
  std::vector<std::string> all = parts;
  all.push_back(path);
  expect_error([&] { TensorFiles::open_gguf(path); }, all);
}

TEST(GgufErrors, HeaderMagicAndVersion) {
  expect_gguf_error(std::string("GGUF\3\0\0\0", 8), {"too short for a GGUF header", "8 bytes", "24"});
  std::string bad_magic = three_tensor_file().bytes();
  bad_magic[0] = 'X';
  expect_gguf_error(bad_magic, {"not a GGUF file", "58 47 55 46"});
  for (uint32_t version : {1u, 4u}) {
    GgufWriter w = three_tensor_file();
    w.version = version;
    expect_gguf_error(w.bytes(), {fmt::format("unsupported GGUF version {}", version)});
  }
  GgufWriter big = three_tensor_file();
  big.version = 0x03000000;
  expect_gguf_error(big.bytes(), {"unsupported GGUF version 50331648", "big-endian"});
}

TEST(GgufErrors, UnsupportedTensorType) {
  GgufWriter w = three_tensor_file();
  w.tensors[1].type = 10;
  expect_gguf_error(w.bytes(), {"tensor output_norm.weight", "GGML type 10 (Q2_K)", "not supported"});
  w.tensors[1].type = 99;
  expect_gguf_error(w.bytes(), {"GGML type 99 (unknown)"});
}

TEST(GgufErrors, OffsetsOutsideTheFileMisalignedOrOverlapping) {
  GgufWriter w = three_tensor_file();
  w.tensors[2].offset = 33;
  expect_gguf_error(w.bytes(), {"tensor blk.0.ffn_up.weight", "data offset 33", "alignment 32"});
  w.tensors[2].offset = 32;  // where output_norm.weight (8 bytes) lives
  expect_gguf_error(w.bytes(), {"blk.0.ffn_up.weight", "output_norm.weight", "overlap by 8 bytes"});
  w.tensors[2].offset = 1ull << 40;
  expect_gguf_error(w.bytes(), {"tensor blk.0.ffn_up.weight", "data offset 1099511627776", "beyond the end of the file"});

  std::string truncated = three_tensor_file().bytes();
  truncated.resize(truncated.size() - 12 + 5);  // the BF16 tensor's 12 bytes, 7 of them cut off
  expect_gguf_error(truncated, {"tensor blk.0.ffn_up.weight", "extends 7 bytes beyond the end of the file"});
}

TEST(GgufErrors, DuplicateTensorNamesAfterTranslation) {
  GgufWriter w = three_tensor_file();
  w.tensor("model.layers.0.self_attn.q_proj.weight", {3, 2}, 0, testing::f32_bytes({1, 2, 3, 4, 5, 6}));
  expect_gguf_error(w.bytes(), {"model.layers.0.self_attn.q_proj.weight appears twice", "blk.0.attn_q.weight"});
}

TEST(GgufErrors, BadShapes) {
  GgufWriter w;
  w.tensor("t", {1, 1, 1, 1, 1}, 0, testing::f32_bytes({1}));
  expect_gguf_error(w.bytes(), {"tensor t has 5 dimensions", "at most 4"});
  w.tensors[0].ne = {1ull << 40, 1ull << 40};
  expect_gguf_error(w.bytes(), {"tensor t has an absurd shape [1099511627776, 1099511627776]"});
  w.tensors[0].ne = {~0ull};
  expect_gguf_error(w.bytes(), {"tensor t has an absurd dimension 18446744073709551615"});
}

TEST(GgufErrors, MetadataThatOverrunsTheFile) {
  GgufWriter w;
  w.kv_raw("s", 8, Bytes().put<uint64_t>(1000).b + "abc");
  expect_gguf_error(w.bytes(), {"metadata key 's'", "claims 1000 bytes", "remain"});
  w.kvs.clear();
  w.kv_raw("a", 9, Bytes().put<uint32_t>(8).put<uint64_t>(1ull << 60).b);
  expect_gguf_error(w.bytes(), {"metadata key 'a'", "array element count 1152921504606846976", "remain"});
  w.kvs.clear();
  w.kv_raw("t", 13, "");
  expect_gguf_error(w.bytes(), {"metadata key 't'", "unknown value type 13"});
  w.kvs.clear();
  w.kv_u32("k", 1).kv_u32("k", 2);
  expect_gguf_error(w.bytes(), {"metadata key 'k' appears twice"});
  w.kvs.clear();
  w.kv_u32("general.alignment", 24);
  expect_gguf_error(w.bytes(), {"general.alignment 24 is not a power of two"});
  w.kvs.clear();
  w.kv_raw("i", 4, "\1\2");  // a u32 with only 2 bytes left... followed by the zero padding of the header
  std::string cut = w.bytes().substr(0, 24 + 8 + 1 + 4 + 2);
  expect_gguf_error(cut, {"metadata key 'i'", "2 bytes short of the 4-byte field"});

  std::string counts = GgufWriter().bytes();
  std::memset(counts.data() + 16, 0xff, 8);  // metadata count 2^64 - 1
  expect_gguf_error(counts, {"metadata entry count 18446744073709551615"});
  counts = GgufWriter().bytes();
  std::memset(counts.data() + 8, 0x7f, 8);  // tensor count
  expect_gguf_error(counts, {"tensor info count"});
}

TEST(GgufErrors, DeeplyNestedArraysAreRejected) {
  Bytes p;
  for (int i = 0; i < 20; ++i) p.put<uint32_t>(9).put<uint64_t>(1);
  p.put<uint32_t>(0).put<uint64_t>(0);
  GgufWriter w;
  w.kvs.emplace_back("deep", Bytes().put<uint32_t>(9).b + p.b);
  expect_gguf_error(w.bytes(), {"metadata key 'deep'", "nested deeper than 8"});
}

TEST(GgufErrors, CorruptedFilesOpenOrThrowUnevenErrors) {
  ScratchDir dir;
  GgufWriter w = three_tensor_file();
  w.kv_raw("i", 9, Bytes().put<uint32_t>(5).put<uint64_t>(2).put<int32_t>(1).put<int32_t>(2).b);
  w.kv_raw("nested", 9, Bytes().put<uint32_t>(9).put<uint64_t>(1).put<uint32_t>(8).put<uint64_t>(1).str("x").b);
  const std::string good = w.bytes();
  ASSERT_LT(good.size(), 1024u);  // keeps the suite fast: about 5 opens per byte
  const int opened = testing::corrupt_and_open(good, dir.file("fuzz.gguf"), [](const std::string& p) { return TensorFiles::open_gguf(p); });
  EXPECT_GT(opened, 0);  // flips inside tensor data keep the file valid
}

}  // namespace
}  // namespace uneven

namespace uneven {
namespace {

// Quantized tensors: rows must hold whole blocks, and the bytes a shape x type needs must be in the file.
TEST(GgufErrors, QuantizedRowsOfPartialBlocks) {
  testing::GgufWriter w;
  w.kv_str("general.architecture", "llama");
  w.tensor("blk.0.ffn_down.weight", {48, 4}, 8 /* Q8_0 */, std::string(4 * 2 * 34, '\0'));
  expect_gguf_error(w.bytes(), {"tensor blk.0.ffn_down.weight", "Q8_0", "blocks hold 32 elements", "rows of 48"});
  testing::GgufWriter k;
  k.kv_str("general.architecture", "llama");
  k.tensor("blk.0.attn_q.weight", {128, 2}, 12 /* Q4_K */, std::string(144, '\0'));
  expect_gguf_error(k.bytes(), {"tensor blk.0.attn_q.weight", "Q4_K", "blocks hold 256 elements", "rows of 128"});
}

TEST(GgufErrors, QuantizedTensorBeyondTheFile) {
  testing::GgufWriter w;
  w.kv_str("general.architecture", "llama");
  // 2 rows of one Q6_K block need 420 bytes; the file holds 210.
  w.tensor("blk.0.attn_v.weight", {256, 2}, 14 /* Q6_K */, std::string(210, '\0'));
  expect_gguf_error(w.bytes(), {"tensor blk.0.attn_v.weight", "bytes [", "beyond the end of the file"});
}

}  // namespace
}  // namespace uneven
