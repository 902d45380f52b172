// A rank's share of a model's weights, loaded by its RankSlices through the architecture table.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compute/backend.h"
#include "compute/kernels.h"
#include "engine/weight_source.h"
#include "model/config.h"
#include "plan/rank_slices.h"

namespace uneven {

// A weight matrix slice held in memory (mapped from the file when no layout change was needed).
struct Linear {
  TensorBytes bytes;
  kernels::WeightView view;  // rows x cols of this rank's slice
};

// One layer's share. Norm weights already include config.norm_weight_offset.
struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  // Full attention. q rows per head: the query, then (attn_output_gate) its gate.
  std::vector<float> q_norm, k_norm;          // qk_norm only
  std::vector<float> q_bias, k_bias, v_bias;  // attention_bias only (this rank's heads)
  Linear q, k, v, o;
  // Gated DeltaNet: one input product with rows q|k (the rank's key heads) v|z|b|a (its value heads);
  // conv1d weights of its q|k|v channels [channels][kernel]; per value head A_log and dt_bias.
  Linear linear_in, linear_out;
  std::vector<float> conv, a_log, dt_bias, linear_norm;
  // Dense MLP: gate rows then up rows in one matrix.
  Linear gate_up, down;
  // Mixture of experts: router and shared-expert gate replicated; every expert's and the shared
  // expert's columns of this rank (gate rows then up rows; down columns).
  Linear router, shared_gate;
  std::vector<Linear> expert_gate_up, expert_down;
  Linear shared_gate_up, shared_down;
};

struct ModelWeights {
  Linear embedding;              // rows = this rank's embedding_rows
  Linear output;                 // rows = this rank's output_rows; empty view when tied to `embedding`
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;  // indexed by absolute layer; only slices.layers are loaded
  uint64_t bytes = 0;                // bytes of weights held by this rank
};

// Called after each tensor is loaded: (tensors done, tensors total).
using LoadProgress = std::function<void(int64_t, int64_t)>;

class Model {
 public:
  Model(ModelConfig config, RankSlices slices, const WeightSource& source, const LoadProgress& progress = {});
  const ModelConfig& config() const { return config_; }
  const RankSlices& slices() const { return slices_; }
  const ModelWeights& weights() const { return weights_; }
  // The output head: its own tensor, or the embedding when tied.
  const kernels::WeightView& output_head() const;
  // Every matrix and vector of this rank's share, for a device backend to hold (Backend calls name them).
  ResidentWeights resident_weights() const;
  // Reads one byte of every page of every weight, so mapped weights are resident; returns a checksum
  // so the reads are not optimised away.
  uint64_t touch_weights() const;

 private:
  void for_each_matrix(const std::function<void(const Linear&)>& fn) const;
  ModelConfig config_;
  RankSlices slices_;
  ModelWeights weights_;
};

}  // namespace uneven
