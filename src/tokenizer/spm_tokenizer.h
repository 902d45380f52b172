// SentencePiece-style vocabulary of a GGUF "llama" tokenizer (scores, byte fallback), encoded as
// llama.cpp's SPM tokenizer does.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace uneven {

// GGUF tokenizer.ggml.token_type values.
enum class GgufTokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct SpmVocab {
  std::vector<std::string> tokens;  // U+2581 stands for a space
  std::vector<float> scores;        // merge priority: higher merges first
  std::vector<GgufTokenType> types;
  TokenId bos = -1, unk = -1;
  std::vector<TokenId> eos;
  bool add_bos = true;           // encode(add_special) puts BOS first
  bool add_space_prefix = true;  // a space before the text (and after each special token)
  std::string source;
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab);

}  // namespace uneven
