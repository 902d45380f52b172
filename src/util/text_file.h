// Reading a whole file as bytes, with errors that name the file.
#pragma once
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "util/error.h"

namespace uneven {

// The file's bytes as they are (no newline translation); throws naming the file when it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path, size_t max_bytes = size_t(64) << 20) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes) fail("{}: {} bytes is more than the {} bytes allowed", path.string(), size, max_bytes);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read failed", path.string());
  return text;
}

}  // namespace uneven
