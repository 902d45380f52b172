// Format-independent parts of the tensor table: byte regions, table checks, lookups and slice reads.
#include "model/tensor_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "model/tensor_table.h"
#include "util/error.h"

namespace uneven {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // shapes are checked on open: no overflow
  return n;
}

// ---- TensorBytes: either owns a buffer or one mapping, released exactly once.

TensorBytes::TensorBytes(TensorBytes&& o) noexcept
    : map_base_(o.map_base_), map_length_(o.map_length_), owned_(std::move(o.owned_)), data_(o.data_),
      size_(o.size_) {
  o.map_base_ = nullptr;
  o.map_length_ = 0;
  o.data_ = nullptr;
  o.size_ = 0;
}

TensorBytes& TensorBytes::operator=(TensorBytes&& o) noexcept {
  if (this != &o) {
    if (map_base_) ::munmap(map_base_, map_length_);
    map_base_ = o.map_base_;
    map_length_ = o.map_length_;
    owned_ = std::move(o.owned_);  // a moved vector keeps its buffer, so data_ stays valid
    data_ = o.data_;
    size_ = o.size_;
    o.map_base_ = nullptr;
    o.map_length_ = 0;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

TensorBytes::~TensorBytes() {
  if (map_base_) ::munmap(map_base_, map_length_);
}

TensorBytes TensorBytes::owned(std::vector<uint8_t> bytes) {
  TensorBytes b;
  b.owned_ = std::move(bytes);
  b.data_ = b.owned_.data();
  b.size_ = b.owned_.size();
  return b;
}

TensorBytes TensorBytes::mapped(void* map_base, size_t map_length, const void* data, size_t size) {
  TensorBytes b;
  b.map_base_ = map_base;
  b.map_length_ = map_length;
  b.data_ = data;
  b.size_ = size;
  return b;
}

namespace detail {

// ---- ReadOnlyFile

ReadOnlyFile::ReadOnlyFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail("{}: not a regular file", path);
  }
  size_ = uint64_t(st.st_size);
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ReadOnlyFile::read_exact(void* dst, uint64_t size, uint64_t offset) const {
  auto* out = static_cast<uint8_t*>(dst);
  uint64_t done = 0;
  while (done < size) {
    ssize_t got = ::pread(fd_, out + done, size_t(size - done), off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("{}: read of {} bytes at offset {} failed: {}", path_, size, offset, std::strerror(errno));
    if (got == 0) fail("{}: file ends at byte {} inside a read of {} bytes at offset {}", path_, offset + done, size, offset);
    done += uint64_t(got);
  }
}

// ---- table checks

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

uint64_t checked_nbytes(const std::vector<int64_t>& shape, const WeightType& type, const std::string& file,
                        const std::string& tensor) {
  const int64_t per = type.block_elems();
  if (per <= 0) fail("{}: tensor {}: {} has no valid block size", file, tensor, type.name());
  for (int64_t d : shape)
    if (d < 0) fail("{}: tensor {} has a negative dimension in shape {}", file, tensor, shape_string(shape));
  const int64_t inner = shape.empty() ? 1 : shape.back();
  if (per > 1 && inner % per != 0)
    fail("{}: tensor {} of shape {} is stored as {}, whose blocks hold {} elements, but its rows of {} are not a "
         "whole number of blocks", file, tensor, shape_string(shape), type.name(), per, inner);
  uint64_t bytes = uint64_t(type.block_bytes());
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = i + 1 == shape.size() ? shape[i] / per : shape[i];
    if (d != 0 && bytes > kMaxTensorBytes / uint64_t(d))
      fail("{}: tensor {} has an absurd shape {}: more than {} bytes", file, tensor, shape_string(shape),
           kMaxTensorBytes);
    bytes *= uint64_t(d);
  }
  return bytes;
}

std::unordered_map<std::string, size_t> check_table(const std::vector<TensorInfo>& tensors,
                                                    const std::vector<std::string>& paths,
                                                    const std::vector<uint64_t>& file_sizes) {
  std::unordered_map<std::string, size_t> index;
  index.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const std::string& path = paths[size_t(t.file_index)];
    const uint64_t want = checked_nbytes(t.shape, t.type(), path, t.file_name);
    if (t.nbytes != want)
      fail("{}: tensor {} occupies {} bytes but shape {} x {} needs {} bytes", path, t.file_name, t.nbytes,
           shape_string(t.shape), t.type().name(), want);
    const uint64_t size = file_sizes[size_t(t.file_index)];
    // offset is bounded by the readers (< 2^63) and nbytes by kMaxTensorBytes: the sum cannot wrap.
    if (t.offset > size || t.nbytes > size - t.offset)
      fail("{}: tensor {} (bytes [{}, {})) extends {} bytes beyond the end of the file ({} bytes)", path, t.file_name,
           t.offset, t.offset + t.nbytes, t.offset + t.nbytes - size, size);
    auto [it, inserted] = index.emplace(t.name, i);
    if (!inserted) {
      const TensorInfo& first = tensors[it->second];
      fail("{}: tensor {} appears twice: as {} in {} and as {} in {}", path, t.name, first.file_name,
           paths[size_t(first.file_index)], t.file_name, path);
    }
  }
  // Overlaps: sort non-empty ranges by (file, offset); each must start at or after the furthest end so far.
  std::vector<size_t> order;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].nbytes > 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const TensorInfo &x = tensors[a], &y = tensors[b];
    return x.file_index != y.file_index ? x.file_index < y.file_index : x.offset < y.offset;
  });
  for (size_t k = 1, furthest = order.empty() ? 0 : order[0]; k < order.size(); ++k) {
    const TensorInfo& t = tensors[order[k]];
    const TensorInfo& f = tensors[furthest];
    if (t.file_index != f.file_index) {
      furthest = order[k];
      continue;
    }
    if (t.offset < f.offset + f.nbytes)
      fail("{}: tensors {} (bytes [{}, {})) and {} (bytes [{}, {})) overlap by {} bytes", paths[size_t(t.file_index)],
           f.file_name, f.offset, f.offset + f.nbytes, t.file_name, t.offset, t.offset + t.nbytes,
           std::min(f.offset + f.nbytes, t.offset + t.nbytes) - t.offset);
    if (t.offset + t.nbytes > f.offset + f.nbytes) furthest = order[k];
  }
  return index;
}

}  // namespace detail

// ---- TensorFiles: lookups

const TensorInfo* TensorFiles::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& TensorFiles::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail("{}: no tensor named {} (the model has {} tensors)", description_, name, tensors_.size());
  return *t;
}

const TensorInfo& TensorFiles::get(const std::string& name, const std::vector<int64_t>& expected) const {
  const TensorInfo& t = get(name);
  if (t.shape != expected)
    fail("{}: tensor {} (stored as {}) has shape {} but {} was expected", paths_[size_t(t.file_index)], name,
         t.file_name, detail::shape_string(t.shape), detail::shape_string(expected));
  return t;
}

// ---- TensorFiles: reads. Each read reopens the file and checks it still has the size seen on open, so
// a mapping never reaches past the end of a file that shrank (which would fault instead of throwing).

namespace {

detail::ReadOnlyFile reopen(const std::vector<std::string>& paths, const std::vector<uint64_t>& sizes, const TensorInfo& t) {
  if (t.file_index < 0 || size_t(t.file_index) >= paths.size())
    fail("tensor {}: file index {} is not one of this model's {} files", t.name, t.file_index, paths.size());
  detail::ReadOnlyFile f(paths[size_t(t.file_index)]);
  if (f.size() != sizes[size_t(t.file_index)])
    fail("{}: file changed since it was opened (now {} bytes, was {})", f.path(), f.size(), sizes[size_t(t.file_index)]);
  if (t.offset > f.size() || t.nbytes > f.size() - t.offset)
    fail("{}: tensor {} (bytes [{}, {})) is not inside the file ({} bytes)", f.path(), t.name, t.offset,
         t.offset + t.nbytes, f.size());
  return f;
}

}  // namespace

TensorBytes TensorFiles::read_rows(const TensorInfo& t, int64_t row_begin, int64_t row_end) const {
  const int64_t rows = t.rows();
  if (row_begin < 0 || row_end < row_begin || row_end > rows)
    fail("{}: tensor {}: rows [{}, {}) are out of range for shape {}", description_, t.name, row_begin, row_end,
         detail::shape_string(t.shape));
  if (row_begin == row_end) return TensorBytes::owned({});
  detail::ReadOnlyFile f = reopen(paths_, file_sizes_, t);
  const uint64_t row_bytes = t.nbytes / uint64_t(rows);
  const uint64_t begin = t.offset + uint64_t(row_begin) * row_bytes;
  const uint64_t size = uint64_t(row_end - row_begin) * row_bytes;
  bytes_touched_->fetch_add(size);
  if (size == 0) return TensorBytes::owned({});
  // A mapping starts on a page boundary, so the data is aligned to its element size only when its file
  // offset is; otherwise copy, so that callers may always read elements through as<T>().
  if (begin % dtype_size(t.dtype) != 0) {
    std::vector<uint8_t> bytes(size);
    f.read_exact(bytes.data(), size, begin);
    return TensorBytes::owned(std::move(bytes));
  }
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t map_offset = begin / page * page;
  const size_t map_length = size_t(begin + size - map_offset);
  void* base = ::mmap(nullptr, map_length, PROT_READ, MAP_PRIVATE, f.fd(), off_t(map_offset));
  if (base == MAP_FAILED)
    fail("{}: cannot map {} bytes at offset {} for tensor {}: {}", f.path(), map_length, map_offset, t.name,
         std::strerror(errno));
  return TensorBytes::mapped(base, map_length, static_cast<const uint8_t*>(base) + (begin - map_offset), size_t(size));
}

TensorBytes TensorFiles::read_cols(const TensorInfo& t, int64_t col_begin, int64_t col_end) const {
  if (t.shape.size() != 2)
    fail("{}: tensor {}: column slices need a 2-D tensor, not shape {}", description_, t.name,
         detail::shape_string(t.shape));
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (col_begin < 0 || col_end < col_begin || col_end > cols)
    fail("{}: tensor {}: columns [{}, {}) are out of range for shape {}", description_, t.name, col_begin, col_end,
         detail::shape_string(t.shape));
  const WeightType type = t.type();
  const int64_t per = type.block_elems();
  if (col_begin % per != 0 || col_end % per != 0)
    fail("{}: tensor {}: columns [{}, {}) cut {} blocks of {} elements (a split must fall on block boundaries)",
         description_, t.name, col_begin, col_end, type.name(), per);
  const uint64_t width = type.bytes(col_end - col_begin);
  std::vector<uint8_t> out(size_t(uint64_t(rows) * width));
  if (out.empty()) return TensorBytes::owned({});
  detail::ReadOnlyFile f = reopen(paths_, file_sizes_, t);
  if (col_begin == 0 && col_end == cols) {  // the whole matrix is one contiguous range
    f.read_exact(out.data(), out.size(), t.offset);
  } else {
    const uint64_t row_bytes = type.bytes(cols), skip = type.bytes(col_begin);
    for (int64_t r = 0; r < rows; ++r)
      f.read_exact(out.data() + uint64_t(r) * width, width, t.offset + uint64_t(r) * row_bytes + skip);
  }
  bytes_touched_->fetch_add(out.size());
  return TensorBytes::owned(std::move(out));
}

}  // namespace uneven
