// Added-token matching: a byte trie scanned leftmost-longest, like the Aho-Corasick automaton
// (MatchKind::LeftmostLongest) of Hugging Face's AddedVocabulary::find_matches.
#include "tokenizer/added_vocab.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace uneven {
namespace {

// The last / first character of a string (U+FFFD-free: input is valid UTF-8), or 0 if empty.
char32_t last_char(std::string_view s) {
  if (s.empty()) return 0;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return utf8::decode(s, i, s.size() - i);
}
char32_t first_char(std::string_view s) { return s.empty() ? 0 : utf8::decode(s, 0, utf8::scan(s, 0).length); }

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  edges_.emplace_back();
  terminal_.push_back(-1);
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& s = tokens_[t].content;
    if (s.empty()) continue;  // Hugging Face ignores empty added tokens
    first_byte_[static_cast<unsigned char>(s[0])] = true;
    int node = 0;
    for (char ch : s) {
      const auto b = static_cast<uint8_t>(ch);
      auto& e = edges_[size_t(node)];
      auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(b, -1));
      if (it != e.end() && it->first == b) {
        node = it->second;
      } else {
        const int child = int(edges_.size());
        e.insert(it, {b, child});
        edges_.emplace_back();
        terminal_.push_back(-1);
        node = child;
      }
    }
    if (terminal_[size_t(node)] < 0) terminal_[size_t(node)] = int(t);  // a duplicate content keeps the first
  }
}

int AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  int node = 0, best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& e = edges_[size_t(node)];
    const auto b = static_cast<uint8_t>(text[i]);
    auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(b, -1));
    if (it == e.end() || it->first != b) break;
    node = it->second;
    if (terminal_[size_t(node)] >= 0) best = terminal_[size_t(node)];
  }
  return best;
}

std::vector<TextPiece> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextPiece> pieces;
  if (text.empty()) return pieces;
  size_t covered = 0;  // text before this offset is already in `pieces`
  for (size_t pos = 0; pos < text.size();) {
    const int t = first_byte_[static_cast<unsigned char>(text[pos])] ? longest_at(text, pos) : -1;
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[size_t(t)];
    size_t start = pos, stop = pos + tok.content.size();
    if (tok.single_word) {
      const bool free_left = start == 0 || !utf8::is_word_char(last_char(text.substr(0, start)));
      const bool free_right = stop == text.size() || !utf8::is_word_char(first_char(text.substr(stop)));
      if (!free_left || !free_right) {
        pos = stop;  // the automaton has consumed the discarded match: resume after it, as Hugging Face does
        continue;
      }
    }
    if (tok.lstrip) {
      while (start > covered) {
        size_t i = start - 1;
        while (i > covered && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
        if (!utf8::is_whitespace(utf8::decode(text, i, start - i))) break;
        start = i;
      }
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        const size_t len = utf8::scan(text, stop).length;
        if (!utf8::is_whitespace(utf8::decode(text, stop, len))) break;
        stop += len;
      }
    }
    if (covered < start) pieces.push_back({covered, start, -1});
    pieces.push_back({start, stop, tok.id});
    covered = stop;
    pos = stop;
  }
  if (covered < text.size()) pieces.push_back({covered, text.size(), -1});
  return pieces;
}

}  // namespace uneven
