// Mixture-of-experts MLP (Qwen3-MoE, Qwen3-Next, Qwen3.5-MoE) over the rank's columns of every expert: the
// replicated router picks each token's top-k experts, tokens are grouped by expert so each expert's weights
// are read once per batch, and the shared expert (with its sigmoid gate) adds in; the sum is partial.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "compute/kernels.h"
#include "engine/session.h"

namespace uneven {

void Session::moe_block(int64_t l, int64_t count) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = model_.weights().layers[size_t(l)];
  const LayerSlices& ls = model_.slices().layer[size_t(l)];
  const int64_t h = c.hidden_size, n_experts = c.num_experts, top_k = c.num_experts_per_tok;
  backend_.fill_zero(proj_.data(), count * h);
  const bool holds_experts = !ls.expert_cols.empty() && !ls.expert_cols[0].empty();
  const bool holds_shared = !ls.shared_expert_cols.empty();
  if (!holds_experts && !holds_shared) {  // no columns of this layer here: add zeros to the sum
    finish_block(count);
    return;
  }
  backend_.rmsnorm(x_.data(), lw.ffn_norm, float(c.rms_norm_eps), h, count, normed_.data());

  if (holds_experts) {
    // Router (every rank computes the same choice from the same activations): softmax over all experts,
    // the top k, renormalised to sum 1 when norm_topk_prob. The choice is made on the host.
    matmul(lw.router, normed_.data(), count, router_logits_.data(), times_.reads.router);
    router_host_.resize(size_t(count * n_experts));
    backend_.download(router_host_.data(), router_logits_.data(), count * n_experts);
    // Scratch kept across calls (no allocation per layer and token once warm).
    auto& routed = routed_;
    auto& order = expert_order_;
    for (auto& tokens : routed) tokens.clear();
    for (int64_t t = 0; t < count; ++t) {
      float* p = router_host_.data() + t * n_experts;
      kernels::softmax(p, n_experts);
      std::iota(order.begin(), order.end(), 0);
      // Highest probability first; equal ones by lower index, as torch.topk returns them on CPU.
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                        [&](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      float sum = 0;
      for (int64_t i = 0; i < top_k; ++i) sum += p[order[size_t(i)]];
      for (int64_t i = 0; i < top_k; ++i) {
        const int64_t e = order[size_t(i)];
        routed[size_t(e)].push_back({t, c.norm_topk_prob ? p[e] / sum : p[e]});
      }
    }
    for (int64_t e = 0; e < n_experts; ++e) {
      const auto& tokens = routed[size_t(e)];
      if (tokens.empty()) continue;
      const int64_t n = int64_t(tokens.size());
      expert_rows_.resize(size_t(n));
      expert_weights_.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) {
        expert_rows_[size_t(i)] = tokens[size_t(i)].first;
        expert_weights_[size_t(i)] = tokens[size_t(i)].second;
      }
      backend_.gather_rows(normed_.data(), expert_rows_.data(), n, h, expert_in_.data());
      ffn(lw.expert_gate_up[size_t(e)], lw.expert_down[size_t(e)], expert_in_.data(), n, expert_out_.data(),
          times_.reads.experts);
      backend_.scatter_add_rows(expert_out_.data(), expert_rows_.data(), expert_weights_.data(), n, h, proj_.data());
    }
  }
  if (holds_shared) {
    // The gate is a replicated scalar per token, so scaling this rank's partial sum by it is exact.
    matmul(lw.shared_gate, normed_.data(), count, shared_scalar_.data(), times_.reads.router);
    ffn(lw.shared_gate_up, lw.shared_down, normed_.data(), count, expert_out_.data(), times_.reads.shared);
    backend_.sigmoid_scale_add(expert_out_.data(), shared_scalar_.data(), count, h, proj_.data());
  }
  finish_block(count);
}

}  // namespace uneven
