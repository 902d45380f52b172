// Turning logits into the next token: greedy, or temperature with top-k, top-p and min-p filters.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace uneven {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off; keeps tokens with p >= min_p * p_max
  uint64_t seed = 0;
};

// Throws uneven::Error naming the parameter when a value is out of range.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  TokenId sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, TokenId>> candidates_;
};

}  // namespace uneven
