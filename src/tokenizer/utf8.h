// UTF-8 helpers for the tokenizers: sequence scanning, lossy repair, and Unicode normalization forms.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace uneven::utf8 {

// One step of a scan: either a complete valid character of `length` bytes, or a maximal ill-formed
// subpart (Unicode "maximal subpart" rule, as WHATWG TextDecoder and Rust's from_utf8_lossy use) of
// `length` >= 1 bytes. `truncated` says an ill-formed subpart ended only because the input ended, so
// more bytes could still complete it (what a streaming decoder must hold back).
struct Step {
  size_t length = 1;
  bool valid = false;
  bool truncated = false;
};
Step scan(std::string_view s, size_t pos);

// Code point of the valid character at `pos` of `length` bytes (from scan()).
char32_t decode(std::string_view s, size_t pos, size_t length);
void append(std::string& out, char32_t cp);
bool is_valid(std::string_view s);
// Replaces every maximal ill-formed subpart by U+FFFD; valid input is returned unchanged.
std::string repair(std::string_view s);

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s test).
bool is_whitespace(char32_t cp);
// Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
bool is_word_char(char32_t cp);

enum class Form { NFC, NFD, NFKC, NFKD };
// Normalizes valid UTF-8 (callers repair first). Pure ASCII returns unchanged without a copy cost.
std::string normalize(std::string_view s, Form form);

}  // namespace uneven::utf8
