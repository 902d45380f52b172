// GPT-2's byte-level alphabet: each of the 256 byte values stands as one printable code point, so
// byte-level BPE vocabularies are ordinary text.
#pragma once
#include <string>
#include <string_view>

namespace uneven::byte_level {

// Bytes -> their alphabet characters (UTF-8), e.g. ' ' -> "Ġ", '\n' -> "Ċ".
std::string encode(std::string_view bytes);
// Alphabet characters -> bytes appended to `out`. Returns false, leaving `out` unchanged, when
// `text` holds a character outside the alphabet (Hugging Face then keeps the token's own bytes).
bool decode(std::string_view text, std::string& out);

}  // namespace uneven::byte_level
