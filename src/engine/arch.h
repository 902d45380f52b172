// The architecture table: every tensor of a model family with its shape, how a plan splits it, and where
// the loader puts it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "plan/rank_slices.h"

namespace uneven {

// How a tensor is divided among ranks; resolved to row runs or a column range through RankSlices.
enum class SplitRole {
  Replicated,        // every rank holds it whole (norms, router, shared-expert gate)
  QHeadRows,         // rows in units of q_rows_per_head, by the rank's query heads (q_proj with its gate rows, bias)
  KVHeadRows,        // rows in units of head_dim, by the rank's KV heads (k_proj, v_proj, biases)
  QHeadCols,         // columns in units of head_dim, by query heads (o_proj: a row-parallel product)
  MlpRows,           // rows by intermediate columns (gate_proj, up_proj)
  MlpCols,           // columns by intermediate columns (down_proj)
  ExpertRows,        // rows by the rank's columns of a routed expert (its gate_proj, up_proj)
  ExpertCols,        // columns by the same (its down_proj)
  SharedExpertRows,  // rows / columns by the rank's shared-expert columns
  SharedExpertCols,
  LinearQKVRows,     // q rows of the rank's key heads, k rows of them, v rows of its value heads (in_proj_qkv, conv1d)
  LinearVRows,       // rows in units of linear_value_head_dim by value heads (in_proj_z)
  LinearVHeadRows,   // one row per value head (in_proj_b, in_proj_a, A_log, dt_bias)
  LinearVCols,       // columns in units of linear_value_head_dim by value heads (out_proj)
  LinearQKVZRows,    // fused in_proj_qkvz: per key-head group [q k v z]; runs in the order q, k, v, z
  LinearBARows,      // fused in_proj_ba: per key-head group [b a]; runs in the order b, a
  EmbeddingRows,     // rows by the rank's embedding vocabulary range
  OutputRows,        // rows by the rank's output-head vocabulary range
};

// Where a loaded tensor goes. Consecutive table entries with the same slot (and index) are stacked by rows
// into one matrix, so that e.g. gate_proj and up_proj, or q|k|v|z|b|a of linear attention, are one product.
enum class Slot {
  Embedding, Output, FinalNorm,
  AttnNorm, FfnNorm, QNorm, KNorm, QBias, KBias, VBias, Q, K, V, O,
  MlpGateUp, MlpDown,
  LinearIn,    // rows: q (key heads x dk), k (same), v (value heads x dv), z (same), b, a (one per value head)
  LinearConv,  // conv1d weights of the rank's q|k|v channels, [channels][kernel]
  LinearALog, LinearDtBias, LinearNorm, LinearOut,
  Router, ExpertGateUp, ExpertDown, SharedGateUp, SharedDown, SharedGate,
};

// A logical tensor that some checkpoints store as one entry of a stacked 3-D tensor: rows
// [row_offset, row_offset + rows) of entry `index` of `name` (shape [entries, rows', cols]).
struct StackedSource {
  std::string name;
  std::vector<int64_t> shape;
  int64_t index = 0;
  int64_t row_offset = 0;
};

struct TensorSpec {
  TensorSpec() = default;
  TensorSpec(std::string name_, std::vector<int64_t> shape_, SplitRole role_, Slot slot_, int64_t index_ = 0)
      : name(std::move(name_)), shape(std::move(shape_)), role(role_), slot(slot_), index(index_) {}
  std::string name;
  std::vector<int64_t> shape;  // row-major, as config.json implies
  SplitRole role = SplitRole::Replicated;
  Slot slot = Slot::AttnNorm;
  int64_t index = 0;      // expert number for expert slots
  bool optional = false;  // e.g. lm_head when embeddings are tied
  std::optional<StackedSource> stacked;
  // Other stacked layouts of the same tensor, tried in order when neither the name nor `stacked` is
  // found (llama.cpp's separate ffn_gate_exps / ffn_up_exps beside Hugging Face's fused gate_up_proj).
  std::vector<StackedSource> stacked_alternatives;
};

// Tensors of every family; which ones exist follows config fields (attention_bias, qk_norm, layer_types,
// experts, fused projections, tie_word_embeddings), never the architecture name.
std::vector<TensorSpec> global_tensors(const ModelConfig& config);
std::vector<TensorSpec> layer_tensors(const ModelConfig& config, int64_t layer);

// The part a rank holds of a tensor: row runs [begin, end) of its outermost dimension, concatenated in
// this order, or (columns) one range of the columns of a 2-D tensor.
struct SliceRange {
  bool columns = false;
  std::vector<Range> runs;
  int64_t count() const;  // rows (or columns) held
};
SliceRange slice_for(const TensorSpec& spec, const ModelConfig& config, const RankSlices& slices, int64_t layer);

std::string layer_prefix(int64_t layer);

// The config.json fields a tensor's shape follows from, with their values, for messages
// ("num_experts 16 x hidden_size 64").
std::string shape_reason(const TensorSpec& spec, const ModelConfig& config);

}  // namespace uneven
