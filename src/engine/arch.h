// The architecture table: every tensor of a model family with its shape and how a plan splits it.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "plan/rank_slices.h"

namespace uneven {

// How a tensor is divided among ranks; resolved to a row or column range through RankSlices.
enum class SplitRole {
  Replicated,     // every rank holds it whole (norms)
  QHeadRows,      // rows in units of head_dim, by the rank's query heads (q_proj and its bias)
  KVHeadRows,     // rows in units of head_dim, by the rank's KV heads (k_proj, v_proj, biases)
  QHeadCols,      // columns in units of head_dim, by query heads (o_proj: a row-parallel product)
  MlpRows,        // rows by intermediate columns (gate_proj, up_proj)
  MlpCols,        // columns by intermediate columns (down_proj: a row-parallel product)
  EmbeddingRows,  // rows by the rank's embedding vocabulary range
  OutputRows,     // rows by the rank's output-head vocabulary range
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // row-major, as config.json implies
  SplitRole role = SplitRole::Replicated;
  bool optional = false;  // e.g. lm_head when embeddings are tied
};

// Tensors of the dense decoder family (llama, qwen2, qwen3): which ones exist follows config fields
// (attention_bias, qk_norm, tie_word_embeddings), never the architecture name.
std::vector<TensorSpec> global_tensors(const ModelConfig& config);
std::vector<TensorSpec> layer_tensors(const ModelConfig& config, int64_t layer);

// The slice a rank holds of a tensor: rows or columns [begin, end) in elements of that axis.
struct SliceRange {
  bool columns = false;
  int64_t begin = 0;
  int64_t end = 0;
};
SliceRange slice_for(const TensorSpec& spec, const ModelConfig& config, const RankSlices& slices, int64_t layer);

// Names of the projection tensors, shared by the table and the forward pass.
std::string layer_prefix(int64_t layer);

}  // namespace uneven
