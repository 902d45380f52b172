// Tensor tables over model files (GGUF, safetensors shards) and reads of whole tensors or row/column slices.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/dtype.h"

namespace uneven {

// Where a tensor's bytes are. Shape is row-major, outermost first (PyTorch order; a GGUF tensor's ne[] is
// reversed into this order). Names are canonical Hugging Face names (model.layers.3.self_attn.q_proj.weight);
// the GGUF reader translates its names (blk.3.attn_q.weight) and keeps the original for messages.
struct TensorInfo {
  std::string name;
  std::string file_name;  // name in the file, for error messages
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  int32_t group = 0;                // MLX types: elements per scale/bias group
  DType group_scale = DType::BF16;  // MLX types: type of the scales and biases
  int file_index = 0;   // index into TensorFiles::paths()
  uint64_t offset = 0;  // absolute byte offset in that file
  uint64_t nbytes = 0;

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }     // outermost dimension
  int64_t row_elems() const { return shape.empty() ? 1 : numel() / shape[0]; }
  WeightType type() const { return {dtype, group, group_scale}; }
};

// A read-only view of bytes that stay valid as long as the region lives; either an mmap of just the
// needed pages or an owned buffer (after a copy for a layout change).
class TensorBytes {
 public:
  TensorBytes() = default;
  TensorBytes(TensorBytes&&) noexcept;
  TensorBytes& operator=(TensorBytes&&) noexcept;
  TensorBytes(const TensorBytes&) = delete;
  TensorBytes& operator=(const TensorBytes&) = delete;
  ~TensorBytes();

  static TensorBytes owned(std::vector<uint8_t> bytes);
  static TensorBytes mapped(void* map_base, size_t map_length, const void* data, size_t size);

  const void* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T> const T* as() const { return static_cast<const T*>(data_); }

 private:
  void* map_base_ = nullptr;
  size_t map_length_ = 0;
  std::vector<uint8_t> owned_;
  const void* data_ = nullptr;
  size_t size_ = 0;
};

// The tensor table of one model (one GGUF file, or one or more safetensors files). Opening reads and
// validates only headers: every tensor's byte range must lie inside its file, sizes must match shape x
// dtype, and ranges must not overlap. Tensor data is read only when asked for.
class TensorFiles {
 public:
  static TensorFiles open_gguf(const std::string& path);
  // A Hugging Face directory: model.safetensors, or the shards listed by model.safetensors.index.json.
  static TensorFiles open_safetensors_dir(const std::string& dir);
  static TensorFiles open_safetensors_files(const std::vector<std::string>& paths);

  const std::vector<std::string>& paths() const { return paths_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  // Throws naming the model path and the tensor when absent.
  const TensorInfo& get(const std::string& name) const;
  // Throws naming the tensor and both shapes when the stored shape differs from `expected`.
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& expected) const;

  // Rows [row_begin, row_end) of the outermost dimension: a contiguous byte range, memory-mapped, no copy.
  TensorBytes read_rows(const TensorInfo& t, int64_t row_begin, int64_t row_end) const;
  TensorBytes read_all(const TensorInfo& t) const { return read_rows(t, 0, t.rows()); }
  // Columns [col_begin, col_end) of a 2-D tensor, copied into a contiguous [rows x (col_end-col_begin)]
  // buffer; reads only those bytes of each row.
  TensorBytes read_cols(const TensorInfo& t, int64_t col_begin, int64_t col_end) const;

  // GGUF key/value metadata (empty for safetensors). Arrays become JSON arrays.
  const nlohmann::json& metadata() const { return metadata_; }
  // Bytes of tensor data read or mapped so far (exactly the slice bytes asked for; a mapping is rounded
  // out to whole pages), for checks that a rank loads only its slices. Shared by copies; thread-safe.
  uint64_t data_bytes_touched() const { return bytes_touched_->load(); }

 private:
  std::vector<std::string> paths_;
  std::vector<uint64_t> file_sizes_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  nlohmann::json metadata_ = nlohmann::json::object();
  std::shared_ptr<std::atomic<uint64_t>> bytes_touched_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::string description_;  // for messages: the file or directory opened
};

}  // namespace uneven
