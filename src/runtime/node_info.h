// What a rank knows about itself before planning: usable memory, and a fingerprint of its model files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/tensor_file.h"

namespace uneven {

// MemAvailable from /proc/meminfo, in bytes (0 if unreadable).
uint64_t available_memory_bytes();

// Resident set size of this process, in bytes (from /proc/self/statm).
uint64_t resident_memory_bytes();

// Bytes this process has read through read()/pread() so far (rchar of /proc/self/io; 0 if unreadable).
uint64_t process_read_bytes();

// Resident bytes of file-backed mappings (RssFile of /proc/self/status; 0 if unreadable): pages of
// mapped files that this process has touched.
uint64_t resident_file_bytes();

// The most this process has ever had resident (VmHWM of /proc/self/status; 0 if unreadable): the figure a
// memory budget must hold, since a transient peak is what runs a node out of memory.
uint64_t peak_resident_memory_bytes();

// Identity of a model's files on one node: each file's size and a hash of its header bytes (everything
// before the first tensor's data). Two nodes with the same fingerprint hold the same tensor layout.
struct FilesFingerprint {
  std::vector<uint64_t> sizes;
  std::vector<uint64_t> header_hashes;
  bool operator==(const FilesFingerprint&) const = default;
  std::string describe(const std::vector<std::string>& paths) const;
};
FilesFingerprint fingerprint(const TensorFiles& files);

// A 64-bit FNV-1a hash, used for header fingerprints and plan hashes' checks.
uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ull);

}  // namespace uneven
