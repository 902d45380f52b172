// The Hugging Face encode pipeline: added tokens in the raw text, normalizer, added tokens in the
// normalized text, pre-tokenizer, BPE per piece, post-processor; and decode through the decoder.
#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeTokenizerParts parts) : p_(std::move(parts)) {
    std::vector<AddedToken> raw, normalized;
    for (const AddedToken& t : p_.added) {
      added_by_id_.emplace(t.id, t);
      added_by_content_.emplace(t.content, t.id);
      vocab_size_ = std::max<int64_t>(vocab_size_, int64_t(t.id) + 1);
      if (!t.normalized) {
        raw.push_back(t);
      } else {
        AddedToken n = t;  // matched in normalized text, so match its normalized form
        if (p_.normalizer) n.content = p_.normalizer->normalize(utf8::repair(n.content));
        normalized.push_back(std::move(n));
      }
    }
    raw_matcher_ = AddedTokenMatcher(std::move(raw));
    normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
    vocab_size_ = std::max<int64_t>(vocab_size_, int64_t(p_.model->max_id()) + 1);
    // Ids the post-processor adds come from its own table: one outside the vocabulary would reach the
    // model as an out-of-range embedding row (found by fuzz/tokenizer_fuzz).
    if (p_.post_processor)
      for (TokenId id : p_.post_processor->inserted_ids())
        if (id < 0 || int64_t(id) >= vocab_size_)
          fail("{}: the post_processor adds token id {}, outside the vocabulary of {} tokens (model.vocab and "
               "added_tokens)", p_.source, id, vocab_size_);
    if (int64_t(p_.bos) >= vocab_size_)
      fail("{}: the beginning-of-sequence token id {} is outside the vocabulary of {} tokens", p_.source, p_.bos, vocab_size_);
  }

  std::vector<TokenId> encode(std::string_view text, bool add_special) const override {
    // Hugging Face takes Rust strings (valid UTF-8); bad bytes become U+FFFD rather than an error.
    const std::string input = utf8::repair(text);
    std::vector<TokenId> ids;
    std::vector<std::string> pieces;
    for (const TextPiece& rp : split(raw_matcher_, input)) {
      if (rp.id >= 0) {
        ids.push_back(rp.id);
        continue;
      }
      std::string norm = input.substr(rp.begin, rp.end - rp.begin);
      if (p_.normalizer) norm = p_.normalizer->normalize(std::move(norm));
      for (const TextPiece& np : split(normalized_matcher_, norm)) {
        if (np.id >= 0) {
          ids.push_back(np.id);
          continue;
        }
        pieces.assign(1, norm.substr(np.begin, np.end - np.begin));
        if (p_.pre_tokenizer) p_.pre_tokenizer->split(pieces, rp.begin == 0 && np.begin == 0);
        for (const std::string& piece : pieces) p_.model->encode_word(piece, ids);
      }
    }
    if (add_special) {
      if (p_.post_processor) p_.post_processor->process(ids);
      if (p_.force_bos && p_.bos >= 0 && (ids.empty() || ids.front() != p_.bos)) ids.insert(ids.begin(), p_.bos);
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (TokenId id : ids) {
      if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
        if (!(skip_special && it->second.special)) tokens.push_back(it->second.content);
      } else if (const std::string* t = p_.model->token(id)) {
        tokens.push_back(*t);
      }  // unknown ids are dropped, as Hugging Face does
    }
    std::string text;
    if (p_.decoder) {
      p_.decoder->decode_chain(tokens, false);
      for (const auto& t : tokens) text += t;
    } else {
      for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    }
    return utf8::repair(text);
  }

  std::string token_bytes(TokenId id) const override {
    std::vector<std::string> tokens;
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) tokens.push_back(it->second.content);
    else if (const std::string* t = p_.model->token(id)) tokens.push_back(*t);
    else return {};
    if (p_.decoder) p_.decoder->decode_chain(tokens, true);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  TokenId bos_id() const override { return p_.bos; }
  std::vector<TokenId> eos_ids() const override { return p_.eos; }
  bool is_special(TokenId id) const override {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && it->second.special;
  }
  TokenId token_id(std::string_view token) const override {
    if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
    return p_.model->find(token);
  }
  bool strips_space_after_bos() const override { return p_.decoder && p_.decoder->strips_leading_space(); }

 private:
  // The matcher's pieces, or the whole text as one plain piece when there is nothing to match.
  static std::vector<TextPiece> split(const AddedTokenMatcher& m, const std::string& text) {
    if (m.empty()) return text.empty() ? std::vector<TextPiece>{} : std::vector<TextPiece>{{0, text.size(), -1}};
    return m.split(text);
  }

  BpeTokenizerParts p_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::unordered_map<TokenId, AddedToken> added_by_id_;
  StringMap<TokenId> added_by_content_;
  int64_t vocab_size_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeTokenizerParts parts) {
  return std::make_unique<BpeTokenizer>(std::move(parts));
}

}  // namespace uneven
