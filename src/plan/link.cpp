// The link in the plan: parsing `--link LATENCY,BANDWIDTH` and what a plan communicates per decoded token.
#include <cmath>
#include <string>

#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
namespace {

// A number followed by a unit from `units` (suffix -> factor); the longest matching suffix wins.
double with_unit(const std::string& entry, const std::vector<std::pair<std::string, double>>& units,
                 const std::string& what) {
  const std::pair<std::string, double>* match = nullptr;
  for (const auto& u : units)
    if (entry.size() > u.first.size() && entry.compare(entry.size() - u.first.size(), u.first.size(), u.first) == 0 &&
        (!match || u.first.size() > match->first.size()))
      match = &u;
  if (!match) fail("--link {} '{}' has no unit", what, entry);
  const std::string number = entry.substr(0, entry.size() - match->first.size());
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(number, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != number.size() || !(value > 0) || !std::isfinite(value))
    fail("--link {} '{}' is not a positive number with a unit", what, entry);
  return value * match->second;
}

}  // namespace

LinkSpec parse_link(const std::string& text) {
  const size_t comma = text.find(',');
  if (comma == std::string::npos || text.find(',', comma + 1) != std::string::npos)
    fail("--link '{}' must be LATENCY,BANDWIDTH (e.g. 150us,10Gbit or 1.5ms,300Mbit)", text);
  LinkSpec link;
  link.all_reduce_s = with_unit(text.substr(0, comma), {{"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}}, "latency");
  link.bandwidth = with_unit(text.substr(comma + 1),
                             {{"bit", 0.125}, {"Kbit", 125.0}, {"Mbit", 125e3}, {"Gbit", 125e6},
                              {"B/s", 1.0}, {"KB/s", 1e3}, {"MB/s", 1e6}, {"GB/s", 1e9}},
                             "bandwidth");
  return link;
}

CommCost comm_cost(const Plan& plan, const ModelConfig& config, const LinkSpec& link) {
  CommCost c;
  const double logits_bytes = double(config.vocab_size) * sizeof(float);
  if (plan.stages.size() > 1) {
    // Each stage boundary hands one activation on; the last stage's logits reach every rank.
    c.syncs = int64_t(plan.stages.size());
    c.bulk_bytes = logits_bytes;
  } else if (plan.world_size > 1) {
    // Two partial sums per layer (attention or linear attention, then MLP or experts), one for the
    // vocabulary-split embedding; the vocabulary-split head gathers the logits (an upper bound: each rank
    // receives the rows it does not hold).
    c.syncs = 2 * config.num_layers + 1;
    c.bulk_bytes = logits_bytes;
  }
  c.seconds = double(c.syncs) * link.all_reduce_s + (link.bandwidth > 0 ? c.bulk_bytes / link.bandwidth : 0.0);
  return c;
}

}  // namespace uneven
