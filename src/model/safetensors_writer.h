// Streaming safetensors writer: the JSON header from declared shapes, then tensor data appended in order.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace uneven {

// Bytes of one element of a safetensors dtype this writer emits (F32, F16, BF16, U32); 0 for others.
uint64_t safetensors_dtype_bytes(const std::string& dtype);

// Writes one safetensors file without holding tensor data: sizes follow from shape and dtype, so the
// header (padded with spaces to a multiple of 8 bytes, as the reference writer does) goes first. Usage:
// add_tensor() in data order, begin_data(), write() the bytes of each tensor in that order, finish().
// Data goes to `path`.part, renamed to `path` by finish(); an unfinished writer removes the part file.
class SafetensorsFileWriter {
 public:
  explicit SafetensorsFileWriter(std::string path);
  SafetensorsFileWriter(const SafetensorsFileWriter&) = delete;
  SafetensorsFileWriter& operator=(const SafetensorsFileWriter&) = delete;
  ~SafetensorsFileWriter();

  // String entries of the header's __metadata__ (mlx-lm writes {"format": "mlx"}).
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Declares the next tensor; dtype is one of F32, F16, BF16, U32; shape outermost first.
  void add_tensor(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape);
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const { return data_bytes_; }

  void begin_data();
  // Appends data; tensors are packed back to back, so this is one stream over all of them.
  void write(const void* data, size_t n);
  // Checks that exactly the declared bytes arrived, flushes, closes and renames the file into place.
  void finish();

 private:
  struct Tensor {
    std::string name, dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
  };
  std::string path_, part_path_;
  std::map<std::string, std::string> metadata_;
  std::vector<Tensor> tensors_;
  std::FILE* file_ = nullptr;
  uint64_t data_bytes_ = 0;
  uint64_t data_written_ = 0;
  bool started_ = false, finished_ = false;
};

}  // namespace uneven
