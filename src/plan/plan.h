// The split plan: which rank holds which share of every tensor, why, and what it costs; the one source of truth.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "plan/cost.h"
#include "plan/rank_slices.h"

namespace uneven {

// Modes a user may ask for. Auto picks among the others and records why (Plan::reasons).
enum class PlanMode { Auto, Single, Pipeline, Equal, Tensor };
const char* mode_name(PlanMode mode);  // "auto", "single", "pipeline", "equal", "tensor"
PlanMode parse_mode(const std::string& name);

struct NodeSpec {
  std::string name;         // for messages and tables ("node0" unless given)
  uint64_t memory = 0;      // usable memory in bytes (weights, KV cache/state, reserve must fit)
  double bandwidth = 0.0;   // memory bandwidth in GB/s; 0 = unknown (all unknown: treated as equal)
};

// The link between the nodes, as measured at start or given by `uneven plan --link`: what one all-reduce of
// a hidden-size vector costs (the per-layer sync of tensor parallelism; a pipeline's hand-off of one
// activation costs about the same), and the bandwidth of bulk transfers (the logits of the output head).
// Both 0: not modelled (one host's shared memory, where communication is negligible).
struct LinkSpec {
  double all_reduce_s = 0.0;  // seconds per all-reduce of hidden_size floats
  double bandwidth = 0.0;     // bytes/s of bulk transfers; 0 = not limiting
  bool modelled() const { return all_reduce_s > 0 || bandwidth > 0; }
  bool operator==(const LinkSpec&) const = default;
};
// "150us,10Gbit" / "1.5ms,300Mbit" / "20us,2.5GB/s": latency (s, ms, us) and bandwidth (bit/s or B/s with
// K/M/G prefixes, "bit" or "B"); throws naming the entry on anything else.
LinkSpec parse_link(const std::string& text);

// Communication per decoded token of a plan over a link: tensor parallelism pays 2 all-reduces per layer
// (plus one for a vocabulary-split embedding) and the gather of the logits; a pipeline pays one hand-off
// per stage boundary and the logits' broadcast; a single node nothing.
struct CommCost {
  int64_t syncs = 0;       // all-reduces or hand-offs of a hidden-size vector per token
  double bulk_bytes = 0;   // logits moved per token
  double seconds = 0;
};

struct PlanRequest {
  std::vector<NodeSpec> nodes;
  LinkSpec link;
  CostModel cost;                 // weight format, KV element size, context, batch
  uint64_t reserve = 1ull << 30;  // per node, for activations and the runtime
  PlanMode mode = PlanMode::Auto;
  std::vector<double> split;      // explicit target shares (tensor mode), one per node; empty = planner decides
  int64_t kernel_width = 32;      // rows a matmul tile covers; column blocks are lcm(quant group, this)
};

// One node of the request and what the plan gives it.
struct NodePlan {
  NodeSpec spec;
  int rank = -1;         // -1: left out (see note)
  double target = 0.0;   // continuous target share of every split dimension before rounding
  Usage usage;           // bytes held and read per token under the plan
  double time_s = 0.0;   // predicted seconds per decoded token on this node (0 when bandwidth unknown)
  std::string note;      // why it was left out, or empty
};

// Boundaries over the ranks of the stage that runs the layer: ranks(stage)+1 ascending entries from 0 to
// the dimension's size, each a multiple of the dimension's alignment or the size itself. Empty vector: the
// layer has no such dimension (q_heads on a linear-attention layer, experts on a dense layer).
struct LayerSplit {
  std::vector<int64_t> q_heads;             // full attention: query heads (KV heads follow)
  std::vector<int64_t> linear_v_heads;      // Gated DeltaNet: value heads (key heads follow)
  std::vector<int64_t> mlp_cols;            // dense MLP intermediate columns
  std::vector<int64_t> expert_cols;         // every routed expert of the layer splits at these columns
  std::vector<int64_t> shared_expert_cols;  // shared expert intermediate columns
  bool operator==(const LayerSplit&) const = default;
};

// A contiguous run of layers computed by a group of ranks in tensor parallelism. Tensor and equal modes
// have one stage of every rank; pipeline has one stage per rank; a later hybrid mixes the two.
struct Stage {
  Range layers;
  std::vector<int> ranks;  // ascending, consecutive
  bool operator==(const Stage&) const = default;
};

struct Alignment {
  int64_t q_heads = 1;   // query heads per unit (o_proj columns stay on quantization-group boundaries)
  int64_t linear_v_heads = 1;
  int64_t columns = 32;  // MLP / expert / shared-expert columns per block
  int64_t vocab = 32;    // vocabulary rows per block
  bool operator==(const Alignment&) const = default;
};

struct Plan {
  static constexpr int kVersion = 1;
  int version = kVersion;
  std::string architecture;
  std::string config_hash;  // of the planning-relevant config fields: ranks check they load the same model
  CostModel cost;
  uint64_t reserve = 0;
  PlanMode mode = PlanMode::Single;  // never Auto
  Alignment align;
  std::vector<NodePlan> nodes;       // in request order, left-out nodes included
  int world_size = 0;                // ranks = nodes with rank >= 0, numbered in request order
  std::vector<Stage> stages;
  std::vector<LayerSplit> layers;    // per absolute layer
  std::vector<int64_t> embedding_rows;  // vocabulary boundaries over the first stage's ranks
  std::vector<int64_t> output_rows;     // vocabulary boundaries over the last stage's ranks
  double time_s = 0.0;               // predicted decode seconds per token (0 when bandwidths unknown)
  bool bandwidth_known = false;
  LinkSpec link;                     // as planned for
  CommCost comm;                     // of this plan over `link` (included in time_s)
  std::vector<std::string> reasons;  // first: why this mode; then each rejected mode and left-out node
  std::string hash;                  // content hash of the JSON form without this field

  const NodePlan& node_of_rank(int rank) const;
  int stage_of_rank(int rank) const;
};

// Memory kept free per node for activations and the runtime when none is asked for: 1 GiB, or an eighth of
// the smallest node when that is less (nodes simulated with small budgets).
uint64_t default_reserve(const std::vector<NodeSpec>& nodes);
// A --reserve option's value ("256M", read by parse_size), or default_reserve(nodes) when it is empty.
uint64_t reserve_or_default(const std::string& given, const std::vector<NodeSpec>& nodes);

// What `plan` communicates per token over `link` (syncs and bytes whatever the link; seconds over it).
CommCost comm_cost(const Plan& plan, const ModelConfig& config, const LinkSpec& link);

// Plans `config` on the request's nodes. Throws uneven::Error naming the constraint and the numbers when
// no plan in the asked mode fits (with the shortfall), or the request is malformed.
Plan make_plan(const ModelConfig& config, const PlanRequest& request);

// What rank `rank` holds. Throws when the plan was made for another model or the rank is not in it.
RankSlices rank_slices(const Plan& plan, const ModelConfig& config, int rank);

// Checks that the plan is a legal split of `config`: every boundary list covers its dimension, is
// ascending and aligned, stages tile the layers, and every rank's usage fits its node. Throws naming what
// is wrong. make_plan's result always passes; a received plan is checked before use.
void validate_plan(const Plan& plan, const ModelConfig& config);

// Versioned JSON with the content hash; from_json verifies the version and the hash (a modified plan is
// rejected) and the structure.
nlohmann::json plan_to_json(const Plan& plan);
std::string plan_to_json_text(const Plan& plan);  // indented, as written by `uneven plan --json`
Plan plan_from_json(const nlohmann::json& json, const std::string& source);
Plan plan_from_json_text(const std::string& text, const std::string& source);
// The hash of a plan's JSON form (ignoring any "hash" member).
std::string plan_content_hash(const nlohmann::json& json);
std::string config_fingerprint(const ModelConfig& config);

}  // namespace uneven
