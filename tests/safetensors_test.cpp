// safetensors reader tests: values of each dtype, slices and bytes touched, single-file and sharded
// directories, and rejection of malformed headers and indexes with messages naming file, tensor and numbers.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "model/tensor_file.h"
#include "test_files.h"

namespace uneven {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::SafetensorsWriter;
using testing::ScratchDir;

// F32 [3, 4] with element (r, c) = 10 r + c, F16 [2], BF16 [2, 2], and a scalar.
SafetensorsWriter small_file() {
  std::vector<float> m(12);
  for (int i = 0; i < 12; ++i) m[size_t(i)] = float(10 * (i / 4) + i % 4);
  SafetensorsWriter w;
  w.tensor("model.layers.0.mlp.down_proj.weight", "F32", {3, 4}, testing::f32_bytes(m));
  w.tensor("model.norm.weight", "F16", {2}, testing::u16_bytes({0x3c00, 0xc400}));  // 1, -4
  w.tensor("lm_head.weight", "BF16", {2, 2},
           testing::u16_bytes({f32_to_bf16(0.25f), f32_to_bf16(-8.f), f32_to_bf16(3.f), f32_to_bf16(1e10f)}));
  w.tensor("scale", "F32", {}, testing::f32_bytes({2.5f}));
  return w;
}

TEST(Safetensors, ReadsEachDtypeAndItsValues) {
  ScratchDir dir;
  small_file().write(dir.file("model.safetensors"));
  TensorFiles f = TensorFiles::open_safetensors_dir(dir.str());
  EXPECT_EQ(f.tensors().size(), 4u);  // __metadata__ is not a tensor
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.data_bytes_touched(), 0u);

  const TensorInfo& down = f.get("model.layers.0.mlp.down_proj.weight", {3, 4});
  EXPECT_EQ(down.dtype, DType::F32);
  EXPECT_EQ(down.file_name, down.name);
  TensorBytes d = f.read_all(down);
  EXPECT_EQ(d.as<float>()[0], 0.f);
  EXPECT_EQ(d.as<float>()[11], 23.f);

  TensorBytes n = f.read_all(f.get("model.norm.weight", {2}));
  EXPECT_EQ(f16_to_f32(n.as<uint16_t>()[0]), 1.f);
  EXPECT_EQ(f16_to_f32(n.as<uint16_t>()[1]), -4.f);

  const TensorInfo& head = f.get("lm_head.weight", {2, 2});
  EXPECT_EQ(head.dtype, DType::BF16);
  TensorBytes h = f.read_all(head);
  EXPECT_EQ(bf16_to_f32(h.as<uint16_t>()[1]), -8.f);
  EXPECT_EQ(bf16_to_f32(h.as<uint16_t>()[3]), bf16_to_f32(f32_to_bf16(1e10f)));

  const TensorInfo& scale = f.get("scale", {});
  EXPECT_EQ(scale.rows(), 1);
  EXPECT_EQ(f.read_all(scale).as<float>()[0], 2.5f);
  EXPECT_EQ(f.data_bytes_touched(), 48u + 4u + 8u + 4u);
}

TEST(Safetensors, RowAndColumnSlicesCountTheirBytes) {
  ScratchDir dir;
  small_file().write(dir.file("model.safetensors"));
  TensorFiles f = TensorFiles::open_safetensors_dir(dir.str());
  const TensorInfo& t = f.get("model.layers.0.mlp.down_proj.weight");
  TensorBytes rows = f.read_rows(t, 1, 3);
  ASSERT_EQ(rows.size(), 32u);
  EXPECT_EQ(rows.as<float>()[0], 10.f);
  EXPECT_EQ(rows.as<float>()[7], 23.f);
  EXPECT_EQ(f.data_bytes_touched(), 32u);
  TensorBytes cols = f.read_cols(t, 3, 4);
  ASSERT_EQ(cols.size(), 12u);
  EXPECT_EQ(std::vector<float>(cols.as<float>(), cols.as<float>() + 3), (std::vector<float>{3, 13, 23}));
  EXPECT_EQ(f.data_bytes_touched(), 44u);
  // Copies of the table share the counter (the loader hands a shared table to every rank thread).
  TensorFiles copy = f;
  copy.read_rows(t, 0, 1);
  EXPECT_EQ(f.data_bytes_touched(), 60u);
}

TEST(Safetensors, UnalignedDataIsCopiedSoElementsStayAligned) {
  // A 3-byte header padding-free file puts the F32 data at an odd offset; reads must still be aligned.
  ScratchDir dir;
  std::string header = json{{"x", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}.dump();
  header += std::string((8 - header.size() % 8) % 8 + 1, ' ');  // length = 1 mod 8
  testing::write_file(dir.file("model.safetensors"),
                      testing::Bytes().put<uint64_t>(header.size()).b + header + testing::f32_bytes({-1.5f, 9.f}));
  TensorFiles f = TensorFiles::open_safetensors_dir(dir.str());
  const TensorInfo& t = f.get("x");
  EXPECT_EQ(t.offset % 4, 1u);
  TensorBytes b = f.read_rows(t, 1, 2);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 4, 0u);
  EXPECT_EQ(b.as<float>()[0], 9.f);
  EXPECT_EQ(f.data_bytes_touched(), 4u);
}

TEST(Safetensors, OpensFilesWrittenByTransformers) {
  const std::string root = std::string(UNEVEN_SOURCE_DIR) + "/tests/data/hf/";
  TensorFiles f32 = TensorFiles::open_safetensors_dir(root + "qwen2");
  EXPECT_EQ(f32.tensors().size(), 39u);  // 3 layers x 12 + embedding, final norm, head
  const TensorInfo& embed = f32.get("model.embed_tokens.weight", {513, 128});
  EXPECT_EQ(embed.dtype, DType::F32);
  EXPECT_EQ(embed.offset, 8u + 4064u + 262656u);  // header length 4064; data_offsets start at 262656
  EXPECT_EQ(f32.get("model.layers.0.self_attn.q_proj.bias").shape, (std::vector<int64_t>{128}));

  TensorFiles bf16 = TensorFiles::open_safetensors_dir(root + "qwen2_bf16");
  const TensorInfo& embed16 = bf16.get("model.embed_tokens.weight", {513, 128});
  EXPECT_EQ(embed16.dtype, DType::BF16);
  // Both fixtures use seed 3002 (reference.json), so the BF16 weights are the F32 ones rounded: compare
  // a mapped row slice of one against a column-sliced read of the other.
  TensorBytes row = f32.read_rows(embed, 7, 8);
  TensorBytes col = bf16.read_cols(embed16, 0, 128);
  for (int c = 0; c < 128; ++c) EXPECT_EQ(f32_to_bf16(row.as<float>()[c]), col.as<uint16_t>()[7 * 128 + c]) << c;
}

// Two shards plus an index, as transformers writes them.
void write_sharded(const ScratchDir& dir, const json& weight_map) {
  SafetensorsWriter a, b;
  a.tensor("model.embed_tokens.weight", "F32", {2, 2}, testing::f32_bytes({1, 2, 3, 4}));
  a.tensor("model.norm.weight", "F32", {2}, testing::f32_bytes({5, 6}));
  b.tensor("lm_head.weight", "BF16", {1, 2}, testing::u16_bytes({f32_to_bf16(7.f), f32_to_bf16(8.f)}));
  a.write(dir.file("model-00001-of-00002.safetensors"));
  b.write(dir.file("model-00002-of-00002.safetensors"));
  testing::write_file(dir.file("model.safetensors.index.json"),
                      json{{"metadata", {{"total_size", 28}}}, {"weight_map", weight_map}}.dump());
}

const json kWeightMap = {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                         {"model.norm.weight", "model-00001-of-00002.safetensors"},
                         {"lm_head.weight", "model-00002-of-00002.safetensors"}};

TEST(Safetensors, OpensShardedDirectories) {
  ScratchDir dir;
  write_sharded(dir, kWeightMap);
  TensorFiles f = TensorFiles::open_safetensors_dir(dir.str());
  ASSERT_EQ(f.paths().size(), 2u);
  EXPECT_EQ(f.paths()[1], dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(f.tensors().size(), 3u);
  const TensorInfo& head = f.get("lm_head.weight", {1, 2});
  EXPECT_EQ(head.file_index, 1);
  EXPECT_EQ(bf16_to_f32(f.read_all(head).as<uint16_t>()[1]), 8.f);
  EXPECT_EQ(f.read_rows(f.get("model.embed_tokens.weight"), 1, 2).as<float>()[1], 4.f);
  EXPECT_EQ(f.get("model.norm.weight").file_index, 0);
}

TEST(SafetensorsErrors, IndexProblems) {
  {
    ScratchDir dir;
    json map = kWeightMap;
    map["extra.weight"] = "model-00003-of-00002.safetensors";
    write_sharded(dir, map);
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); },
                 {"model.safetensors.index.json", "shard model-00003-of-00002.safetensors", "does not exist"});
  }
  {
    ScratchDir dir;
    json map = kWeightMap;
    map["model.norm.weight"] = "model-00002-of-00002.safetensors";
    write_sharded(dir, map);
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); },
                 {"model.safetensors.index.json", "tensor model.norm.weight is listed in shard model-00002-of-00002.safetensors",
                  "it is in model-00001-of-00002.safetensors"});
  }
  {
    ScratchDir dir;
    json map = kWeightMap;
    map["ghost.weight"] = "model-00002-of-00002.safetensors";
    write_sharded(dir, map);
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); }, {"tensor ghost.weight", "nor does any other shard"});
  }
  {
    ScratchDir dir;
    json map = kWeightMap;
    map["lm_head.weight"] = "../model-00002-of-00002.safetensors";
    write_sharded(dir, map);
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); }, {"shard name '../model-00002", "inside"});
  }
  {
    ScratchDir dir;
    testing::write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": [1]})");
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); }, {"model.safetensors.index.json", "weight_map"});
    testing::write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": {)");
    expect_error([&] { TensorFiles::open_safetensors_dir(dir.str()); }, {"model.safetensors.index.json", "invalid JSON"});
  }
  ScratchDir empty;
  expect_error([&] { TensorFiles::open_safetensors_dir(empty.str()); }, {empty.str(), "neither model.safetensors"});
  expect_error([&] { TensorFiles::open_safetensors_dir(empty.file("absent")); }, {"absent", "not a directory"});
}

// Writes raw bytes as one file and expects opening it to fail with all of `parts` (and the path).
void expect_file_error(const std::string& bytes, const std::vector<std::string>& parts) {
  ScratchDir dir;
  const std::string path = dir.file("bad.safetensors");
  testing::write_file(path, bytes);
  std::vector<std::string> all = parts;
  all.push_back(path);
  expect_error([&] { TensorFiles::open_safetensors_files({path}); }, all);
}

// The small file with its header edited by `edit`.
std::string edited(const std::function<void(json&)>& edit) {
  SafetensorsWriter w = small_file();
  json h = w.header();
  edit(h);
  return SafetensorsWriter::file_bytes(h.dump(), w.data());
}

TEST(SafetensorsErrors, LengthAndJson) {
  expect_file_error("1234", {"too short for a safetensors header", "4 bytes"});
  expect_file_error(testing::Bytes().put<uint64_t>(100).b + "{}", {"header length 100", "larger than the 2 bytes"});
  expect_file_error(SafetensorsWriter::file_bytes("{\"a\": [1, 2", ""), {"invalid JSON in the header"});
  expect_file_error(SafetensorsWriter::file_bytes("[1, 2]", ""), {"header must be a JSON object, not array"});
  const std::string t = R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  expect_file_error(SafetensorsWriter::file_bytes(R"({"a": )" + t + R"(, "a": )" + t + "}", "abcd"),
                    {"key 'a' appears twice"});
}

TEST(SafetensorsErrors, TensorEntries) {
  const std::string down = "model.layers.0.mlp.down_proj.weight";
  expect_file_error(edited([&](json& h) { h[down]["dtype"] = "I64"; }), {"tensor " + down, "dtype I64", "not supported"});
  expect_file_error(edited([&](json& h) { h[down]["shape"] = {3, -4}; }), {"tensor " + down, "negative value -4"});
  expect_file_error(edited([&](json& h) { h[down]["shape"] = {3, 4.5}; }), {"tensor " + down, "must hold integers"});
  expect_file_error(edited([&](json& h) { h[down]["shape"] = {1ull << 40, 1ull << 40}; }),
                    {"tensor " + down, "absurd shape [1099511627776, 1099511627776]"});
  expect_file_error(edited([&](json& h) { h[down]["shape"] = {4, 4}; }),
                    {"tensor " + down, "occupies 48 bytes", "[4, 4] x F32 needs 64 bytes"});
  expect_file_error(edited([&](json& h) { h[down]["data_offsets"] = {0}; }), {"tensor " + down, "[begin, end]"});
  expect_file_error(edited([&](json& h) { h[down]["data_offsets"] = {8, 4}; }), {"data_offsets [8, 4] end before"});
  expect_file_error(edited([&](json& h) { h["scale"]["data_offsets"] = {64, 72}; }),
                    {"tensor scale", "data_offsets [64, 72] reach 8 bytes beyond the end of the file"});
  expect_file_error(edited([&](json& h) { h["scale"]["data_offsets"] = {40, 44}; }),
                    {"tensors model.layers.0.mlp.down_proj.weight (bytes [", "and scale", "overlap by 4 bytes"});
  expect_file_error(edited([&](json& h) { h["scale"] = 3; }), {"tensor scale", "must be a JSON object"});
  expect_file_error(edited([&](json& h) { h["scale"].erase("dtype"); }), {"tensor scale", "'dtype'"});
}

TEST(SafetensorsErrors, DuplicateTensorsAcrossFiles) {
  ScratchDir dir;
  small_file().write(dir.file("a.safetensors"));
  small_file().write(dir.file("b.safetensors"));
  expect_error([&] { TensorFiles::open_safetensors_files({dir.file("a.safetensors"), dir.file("b.safetensors")}); },
               {"appears twice", dir.file("a.safetensors"), dir.file("b.safetensors")});
  expect_error([&] { TensorFiles::open_safetensors_files({dir.file("missing.safetensors")}); },
               {dir.file("missing.safetensors"), "cannot open"});
}

TEST(SafetensorsErrors, CorruptedFilesOpenOrThrowUnevenErrors) {
  ScratchDir dir;
  const std::string good = small_file().bytes();
  ASSERT_LT(good.size(), 1024u);
  const int opened = testing::corrupt_and_open(good, dir.file("fuzz.safetensors"),
                                               [](const std::string& p) { return TensorFiles::open_safetensors_files({p}); });
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace uneven
