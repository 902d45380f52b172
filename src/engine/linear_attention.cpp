// Gated DeltaNet (Qwen3-Next, Qwen3.5 linear attention) over the rank's value heads and the key heads they
// use: the input product, the backend's conv1d / delta rule / gated norm (see DeltaNetArgs), and out_proj
// (a partial sum).
#include "engine/session.h"

namespace uneven {

void Session::linear_attention_block(int64_t l, int64_t count) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = c.hidden_size;
  if (ls.linear_v_heads.empty()) {  // no value heads of this layer here: add zeros to the sum
    backend_.fill_zero(proj_.data(), count * h);
    finish_block(count);
    return;
  }
  backend_.rmsnorm(x_.data(), lw.attn_norm, float(c.rms_norm_eps), h, count, normed_.data());
  // Rows of linear_in: q | k (the rank's key heads), v | z (its value heads), b | a (one per value head).
  matmul(lw.linear_in, normed_.data(), count, mixed_.data(), times_.reads.linear);
  times_.reads.linear += double(lw.conv.size() + lw.a_log.size() + lw.dt_bias.size() + lw.linear_norm.size()) * 4.0;

  // The recurrences are per sequence: each segment runs on its own slot's conv and recurrent state.
  const int64_t nk = ls.linear_k_heads.size(), nv = ls.linear_v_heads.size();
  const int64_t channels = 2 * nk * c.linear_key_head_dim + nv * c.linear_value_head_dim;
  for (const ChunkSegment& g : chunk_segments_) {
    const size_t state = state_index(g.slot, l);
    DeltaNetArgs a;
    a.count = g.count;
    a.k_heads = nk;
    a.v_heads = nv;
    a.dk = c.linear_key_head_dim;
    a.dv = c.linear_value_head_dim;
    a.kernel = c.linear_conv_kernel_dim;
    a.ratio = c.linear_value_heads_per_key_head();
    a.k_head_begin = ls.linear_k_heads.begin;
    a.v_head_begin = ls.linear_v_heads.begin;
    a.in_rows = lw.linear_in.view.rows;
    a.mixed = mixed_.data() + g.offset * a.in_rows;
    a.conv = &lw.conv;
    a.a_log = &lw.a_log;
    a.dt_bias = &lw.dt_bias;
    a.norm = &lw.linear_norm;
    a.eps = float(c.rms_norm_eps);
    a.conv_state = conv_state_[state].data();
    a.recurrent_state = recurrent_state_[state].data();
    a.conv_out = conv_out_.data() + g.offset * channels;
    a.beta = beta_.data() + g.offset * nv;
    a.decay = decay_.data() + g.offset * nv;
    a.core = core_.data() + g.offset * nv * a.dv;
    backend_.gated_deltanet(a);
  }

  matmul(lw.linear_out, core_.data(), count, proj_.data(), times_.reads.linear);
  finish_block(count);
}

}  // namespace uneven
