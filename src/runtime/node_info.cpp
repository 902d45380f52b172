// Node facts: available memory, byte-size parsing, and model-file fingerprints.
#include "runtime/node_info.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "util/error.h"

namespace uneven {

uint64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

uint64_t resident_memory_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  in >> size_pages >> resident_pages;
  return resident_pages * uint64_t(::sysconf(_SC_PAGESIZE));
}

namespace {

// The number after `key` in a "key: value" proc file, times `unit` (0 if absent).
uint64_t proc_field(const char* path, const std::string& key, uint64_t unit) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::strtoull(line.c_str() + key.size(), nullptr, 10) * unit;
  return 0;
}

}  // namespace

uint64_t process_read_bytes() { return proc_field("/proc/self/io", "rchar:", 1); }

uint64_t resident_file_bytes() { return proc_field("/proc/self/status", "RssFile:", 1024); }

uint64_t peak_resident_memory_bytes() { return proc_field("/proc/self/status", "VmHWM:", 1024); }

uint64_t fnv1a64(const void* data, size_t size, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

FilesFingerprint fingerprint(const TensorFiles& files) {
  FilesFingerprint f;
  const auto& paths = files.paths();
  std::vector<uint64_t> header_end(paths.size(), UINT64_MAX);
  for (const TensorInfo& t : files.tensors())
    header_end[size_t(t.file_index)] = std::min(header_end[size_t(t.file_index)], t.offset);
  for (size_t i = 0; i < paths.size(); ++i) {
    int fd = ::open(paths[i].c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open to fingerprint it", paths[i]);
    off_t size = ::lseek(fd, 0, SEEK_END);
    uint64_t end = std::min<uint64_t>(header_end[i] == UINT64_MAX ? uint64_t(size) : header_end[i], uint64_t(size));
    std::vector<char> buf(size_t(std::min<uint64_t>(end, 1 << 20)));
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t at = 0; at < end;) {
      size_t want = size_t(std::min<uint64_t>(buf.size(), end - at));
      ssize_t got = ::pread(fd, buf.data(), want, off_t(at));
      if (got <= 0) {
        ::close(fd);
        fail("{}: read error while fingerprinting at byte {}", paths[i], at);
      }
      h = fnv1a64(buf.data(), size_t(got), h);
      at += uint64_t(got);
    }
    ::close(fd);
    f.sizes.push_back(uint64_t(size));
    f.header_hashes.push_back(h);
  }
  return f;
}

std::string FilesFingerprint::describe(const std::vector<std::string>& paths) const {
  std::string out;
  for (size_t i = 0; i < sizes.size(); ++i)
    out += fmt::format("{}{} ({} bytes, header hash {:016x})", i ? ", " : "", i < paths.size() ? paths[i] : "?",
                       sizes[i], header_hashes[i]);
  return out;
}

}  // namespace uneven
