// BPE word encoding: the lowest-ranked adjacent pair merges first, leftmost on ties (Hugging Face's
// Word::merge_all, including its check that skips queue entries made stale by earlier merges).
#include "tokenizer/bpe.h"

#include <fmt/format.h>

#include <queue>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

constexpr size_t kMaxCachedBytes = 256;  // longer words are rare and would bloat the cache
constexpr size_t kCacheCapacity = 100000;

uint64_t pair_key(TokenId a, TokenId b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Symbol {
  TokenId id;
  int prev, next;  // neighbours in the linked list; -1 at the ends
  size_t len;      // bytes of the word covered; 0 once merged into its left neighbour
};

struct Merge {
  int pos;
  int32_t rank;
  TokenId new_id;
  // std::priority_queue pops the largest: make that the lowest rank, then the leftmost position.
  bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(StringMap<TokenId> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   Options options, const std::string& source)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  TokenId max_id = -1;
  for (const auto& [tok, id] : vocab_) {
    if (id < 0) fail("{}: vocabulary token '{}' has negative id {}", source, tok, id);
    max_id = std::max(max_id, id);
  }
  tokens_.resize(size_t(max_id + 1));
  present_.resize(size_t(max_id + 1));
  for (const auto& [tok, id] : vocab_) {
    tokens_[size_t(id)] = tok;
    present_[size_t(id)] = true;
  }
  if (!options_.unk_token.empty()) {
    unk_id_ = find(options_.unk_token);
    if (unk_id_ < 0) fail("{}: unk_token '{}' is not in the vocabulary", source, options_.unk_token);
  }
  for (int b = 0; b < 256; ++b) byte_ids_[b] = find(fmt::format("<0x{:02X}>", b));

  const size_t prefix_len = options_.continuing_subword_prefix.size();
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const TokenId ia = find(a), ib = find(b);
    if (ia < 0 || ib < 0)
      fail("{}: merge {} ('{}' '{}') uses a token missing from the vocabulary", source, rank, a, b);
    // The merged token drops the right part's continuing-subword prefix (as Hugging Face builds it).
    const std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : std::string());
    const TokenId im = find(merged);
    if (im < 0) fail("{}: merge {} ('{}' '{}') makes '{}', which is not in the vocabulary", source, rank, a, b, merged);
    merges_[pair_key(ia, ib)] = {int32_t(rank), im};  // a repeated pair keeps its last rank, as in Hugging Face
  }
}

TokenId BpeModel::find(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::token(TokenId id) const {
  if (id < 0 || size_t(id) >= tokens_.size() || !present_[size_t(id)]) return nullptr;
  return &tokens_[size_t(id)];
}

void BpeModel::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (TokenId id = find(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<TokenId> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();  // bounded memory; refilled by what is used
    cache_.emplace(std::string(word), std::move(ids));
  }
}

std::vector<TokenId> BpeModel::merge_word(std::string_view word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](TokenId id, size_t len) {
    const int n = int(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };
  // Pending unknown run (id, bytes), emitted before the next known symbol; fused if fuse_unk.
  TokenId unk_pending = -1;
  size_t unk_len = 0;
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    const size_t len = utf8::scan(word, i).length;
    piece.assign(word.substr(i, len));
    if (i > 0) piece.insert(0, options_.continuing_subword_prefix);
    if (i + len == word.size()) piece += options_.end_of_word_suffix;
    if (TokenId id = find(piece); id >= 0) {
      if (unk_pending >= 0) add(unk_pending, unk_len), unk_pending = -1;
      add(id, len);
    } else {
      bool done = false;
      if (options_.byte_fallback) {
        bool all = true;
        for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          for (char c : piece) add(byte_ids_[static_cast<unsigned char>(c)], 1);
          done = true;
        }
      }
      if (!done && unk_id_ >= 0) {
        if (unk_pending >= 0 && options_.fuse_unk) {
          unk_len += len;
        } else {
          if (unk_pending >= 0) add(unk_pending, unk_len);
          unk_pending = unk_id_, unk_len = len;
        }
      }
    }
    i += len;
  }
  if (unk_pending >= 0) add(unk_pending, unk_len);

  std::priority_queue<Merge> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    if (auto it = merges_.find(pair_key(symbols[i].id, symbols[i + 1].id)); it != merges_.end())
      queue.push({int(i), it->second.first, it->second.second});
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[size_t(top.pos)];
    if (cur.len == 0 || cur.next < 0) continue;
    const Symbol right = symbols[size_t(cur.next)];
    auto it = merges_.find(pair_key(cur.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
    symbols[size_t(cur.next)].len = 0;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.pos;
    if (cur.prev >= 0)
      if (auto p = merges_.find(pair_key(symbols[size_t(cur.prev)].id, cur.id)); p != merges_.end())
        queue.push({cur.prev, p->second.first, p->second.second});
    if (cur.next >= 0)
      if (auto n = merges_.find(pair_key(cur.id, symbols[size_t(cur.next)].id)); n != merges_.end())
        queue.push({top.pos, n->second.first, n->second.second});
  }
  std::vector<TokenId> ids;
  for (const Symbol& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
  return ids;
}

}  // namespace uneven
