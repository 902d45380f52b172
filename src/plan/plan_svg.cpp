// Draws a plan as SVG: memory bars per node on one byte scale, then each layer part's share per node.
#include "plan/plan_svg.h"

#include <algorithm>
#include <fmt/format.h>
#include <string_view>

namespace uneven {
namespace {

// Layout in pixels. Bars start at kBarX; a full bar (the largest node's memory, or a 100% share) is kBarW.
constexpr double kWidth = 1040, kBarX = 190, kBarW = 520, kTextX = kBarX + kBarW + 12;
// Node colours (the share bars and the swatch by each node's name) differ from the byte kinds' colours below.
const char* const kNodeColors[] = {"#7b5ea7", "#2a9d8f", "#e9c46a", "#e76f51", "#264653", "#8ab17d", "#b56576", "#6d6875"};

struct Kind {
  const char* name;   // the rect's class
  const char* label;  // legend and tooltip text
  const char* color;
};
const Kind kKinds[] = {{"weights", "weights", "#4a7bd0"}, {"kv-cache", "KV cache", "#e0883a"}, {"state", "state", "#3fa36b"},
                       {"reserve", "reserve", "#a8a8a8"}};

// Text content and attribute values: the five characters XML reserves.
std::string esc(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += ch;
    }
  }
  return out;
}

// The same text plan_report prints for a share, so that the picture and the table can be read together.
std::string percent(int64_t part, int64_t whole) { return whole > 0 ? fmt::format("{:.1f}%", 100.0 * double(part) / double(whole)) : "-"; }

// One layer part: units of it over the whole model, and the units each node holds (0 for a left-out node).
struct Part {
  std::string name, unit;
  int64_t whole = 0;
  std::vector<int64_t> held;
};

// Counts as plan_report does: query heads over full-attention layers, value heads over linear ones, columns
// over dense / MoE layers (every expert splits at the same columns, so expert 0 stands for all), vocabulary
// rows of the embedding and the head. A replicated part (a vocabulary every rank holds) counts fully on each.
std::vector<Part> layer_parts(const Plan& p, const ModelConfig& c) {
  int64_t full = 0, linear = 0, moe = 0, dense = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    (c.layer_types[size_t(l)] == LayerKind::FullAttention ? full : linear) += 1;
    (c.is_moe_layer(l) ? moe : dense) += 1;
  }
  std::vector<Part> parts;
  // Each part's index in `parts`, -1 when the model has no such part (indices, since push_back moves parts).
  struct Ix {
    int q = -1, lin = -1, mlp = -1, ex = -1, sh = -1, emb = -1, head = -1;
  } ix;
  auto add = [&](int& at, bool present, std::string name, std::string unit, int64_t whole) {
    if (!present) return;
    at = int(parts.size());
    parts.push_back({std::move(name), std::move(unit), whole, std::vector<int64_t>(p.nodes.size(), 0)});
  };
  add(ix.q, full > 0, "attention", fmt::format("{} query heads x {} layers", c.num_heads, full), full * c.num_heads);
  add(ix.lin, linear > 0, "linear attention", fmt::format("{} value heads x {} layers", c.linear_num_value_heads, linear),
      linear * c.linear_num_value_heads);
  add(ix.mlp, dense > 0, "MLP", fmt::format("{} columns x {} layers", c.intermediate_size, dense), dense * c.intermediate_size);
  add(ix.ex, moe > 0, "experts", fmt::format("{} experts x {} columns x {} layers", c.num_experts, c.moe_intermediate_size, moe),
      moe * c.moe_intermediate_size);
  add(ix.sh, moe > 0 && c.shared_expert_intermediate_size > 0, "shared expert",
      fmt::format("{} columns x {} layers", c.shared_expert_intermediate_size, moe), moe * c.shared_expert_intermediate_size);
  add(ix.emb, true, "embedding", fmt::format("{} vocabulary rows", c.vocab_size), c.vocab_size);
  add(ix.head, true, "head", fmt::format("{} vocabulary rows", c.vocab_size), c.vocab_size);

  for (size_t i = 0; i < p.nodes.size(); ++i) {
    if (p.nodes[i].rank < 0) continue;
    const RankSlices s = rank_slices(p, c, p.nodes[i].rank);
    for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
      const LayerSlices& ls = s.layer[size_t(l)];
      if (ix.q >= 0) parts[size_t(ix.q)].held[i] += ls.q_heads.size();
      if (ix.lin >= 0) parts[size_t(ix.lin)].held[i] += ls.linear_v_heads.size();
      if (ix.mlp >= 0) parts[size_t(ix.mlp)].held[i] += ls.mlp_cols.size();
      if (ix.ex >= 0 && !ls.expert_cols.empty()) parts[size_t(ix.ex)].held[i] += ls.expert_cols[0].size();
      if (ix.sh >= 0) parts[size_t(ix.sh)].held[i] += ls.shared_expert_cols.size();
    }
    parts[size_t(ix.emb)].held[i] = s.has_embedding ? s.embedding_rows.size() : 0;
    parts[size_t(ix.head)].held[i] = s.has_output ? s.output_rows.size() : 0;
  }
  return parts;
}

class Svg {
 public:
  void text(double x, double y, const std::string& s, const std::string& extra = "") {
    body_ += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\"{}>{}</text>\n", x, y, extra.empty() ? "" : " " + extra, esc(s));
  }
  // A bar; `attrs` carries its class and data-* numbers, `tip` its tooltip.
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& attrs, const std::string& tip) {
    body_ += fmt::format("<rect {} x=\"{:.4f}\" y=\"{:.1f}\" width=\"{:.4f}\" height=\"{:.1f}\" fill=\"{}\"><title>{}</title></rect>\n",
                         attrs, x, y, w, h, fill, esc(tip));
  }
  void raw(const std::string& s) { body_ += s; }
  std::string document(double height) const {
    return fmt::format(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} {1:.0f}\" "
        "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\" fill=\"#222\">\n"
        "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n{2}</svg>\n",
        kWidth, height, body_);
  }

 private:
  std::string body_;
};

}  // namespace

std::string plan_svg(const Plan& p, const ModelConfig& c) {
  Svg svg;
  double y = 30;
  svg.text(20, y, fmt::format("{} over {} node(s): {} mode, weights {}", p.architecture, p.nodes.size(), mode_name(p.mode), p.cost.weights.name),
           "font-size=\"17\" font-weight=\"bold\"");
  y += 22;
  svg.text(20, y, fmt::format("KV cache for {} tokens x batch {}, reserve {} per node; plan {}", p.cost.context, p.cost.batch,
                              format_bytes(double(p.reserve)), p.hash.substr(0, 16)),
           "fill=\"#555\"");

  // Memory: one scale for every node, so that bar lengths compare across nodes (the largest budget is full width).
  uint64_t largest = 1;
  for (const NodePlan& n : p.nodes) largest = std::max(largest, n.spec.memory);
  const double scale = kBarW / double(largest);
  y += 34;
  svg.text(20, y, "Memory per node (bars to one scale)", "font-size=\"15\" font-weight=\"bold\"");
  y += 22;
  double lx = kBarX;
  for (const Kind& k : kKinds) {
    svg.rect(lx, y - 10, 12, 12, k.color, "class=\"legend\"", k.label);
    svg.text(lx + 16, y, k.label);
    lx += 40 + 7.5 * double(std::string_view(k.label).size());  // about the label's width at 13 px
  }
  svg.rect(lx, y - 10, 12, 12, "#f2f2f2", "class=\"legend\" stroke=\"#999\"", "free");
  svg.text(lx + 16, y, "free of the budget");
  y += 14;
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const NodePlan& n = p.nodes[i];
    const double top = y + 8, h = 22;
    svg.rect(20, top + 1, 10, 10, kNodeColors[i % std::size(kNodeColors)], "class=\"swatch\"", n.spec.name);
    svg.text(36, top + 10, n.spec.name, "font-weight=\"bold\"");
    svg.text(36, top + 25, format_bytes(double(n.spec.memory)) + (n.spec.bandwidth > 0 ? fmt::format(", {:g} GB/s", n.spec.bandwidth) : ""),
             "font-size=\"11\" fill=\"#555\"");
    svg.rect(kBarX, top, double(n.spec.memory) * scale, h, "#f2f2f2",
             fmt::format("class=\"budget\" data-node=\"{}\" data-bytes=\"{}\" stroke=\"#999\"", i, n.spec.memory),
             fmt::format("{}: memory {}", n.spec.name, format_bytes(double(n.spec.memory))));
    if (n.rank < 0) {
      svg.text(kTextX, top + 15, "left out" + (n.note.empty() ? "" : ": " + n.note), "fill=\"#900\"");
    } else {
      const uint64_t bytes[] = {n.usage.weights, n.usage.kv_cache, n.usage.state, n.usage.reserve};
      double x = kBarX;
      for (size_t k = 0; k < std::size(kKinds); ++k) {
        if (bytes[k] == 0) continue;  // nothing to draw (e.g. no recurrent state in a pure-attention model)
        const double w = double(bytes[k]) * scale;
        svg.rect(x, top, w, h, kKinds[k].color,
                 fmt::format("class=\"bytes {}\" data-node=\"{}\" data-bytes=\"{}\"", kKinds[k].name, i, bytes[k]),
                 fmt::format("{}: {} {}", n.spec.name, kKinds[k].label, format_bytes(double(bytes[k]))));
        x += w;
      }
      svg.text(kTextX, top + 11, fmt::format("{} / {} ({:.0f}%)", format_bytes(double(n.usage.total())), format_bytes(double(n.spec.memory)),
                                             100.0 * double(n.usage.total()) / double(n.spec.memory)));
      svg.text(kTextX, top + 25,
               fmt::format("weights {}, KV cache {}{}", format_bytes(double(n.usage.weights)), format_bytes(double(n.usage.kv_cache)),
                           n.usage.state ? ", state " + format_bytes(double(n.usage.state)) : ""),
               "font-size=\"11\" fill=\"#555\"");
    }
    y = top + h + 12;
  }

  // Shares: per part one bar per node; a 100% bar is full width. Replicated parts show 100% on each holder.
  y += 24;
  svg.text(20, y, "Share of each layer part per node", "font-size=\"15\" font-weight=\"bold\"");
  y += 8;
  for (const Part& part : layer_parts(p, c)) {
    y += 22;
    svg.text(20, y, part.name, "font-weight=\"bold\"");
    svg.text(kBarX, y, part.unit, "font-size=\"11\" fill=\"#555\"");
    for (size_t i = 0; i < p.nodes.size(); ++i) {
      const double top = y + 6, h = 13;
      const double share = part.whole > 0 ? double(part.held[i]) / double(part.whole) : 0.0;
      const std::string label = percent(part.held[i], part.whole);
      svg.text(34, top + 11, p.nodes[i].spec.name, "font-size=\"12\"");
      svg.rect(kBarX, top, kBarW, h, "#f2f2f2", "class=\"track\"", "100%");
      svg.rect(kBarX, top, share * kBarW, h, kNodeColors[i % std::size(kNodeColors)],
               fmt::format("class=\"share\" data-part=\"{}\" data-node=\"{}\" data-share=\"{:.6f}\"", esc(part.name), i, share),
               fmt::format("{}: {} of {} ({})", p.nodes[i].spec.name, label, part.name, part.unit));
      svg.text(kTextX, top + 11, label, fmt::format("font-size=\"12\" class=\"percent\" data-node=\"{}\"", i));
      y = top + h;
    }
    y += 4;
  }

  y += 26;
  svg.text(20, y, fmt::format("mode: {}{}", mode_name(p.mode), p.reasons.empty() ? "" : " (" + p.reasons.front() + ")"),
           "font-size=\"12\" fill=\"#555\"");
  return svg.document(y + 16);
}

}  // namespace uneven
