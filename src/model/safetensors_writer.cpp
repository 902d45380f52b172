// safetensors writing: header JSON with data_offsets computed up front, data streamed into a part file.
#include "model/safetensors_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "model/tensor_table.h"
#include "util/error.h"

namespace uneven {

uint64_t safetensors_dtype_bytes(const std::string& dtype) {
  if (dtype == "F32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

SafetensorsFileWriter::SafetensorsFileWriter(std::string path) : path_(std::move(path)), part_path_(path_ + ".part") {}

SafetensorsFileWriter::~SafetensorsFileWriter() {
  if (file_) std::fclose(file_);
  if (started_ && !finished_) {
    std::error_code ec;
    std::filesystem::remove(part_path_, ec);
  }
}

void SafetensorsFileWriter::add_tensor(const std::string& name, const std::string& dtype,
                                       const std::vector<int64_t>& shape) {
  if (started_) fail("{}: tensor {} declared after the data began", path_, name);
  const uint64_t elem = safetensors_dtype_bytes(dtype);
  if (elem == 0) fail("{}: tensor {}: dtype '{}' is not one of F32, F16, BF16, U32", path_, name, dtype);
  if (name == "__metadata__") fail("{}: '__metadata__' cannot name a tensor", path_);
  for (const auto& t : tensors_)
    if (t.name == name) fail("{}: tensor {} declared twice", path_, name);
  // F32 and U32 have the same size, and the bounds check only needs a plain type of that size.
  const uint64_t bytes = detail::checked_nbytes(shape, WeightType{elem == 4 ? DType::F32 : DType::BF16}, path_, name);
  tensors_.push_back({name, dtype, shape, data_bytes_, data_bytes_ + bytes});
  data_bytes_ += bytes;
}

void SafetensorsFileWriter::begin_data() {
  if (started_) fail("{}: begin_data called twice", path_);
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  for (const auto& t : tensors_)
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // data starts 8-byte aligned (after the 8-byte length)
  file_ = std::fopen(part_path_.c_str(), "wb");
  if (!file_) fail("{}: cannot create: {}", part_path_, std::strerror(errno));
  started_ = true;
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
  uint64_t len = text.size();
  if (std::fwrite(&len, 8, 1, file_) != 1 || std::fwrite(text.data(), 1, text.size(), file_) != text.size())
    fail("{}: writing the {}-byte header failed: {}", part_path_, text.size() + 8, std::strerror(errno));
}

void SafetensorsFileWriter::write(const void* data, size_t n) {
  if (!file_) fail("{}: data written before begin_data or after finish", path_);
  if (n > data_bytes_ - data_written_)
    fail("{}: {} bytes written beyond the {} bytes the header declares ({} written so far)", path_, n, data_bytes_,
         data_written_);
  if (n && std::fwrite(data, 1, n, file_) != n)
    fail("{}: write of {} bytes failed: {}", part_path_, n, std::strerror(errno));
  data_written_ += n;
}

void SafetensorsFileWriter::finish() {
  if (!file_) fail("{}: finish without begin_data", path_);
  if (data_written_ != data_bytes_) {
    std::string which;
    for (const auto& t : tensors_)
      if (data_written_ < t.end) {
        which = t.name;
        break;
      }
    fail("{}: {} of {} data bytes written; tensor {} is incomplete", path_, data_written_, data_bytes_, which);
  }
  const bool flushed = std::fflush(file_) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) fail("{}: flushing failed: {}", part_path_, std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(part_path_, path_, ec);
  if (ec) fail("{}: cannot rename {} into place: {}", path_, part_path_, ec.message());
  finished_ = true;
}

}  // namespace uneven
