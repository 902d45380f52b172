// Prompt-to-text generation on every rank: rank 0 tokenizes and samples, all ranks run the forward pass.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

struct GenerateRequest {
  std::string prompt;
  int64_t max_tokens = 64;
  SamplingParams sampling;
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool ignore_eos = false;
  bool record_logits = false;  // keep the logits each token was sampled from (for equivalence checks)
};

struct GenerateResult {
  std::vector<TokenId> prompt_ids;
  std::vector<TokenId> generated_ids;
  std::string text;
  std::string finish_reason;  // "length", "eos" or "stop"
  std::vector<float> step_logits;  // with record_logits: vocab_size values per sampled token
  double prompt_seconds = 0;
  double decode_seconds = 0;  // from the first generated token's sampling to the last one
  double prompt_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Length of the longest suffix of `text` that is a proper prefix of some (non-empty) stop string: text that
// might still turn into a stop string is not emitted yet.
size_t stop_hold_back(const std::string& text, const std::vector<std::string>& stops);

// Runs on every rank of `comm` together. Only rank 0 needs `tokenizer` (others may pass nullptr) and
// gets the text; `on_text` (rank 0) receives text as it becomes final, never half a UTF-8 character and
// never a part of a stop string. The session is reset first.
GenerateResult generate(Session& session, Collective& comm, const Tokenizer* tokenizer, const GenerateRequest& request,
                        const std::function<void(std::string_view)>& on_text = {});

}  // namespace uneven
