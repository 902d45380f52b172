// Text <-> token ids: GGUF llama (SentencePiece-style) vocabularies and Hugging Face byte-level BPE.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace uneven {

using TokenId = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text. `add_special` prepends BOS where the tokenizer's config says so (llama: yes; qwen: no).
  // Special tokens written in the text (e.g. "<|im_start|>") are recognised as single tokens.
  // Invalid UTF-8 never throws: each ill-formed byte run is encoded as U+FFFD. Thread-safe.
  virtual std::vector<TokenId> encode(std::string_view text, bool add_special = true) const = 0;
  // Decodes ids to text; special tokens are kept (skip_special=false) or dropped. Ids outside the
  // vocabulary are dropped; bytes that do not form UTF-8 become U+FFFD.
  virtual std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const = 0;
  // The raw bytes one token stands for (byte-level decoded), used by StreamDecoder.
  virtual std::string token_bytes(TokenId id) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual TokenId bos_id() const = 0;  // -1 if none
  virtual std::vector<TokenId> eos_ids() const = 0;
  virtual bool is_special(TokenId id) const = 0;
  // The id of a token given by its vocabulary string (byte-level form for BPE, e.g. "Ġthe"; added and
  // special tokens by their content, e.g. "<|im_end|>"), or -1. For chat templates and stop tokens.
  virtual TokenId token_id(std::string_view token) const { return -1; }
  // True for SentencePiece-style vocabularies, whose encoder puts a space before the first word: a
  // decoder then drops the leading space of the piece right after BOS (StreamDecoder does this).
  virtual bool strips_space_after_bos() const { return false; }
};

// GGUF embedded vocabulary (tokenizer.ggml.model = "llama" or "gpt2") from the file's metadata.
std::unique_ptr<Tokenizer> tokenizer_from_gguf_metadata(const nlohmann::json& metadata, const std::string& source);
// tokenizer.json (+ tokenizer_config.json beside it if present) in a Hugging Face directory.
std::unique_ptr<Tokenizer> tokenizer_from_hf_dir(const std::string& dir);
// The same from parsed JSON: `config` is tokenizer_config.json's object or null; `source` names them.
std::unique_ptr<Tokenizer> tokenizer_from_hf_json(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                                                  const std::string& source);

// Turns a stream of token ids into text pieces, never emitting half a UTF-8 character: bytes of an
// incomplete sequence are held until the sequence completes (or flushed as U+FFFD at the end).
// Bytes that can never become valid are emitted at once as U+FFFD (one per maximal ill-formed subpart).
// Special tokens (is_special: BOS, EOS, <|im_start|>, ...) produce no text; after BOS, a tokenizer that
// strips_space_after_bos() loses the leading space of the next piece.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Returns the text that became complete with this token (possibly empty).
  std::string push(TokenId id);
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;  // a proper prefix of a UTF-8 sequence (at most 3 bytes)
  TokenId prev_ = -1;    // the previous token pushed, to drop the space after BOS
};

}  // namespace uneven
