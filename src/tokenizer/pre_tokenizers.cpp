// Pre-tokenizers of tokenizer.json: Split (regex or string, five delimiter behaviours), ByteLevel,
// Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence.
#include <algorithm>

#include "tokenizer/byte_level.h"
#include "tokenizer/components.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {

const char* const kGpt2SplitRegex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& s, const std::string& source) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  fail("{}: unknown split behavior '{}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
       "Contiguous)", source, s);
}

// Hugging Face's NormalizedString::split: `matches` (sorted, non-overlapping) plus the gaps between
// them cover the piece; the behaviour decides what becomes of the matched delimiters.
void split_piece(const std::string& piece, const std::vector<std::pair<size_t, size_t>>& matches, Behavior behavior,
                 bool invert, std::vector<std::string>& out) {
  struct Span {
    size_t b, e;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != piece.size()) spans.push_back({prev, piece.size(), invert});

  std::vector<std::pair<size_t, size_t>> kept;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Isolated:
      for (const Span& s : spans) kept.emplace_back(s.b, s.e);
      break;
    case Behavior::Removed:
      for (const Span& s : spans)
        if (!s.is_match) kept.emplace_back(s.b, s.e);
      break;
    case Behavior::Contiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) kept.back().second = s.e;
        else kept.emplace_back(s.b, s.e);
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) kept.back().second = s.e;
        else kept.emplace_back(s.b, s.e);
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) kept.back().first = it->b;
        else kept.emplace_back(it->b, it->e);
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (auto [b, e] : kept)
    if (e > b) out.push_back(piece.substr(b, e - b));
}

// What a Split, Digits or Whitespace pre-tokenizer matches: a regex or a literal string.
class Splitter : public PreTokenizer {
 public:
  Splitter(std::unique_ptr<Regex> regex, std::string literal, Behavior behavior, bool invert)
      : regex_(std::move(regex)), literal_(std::move(literal)), behavior_(behavior), invert_(invert) {}
  void split(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    std::vector<std::pair<size_t, size_t>> matches;
    for (const std::string& piece : pieces) {
      matches.clear();
      if (regex_) {
        regex_->find_all(piece, matches);
      } else if (!literal_.empty()) {
        for (size_t p = piece.find(literal_); p != std::string::npos; p = piece.find(literal_, p + literal_.size()))
          matches.emplace_back(p, p + literal_.size());
      }
      split_piece(piece, matches, behavior_, invert_, out);
    }
    pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex, const std::string& source)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Regex>(kGpt2SplitRegex, source) : nullptr) {}
  void split(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& piece : pieces) {
      if (add_prefix_space_ && piece.rfind(' ', 0) != 0) piece.insert(0, " ");
      if (!regex_) {
        out.push_back(byte_level::encode(piece));
        continue;
      }
      matches.clear();
      regex_->find_all(piece, matches);
      const size_t first = out.size();
      split_piece(piece, matches, Behavior::Isolated, false, out);
      for (size_t i = first; i < out.size(); ++i) out[i] = byte_level::encode(out[i]);
    }
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  Metaspace(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void split(std::vector<std::string>& pieces, bool at_text_start) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string s;
      for (char c : pieces[i]) {
        if (c == ' ') s += replacement_;
        else s += c;
      }
      const bool prepend = prepend_ == Prepend::Always || (prepend_ == Prepend::First && at_text_start && i == 0);
      if (prepend && s.rfind(replacement_, 0) != 0) s.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(s));
        continue;
      }
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t p = s.find(replacement_); p != std::string::npos; p = s.find(replacement_, p + replacement_.size()))
        matches.emplace_back(p, p + replacement_.size());
      split_piece(s, matches, Behavior::MergedWithNext, false, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePre : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void split(std::vector<std::string>& pieces, bool at_text_start) const override {
    for (const auto& s : steps_) s->split(pieces, at_text_start);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  const std::string type = json_get::string(j, "type", "", source + " pre_tokenizer");
  const std::string where = source + " pre_tokenizer " + type;
  if (type == "Split") {
    const auto& pattern = json_get::required(j, "pattern", where);
    const Behavior behavior = parse_behavior(json_get::string(j, "behavior", "Isolated", where), where);
    const bool invert = json_get::boolean(j, "invert", false, where);
    if (pattern.contains("Regex"))
      return std::make_unique<Splitter>(std::make_unique<Regex>(pattern["Regex"].get<std::string>(), where), "",
                                        behavior, invert);
    if (pattern.contains("String"))
      return std::make_unique<Splitter>(nullptr, pattern["String"].get<std::string>(), behavior, invert);
    fail("{}: pattern must hold 'Regex' or 'String', got {}", where, pattern.dump());
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(json_get::boolean(j, "add_prefix_space", true, where),
                                          json_get::boolean(j, "use_regex", true, where), where);
  if (type == "Metaspace") {
    std::string scheme = json_get::string(j, "prepend_scheme", "", where);
    if (scheme.empty()) scheme = json_get::boolean(j, "add_prefix_space", true, where) ? "always" : "never";
    Metaspace::Prepend prepend = Metaspace::Prepend::Always;
    if (scheme == "first") prepend = Metaspace::Prepend::First;
    else if (scheme == "never") prepend = Metaspace::Prepend::Never;
    else if (scheme != "always") fail("{}: prepend_scheme must be always, first or never, got '{}'", where, scheme);
    return std::make_unique<Metaspace>(json_get::string(j, "replacement", "\xE2\x96\x81", where), prepend,
                                       json_get::boolean(j, "split", true, where));
  }
  if (type == "Digits") {
    const bool individual = json_get::boolean(j, "individual_digits", false, where);
    return std::make_unique<Splitter>(std::make_unique<Regex>("\\p{N}", where), "",
                                      individual ? Behavior::Isolated : Behavior::Contiguous, false);
  }
  if (type == "Whitespace")
    return std::make_unique<Splitter>(std::make_unique<Regex>("\\w+|[^\\w\\s]+", where), "", Behavior::Removed, true);
  if (type == "WhitespaceSplit")
    return std::make_unique<Splitter>(std::make_unique<Regex>("\\s+", where), "", Behavior::Removed, false);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& s : json_get::required(j, "pretokenizers", where))
      if (auto p = make_pre_tokenizer(s, source)) steps.push_back(std::move(p));
    return std::make_unique<SequencePre>(std::move(steps));
  }
  fail("{}: unsupported pre_tokenizer type '{}' (supported: Split, ByteLevel, Metaspace, Digits, Whitespace, "
       "WhitespaceSplit, Sequence)", source, type);
}

}  // namespace uneven
