// The planner's memory and speed model: bytes a rank holds and reads per decoded token, from its slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "plan/rank_slices.h"

namespace uneven {

// How weights are stored. Float formats: every tensor in `bits`/8 bytes. Quantized: matrices hold `bits`
// per element plus `scale_bytes` per `group` consecutive elements of a row (the input dimension), so a
// split of a matrix's input dimension (o_proj, down_proj, out_proj columns) must fall on group boundaries;
// vectors and conv1d weights stay in bf16.
struct WeightFormat {
  int bits = 16;
  bool quantized = false;
  int64_t group = 0;    // quantized only
  int scale_bytes = 2;  // quantized only: fp16 scale per group (4 for scale + offset)
  std::string name = "bf16";

  uint64_t row_bytes(int64_t cols) const;    // one row of a matrix with `cols` input elements
  uint64_t vector_bytes(int64_t n) const;    // norms, biases, conv1d, A_log, dt_bias
  int64_t split_align() const { return quantized ? group : 1; }  // input-dimension split granularity
  bool operator==(const WeightFormat&) const = default;
};
// "bf16", "f16", "f32"; quantized as "BITS:GROUP" or "BITS:GROUP:SCALE_BYTES" (e.g. 8:64, 4:32:4).
WeightFormat parse_dtype(const std::string& text);
WeightFormat parse_quant(const std::string& text);

struct CostModel {
  WeightFormat weights;
  int kv_bytes = 4;        // bytes per KV-cache element (the engine's cache is f32)
  int64_t context = 4096;  // tokens of KV cache reserved per sequence
  int64_t batch = 1;       // sequences decoded together
  bool operator==(const CostModel&) const = default;
};

// What a rank holds and reads. Reads per decoded token: every held weight except the embedding (one row
// per token) and routed experts (top-k of num_experts, so that fraction of their bytes), plus the whole
// KV cache at full context and the whole recurrent state: a prediction for the end of a full context.
struct Usage {
  uint64_t weights = 0;
  uint64_t kv_cache = 0;  // full-attention K and V
  uint64_t state = 0;     // Gated DeltaNet recurrent + conv state
  uint64_t reserve = 0;
  double read = 0.0;      // bytes read per decoded token
  uint64_t total() const { return weights + kv_cache + state + reserve; }
  bool operator==(const Usage&) const = default;
};

// Bytes of the tensors, cache and state a rank holds under `slices` (reserve left 0).
Usage rank_usage(const ModelConfig& config, const RankSlices& slices, const CostModel& cost);

// Human-readable byte count, binary units ("47.9 GiB").
std::string format_bytes(double bytes);
// "128G", "48GiB", "512M", "1.5T", "1000000" (bytes) -> bytes; throws on anything else or a negative size.
uint64_t parse_size(const std::string& text);
// A comma-separated list of sizes ("6G,2G,1.5G"), each read by parse_size; "" gives no sizes.
std::vector<uint64_t> parse_sizes(const std::string& list);
// A comma-separated list of positive numbers (shares, GB/s); an entry that is not one throws
// "<what> entry '<entry>' is not a positive number[ of <unit>]". "" gives no numbers.
std::vector<double> parse_positive_numbers(const std::string& list, const std::string& what, const std::string& unit = "");

}  // namespace uneven
