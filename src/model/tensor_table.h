// Internals shared by the GGUF and safetensors readers: read-only file handles and tensor-table checks.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/tensor_file.h"

namespace uneven::detail {

// An open read-only file descriptor, closed on destruction. Every failure throws naming the path.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path);
  ReadOnlyFile(ReadOnlyFile&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_), size_(o.size_) { o.fd_ = -1; }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(ReadOnlyFile&&) = delete;
  ~ReadOnlyFile();

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Reads exactly `size` bytes at `offset` (retrying short reads); throws if the file ends first.
  void read_exact(void* dst, uint64_t size, uint64_t offset) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Largest byte size any tensor may claim; far beyond any real file, small enough that offset + size
// arithmetic on uint64 never wraps.
inline constexpr uint64_t kMaxTensorBytes = uint64_t(1) << 56;

// The bytes of `shape` stored as `type` (numel x element size, or blocks x block size), or throws naming
// `file` and `tensor` when a dimension is negative, the innermost dimension is not a whole number of
// blocks, or the size exceeds kMaxTensorBytes (so later arithmetic cannot overflow).
uint64_t checked_nbytes(const std::vector<int64_t>& shape, const WeightType& type, const std::string& file,
                        const std::string& tensor);

// "[512, 64]" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

// Checks a finished table: each tensor's nbytes equals numel x dtype size, its range lies inside its
// file (file_sizes[file_index]), no two ranges in one file overlap, and no name repeats. Returns the
// name -> position index. Throws uneven::Error naming the file, the tensor(s) and the numbers.
std::unordered_map<std::string, size_t> check_table(const std::vector<TensorInfo>& tensors,
                                                    const std::vector<std::string>& paths,
                                                    const std::vector<uint64_t>& file_sizes);

}  // namespace uneven::detail
