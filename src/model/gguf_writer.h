// Streaming GGUF v3 writer: typed metadata, tensor infos laid out up front, tensor data appended in order.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/dtype.h"

namespace uneven {

// GGUF metadata value types (the ids of gguf_type in llama.cpp's gguf.h).
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
  String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

// One metadata value as GGUF encodes it: the type id and the bytes that follow it in the file (for an
// array: element type, count, elements). Kept encoded so that values copied from a file keep their exact
// types, which llama.cpp checks (a u32 key written as i32 fails to load).
struct GgufValue {
  GgufType type = GgufType::U8;
  std::string payload;

  static GgufValue u8(uint8_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u32(uint32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v);
  static GgufValue string(const std::string& v);
  static GgufValue strings(const std::vector<std::string>& v);
  static GgufValue i32s(const std::vector<int32_t>& v);
  static GgufValue f32s(const std::vector<float>& v);
};

struct GgufKv {
  std::string key;
  GgufValue value;
};

// The metadata entries of a GGUF file (v2 or v3) in file order, each encoded exactly as stored. Reads the
// header only; throws naming the file, the entry and the offset on anything malformed.
std::vector<GgufKv> read_gguf_metadata_raw(const std::string& path);

// Writes one GGUF v3 file without holding tensor data: every tensor's size follows from its shape and
// type, so offsets are known before the first data byte. Usage: set() metadata and add_tensor() in file
// order, begin_data(), write() each tensor's bytes in that order (in pieces of any size), finish().
// Data goes to `path`.part, renamed to `path` by finish(); an unfinished writer removes the part file.
class GgufFileWriter {
 public:
  explicit GgufFileWriter(std::string path);
  GgufFileWriter(const GgufFileWriter&) = delete;
  GgufFileWriter& operator=(const GgufFileWriter&) = delete;
  ~GgufFileWriter();

  // Replaces the value of an existing key in place (keeping the key order) or appends a new key.
  void set(const std::string& key, GgufValue value);
  void remove(const std::string& key);
  const std::vector<GgufKv>& metadata() const { return kvs_; }

  // Declares the next tensor. `shape` is outermost first (it is written reversed, as GGML's ne[]); its
  // innermost dimension must be a whole number of blocks of `type` (a GGML type: not MLX).
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, DType type);
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t tensor_bytes(size_t i) const { return tensors_[i].bytes; }

  // Writes the header, metadata and tensor infos, padded to the alignment (general.alignment if set, a
  // u32 power of two; else 32). After this, metadata and tensors are fixed.
  void begin_data();
  // Appends data of the current tensor; a tensor is complete once its byte count is reached, and the
  // next write starts the next tensor after padding. Writing beyond the last tensor throws.
  void write(const void* data, size_t n);
  // Checks every tensor received exactly its bytes, flushes, closes and renames the file into place.
  void finish();
  uint64_t bytes_written() const { return written_; }

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t ggml_type = 0;
    uint64_t offset = 0;  // relative to the data section
    uint64_t bytes = 0;
  };
  void put(const void* data, size_t n);
  void pad_to(uint64_t multiple);

  std::string path_, part_path_;
  std::vector<GgufKv> kvs_;
  std::vector<Tensor> tensors_;
  std::FILE* file_ = nullptr;
  uint64_t alignment_ = 32;
  uint64_t written_ = 0;     // bytes of the file so far
  uint64_t data_start_ = 0;  // file offset of the data section
  size_t current_ = 0;       // tensor being written
  uint64_t current_done_ = 0;
  bool finished_ = false;
};

}  // namespace uneven
