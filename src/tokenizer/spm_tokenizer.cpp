// SPM encoding: special tokens split the text; each text fragment (a space prefixed at the start and
// after special tokens, spaces as U+2581) starts as single characters, and the adjacent pair whose
// concatenation is the highest-scoring token merges first, leftmost on ties; characters left outside
// the vocabulary become <0xXX> byte tokens.
#include "tokenizer/spm_tokenizer.h"

#include <fmt/format.h>

#include <queue>

#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

const std::string kSpaceMark = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// The byte of a "<0xXX>" piece, or -1. Files without token types mark byte pieces only by this form.
int byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[size_t(i)];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(SpmVocab v) : v_(std::move(v)) {
    std::vector<AddedToken> specials;
    for (size_t i = 0; i < v_.tokens.size(); ++i) {
      ids_[v_.tokens[i]] = TokenId(i);  // a repeated string maps to its last id, as in llama.cpp
      const GgufTokenType t = v_.types[i];
      if (t == GgufTokenType::Control || t == GgufTokenType::UserDefined || t == GgufTokenType::Unknown) {
        AddedToken a;
        a.content = v_.tokens[i];
        a.id = TokenId(i);
        a.special = t != GgufTokenType::UserDefined;
        specials.push_back(std::move(a));
      }
    }
    specials_ = AddedTokenMatcher(std::move(specials));
    for (int b = 0; b < 256; ++b) {
      auto it = ids_.find(fmt::format("<0x{:02X}>", b));
      byte_ids_[b] = it == ids_.end() ? v_.unk : it->second;
    }
  }

  std::vector<TokenId> encode(std::string_view text, bool add_special) const override {
    const std::string input = utf8::repair(text);
    std::vector<TokenId> ids;
    if (add_special && v_.add_bos && v_.bos >= 0) ids.push_back(v_.bos);
    bool after_special = true;  // the start counts as "after a special token": it gets the space prefix
    std::vector<TextPiece> pieces = specials_.empty() ? std::vector<TextPiece>{} : specials_.split(input);
    if (specials_.empty() && !input.empty()) pieces.push_back({0, input.size(), -1});
    for (const TextPiece& p : pieces) {
      if (p.id >= 0) {
        ids.push_back(p.id);
        after_special = true;
        continue;
      }
      std::string fragment = v_.add_space_prefix && after_special ? " " : "";
      fragment.append(input, p.begin, p.end - p.begin);
      std::string escaped;
      for (char c : fragment) {
        if (c == ' ') escaped += kSpaceMark;
        else escaped += c;
      }
      encode_fragment(escaped, ids);
      after_special = false;
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::string out;
    TokenId prev = -1;
    for (TokenId id : ids) {
      if (id < 0 || size_t(id) >= v_.tokens.size()) continue;
      const bool skip = skip_special && is_special(id);
      if (!skip) {
        std::string piece = token_bytes(id);
        // The encoder's space prefix: drop it from the first piece of the text or the one after BOS.
        if (v_.add_space_prefix && (prev < 0 || prev == v_.bos) && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        out += piece;
      }
      prev = id;
    }
    return utf8::repair(out);
  }

  std::string token_bytes(TokenId id) const override {
    if (id < 0 || size_t(id) >= v_.tokens.size()) return {};
    const std::string& t = v_.tokens[size_t(id)];
    if (v_.types[size_t(id)] == GgufTokenType::Byte || v_.types[size_t(id)] == GgufTokenType::Normal)
      if (int byte = byte_token_value(t); byte >= 0) return std::string(1, char(byte));
    std::string out;
    for (size_t p = 0; p < t.size();) {
      if (t.compare(p, kSpaceMark.size(), kSpaceMark) == 0) {
        out += ' ';
        p += kSpaceMark.size();
      } else {
        out += t[p++];
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return int64_t(v_.tokens.size()); }
  TokenId bos_id() const override { return v_.bos; }
  std::vector<TokenId> eos_ids() const override { return v_.eos; }
  bool is_special(TokenId id) const override {
    if (id < 0 || size_t(id) >= v_.types.size()) return false;
    return v_.types[size_t(id)] == GgufTokenType::Control || v_.types[size_t(id)] == GgufTokenType::Unknown;
  }
  TokenId token_id(std::string_view token) const override {
    auto it = ids_.find(token);
    return it == ids_.end() ? -1 : it->second;
  }
  bool strips_space_after_bos() const override { return v_.add_space_prefix; }

 private:
  struct Symbol {
    size_t begin, len;  // bytes of the fragment; len 0 once merged into the left neighbour
    int prev, next;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t len;
    // priority_queue pops the largest: the highest score, then the leftmost pair.
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };

  void encode_fragment(const std::string& text, std::vector<TokenId>& out) const {
    std::vector<Symbol> symbols;
    for (size_t i = 0; i < text.size();) {
      const size_t len = utf8::scan(text, i).length;
      const int n = int(symbols.size());
      symbols.push_back({i, len, n - 1, i + len == text.size() ? -1 : n + 1});
      i += len;
    }
    std::priority_queue<Bigram> queue;
    auto try_add = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const size_t len = symbols[size_t(left)].len + symbols[size_t(right)].len;
      auto it = ids_.find(std::string_view(text).substr(symbols[size_t(left)].begin, len));
      if (it == ids_.end()) return;
      queue.push({left, right, v_.scores[size_t(it->second)], len});
    };
    for (int i = 1; i < int(symbols.size()); ++i) try_add(i - 1, i);
    while (!queue.empty()) {
      const Bigram b = queue.top();
      queue.pop();
      Symbol& l = symbols[size_t(b.left)];
      Symbol& r = symbols[size_t(b.right)];
      if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // one side changed since queued
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) symbols[size_t(r.next)].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }
    for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[size_t(i)].next) {
      const Symbol& s = symbols[size_t(i)];
      const std::string_view piece = std::string_view(text).substr(s.begin, s.len);
      if (auto it = ids_.find(piece); it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (char c : piece) {  // byte fallback (the unknown token where a byte token is missing)
        const TokenId id = byte_ids_[static_cast<unsigned char>(c)];
        if (id >= 0) out.push_back(id);
      }
    }
  }

  SpmVocab v_;
  StringMap<TokenId> ids_;
  AddedTokenMatcher specials_;
  TokenId byte_ids_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab) {
  const size_t n = vocab.tokens.size();
  if (vocab.scores.size() != n)
    fail("{}: {} tokens but {} scores", vocab.source, n, vocab.scores.size());
  if (vocab.types.size() != n) fail("{}: {} tokens but {} token types", vocab.source, n, vocab.types.size());
  return std::make_unique<SpmTokenizer>(std::move(vocab));
}

}  // namespace uneven
