// Normalizers of tokenizer.json: Unicode forms, Sequence, Prepend, Replace, Lowercase, Strip.
#include <utf8proc.h>

#include "tokenizer/components.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(utf8::Form form) : form_(form) {}
  std::string normalize(std::string text) const override { return utf8::normalize(text, form_); }

 private:
  utf8::Form form_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string text) const override {
    for (const auto& s : steps_) text = s->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

// Replaces every occurrence of a literal string or every match of a regex.
class Replace : public Normalizer {
 public:
  Replace(const nlohmann::json& j, const std::string& source) {
    const auto& pattern = json_get::required(j, "pattern", source);
    content_ = json_get::string(j, "content", "", source);
    if (pattern.contains("String")) literal_ = pattern["String"].get<std::string>();
    else if (pattern.contains("Regex")) regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), source);
    else fail("{}: Replace pattern must hold 'String' or 'Regex', got {}", source, pattern.dump());
  }
  std::string normalize(std::string text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (regex_) {
      regex_->find_all(text, matches);
    } else if (!literal_.empty()) {
      for (size_t p = text.find(literal_); p != std::string::npos; p = text.find(literal_, p + literal_.size()))
        matches.emplace_back(p, p + literal_.size());
    }
    if (matches.empty()) return text;
    std::string out;
    size_t prev = 0;
    for (auto [b, e] : matches) {
      out.append(text, prev, b - prev);
      out += content_;
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    return out;
  }

 private:
  std::string literal_, content_;
  std::unique_ptr<Regex> regex_;
};

class Lowercase : public Normalizer {
 public:
  std::string normalize(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      const size_t len = utf8::scan(text, i).length;
      utf8::append(out, char32_t(utf8proc_tolower(utf8proc_int32_t(utf8::decode(text, i, len)))));
      i += len;
    }
    return out;
  }
};

// Strips Unicode whitespace from the left and/or right end.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string text) const override {
    size_t b = 0, e = text.size();
    while (left_ && b < e) {
      const size_t len = utf8::scan(text, b).length;
      if (!utf8::is_whitespace(utf8::decode(text, b, len))) break;
      b += len;
    }
    while (right_ && e > b) {
      size_t i = e - 1;
      while (i > b && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
      if (!utf8::is_whitespace(utf8::decode(text, i, e - i))) break;
      e = i;
    }
    return text.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  const std::string type = json_get::string(j, "type", "", source + " normalizer");
  const std::string where = source + " normalizer " + type;
  if (type == "NFC") return std::make_unique<UnicodeForm>(utf8::Form::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(utf8::Form::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(utf8::Form::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(utf8::Form::NFKD);
  if (type == "Prepend") return std::make_unique<Prepend>(json_get::string(j, "prepend", "", where));
  if (type == "Replace") return std::make_unique<Replace>(j, where);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(json_get::boolean(j, "strip_left", true, where),
                                             json_get::boolean(j, "strip_right", true, where));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& s : json_get::required(j, "normalizers", where))
      if (auto n = make_normalizer(s, source)) steps.push_back(std::move(n));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  fail("{}: unsupported normalizer type '{}' (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Lowercase, "
       "Strip, Sequence)", source, type);
}

}  // namespace uneven
