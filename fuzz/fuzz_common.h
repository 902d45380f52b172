// Shared helpers of the libFuzzer harnesses: the parser contract (valid object or uneven::Error) and memfd files.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "util/error.h"

namespace fuzz {

// Runs `body`; an uneven::Error is the parser rejecting its input (fine), anything else breaks the contract.
template <typename F>
void expect_error_or_success(const char* what, F&& body) {
  try {
    body();
  } catch (const uneven::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "contract violation in %s: non-uneven::Error exception: %s\n", what, e.what());
    __builtin_trap();
  } catch (...) {
    std::fprintf(stderr, "contract violation in %s: unknown exception type\n", what);
    __builtin_trap();
  }
}

// The input as an anonymous in-memory file, opened by path (/proc/self/fd/N) by readers that only take paths.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = memfd_create("fuzz", 0);
    if (fd_ < 0) __builtin_trap();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) __builtin_trap();
      done += size_t(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace fuzz
