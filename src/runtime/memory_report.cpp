// The memory report: peak resident set per rank (VmHWM) against the plan's budget for that rank.
#include "runtime/memory_report.h"

#include <fmt/format.h>

#include "runtime/cluster.h"
#include "runtime/node_info.h"

namespace uneven {

nlohmann::json gather_memory_report(Collective& comm, const Usage& planned) {
  const nlohmann::json mine = {
      {"rank", comm.rank()},
      {"peak_resident_bytes", peak_resident_memory_bytes()},
      {"planned",
       {{"weights", planned.weights},
        {"kv_cache", planned.kv_cache},
        {"state", planned.state},
        {"reserve", planned.reserve},
        {"total", planned.total()}}}};
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& r : all_gather_strings(comm, mine.dump())) out.push_back(nlohmann::json::parse(r));
  return out;
}

std::string describe_memory_report(const nlohmann::json& report) {
  std::string text;
  for (const nlohmann::json& r : report) {
    const nlohmann::json& p = r["planned"];
    const double peak = r["peak_resident_bytes"].get<double>(), total = p["total"].get<double>();
    text += fmt::format("memory: rank {} peak {} of planned {} ({:.0f}%: weights {}, KV cache {}, state {}, reserve {})\n",
                        r["rank"].get<int>(), format_bytes(peak), format_bytes(total), total > 0 ? 100.0 * peak / total : 0.0,
                        format_bytes(p["weights"].get<double>()), format_bytes(p["kv_cache"].get<double>()),
                        format_bytes(p["state"].get<double>()), format_bytes(p["reserve"].get<double>()));
  }
  return text;
}

}  // namespace uneven
