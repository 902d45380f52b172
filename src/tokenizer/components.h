// Stages of a Hugging Face tokenizer pipeline (normalizer, pre-tokenizer, decoder, post-processor),
// each built from its tokenizer.json object. The GGUF "gpt2" vocabulary builds the same objects.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace uneven {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string text) const = 0;  // valid UTF-8 in and out
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each piece further, in order; empty pieces may be left and are skipped by the model.
  // `at_text_start`: the first piece begins the input text (Metaspace's prepend_scheme "first").
  virtual void split(std::vector<std::string>& pieces, bool at_text_start) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Hugging Face's decode_chain over token strings. With `raw` (the bytes of one token, for streaming)
  // byte-producing steps keep incomplete UTF-8 as is and position-dependent stripping is skipped.
  virtual void decode_chain(std::vector<std::string>& tokens, bool raw) const = 0;
  // True when decoding drops the space a SentencePiece-style prefix put before the first word.
  virtual bool strips_leading_space() const { return false; }
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<TokenId>& ids) const = 0;  // adds the special tokens of one sequence
  virtual std::vector<TokenId> inserted_ids() const = 0;      // every id process() may add (checked at load)
};

// Each returns nullptr for a JSON null; throws uneven::Error naming `source` for unsupported types.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& source);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& source);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& source);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& source);

// The split regexes of well-known byte-level BPE tokenizers (Oniguruma syntax, as in tokenizer.json).
extern const char* const kGpt2SplitRegex;   // GPT-2 (also ByteLevel's use_regex)
extern const char* const kLlama3SplitRegex;  // Llama 3 (digits in groups of up to 3)
extern const char* const kQwen2SplitRegex;   // Qwen2 / Qwen3 (single digits)

// Small JSON accessors with messages that name the file and field.
namespace json_get {
bool boolean(const nlohmann::json& j, const char* key, bool fallback, const std::string& source);
std::string string(const nlohmann::json& j, const char* key, const std::string& fallback, const std::string& source);
const nlohmann::json& required(const nlohmann::json& j, const char* key, const std::string& source);
}  // namespace json_get

}  // namespace uneven
