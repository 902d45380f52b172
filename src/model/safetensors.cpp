// safetensors reader: one file's JSON header into tensor infos, and Hugging Face directories (single file
// or shards listed by model.safetensors.index.json).
#include <filesystem>
#include <optional>
#include <set>
#include <unordered_set>

#include "model/tensor_file.h"
#include "model/tensor_table.h"
#include "util/error.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The safetensors format caps its header at 100 MB; anything larger is corrupt, and refusing it keeps a
// bad length from allocating gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::optional<DType> dtype_from_safetensors(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "F16") return DType::F16;
  if (name == "BF16") return DType::BF16;
  if (name == "U32") return DType::U32;  // MLX's packed quantized codes
  return std::nullopt;
}

// Parses JSON, turning parse errors and repeated top-level keys into uneven::Error naming `path`.
json parse_json_object(const std::string& text, const std::string& path, std::string_view what) {
  std::unordered_set<std::string> keys;
  std::string duplicate;
  json j;
  try {
    j = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
      // nlohmann keeps the last of repeated keys silently; a repeated tensor name must be an error.
      if (depth == 1 && event == json::parse_event_t::key && duplicate.empty() && !keys.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const json::exception& e) {
    fail("{}: invalid JSON in the {}: {}", path, what, e.what());
  }
  if (!j.is_object()) fail("{}: the {} must be a JSON object, not {}", path, what, j.type_name());
  if (!duplicate.empty()) fail("{}: key '{}' appears twice in the {}", path, duplicate, what);
  return j;
}

// A non-negative JSON integer, or throws naming the file, tensor and field.
uint64_t unsigned_field(const json& v, const std::string& path, const std::string& tensor, std::string_view field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) fail("{}: tensor {}: {} holds the negative value {}", path, tensor, field, v.get<int64_t>());
  fail("{}: tensor {}: {} must hold integers, found {}", path, tensor, field, v.type_name());
}

// Appends the tensors of one file; offsets become absolute. Reads only the 8-byte length and the header.
void read_header(const std::string& path, int file_index, std::vector<TensorInfo>& out, uint64_t& file_size) {
  detail::ReadOnlyFile f(path);
  file_size = f.size();
  if (f.size() < 8) fail("{}: file too short for a safetensors header: {} bytes, need at least 8", path, f.size());
  uint8_t prefix[8];
  f.read_exact(prefix, 8, 0);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | prefix[i];  // little-endian
  if (header_len > f.size() - 8)
    fail("{}: header length {} is larger than the {} bytes that follow it (file size {})", path, header_len,
         f.size() - 8, f.size());
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the safetensors limit of {} bytes", path, header_len, kMaxHeaderBytes);
  std::string text(size_t(header_len), '\0');
  f.read_exact(text.data(), header_len, 8);
  const json header = parse_json_object(text, path, "header");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = f.size() - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;  // free-form strings; nothing the engine needs
    if (!entry.is_object()) fail("{}: tensor {}: entry must be a JSON object, not {}", path, name, entry.type_name());
    TensorInfo t;
    t.name = t.file_name = name;
    t.file_index = file_index;
    auto dtype = entry.find("dtype"), shape = entry.find("shape"), offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) fail("{}: tensor {}: missing or non-string 'dtype'", path, name);
    std::optional<DType> d = dtype_from_safetensors(dtype->get<std::string>());
    if (!d) fail("{}: tensor {} has dtype {}, which is not supported (supported: F32, F16, BF16, and U32 for MLX codes)", path, name, dtype->get<std::string>());
    t.dtype = *d;
    if (shape == entry.end() || !shape->is_array()) fail("{}: tensor {}: missing or non-array 'shape'", path, name);
    for (const json& dim : *shape) {
      const uint64_t v = unsigned_field(dim, path, name, "shape");
      if (v > uint64_t(INT64_MAX)) fail("{}: tensor {} has an absurd dimension {}", path, name, v);
      t.shape.push_back(int64_t(v));
    }
    detail::checked_nbytes(t.shape, t.type(), path, name);  // rejects absurd shapes before any arithmetic
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
      fail("{}: tensor {}: 'data_offsets' must be an array [begin, end]", path, name);
    const uint64_t begin = unsigned_field((*offsets)[0], path, name, "data_offsets");
    const uint64_t end = unsigned_field((*offsets)[1], path, name, "data_offsets");
    if (end < begin) fail("{}: tensor {}: data_offsets [{}, {}] end before they begin", path, name, begin, end);
    if (end > data_size)
      fail("{}: tensor {}: data_offsets [{}, {}] reach {} bytes beyond the end of the file (data section of {} bytes "
           "at byte {})", path, name, begin, end, end - data_size, data_size, data_start);
    t.offset = data_start + begin;
    t.nbytes = end - begin;  // check_table compares it with shape x dtype
    out.push_back(std::move(t));
  }
}

// A shard name from the index: a path relative to the model directory that cannot leave it.
fs::path shard_path(const fs::path& dir, const std::string& shard, const std::string& index_path) {
  fs::path p(shard);
  bool escapes = shard.empty() || p.is_absolute();
  for (const auto& part : p) escapes = escapes || part == "..";
  if (escapes) fail("{}: shard name '{}' must be a file name inside {}", index_path, shard, dir.string());
  return dir / p;
}

}  // namespace

TensorFiles TensorFiles::open_safetensors_files(const std::vector<std::string>& paths) {
  if (paths.empty()) fail("no safetensors files given");
  TensorFiles out;
  out.paths_ = paths;
  out.file_sizes_.resize(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) read_header(paths[i], int(i), out.tensors_, out.file_sizes_[i]);
  out.description_ = paths.size() == 1 ? paths[0] : fmt::format("{} (and {} more shards)", paths[0], paths.size() - 1);
  out.index_ = detail::check_table(out.tensors_, out.paths_, out.file_sizes_);
  return out;
}

TensorFiles TensorFiles::open_safetensors_dir(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  if (!fs::is_directory(d, ec)) fail("{}: not a directory", dir);
  // Like transformers: a single model.safetensors wins over an index.
  const fs::path single = d / "model.safetensors", index_file = d / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    TensorFiles out = open_safetensors_files({single.string()});
    out.description_ = dir;
    return out;
  }
  if (!fs::exists(index_file, ec)) fail("{}: neither model.safetensors nor model.safetensors.index.json exists", dir);

  const std::string index_path = index_file.string();
  detail::ReadOnlyFile f(index_path);
  if (f.size() > kMaxHeaderBytes) fail("{}: index of {} bytes is implausibly large", index_path, f.size());
  std::string text(size_t(f.size()), '\0');
  f.read_exact(text.data(), f.size(), 0);
  const json index = parse_json_object(text, index_path, "index");
  auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object()) fail("{}: missing or non-object 'weight_map'", index_path);

  std::set<std::string> shard_names;  // sorted: model-00001-of-00003 first
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string()) fail("{}: weight_map entry for {} must be a string, not {}", index_path, tensor, shard.type_name());
    shard_names.insert(shard.get<std::string>());
  }
  if (shard_names.empty()) fail("{}: weight_map lists no tensors", index_path);
  std::vector<std::string> paths;
  for (const std::string& shard : shard_names) {
    const fs::path p = shard_path(d, shard, index_path);
    if (!fs::is_regular_file(p, ec)) fail("{}: shard {} named by the index does not exist in {}", index_path, shard, dir);
    paths.push_back(p.string());
  }
  TensorFiles out = open_safetensors_files(paths);
  out.description_ = dir;
  for (const auto& [tensor, shard] : map->items()) {
    const TensorInfo* t = out.find(tensor);
    const std::string& want = shard.get_ref<const std::string&>();
    if (!t) fail("{}: tensor {} is listed in shard {}, which does not contain it (nor does any other shard)", index_path, tensor, want);
    const fs::path have = fs::path(out.paths_[size_t(t->file_index)]);
    if (have != shard_path(d, want, index_path))
      fail("{}: tensor {} is listed in shard {}, which does not contain it; it is in {}", index_path, tensor, want,
           have.filename().string());
  }
  return out;
}

}  // namespace uneven
