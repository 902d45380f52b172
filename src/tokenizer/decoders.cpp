// Decoders of tokenizer.json: ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence.
#include "tokenizer/byte_level.h"
#include "tokenizer/components.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

const std::string kReplacementChar = "\xEF\xBF\xBD";

// Joins the tokens and maps the byte-level alphabet back to bytes; a token with any character outside
// the alphabet (an added token such as "<|im_start|>" maps fine; "\n" would not) keeps its own bytes.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool raw) const override {
    std::string bytes;
    for (const std::string& t : tokens)
      if (!byte_level::decode(t, bytes)) bytes += t;
    tokens.assign(1, raw ? bytes : utf8::repair(bytes));
  }
};

// <0xXX> tokens become bytes; a run of them that is not valid UTF-8 gives one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool raw) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (raw || utf8::is_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.push_back(kReplacementChar);
      }
      run.clear();
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = hex_byte(t[3], t[4]);
      if (byte >= 0) {
        run += char(byte);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int hex_byte(char a, char b) {
    const int h = hex_digit(a), l = hex_digit(b);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens, bool raw) const override {
    if (raw || content_.empty()) return;  // stripping belongs to whole-text decoding, not to one streamed token
    for (std::string& t : tokens) {
      size_t b = 0, e = t.size();
      for (size_t i = 0; i < start_ && t.compare(b, content_.size(), content_) == 0 && b < e; ++i) b += content_.size();
      for (size_t i = 0; i < stop_ && e >= b + content_.size() &&
                         t.compare(e - content_.size(), content_.size(), content_) == 0; ++i)
        e -= content_.size();
      t = t.substr(b, e - b);
    }
  }
  bool strips_leading_space() const override { return content_ == " " && start_ > 0; }

 private:
  std::string content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const nlohmann::json& j, const std::string& source) {
    const auto& pattern = json_get::required(j, "pattern", source);
    content_ = json_get::string(j, "content", "", source);
    if (pattern.contains("String")) literal_ = pattern["String"].get<std::string>();
    else if (pattern.contains("Regex")) regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), source);
    else fail("{}: Replace pattern must hold 'String' or 'Regex', got {}", source, pattern.dump());
  }
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& t : tokens) {
      matches.clear();
      if (regex_) {
        if (utf8::is_valid(t)) regex_->find_all(t, matches);
      } else if (!literal_.empty()) {
        for (size_t p = t.find(literal_); p != std::string::npos; p = t.find(literal_, p + literal_.size()))
          matches.emplace_back(p, p + literal_.size());
      }
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (auto [b, e] : matches) {
        out.append(t, prev, b - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string literal_, content_;
  std::unique_ptr<Regex> regex_;
};

// Replacement characters become spaces, except in the first token (when a prefix was prepended),
// where Hugging Face drops them all.
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends) : replacement_(std::move(replacement)), prepends_(prepends) {}
  void decode_chain(std::vector<std::string>& tokens, bool raw) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool drop = prepends_ && i == 0 && !raw;
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (!replacement_.empty() && t.compare(p, replacement_.size(), replacement_) == 0) {
          if (!drop) out += ' ';
          p += replacement_.size();
        } else {
          out += t[p++];
        }
      }
      tokens[i] = std::move(out);
    }
  }
  bool strips_leading_space() const override { return prepends_; }

 private:
  std::string replacement_;
  bool prepends_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens, bool raw) const override {
    for (const auto& s : steps_) s->decode_chain(tokens, raw);
  }
  bool strips_leading_space() const override {
    for (const auto& s : steps_)
      if (s->strips_leading_space()) return true;
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  const std::string type = json_get::string(j, "type", "", source + " decoder");
  const std::string where = source + " decoder " + type;
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto count = [&](const char* key) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 0)
        fail("{}: '{}' must be a non-negative integer", where, key);
      return it->get<size_t>();
    };
    return std::make_unique<StripDecoder>(json_get::string(j, "content", " ", where), count("start"), count("stop"));
  }
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, where);
  if (type == "Metaspace") {
    std::string scheme = json_get::string(j, "prepend_scheme", "", where);
    if (scheme.empty()) scheme = json_get::boolean(j, "add_prefix_space", true, where) ? "always" : "never";
    return std::make_unique<MetaspaceDecoder>(json_get::string(j, "replacement", "\xE2\x96\x81", where), scheme != "never");
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& s : json_get::required(j, "decoders", where))
      if (auto d = make_decoder(s, source)) steps.push_back(std::move(d));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  fail("{}: unsupported decoder type '{}' (supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, "
       "Sequence)", source, type);
}

}  // namespace uneven
