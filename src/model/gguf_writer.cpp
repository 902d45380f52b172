// GGUF v3 writing: value encoding, a raw reader of an input file's metadata entries, the streaming writer.
#include "model/gguf_writer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "model/gguf.h"
#include "model/tensor_table.h"
#include "util/error.h"

namespace uneven {
namespace {

// GGUF is little-endian; so are the hosts this engine runs on (x86-64, arm64), so values are copied as is.
template <typename T> void append(std::string& out, T v) {
  char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  out.append(raw, sizeof(T));
}
void append_string(std::string& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  out += s;
}

template <typename T> GgufValue scalar(GgufType type, T v) {
  GgufValue g{type, {}};
  append(g.payload, v);
  return g;
}

// Fixed byte size of a scalar type; 0 for strings and arrays (variable) and for unknown ids.
uint64_t scalar_bytes(uint32_t type) {
  switch (GgufType(type)) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

constexpr int kMaxArrayNesting = 8;  // as the reader: bounds recursion on hostile files

// Walks the header of a mapped GGUF file without decoding values, so each entry's bytes can be copied.
class RawCursor {
 public:
  RawCursor(const uint8_t* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  const uint8_t* at(uint64_t pos) const { return data_ + pos; }
  std::string where;

  template <typename T> T read() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string() {
    const uint64_t len = read<uint64_t>();
    need(len);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  // Skips one value of `type`, checking every length against the bytes left.
  void skip_value(uint32_t type, int depth) {
    if (const uint64_t n = scalar_bytes(type)) {
      need(n);
      pos_ += n;
      return;
    }
    if (GgufType(type) == GgufType::String) {
      const uint64_t len = read<uint64_t>();
      need(len);
      pos_ += len;
      return;
    }
    if (GgufType(type) != GgufType::Array) fail("{}: {}: unknown value type {} at offset {}", path_, where, type, pos_ - 4);
    if (depth >= kMaxArrayNesting) fail("{}: {}: arrays nested deeper than {} levels", path_, where, kMaxArrayNesting);
    const uint32_t elem = read<uint32_t>();
    const uint64_t count = read<uint64_t>();
    if (const uint64_t n = scalar_bytes(elem)) {  // a block of fixed-size elements: one check
      if (count > (size_ - pos_) / n)
        fail("{}: {}: array of {} elements of {} bytes runs past the end of the file ({} bytes left)", path_, where,
             count, n, size_ - pos_);
      pos_ += count * n;
      return;
    }
    if (elem != uint32_t(GgufType::String) && elem != uint32_t(GgufType::Array))
      fail("{}: {}: unknown array element type {}", path_, where, elem);
    // Each string or array element needs at least 8 bytes: reject absurd counts before looping.
    if (count > (size_ - pos_) / 8)
      fail("{}: {}: array count {} cannot fit in the {} bytes left in the file", path_, where, count, size_ - pos_);
    for (uint64_t i = 0; i < count; ++i) skip_value(elem, depth + 1);
  }

 private:
  void need(uint64_t n) {
    if (n > size_ - pos_)
      fail("{}: {}: a field of {} bytes at offset {} runs past the end of the file ({} bytes)", path_, where, n, pos_,
           size_);
  }
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

struct Mapping {
  void* base = MAP_FAILED;
  size_t length = 0;
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, length);
  }
};

}  // namespace

GgufValue GgufValue::u8(uint8_t v) { return scalar(GgufType::U8, v); }
GgufValue GgufValue::i32(int32_t v) { return scalar(GgufType::I32, v); }
GgufValue GgufValue::u32(uint32_t v) { return scalar(GgufType::U32, v); }
GgufValue GgufValue::u64(uint64_t v) { return scalar(GgufType::U64, v); }
GgufValue GgufValue::f32(float v) { return scalar(GgufType::F32, v); }
GgufValue GgufValue::f64(double v) { return scalar(GgufType::F64, v); }
GgufValue GgufValue::boolean(bool v) { return scalar(GgufType::Bool, uint8_t(v ? 1 : 0)); }
GgufValue GgufValue::string(const std::string& v) {
  GgufValue g{GgufType::String, {}};
  append_string(g.payload, v);
  return g;
}
GgufValue GgufValue::strings(const std::vector<std::string>& v) {
  GgufValue g{GgufType::Array, {}};
  append(g.payload, uint32_t(GgufType::String));
  append<uint64_t>(g.payload, v.size());
  for (const auto& s : v) append_string(g.payload, s);
  return g;
}
GgufValue GgufValue::i32s(const std::vector<int32_t>& v) {
  GgufValue g{GgufType::Array, {}};
  append(g.payload, uint32_t(GgufType::I32));
  append<uint64_t>(g.payload, v.size());
  g.payload.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  return g;
}
GgufValue GgufValue::f32s(const std::vector<float>& v) {
  GgufValue g{GgufType::Array, {}};
  append(g.payload, uint32_t(GgufType::F32));
  append<uint64_t>(g.payload, v.size());
  g.payload.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  return g;
}

std::vector<GgufKv> read_gguf_metadata_raw(const std::string& path) {
  detail::ReadOnlyFile file(path);
  if (file.size() < 24) fail("{}: file too short for a GGUF header: {} bytes, need at least 24", path, file.size());
  Mapping map;
  map.length = size_t(file.size());
  map.base = ::mmap(nullptr, map.length, PROT_READ, MAP_PRIVATE, file.fd(), 0);
  if (map.base == MAP_FAILED) fail("{}: cannot map the file ({} bytes): {}", path, file.size(), std::strerror(errno));
  RawCursor c(static_cast<const uint8_t*>(map.base), file.size(), path);
  c.where = "header";
  if (std::memcmp(c.at(0), "GGUF", 4) != 0) fail("{}: not a GGUF file (magic bytes are not \"GGUF\")", path);
  c.read<uint32_t>();
  const uint32_t version = c.read<uint32_t>();
  if (version != 2 && version != 3) fail("{}: unsupported GGUF version {} (supported: 2, 3)", path, version);
  c.read<uint64_t>();  // tensor count
  const uint64_t kv_count = c.read<uint64_t>();
  if (kv_count > file.size() / 13)  // key length, type and a 1-byte value at the least
    fail("{}: metadata count {} cannot fit in a file of {} bytes", path, kv_count, file.size());
  std::vector<GgufKv> out;
  out.reserve(size_t(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    c.where = fmt::format("metadata entry {}", i);
    GgufKv kv;
    kv.key = c.string();
    c.where = fmt::format("metadata key '{}'", kv.key);
    const uint32_t type = c.read<uint32_t>();
    const uint64_t begin = c.pos();
    c.skip_value(type, 0);
    kv.value.type = GgufType(type);
    kv.value.payload.assign(reinterpret_cast<const char*>(c.at(begin)), size_t(c.pos() - begin));
    out.push_back(std::move(kv));
  }
  return out;
}

// ---- GgufFileWriter

GgufFileWriter::GgufFileWriter(std::string path) : path_(std::move(path)), part_path_(path_ + ".part") {}

GgufFileWriter::~GgufFileWriter() {
  if (file_) std::fclose(file_);
  if (!finished_ && written_ > 0) {
    std::error_code ec;
    std::filesystem::remove(part_path_, ec);
  }
}

void GgufFileWriter::set(const std::string& key, GgufValue value) {
  if (file_) fail("{}: metadata key '{}' set after the tensor data began", path_, key);
  for (auto& kv : kvs_)
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  kvs_.push_back({key, std::move(value)});
}

void GgufFileWriter::remove(const std::string& key) {
  std::erase_if(kvs_, [&](const GgufKv& kv) { return kv.key == key; });
}

void GgufFileWriter::add_tensor(const std::string& name, const std::vector<int64_t>& shape, DType type) {
  if (file_) fail("{}: tensor {} declared after the tensor data began", path_, name);
  const std::optional<uint32_t> id = ggml_type_from_dtype(type);
  if (!id) fail("{}: tensor {}: {} has no GGML type and cannot be stored in GGUF", path_, name, dtype_name(type));
  if (shape.size() > 4) fail("{}: tensor {} has {} dimensions; GGUF allows at most 4", path_, name, shape.size());
  for (const auto& t : tensors_)
    if (t.name == name) fail("{}: tensor {} declared twice", path_, name);
  Tensor t;
  t.name = name;
  t.shape = shape;
  t.ggml_type = *id;
  t.bytes = detail::checked_nbytes(shape, WeightType{type}, path_, name);
  tensors_.push_back(std::move(t));
}

void GgufFileWriter::put(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, file_) != n)
    fail("{}: write of {} bytes at offset {} failed: {}", part_path_, n, written_, std::strerror(errno));
  written_ += n;
}

void GgufFileWriter::pad_to(uint64_t multiple) {
  static const char zeros[64] = {};
  while (written_ % multiple != 0) put(zeros, size_t(std::min<uint64_t>(sizeof zeros, multiple - written_ % multiple)));
}

void GgufFileWriter::begin_data() {
  if (file_ || finished_) fail("{}: begin_data called twice", path_);
  for (const auto& kv : kvs_)
    if (kv.key == "general.alignment") {
      uint32_t a = 0;
      if (kv.value.type != GgufType::U32 || kv.value.payload.size() != 4)
        fail("{}: general.alignment must be a u32 (GGUF type 4), not type {}", path_, uint32_t(kv.value.type));
      std::memcpy(&a, kv.value.payload.data(), 4);
      if (a == 0 || (a & (a - 1)) != 0) fail("{}: general.alignment {} is not a power of two", path_, a);
      alignment_ = a;
    }
  uint64_t offset = 0;
  for (auto& t : tensors_) {
    t.offset = offset;
    offset = (offset + t.bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  file_ = std::fopen(part_path_.c_str(), "wb");
  if (!file_) fail("{}: cannot create: {}", part_path_, std::strerror(errno));
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);

  std::string h = "GGUF";
  append<uint32_t>(h, 3);
  append<uint64_t>(h, tensors_.size());
  append<uint64_t>(h, kvs_.size());
  for (const auto& kv : kvs_) {
    append_string(h, kv.key);
    append(h, uint32_t(kv.value.type));
    h += kv.value.payload;
  }
  for (const auto& t : tensors_) {
    append_string(h, t.name);
    append<uint32_t>(h, uint32_t(t.shape.size()));
    for (size_t d = t.shape.size(); d-- > 0;) append<uint64_t>(h, uint64_t(t.shape[d]));  // ne[0] innermost
    append(h, t.ggml_type);
    append(h, t.offset);
  }
  put(h.data(), h.size());
  pad_to(alignment_);
  data_start_ = written_;
  current_ = 0;
  current_done_ = 0;
}

void GgufFileWriter::write(const void* data, size_t n) {
  if (!file_) fail("{}: tensor data written before begin_data or after finish", path_);
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    while (current_ < tensors_.size() && current_done_ == tensors_[current_].bytes) {
      ++current_;  // an empty tensor is complete at once
      current_done_ = 0;
    }
    if (current_ >= tensors_.size())
      fail("{}: {} bytes of tensor data beyond the last of {} tensors", path_, n, tensors_.size());
    const Tensor& t = tensors_[current_];
    if (current_done_ == 0) {
      pad_to(alignment_);  // the previous tensor ended: pad to this one's offset
      if (written_ != data_start_ + t.offset)
        fail("{}: internal: tensor {} starts at byte {} but its info says {}", path_, t.name, written_,
             data_start_ + t.offset);
    }
    const size_t take = size_t(std::min<uint64_t>(n, t.bytes - current_done_));
    put(p, take);
    p += take;
    n -= take;
    current_done_ += take;
  }
}

void GgufFileWriter::finish() {
  if (!file_) fail("{}: finish without begin_data", path_);
  while (current_ < tensors_.size() && current_done_ == tensors_[current_].bytes) {
    ++current_;
    current_done_ = 0;
  }
  if (current_ < tensors_.size())
    fail("{}: tensor {} received {} of its {} bytes ({} of {} tensors complete)", path_, tensors_[current_].name,
         current_done_, tensors_[current_].bytes, current_, tensors_.size());
  pad_to(alignment_);  // as llama.cpp: the last tensor padded too, so trailing empty tensors lie inside the file
  const bool flushed = std::fflush(file_) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) fail("{}: flushing {} bytes failed: {}", part_path_, written_, std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(part_path_, path_, ec);
  if (ec) fail("{}: cannot rename {} into place: {}", path_, part_path_, ec.message());
  finished_ = true;
}

}  // namespace uneven
