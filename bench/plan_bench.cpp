// Times make_plan on the known cases of the planner's tests (acceptance e: each under 50 ms); a plain timer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "plan/plan.h"
#include "util/error.h"

namespace {

using namespace uneven;

struct Case {
  const char* label;
  const char* model;
  std::vector<double> gib, bw;
  const char* weights;
  PlanMode mode = PlanMode::Auto;
};

PlanRequest request(const Case& k) {
  PlanRequest r;
  for (size_t i = 0; i < k.gib.size(); ++i)
    r.nodes.push_back({fmt::format("node{}", i), uint64_t(k.gib[i] * 1024.0 * 1024.0 * 1024.0), k.bw.empty() ? 0.0 : k.bw[i]});
  r.cost.weights = std::string(k.weights).find(':') != std::string::npos ? parse_quant(k.weights) : parse_dtype(k.weights);
  r.cost.context = 4096;
  r.mode = k.mode;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  // The repository root: given, or two levels above this file (CMake compiles it by absolute path).
  const std::string here = __FILE__;
  const std::string dir = argc > 1 ? argv[1] : here.substr(0, here.rfind("/bench/"));
  const std::vector<Case> cases = {
      {"Qwen3.5-122B-A10B q8:64 on 128+48", "qwen3.5-122b-a10b", {128, 48}, {}, "8:64"},
      {"Qwen3.5-122B-A10B q8:64 on 64+64+48", "qwen3.5-122b-a10b", {64, 64, 48}, {}, "8:64"},
      {"Llama-3.1-70B bf16 on 96+48+24+24", "llama-3.1-70b", {96, 48, 24, 24}, {}, "bf16"},
      {"Qwen3-8B bf16 on 32+32 (equal)", "qwen3-8b", {32, 32}, {}, "bf16"},
      {"Llama-3.1-70B bf16 on 48+24 (nothing fits)", "llama-3.1-70b", {48, 24}, {}, "bf16"},
      {"Qwen3-8B bf16 on 64+64 at 800/400 GB/s", "qwen3-8b", {64, 64}, {800, 400}, "bf16"},
      {"Qwen3-8B bf16 on 10+64 at 800/400 GB/s", "qwen3-8b", {10, 64}, {800, 400}, "bf16"},
      {"Qwen3-30B-A3B bf16 on 48+24+16, 3 speeds", "qwen3-30b-a3b", {48, 24, 16}, {400, 800, 200}, "bf16"},
      {"Qwen3-Next-80B-A3B q4:32 on 32+16+8", "qwen3-next-80b-a3b", {32, 16, 8}, {}, "4:32"},
      {"Qwen3.5-122B-A10B q8:64 16 nodes 8-64G", "qwen3.5-122b-a10b",
       {64, 8, 16, 24, 32, 8, 12, 48, 16, 8, 24, 12, 8, 16, 32, 8}, {}, "8:64"},
  };
  std::printf("%-45s %-9s %10s %10s\n", "case", "mode", "median ms", "max ms");
  bool slow = false;
  for (const Case& k : cases) {
    const ModelConfig c = load_hf_config(dir + "/tests/data/configs/" + k.model + ".json");
    const PlanRequest r = request(k);
    std::vector<double> ms;
    std::string mode;
    for (int rep = 0; rep < 9; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      try {
        mode = mode_name(make_plan(c, r).mode);
      } catch (const Error&) {
        mode = "error";  // the no-fit case times the search that proves it
      }
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("%-45s %-9s %10.2f %10.2f\n", k.label, mode.c_str(), ms[ms.size() / 2], ms.back());
    slow = slow || ms[ms.size() / 2] > 50.0;
  }
  if (slow) std::printf("some case took over 50 ms\n");
  return slow ? 1 : 0;
}
