// The plan's JSON form, its content hash (FNV-1a 64 over the canonical dump), and the config fingerprint.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "plan/plan.h"
#include "util/error.h"
#include "util/json_integer.h"

namespace uneven {
namespace {

using nlohmann::json;

// FNV-1a, 64 bit: detects any change to a plan between ranks or on disk (not a defence against forgery).
std::string fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// An integer (or a list of them) the plan must hold, refused as malformed when it does not fit T (a float
// like 7e25 would otherwise be converted with undefined behaviour; found by fuzz/plan_fuzz).
template <typename T>
T integer(const json& v, const char* what) {
  return json_integer_or_json_error<T>(v, fmt::format("'{}'", what));
}
template <typename T>
T int_at(const json& j, const char* key) {
  return integer<T>(j.at(key), key);
}
template <typename T>
std::vector<T> ints_at(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_array()) throw json::type_error::create(302, fmt::format("'{}' must be an array, got {}", key, v.dump()), &v);
  std::vector<T> out;
  for (const json& e : v) out.push_back(integer<T>(e, key));
  return out;
}

json range_json(const Range& r) { return json::array({r.begin, r.end}); }

Range range_from(const json& j) {
  if (!j.is_array() || j.size() != 2) fail("expected [begin, end], got {}", j.dump());
  return {integer<int64_t>(j[0], "range begin"), integer<int64_t>(j[1], "range end")};
}

json usage_json(const Usage& u) {
  return {{"weights", u.weights}, {"kv_cache", u.kv_cache}, {"state", u.state}, {"reserve", u.reserve}, {"read", u.read}};
}

Usage usage_from(const json& j) {
  Usage u;
  u.weights = int_at<uint64_t>(j, "weights");
  u.kv_cache = int_at<uint64_t>(j, "kv_cache");
  u.state = int_at<uint64_t>(j, "state");
  u.reserve = int_at<uint64_t>(j, "reserve");
  u.read = j.at("read").get<double>();
  return u;
}

void put_if(json& j, const char* key, const std::vector<int64_t>& v) {
  if (!v.empty()) j[key] = v;
}

std::vector<int64_t> get_if(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? std::vector<int64_t>{} : ints_at<int64_t>(j, key);
}

}  // namespace

std::string config_fingerprint(const ModelConfig& c) {
  // Only what shapes the split or the memory model; fields like rope settings do not change a plan.
  json j = {{"architecture", c.architecture},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_layers", c.num_layers},
            {"num_heads", c.num_heads},
            {"num_kv_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab_size},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"attention_bias", c.attention_bias},
            {"qk_norm", c.qk_norm},
            {"attn_output_gate", c.attn_output_gate},
            {"num_experts", c.num_experts},
            {"num_experts_per_tok", c.num_experts_per_tok},
            {"moe_intermediate_size", c.moe_intermediate_size},
            {"shared_expert_intermediate_size", c.shared_expert_intermediate_size},
            {"linear", {c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim,
                        c.linear_conv_kernel_dim}}};
  std::string kinds;
  for (int64_t l = 0; l < c.num_layers; ++l)
    kinds += std::string(c.layer_types[size_t(l)] == LayerKind::FullAttention ? "F" : "L") + (c.is_moe_layer(l) ? "e" : "d");
  j["layers"] = kinds;
  return fnv1a64(j.dump());
}

std::string plan_content_hash(const json& j) {
  json copy = j;
  if (copy.is_object()) copy.erase("hash");
  return fnv1a64(copy.dump());
}

json plan_to_json(const Plan& p) {
  json nodes = json::array();
  for (const NodePlan& n : p.nodes)
    nodes.push_back({{"name", n.spec.name},
                     {"memory", n.spec.memory},
                     {"bandwidth", n.spec.bandwidth},
                     {"rank", n.rank},
                     {"target", n.target},
                     {"usage", usage_json(n.usage)},
                     {"time_s", n.time_s},
                     {"note", n.note}});
  json stages = json::array();
  for (const Stage& s : p.stages) stages.push_back({{"layers", range_json(s.layers)}, {"ranks", s.ranks}});
  json layers = json::array();
  for (const LayerSplit& ls : p.layers) {
    json l = json::object();
    put_if(l, "q_heads", ls.q_heads);
    put_if(l, "linear_v_heads", ls.linear_v_heads);
    put_if(l, "mlp_cols", ls.mlp_cols);
    put_if(l, "expert_cols", ls.expert_cols);
    put_if(l, "shared_expert_cols", ls.shared_expert_cols);
    layers.push_back(std::move(l));
  }
  const WeightFormat& w = p.cost.weights;
  json j = {{"format", "uneven-plan"},
            {"version", p.version},
            {"architecture", p.architecture},
            {"config_hash", p.config_hash},
            {"weights", {{"name", w.name}, {"bits", w.bits}, {"quantized", w.quantized}, {"group", w.group}, {"scale_bytes", w.scale_bytes}}},
            {"kv_bytes", p.cost.kv_bytes},
            {"context", p.cost.context},
            {"batch", p.cost.batch},
            {"reserve", p.reserve},
            {"mode", mode_name(p.mode)},
            {"alignment", {{"q_heads", p.align.q_heads}, {"linear_v_heads", p.align.linear_v_heads}, {"columns", p.align.columns}, {"vocab", p.align.vocab}}},
            {"world_size", p.world_size},
            {"nodes", nodes},
            {"stages", stages},
            {"layers", layers},
            {"embedding_rows", p.embedding_rows},
            {"output_rows", p.output_rows},
            {"time_s", p.time_s},
            {"bandwidth_known", p.bandwidth_known},
            {"link", {{"all_reduce_s", p.link.all_reduce_s}, {"bandwidth", p.link.bandwidth}}},
            {"comm", {{"syncs", p.comm.syncs}, {"bulk_bytes", p.comm.bulk_bytes}, {"seconds", p.comm.seconds}}},
            {"reasons", p.reasons}};
  j["hash"] = p.hash.empty() ? plan_content_hash(j) : p.hash;
  return j;
}

std::string plan_to_json_text(const Plan& p) { return plan_to_json(p).dump(1) + "\n"; }

Plan plan_from_json(const json& j, const std::string& source) {
  // find, not value(): value("format", "") throws nlohmann's type_error when "format" is not a string.
  const auto format = j.is_object() ? j.find("format") : j.end();
  if (!j.is_object() || format == j.end() || *format != "uneven-plan") fail("{}: not an uneven plan (no \"format\": \"uneven-plan\")", source);
  Plan p;
  try {
    p.version = int_at<int>(j, "version");
    if (p.version != Plan::kVersion)
      fail("{}: plan version {} is not supported by this build (it reads version {})", source, p.version, Plan::kVersion);
    p.hash = j.at("hash").get<std::string>();
    const std::string actual = plan_content_hash(j);
    if (actual != p.hash)
      fail("{}: plan hash mismatch: the plan records {} but its content hashes to {}; it was modified after planning "
           "(plan again instead of editing)", source, p.hash, actual);
    p.architecture = j.at("architecture").get<std::string>();
    p.config_hash = j.at("config_hash").get<std::string>();
    const json& w = j.at("weights");
    p.cost.weights.name = w.at("name").get<std::string>();
    p.cost.weights.bits = int_at<int>(w, "bits");
    p.cost.weights.quantized = w.at("quantized").get<bool>();
    p.cost.weights.group = int_at<int64_t>(w, "group");
    p.cost.weights.scale_bytes = int_at<int>(w, "scale_bytes");
    p.cost.kv_bytes = int_at<int>(j, "kv_bytes");
    p.cost.context = int_at<int64_t>(j, "context");
    p.cost.batch = int_at<int64_t>(j, "batch");
    p.reserve = int_at<uint64_t>(j, "reserve");
    p.mode = parse_mode(j.at("mode").get<std::string>());
    if (p.mode == PlanMode::Auto) fail("{}: a plan's mode cannot be auto", source);
    const json& a = j.at("alignment");
    p.align = {int_at<int64_t>(a, "q_heads"), int_at<int64_t>(a, "linear_v_heads"), int_at<int64_t>(a, "columns"),
               int_at<int64_t>(a, "vocab")};
    p.world_size = int_at<int>(j, "world_size");
    for (const json& n : j.at("nodes")) {
      NodePlan np;
      np.spec = {n.at("name").get<std::string>(), int_at<uint64_t>(n, "memory"), n.at("bandwidth").get<double>()};
      np.rank = int_at<int>(n, "rank");
      np.target = n.at("target").get<double>();
      np.usage = usage_from(n.at("usage"));
      np.time_s = n.at("time_s").get<double>();
      np.note = n.at("note").get<std::string>();
      p.nodes.push_back(std::move(np));
    }
    for (const json& s : j.at("stages")) p.stages.push_back({range_from(s.at("layers")), ints_at<int>(s, "ranks")});
    for (const json& l : j.at("layers"))
      p.layers.push_back({get_if(l, "q_heads"), get_if(l, "linear_v_heads"), get_if(l, "mlp_cols"), get_if(l, "expert_cols"),
                          get_if(l, "shared_expert_cols")});
    p.embedding_rows = ints_at<int64_t>(j, "embedding_rows");
    p.output_rows = ints_at<int64_t>(j, "output_rows");
    p.time_s = j.at("time_s").get<double>();
    p.bandwidth_known = j.at("bandwidth_known").get<bool>();
    if (j.contains("link")) {  // plans written before links were modelled have neither
      p.link.all_reduce_s = j.at("link").at("all_reduce_s").get<double>();
      p.link.bandwidth = j.at("link").at("bandwidth").get<double>();
      p.comm.syncs = int_at<int64_t>(j.at("comm"), "syncs");
      p.comm.bulk_bytes = j.at("comm").at("bulk_bytes").get<double>();
      p.comm.seconds = j.at("comm").at("seconds").get<double>();
    }
    p.reasons = j.at("reasons").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    fail("{}: malformed plan: {}", source, e.what());
  }
  return p;
}

Plan plan_from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: plan is not valid JSON: {}", source, e.what());
  }
  return plan_from_json(j, source);
}

}  // namespace uneven
