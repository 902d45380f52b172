// `uneven plan`: reads a model's config and the nodes, prints the split table and the chosen mode, writes JSON and SVG.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "engine/model_files.h"
#include "engine/weight_format.h"
#include "model/config.h"
#include "model/tensor_file.h"
#include "plan/plan.h"
#include "plan/plan_svg.h"
#include "plan/report.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

struct PlanOptions {
  std::string model_path, config_path, nodes, bandwidth, dtype, quant, kv_dtype = "f32", reserve, mode = "auto",
      split, json_path, svg_path, link;
  int64_t context = 0, batch = 1, kernel_width = 32;
};

ModelConfig read_config(const PlanOptions& o) {
  if (!o.config_path.empty()) return load_hf_config(o.config_path);
  namespace fs = std::filesystem;
  const fs::path path(o.model_path);
  if (fs::is_directory(path)) return load_hf_config((path / "config.json").string());
  if (path.extension() == ".gguf") {
    TensorFiles files = TensorFiles::open_gguf(o.model_path);  // headers and metadata only
    return config_from_gguf_metadata(files.metadata(), o.model_path);
  }
  return load_hf_config(o.model_path);
}

// A .gguf file, or a directory with safetensors beside its config.json.
bool has_weight_files(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path.ends_with(".gguf");
  return fs::exists(fs::path(path) / "model.safetensors", ec) || fs::exists(fs::path(path) / "model.safetensors.index.json", ec);
}

PlanRequest build_request(const PlanOptions& o, const ModelConfig& c) {
  PlanRequest r;
  const std::vector<uint64_t> sizes = parse_sizes(o.nodes);
  for (size_t i = 0; i < sizes.size(); ++i) r.nodes.push_back({fmt::format("node{}", i), sizes[i], 0.0});
  if (!o.bandwidth.empty()) {
    const std::vector<double> bw = parse_positive_numbers(o.bandwidth, "--bandwidth", "GB/s");
    if (bw.size() != r.nodes.size()) fail("--bandwidth has {} values but --nodes has {}", bw.size(), r.nodes.size());
    for (size_t i = 0; i < bw.size(); ++i) r.nodes[i].bandwidth = bw[i];
  }
  if (!o.quant.empty()) {
    r.cost.weights = parse_quant(o.quant);
  } else if (!o.dtype.empty()) {
    const std::optional<WeightType> t = weight_type_from_name(o.dtype);
    if (!t) fail("--dtype '{}' is not one of {} (or use --quant BITS:GROUP)", o.dtype, kWeightTypeNames);
    r.cost.weights = weight_format_of(*t);
  } else if (!o.model_path.empty() && has_weight_files(o.model_path)) {
    // The files say how the weights are stored (quantized blocks included); headers only are read.
    OpenOptions open;
    open.need_tokenizer = false;
    const ModelFiles files = open_model(o.model_path, open);
    r.cost.weights = stored_weight_format(files.config, *files.weights);
  } else {
    r.cost.weights = parse_dtype(c.torch_dtype == "float32" ? "f32" : c.torch_dtype == "float16" ? "f16" : "bf16");
  }
  if (o.kv_dtype == "f32") r.cost.kv_bytes = 4;
  else if (o.kv_dtype == "f16" || o.kv_dtype == "bf16") r.cost.kv_bytes = 2;
  else if (o.kv_dtype == "q8") r.cost.kv_bytes = 1;
  else fail("--kv-dtype '{}' is not one of f32, f16, bf16, q8", o.kv_dtype);
  r.cost.context = o.context > 0 ? o.context : std::min<int64_t>(c.max_position, 4096);
  r.cost.batch = o.batch;
  r.reserve = reserve_or_default(o.reserve, r.nodes);
  r.mode = parse_mode(o.mode);
  r.kernel_width = o.kernel_width;
  r.split = parse_positive_numbers(o.split, "--split");
  if (!o.link.empty()) r.link = parse_link(o.link);
  return r;
}

}  // namespace

Action register_plan(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand("plan", "split a model across nodes of uneven memory and speed");
  auto* model = cmd->add_option("--model,-m", o->model_path, "Hugging Face directory (config.json) or .gguf file");
  auto* config = cmd->add_option("--config", o->config_path, "a config.json");
  model->excludes(config);
  cmd->add_option("--nodes", o->nodes, "usable memory per node, e.g. 128G,48G")->required();
  cmd->add_option("--bandwidth", o->bandwidth, "memory bandwidth per node in GB/s, e.g. 546,273");
  cmd->add_option("--context,-c", o->context, "context length to reserve KV cache for (default: min(model limit, 4096))")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o->batch, "sequences decoded together (default 1)")->check(CLI::PositiveNumber);
  auto* dtype = cmd->add_option("--dtype", o->dtype, "how the weights are stored: " + std::string(kWeightTypeNames) + " (default: as the model's files store them, else the config's dtype)");
  auto* quant = cmd->add_option("--quant", o->quant, "quantized weights BITS:GROUP[:SCALE_BYTES], e.g. 8:64");
  dtype->excludes(quant);
  cmd->add_option("--kv-dtype", o->kv_dtype, "KV-cache element type: f32 (the engine's), f16, bf16, q8");
  cmd->add_option("--reserve", o->reserve, "memory kept free per node for activations and runtime (default: 1G, or an eighth of the smallest node if less)");
  cmd->add_option("--mode", o->mode, "auto, tensor, pipeline, equal or single");
  cmd->add_option("--split", o->split, "explicit target shares, e.g. 5,2,1 (rounded to legal units, checked against memory)");
  cmd->add_option("--link", o->link,
                  "the link between the nodes: all-reduce latency at the hidden size and bandwidth, e.g. 150us,10Gbit "
                  "(default: not modelled)");
  cmd->add_option("--kernel-width", o->kernel_width, "rows per matmul tile; column blocks are lcm(group, this)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--json", o->json_path, "write the plan as JSON to this file ('-' for standard output)");
  cmd->add_option("--svg", o->svg_path, "draw the plan to this SVG file: memory per node, each layer part's share per node");
  return [o]() -> int {
    if (o->model_path.empty() && o->config_path.empty()) fail("plan needs --model PATH or --config config.json");
    ModelConfig c = read_config(*o);
    Plan plan = make_plan(c, build_request(*o, c));
    // The picture first, so that a bad path fails before anything is printed (and with --json - too).
    if (!o->svg_path.empty()) {
      std::ofstream out(o->svg_path, std::ios::binary);
      if (!out) fail("{}: cannot open for writing the SVG picture", o->svg_path);
      out << plan_svg(plan, c);
      if (!out.flush()) fail("{}: writing the SVG picture failed", o->svg_path);
    }
    if (o->json_path == "-") {
      std::fputs(plan_to_json_text(plan).c_str(), stdout);
      return 0;
    }
    std::fputs(plan_report(plan, c).c_str(), stdout);
    if (!o->json_path.empty()) {
      std::ofstream out(o->json_path);
      if (!out) fail("{}: cannot open for writing", o->json_path);
      out << plan_to_json_text(plan);
      if (!out.flush()) fail("{}: write failed", o->json_path);
      std::printf("plan written to %s\n", o->json_path.c_str());
    }
    if (!o->svg_path.empty()) std::printf("picture written to %s\n", o->svg_path.c_str());
    return 0;
  };
}

}  // namespace uneven::cli
