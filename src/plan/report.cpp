// Formats a plan as a table of nodes (shares of each unit type, bytes, time) followed by mode and reasons.
#include "plan/report.h"

#include <algorithm>
#include <fmt/format.h>

namespace uneven {
namespace {

struct Column {
  std::string title;
  std::vector<std::string> cells;
};

std::string percent(int64_t part, int64_t whole) { return whole > 0 ? fmt::format("{:.1f}%", 100.0 * double(part) / double(whole)) : "-"; }

}  // namespace

std::string plan_report(const Plan& p, const ModelConfig& c) {
  int64_t full = 0, linear = 0, moe = 0, dense = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    (c.layer_types[size_t(l)] == LayerKind::FullAttention ? full : linear) += 1;
    (c.is_moe_layer(l) ? moe : dense) += 1;
  }
  std::vector<Column> cols = {{"node", {}}, {"memory", {}}, {"GB/s", {}}, {"target", {}}, {"q heads", {}}, {"kv held", {}}};
  if (linear > 0) cols.push_back({"lin v", {}}), cols.push_back({"lin k held", {}});
  if (dense > 0) cols.push_back({"mlp", {}});
  if (moe > 0) cols.push_back({"experts", {}});
  if (moe > 0 && c.shared_expert_intermediate_size > 0) cols.push_back({"shared", {}});
  cols.insert(cols.end(), {{"vocab", {}}, {"layers", {}}, {"weights", {}}, {"kv+state", {}}, {"total / memory", {}}, {"ms/token", {}}});

  for (const NodePlan& n : p.nodes) {
    std::vector<std::string> row = {n.spec.name, format_bytes(double(n.spec.memory)),
                                    n.spec.bandwidth > 0 ? fmt::format("{:g}", n.spec.bandwidth) : "-"};
    if (n.rank < 0) {
      row.push_back("left out");
      while (row.size() < cols.size()) row.push_back("");
    } else {
      RankSlices s = rank_slices(p, c, n.rank);
      int64_t q = 0, kv = 0, lv = 0, lk = 0, mlp = 0, ex = 0, sh = 0;
      for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
        const LayerSlices& ls = s.layer[size_t(l)];
        q += ls.q_heads.size(), kv += ls.kv_heads.size(), lv += ls.linear_v_heads.size(), lk += ls.linear_k_heads.size();
        mlp += ls.mlp_cols.size(), sh += ls.shared_expert_cols.size();
        if (!ls.expert_cols.empty()) ex += ls.expert_cols[0].size();
      }
      row.push_back(fmt::format("{:.1f}%", 100.0 * n.target));
      row.push_back(percent(q, full * c.num_heads));
      row.push_back(percent(kv, full * c.num_kv_heads));
      if (linear > 0) row.push_back(percent(lv, linear * c.linear_num_value_heads)), row.push_back(percent(lk, linear * c.linear_num_key_heads));
      if (dense > 0) row.push_back(percent(mlp, dense * c.intermediate_size));
      if (moe > 0) row.push_back(percent(ex, moe * c.moe_intermediate_size));
      if (moe > 0 && c.shared_expert_intermediate_size > 0) row.push_back(percent(sh, moe * c.shared_expert_intermediate_size));
      row.push_back(s.has_output ? percent(s.output_rows.size(), c.vocab_size) : "-");
      row.push_back(fmt::format("{}-{}", s.layers.begin, s.layers.end - 1));
      row.push_back(format_bytes(double(n.usage.weights)));
      row.push_back(format_bytes(double(n.usage.kv_cache + n.usage.state)));
      row.push_back(fmt::format("{} / {} ({:.0f}%)", format_bytes(double(n.usage.total())), format_bytes(double(n.spec.memory)),
                                100.0 * double(n.usage.total()) / double(n.spec.memory)));
      row.push_back(p.bandwidth_known ? fmt::format("{:.2f}", n.time_s * 1e3) : "-");
    }
    for (size_t i = 0; i < cols.size(); ++i) cols[i].cells.push_back(row[i]);
  }

  std::string out;
  std::vector<size_t> width;
  for (const Column& col : cols) {
    size_t w = col.title.size();
    for (const std::string& cell : col.cells) w = std::max(w, cell.size());
    width.push_back(w);
  }
  auto line = [&](auto cell) {
    std::string text;
    for (size_t i = 0; i < cols.size(); ++i) text += fmt::format("{:<{}}  ", cell(i), width[i]);
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  line([&](size_t i) { return cols[i].title; });
  for (size_t r = 0; r < p.nodes.size(); ++r) line([&](size_t i) { return cols[i].cells[r]; });
  out += fmt::format("\nweights {} (KV cache {} tokens x batch {}, reserve {} per node)\n", p.cost.weights.name, p.cost.context,
                     p.cost.batch, format_bytes(double(p.reserve)));
  if (p.bandwidth_known)
    out += fmt::format("predicted decode: {:.2f} ms/token ({:.1f} tok/s){}\n", p.time_s * 1e3, 1.0 / p.time_s,
                       p.mode == PlanMode::Pipeline ? ", stages one after another" : ", slowest node sets the pace");
  else
    out += "predicted decode: give --bandwidth (GB/s per node) for times; shares are as even as memory allows\n";
  if (p.link.modelled())
    out += fmt::format("communication per token: {} all-reduce(s) or hand-off(s) at {:.0f} us, {} of logits at {}/s: "
                       "{:.3g} ms\n",
                       p.comm.syncs, p.link.all_reduce_s * 1e6, format_bytes(p.comm.bulk_bytes),
                       p.link.bandwidth > 0 ? format_bytes(p.link.bandwidth) : "unlimited", p.comm.seconds * 1e3);
  out += fmt::format("mode: {}\n", mode_name(p.mode));
  for (const std::string& r : p.reasons) out += "  " + r + "\n";
  out += fmt::format("plan hash: {}\n", p.hash);
  return out;
}

}  // namespace uneven
