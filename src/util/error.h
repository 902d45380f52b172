// The one exception type for bad input and runtime failures; caught at the CLI and server boundaries.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace uneven {

// Thrown for anything the user can fix (files, configs, plans, requests) and for runtime failures.
// The message must name the file / tensor / rank / limit and the numbers involved.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error that every rank of a multi-rank job raised together, with the same message (a start-up
// verdict all ranks received): no rank has to stop the others, and one of them reporting it is enough.
class AgreedError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace uneven
