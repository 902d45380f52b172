// StreamDecoder: emits text only in whole UTF-8 characters, holding back an incomplete tail.
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace uneven {

std::string StreamDecoder::push(TokenId id) {
  if (tokenizer_.is_special(id)) {  // control tokens (BOS, <|im_start|>, ...) are not text to show
    prev_ = id;
    return {};
  }
  std::string bytes = tokenizer_.token_bytes(id);
  if (prev_ >= 0 && prev_ == tokenizer_.bos_id() && tokenizer_.strips_space_after_bos() && !bytes.empty() &&
      bytes[0] == ' ')
    bytes.erase(0, 1);
  prev_ = id;
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const utf8::Step st = utf8::scan(pending_, i);
    if (st.truncated) break;  // may still complete with the next token's bytes
    if (st.valid) out.append(pending_, i, st.length);
    else out += "\xEF\xBF\xBD";
    i += st.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = pending_.empty() ? std::string() : utf8::repair(pending_);
  pending_.clear();
  return out;
}

}  // namespace uneven
