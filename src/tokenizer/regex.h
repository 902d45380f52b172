// A PCRE2 regex (UTF + UCP + JIT) compiled from a Hugging Face pre-tokenizer pattern (Oniguruma syntax).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace uneven {

class Regex {
 public:
  // `source` names the file/field for error messages. Throws uneven::Error on a bad pattern.
  Regex(std::string_view pattern, std::string_view source);
  // Appends the byte ranges [begin, end) of successive leftmost non-overlapping non-empty matches.
  // `text` must be valid UTF-8 (the tokenizer repairs input before any regex sees it).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  // Oniguruma -> PCRE2: the classes whose meaning differs (\w keeps marks, \h is a hex digit).
  // \s needs no change: with UCP, PCRE2's \s is Unicode White_Space, exactly Oniguruma's \s.
  static std::string translate(std::string_view pattern);

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8, freed by pcre2_code_free
};

}  // namespace uneven
