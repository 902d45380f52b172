// Each rank's peak resident memory beside what its plan budgeted (weights + KV cache + state + reserve).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "comm/collective.h"
#include "plan/cost.h"

namespace uneven {

// Every rank calls it together: [{rank, peak_resident_bytes, planned: {weights, kv_cache, state, reserve,
// total}}] in rank order, on every rank. `planned` is this rank's budget from the plan (RankSetup::planned).
nlohmann::json gather_memory_report(Collective& comm, const Usage& planned);

// One line per rank: "memory: rank 0 peak 212.4 MiB of planned 230.0 MiB (92%: weights ..., KV ..., ...)".
std::string describe_memory_report(const nlohmann::json& report);

}  // namespace uneven
