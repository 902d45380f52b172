// libFuzzer harness: plan JSON (plan_from_json_text, validate_plan, rank_slices, round trip).
#include <nlohmann/json.hpp>
#include <vector>

#include "fuzz_common.h"
#include "model/config.h"
#include "plan/plan.h"
#include "plan_configs.h"

namespace {
const std::vector<uneven::ModelConfig>& configs() {
  static const std::vector<uneven::ModelConfig> all = [] {
    std::vector<uneven::ModelConfig> out;
    for (const char* text : fuzz::kPlanConfigs) out.push_back(uneven::config_from_hf_json(nlohmann::json::parse(text), "fuzz"));
    return out;
  }();
  return all;
}

void check(const uneven::Plan& p, const uneven::ModelConfig& c) {
  uneven::validate_plan(p, c);
  for (int r = 0; r < p.world_size; ++r) (void)uneven::rank_slices(p, c, r);
  // A valid plan must survive its own JSON round trip.
  const std::string text = uneven::plan_to_json_text(p);
  (void)uneven::plan_from_json_text(text, "fuzz/roundtrip.json");
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto& cs = configs();
  fuzz::expect_error_or_success("plan", [&] {
    const uneven::Plan p = uneven::plan_from_json_text(text, "fuzz/plan.json");
    for (const auto& c : cs) fuzz::expect_error_or_success("plan validate", [&] { check(p, c); });
  });
  // Mutations break the content hash and the config fingerprint: fix both so the fuzzer reaches the checks.
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return 0;
  const uneven::ModelConfig* c = &cs[0];
  if (j.contains("architecture") && j["architecture"].is_string())
    for (const auto& x : cs)
      if (x.architecture == j["architecture"].get<std::string>()) c = &x;
  j["config_hash"] = uneven::config_fingerprint(*c);
  fuzz::expect_error_or_success("plan hash", [&] { j["hash"] = uneven::plan_content_hash(j); });
  fuzz::expect_error_or_success("plan rehashed", [&] {
    const uneven::Plan p = uneven::plan_from_json(j, "fuzz/plan.json");
    check(p, *c);
  });
  return 0;
}
