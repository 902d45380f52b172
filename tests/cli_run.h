// Test-only: runs the `uneven` executable (or mpirun) through a shell and collects its exit code and output.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace uneven::testing {

struct CliOutput {
  int exit_code = -1;
  std::string text;      // stdout and stderr together
  nlohmann::json json;   // the last line that is a JSON object (null if there is none)
};

// Runs `command` with `sh -c`, stderr folded into stdout.
inline CliOutput run_shell(const std::string& command) {
  CliOutput out;
  std::FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.text.append(buf, n);
  const int status = ::pclose(p);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  // The JSON object is one line; other lines (a sanitizer's report, mpirun's notes) may follow it.
  for (size_t end = out.text.size(); end > 0;) {
    const size_t begin = out.text.rfind('\n', end - 1);
    const size_t start = begin == std::string::npos ? 0 : begin + 1;
    if (out.text.compare(start, 1, "{") == 0) {
      out.json = nlohmann::json::parse(out.text.substr(start, end - start), nullptr, false);
      if (!out.json.is_discarded()) break;
    }
    if (begin == std::string::npos) break;
    end = begin;
  }
  return out;
}

// Runs the `uneven` executable under test with these arguments.
inline CliOutput run_uneven(const std::string& args) { return run_shell(std::string(UNEVEN_BINARY) + " " + args); }

}  // namespace uneven::testing
