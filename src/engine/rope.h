// Rotary position embedding: frequencies (default, linear, llama3 scaling) and their cos/sin tables (the
// backends rotate the heads, see AttentionArgs).
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
  int64_t half() const { return int64_t(inv_freq_.size()); }

 private:
  std::vector<float> inv_freq_;  // rotary_dim / 2 entries, after scaling
};

}  // namespace uneven
