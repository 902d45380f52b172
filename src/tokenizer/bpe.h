// Byte-pair-encoding model as Hugging Face's "BPE": a vocabulary, ranked merges, and per-word encoding.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace uneven {

// Hash for unordered maps keyed by std::string that also accept std::string_view lookups.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  struct Options {
    std::string unk_token;  // empty: none (unknown characters are then dropped, as Hugging Face does)
    bool fuse_unk = false;
    bool byte_fallback = false;  // unknown characters become <0xXX> byte tokens
    bool ignore_merges = false;  // a word that is itself in the vocabulary is one token
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
  };
  // `merges` in rank order (rank = index). Throws naming `source` when a merge's parts or result are
  // not in the vocabulary.
  BpeModel(StringMap<TokenId> vocab, const std::vector<std::pair<std::string, std::string>>& merges, Options options,
           const std::string& source);

  // Appends the ids of one pre-tokenized word. Thread-safe; results of short words are cached.
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;
  TokenId find(std::string_view token) const;   // -1 if absent
  const std::string* token(TokenId id) const;   // nullptr if absent
  TokenId max_id() const { return TokenId(tokens_.size()) - 1; }

 private:
  std::vector<TokenId> merge_word(std::string_view word) const;

  StringMap<TokenId> vocab_;
  std::vector<std::string> tokens_;  // by id; ids absent from the vocabulary hold an empty string
  std::vector<bool> present_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, TokenId>> merges_;
  Options options_;
  TokenId unk_id_ = -1;
  TokenId byte_ids_[256];  // <0xXX> tokens for byte_fallback, -1 where absent

  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<TokenId>> cache_;
};

}  // namespace uneven
