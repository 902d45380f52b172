// `uneven plan --svg`: the picture is well-formed XML without scripts, names every node, labels each layer
// part with the percentage `uneven plan` prints, and draws bars as long as the planned bytes and shares.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "cli_run.h"
#include "model/config.h"
#include "plan/plan.h"
#include "plan/plan_svg.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A small well-formedness check (enough for what plan_svg emits): every element closes in order, attribute
// values are quoted, and '&' only starts one of XML's five entities. Returns "" or what is wrong.
std::string xml_problem(const std::string& x) {
  std::vector<std::string> open;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == '&') {
      static const std::regex entity("^&(amp|lt|gt|quot|apos);");
      if (!std::regex_search(x.substr(i, 8), entity)) return "bare & at " + std::to_string(i);
    }
    if (x[i] != '<') continue;
    const size_t end = x.find('>', i);
    if (end == std::string::npos) return "unclosed tag at " + std::to_string(i);
    const std::string tag = x.substr(i + 1, end - i - 1);
    i = end;
    if (tag.starts_with("?") || tag.starts_with("!")) continue;
    if (tag.starts_with("/")) {
      if (open.empty() || open.back() != tag.substr(1)) return "</" + tag.substr(1) + "> closes " + (open.empty() ? "nothing" : open.back());
      open.pop_back();
      continue;
    }
    static const std::regex element(R"(^([A-Za-z][\w:-]*)(\s+[\w:-]+="[^"<]*")*\s*/?$)");
    std::smatch m;
    if (!std::regex_match(tag, m, element)) return "malformed tag <" + tag + ">";
    if (!tag.ends_with("/")) open.push_back(m[1]);
  }
  return open.empty() ? "" : "<" + open.back() + "> is never closed";
}

// The cells of `uneven plan`'s table: column title -> one cell per node (columns are 2+ spaces apart).
std::map<std::string, std::vector<std::string>> report_table(const std::string& text, size_t nodes) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  static const std::regex gap(" {2,}");
  while (rows.size() < nodes + 1 && std::getline(in, line)) {
    if (rows.empty() && !line.starts_with("node")) continue;
    rows.push_back({std::sregex_token_iterator(line.begin(), line.end(), gap, -1), std::sregex_token_iterator()});
  }
  std::map<std::string, std::vector<std::string>> table;
  for (size_t c = 0; !rows.empty() && c < rows[0].size(); ++c)
    for (size_t r = 1; r < rows.size(); ++r) table[rows[0][c]].push_back(c < rows[r].size() ? rows[r][c] : "");
  return table;
}

struct Bar {
  std::string cls, part;
  size_t node = 0;
  double number = 0, x = 0, width = 0;  // number: data-bytes or data-share
  std::string label;                    // shares: the percentage text drawn after the bar
};

std::vector<Bar> bars(const std::string& svg) {
  static const std::regex rect(
      R"re(<rect class="([^"]+)"(?: data-part="([^"]+)")? data-node="(\d+)" data-(?:bytes|share)="([0-9.]+)"[^>]* x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)")re");
  static const std::regex percent(R"re(class="percent" data-node="(\d+)">([^<]*)</text>)re");
  std::vector<Bar> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), rect); it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    Bar b{m[1], m[2], std::stoul(m[3]), std::stod(m[4]), std::stod(m[5]), std::stod(m[6]), ""};
    if (b.cls == "share") {
      // The label is the next percent text after this bar, of the same node.
      const std::string rest = svg.substr(size_t(m.position(0)));
      std::smatch t;
      if (std::regex_search(rest, t, percent) && std::stoul(t[1]) == b.node) b.label = t[2];
    }
    out.push_back(b);
  }
  return out;
}

// Runs `uneven plan ARGS --svg --json`, then checks the picture against the printed table and the plan.
void check_picture(const std::string& args, const std::vector<std::string>& node_names) {
  ScratchDir dir;
  const std::string svg_path = dir.file("plan.svg"), json_path = dir.file("plan.json");
  const CliOutput out = run_uneven("plan " + args + " --svg " + svg_path + " --json " + json_path);
  ASSERT_EQ(out.exit_code, 0) << out.text;
  EXPECT_NE(out.text.find("picture written to " + svg_path), std::string::npos) << out.text;
  const std::string svg = read_text(svg_path);
  const Plan plan = plan_from_json_text(read_text(json_path), json_path);
  ASSERT_EQ(plan.nodes.size(), node_names.size());

  // Well-formed and self-contained: no scripts, nothing fetched.
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);
  if (run_shell("python3 --version").exit_code == 0) {
    const CliOutput py = run_shell("python3 -c 'import sys, xml.etree.ElementTree as E; print(E.parse(sys.argv[1]).getroot().tag)' " + svg_path);
    EXPECT_EQ(py.exit_code, 0) << py.text;
    EXPECT_NE(py.text.find("{http://www.w3.org/2000/svg}svg"), std::string::npos) << py.text;
  }
  // What the command wrote is the library's drawing of the plan it printed.
  const ModelConfig config = args.find("qwen3-30b") != std::string::npos ? load_hf_config((kSource / "configs/qwen3-30b-a3b.json").string())
                                                                          : load_hf_config((kSource / "configs/llama-3.2-1b.json").string());
  EXPECT_EQ(svg, plan_svg(plan, config));

  for (const std::string& name : node_names) EXPECT_NE(svg.find(">" + name + "</text>"), std::string::npos) << name;

  const std::vector<Bar> all = bars(svg);
  // Bytes: one scale for every node (the largest budget drawn full width), each segment as long as its
  // bytes, segments stacked from the start of the budget, and their bytes the plan's usage.
  double scale = 0, widest = 0;
  std::map<size_t, double> next_x;
  std::map<size_t, uint64_t> drawn_bytes;
  for (const Bar& b : all) {
    if (b.cls != "budget") continue;
    EXPECT_EQ(uint64_t(b.number), plan.nodes[b.node].spec.memory);
    if (scale == 0) scale = b.width / b.number;
    EXPECT_NEAR(b.width, b.number * scale, 1e-3) << "budget of node " << b.node;
    widest = std::max(widest, b.width);
    next_x[b.node] = b.x;
  }
  EXPECT_EQ(next_x.size(), node_names.size());
  EXPECT_NEAR(widest, 520.0, 1e-3);
  int segments = 0;
  for (const Bar& b : all) {
    if (!b.cls.starts_with("bytes ")) continue;
    ++segments;
    const Usage& u = plan.nodes[b.node].usage;
    const std::string kind = b.cls.substr(6);
    const uint64_t want = kind == "weights" ? u.weights : kind == "kv-cache" ? u.kv_cache : kind == "state" ? u.state : u.reserve;
    EXPECT_EQ(uint64_t(b.number), want) << kind << " of node " << b.node;
    EXPECT_NEAR(b.width, double(want) * scale, 1e-3) << kind << " of node " << b.node;
    EXPECT_NEAR(b.x, next_x[b.node], 1e-3) << kind << " of node " << b.node << " does not follow the previous segment";
    next_x[b.node] = b.x + b.width;
    drawn_bytes[b.node] += want;
  }
  EXPECT_GE(segments, int(3 * node_names.size()));  // weights, KV cache, reserve at least
  for (size_t i = 0; i < plan.nodes.size(); ++i) EXPECT_EQ(drawn_bytes[i], plan.nodes[i].usage.total()) << "node " << i;

  // Shares: bar length = share x the full width, its label the percentage the table prints.
  const auto table = report_table(out.text, node_names.size());
  const std::map<std::string, std::string> column = {{"attention", "q heads"}, {"linear attention", "lin v"}, {"MLP", "mlp"},
                                                     {"experts", "experts"},   {"shared expert", "shared"},  {"head", "vocab"}};
  std::map<std::string, int> per_part;
  for (const Bar& b : all) {
    if (b.cls != "share") continue;
    ++per_part[b.part];
    EXPECT_NEAR(b.width, b.number * 520.0, 1e-3) << b.part << " of node " << b.node;
    EXPECT_EQ(b.label, fmt::format("{:.1f}%", 100.0 * b.number)) << b.part << " of node " << b.node;
    if (column.contains(b.part)) {
      ASSERT_TRUE(table.contains(column.at(b.part))) << "no column " << column.at(b.part) << " in\n" << out.text;
      EXPECT_EQ(b.label, table.at(column.at(b.part))[b.node]) << b.part << " of node " << b.node << "\n" << out.text;
    }
  }
  for (const auto& [part, col] : column) {
    if (table.contains(col)) {
      EXPECT_EQ(per_part[part], int(node_names.size())) << part;
    }
  }
  EXPECT_EQ(per_part["embedding"], int(node_names.size()));
}

TEST(PlanSvg, LlamaOverTwoUnevenNodes) {
  check_picture("--config " + (kSource / "configs/llama-3.2-1b.json").string() + " --nodes 24G,8G", {"node0", "node1"});
}

TEST(PlanSvg, MoeOverThreeNodesAtFiveTwoOne) {
  check_picture("--config " + (kSource / "configs/qwen3-30b-a3b.json").string() + " --nodes 64G,32G,16G --split 5,2,1 --dtype q4_k",
                {"node0", "node1", "node2"});
}

TEST(PlanSvg, UnwritableFileIsNamed) {
  const std::string bad = "/nonexistent-dir-for-uneven/plan.svg";
  const CliOutput out = run_uneven("plan --config " + (kSource / "configs/llama-3.2-1b.json").string() + " --nodes 24G,8G --svg " + bad);
  EXPECT_NE(out.exit_code, 0) << out.text;
  EXPECT_NE(out.text.find(bad + ": cannot open for writing"), std::string::npos) << out.text;
}

TEST(PlanSvg, NamesAreEscaped) {
  // Node names come from users (a plan received from elsewhere): markup in them must stay text.
  const ModelConfig config = load_hf_config((kSource / "configs/llama-3.2-1b.json").string());
  PlanRequest r;
  r.nodes = {{"mac <studio> & \"co\"", 24ull << 30, 0.0}, {"box'2", 8ull << 30, 0.0}};
  const std::string svg = plan_svg(make_plan(config, r), config);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("mac &lt;studio&gt; &amp; &quot;co&quot;"), std::string::npos);
  EXPECT_NE(svg.find("box&apos;2"), std::string::npos);
}

}  // namespace
}  // namespace uneven::testing
