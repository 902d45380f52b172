// Added tokens (special or not) found in text before pre-tokenization, with Hugging Face's
// lstrip / rstrip / single_word semantics and leftmost-longest matching.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace uneven {

struct AddedToken {
  std::string content;
  TokenId id = -1;
  bool special = false;
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // matches only where no word character touches it
  bool normalized = false;   // matched in normalized text (else in the raw text)
};

// A piece of text: either a run of plain text or one added token (`id` >= 0).
struct TextPiece {
  size_t begin = 0, end = 0;
  TokenId id = -1;
};

// Matches one set of added tokens (Hugging Face keeps two: raw and normalized).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Splits `text` into pieces covering it in order (no pieces for an empty text).
  std::vector<TextPiece> split(std::string_view text) const;

 private:
  // Index of the longest token that starts at `pos`, or -1.
  int longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  // A byte trie over the contents: node -> sorted (byte, child) edges; terminal[node] = token index.
  std::vector<std::vector<std::pair<uint8_t, int>>> edges_;
  std::vector<int> terminal_;
  bool first_byte_[256] = {};
};

}  // namespace uneven
