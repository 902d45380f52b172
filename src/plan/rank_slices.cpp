// The trivial single-rank slicing (every tensor whole), used for one-node runs and as the test baseline.
#include "plan/rank_slices.h"

namespace uneven {

RankSlices single_rank_slices(const ModelConfig& c) {
  RankSlices s;
  s.layers = {0, c.num_layers};
  s.layer.resize(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSlices& ls = s.layer[size_t(l)];
    ls.q_heads = {0, c.num_heads};
    ls.kv_heads = {0, c.num_kv_heads};
    ls.mlp_cols = {0, c.intermediate_size};
    if (c.is_moe_layer(l)) {
      ls.expert_cols.assign(size_t(c.num_experts), Range{0, c.moe_intermediate_size});
      ls.shared_expert_cols = {0, c.shared_expert_intermediate_size};
    }
    ls.linear_v_heads = {0, c.linear_num_value_heads};
    ls.linear_k_heads = {0, c.linear_num_key_heads};
  }
  s.embedding_rows = {0, c.vocab_size};
  s.output_rows = {0, c.vocab_size};
  return s;
}

}  // namespace uneven
