// A tokenizer assembled from Hugging Face pipeline stages around a BPE model; serves tokenizer.json
// and the GGUF "gpt2" vocabulary alike.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

struct BpeTokenizerParts {
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;                  // ids may coincide with model ids
  std::unique_ptr<Normalizer> normalizer;         // each may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;  // applied when encode(add_special = true)
  std::unique_ptr<Decoder> decoder;               // null: tokens joined with spaces (as Hugging Face)
  TokenId bos = -1;
  std::vector<TokenId> eos;
  bool force_bos = false;  // add_special also puts BOS first when the post-processor does not
  std::string source;      // for messages
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeTokenizerParts parts);

}  // namespace uneven
