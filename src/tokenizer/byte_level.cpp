// The byte <-> code point table of GPT-2's bytes_to_unicode(), built once.
#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace uneven::byte_level {
namespace {

struct Tables {
  std::array<std::string, 256> byte_to_text;  // UTF-8 of each byte's character
  std::array<int16_t, 324> char_to_byte;      // indexed by code point; every alphabet character is < 324
  Tables() {
    char_to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes take 256, 257, ... in byte order.
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = printable(b) ? char32_t(b) : char32_t(next++);
      utf8::append(byte_to_text[size_t(b)], cp);
      char_to_byte[cp] = int16_t(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_text[static_cast<unsigned char>(c)];
  return out;
}

bool decode(std::string_view text, std::string& out) {
  const Tables& t = tables();
  const size_t start = out.size();
  for (size_t i = 0; i < text.size();) {
    utf8::Step st = utf8::scan(text, i);
    const char32_t cp = st.valid ? utf8::decode(text, i, st.length) : 0xFFFD;
    if (cp >= t.char_to_byte.size() || t.char_to_byte[cp] < 0) {
      out.resize(start);
      return false;
    }
    out += char(t.char_to_byte[cp]);
    i += st.length;
  }
  return true;
}

}  // namespace uneven::byte_level
