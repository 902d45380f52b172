// Rotary position embedding: frequencies (default, linear, llama3 scaling) and application to heads.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace uneven {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);
  // Fills cos/sin tables for `count` positions starting at `first` ([count][rotary_dim/2] each).
  void tables(int64_t first, int64_t count, std::vector<float>& cos, std::vector<float>& sin) const;
  // Rotates the first rotary_dim values of each of `heads` vectors of head_dim at one position
  // (cos/sin point at that position's row of the tables).
  void apply(float* x, int64_t heads, const float* cos, const float* sin) const;
  int64_t half() const { return int64_t(inv_freq_.size()); }

 private:
  std::vector<float> inv_freq_;  // rotary_dim / 2 entries, after scaling
  int64_t head_dim_;
  bool interleaved_;
};

}  // namespace uneven
