// Lexer: template text and tags into tokens, with jinja2's whitespace control (as transformers sets it).
#include <algorithm>
#include <cstring>

#include "chat/jinja_ast.h"
#include "util/error.h"

namespace uneven::jinja {
namespace {

class Lexer {
 public:
  explicit Lexer(const std::string& source) {
    // jinja2 normalizes newlines in text and string literals alike, and drops one trailing newline.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t i = 0;
    bool line_starting = true;  // the previous tag's end consumed a newline (or we are at the start)
    while (i < src_.size()) {
      size_t j = find_tag(i);
      std::string text = src_.substr(i, j - i);
      if (j == src_.size()) {
        emit_text(std::move(text), i);
        break;
      }
      char type = src_[j + 1];  // '{', '%' or '#'
      char sign = j + 2 < src_.size() ? src_[j + 2] : 0;
      if (sign == '-') {
        rstrip_space(text);
      } else if (type != '{' && sign != '+') {
        // lstrip_blocks: spaces and tabs between the line start and a block or comment tag go.
        size_t l = text.rfind('\n');
        l = l == std::string::npos ? 0 : l + 1;
        if ((l > 0 || line_starting) && text.find_first_not_of(" \t", l) == std::string::npos) text.resize(l);
      }
      emit_text(std::move(text), i);
      size_t body = j + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (type == '#') {
        size_t end = src_.find("#}", body);
        if (end == std::string::npos) fail("chat template {}: unclosed comment", where(j));
        bool strip = end > body && src_[end - 1] == '-';
        i = end + 2;
        line_starting = after_end(i, strip, true);
        continue;
      }
      tokens_.push_back({type == '{' ? Token::Kind::ExprBegin : Token::Kind::StmtBegin, "", pos(j)});
      size_t first = tokens_.size();
      i = lex_tag(body, type == '{', &line_starting);
      if (type == '%' && tokens_.size() > first && tokens_[first].kind == Token::Kind::Name &&
          tokens_[first].text == "raw")
        i = lex_raw(i, &line_starting);
    }
    tokens_.push_back({Token::Kind::Eof, "", pos(src_.size())});
    return std::move(tokens_);
  }

 private:
  std::string where(size_t offset) const {
    Pos p = pos(offset);
    return std::to_string(p.line) + ":" + std::to_string(p.col);
  }
  Pos pos(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = size_t(it - line_starts_.begin());
    return {int(line), int(offset - line_starts_[line - 1]) + 1};
  }

  size_t find_tag(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k)
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    return src_.size();
  }

  void emit_text(std::string text, size_t at) {
    if (!text.empty()) tokens_.push_back({Token::Kind::Text, std::move(text), pos(at)});
  }

  static void rstrip_space(std::string& s) {
    std::u32string u = utf8_decode(s);
    size_t n = u.size();
    while (n > 0 && is_py_space(u[n - 1])) --n;
    if (n != u.size()) s = utf8_encode(std::u32string_view(u).substr(0, n));
  }

  // After a tag's closing delimiter at `i`: `-` strips all following whitespace; trim_blocks drops
  // one newline after a block or comment tag. Returns whether what was consumed ended with a newline.
  bool after_end(size_t& i, bool strip, bool block) {
    if (strip) {
      size_t k = i;
      bool nl = false;
      while (k < src_.size()) {
        std::u32string c = utf8_decode(std::string_view(src_).substr(k, 4)).substr(0, 1);
        if (c.empty() || !is_py_space(c[0])) break;
        size_t len = utf8_encode(c).size();
        nl = c[0] == '\n';
        k += len;
      }
      i = k;
      return nl;
    }
    if (block && i < src_.size() && src_[i] == '\n') {
      ++i;
      return true;
    }
    return false;
  }

  size_t lex_tag(size_t i, bool is_expr, bool* line_starting) {
    int depth = 0;  // brackets open: a closing delimiter only counts outside them, as in jinja2
    size_t tag_start = i;
    while (true) {
      while (i < src_.size() && (src_[i] == ' ' || src_[i] == '\t' || src_[i] == '\n')) ++i;
      if (i >= src_.size())
        fail("chat template {}: unclosed tag (missing '{}')", where(tag_start), is_expr ? "}}" : "%}");
      if (depth == 0) {
        const char* close = is_expr ? "}}" : "%}";
        bool minus = src_[i] == '-' && src_.compare(i + 1, 2, close) == 0;
        bool plus = !is_expr && src_[i] == '+' && src_.compare(i + 1, 2, close) == 0;
        if (minus || plus || src_.compare(i, 2, close) == 0) {
          tokens_.push_back({Token::Kind::End, "", pos(i)});
          i += (minus || plus) ? 3 : 2;
          *line_starting = after_end(i, minus, !is_expr && !plus);
          return i;
        }
      }
      Pos p = pos(i);
      char c = src_[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t k = i;
        while (k < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[k])) || src_[k] == '_')) ++k;
        tokens_.push_back({Token::Kind::Name, src_.substr(i, k - i), p});
        i = k;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        i = lex_number(i, p);
      } else if (c == '\'' || c == '"') {
        i = lex_string(i, p);
      } else {
        static const char* two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (const char* t : two)
          if (src_.compare(i, 2, t) == 0) op = t;
        if (op.size() == 1 && !std::strchr("+-*/%~<>=()[]{}.,:|", c))
          fail("chat template {}: unexpected character '{}'", where(i), c);
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail("chat template {}: unexpected '{}'", where(i), op);
          --depth;
        }
        tokens_.push_back({Token::Kind::Op, op, p});
        i += op.size();
      }
    }
  }

  size_t lex_number(size_t i, Pos p) {
    size_t k = i;
    auto digits = [&] {
      while (k < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[k])) || src_[k] == '_')) ++k;
    };
    digits();
    bool is_float = false;
    if (k + 1 < src_.size() && src_[k] == '.' && std::isdigit(static_cast<unsigned char>(src_[k + 1]))) {
      is_float = true;
      ++k;
      digits();
    }
    if (k < src_.size() && (src_[k] == 'e' || src_[k] == 'E')) {
      size_t e = k + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        is_float = true;
        k = e;
        digits();
      }
    }
    std::string text;
    for (size_t q = i; q < k; ++q)
      if (src_[q] != '_') text += src_[q];
    tokens_.push_back({is_float ? Token::Kind::Float : Token::Kind::Int, text, p});
    return k;
  }

  // Python's unicode-escape rules, as jinja2 applies them to string literals.
  size_t lex_string(size_t i, Pos p) {
    char q = src_[i];
    std::string out;
    size_t k = i + 1;
    while (true) {
      if (k >= src_.size()) fail("chat template {}:{}: unterminated string literal", p.line, p.col);
      char c = src_[k];
      if (c == q) break;
      if (c != '\\' || k + 1 >= src_.size()) { out += c; ++k; continue; }
      char e = src_[k + 1];
      k += 2;
      auto hex = [&](int n) {
        if (k + size_t(n) > src_.size()) fail("chat template {}:{}: truncated \\x/\\u escape", p.line, p.col);
        char32_t v = 0;
        for (int d = 0; d < n; ++d) {
          char h = src_[k + size_t(d)];
          if (!std::isxdigit(static_cast<unsigned char>(h)))
            fail("chat template {}:{}: bad escape digit '{}'", p.line, p.col, h);
          v = v * 16 + char32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        k += size_t(n);
        if (v > 0x10ffff) fail("chat template {}:{}: escape out of range", p.line, p.col);
        out += utf8_encode(std::u32string_view(&v, 1));
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = char32_t(e - '0');
            for (int d = 0; d < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++d, ++k)
              v = v * 8 + char32_t(src_[k] - '0');
            out += utf8_encode(std::u32string_view(&v, 1));
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    tokens_.push_back({Token::Kind::String, out, p});
    return k + 1;
  }

  // {% raw %}...{% endraw %}: the text between is literal.
  size_t lex_raw(size_t i, bool* line_starting) {
    for (size_t k = i; (k = src_.find("{%", k)) != std::string::npos; k += 2) {
      size_t m = k + 2;
      bool minus = m < src_.size() && src_[m] == '-';
      if (minus || (m < src_.size() && src_[m] == '+')) ++m;
      while (m < src_.size() && std::isspace(static_cast<unsigned char>(src_[m]))) ++m;
      if (src_.compare(m, 6, "endraw") != 0) continue;
      m += 6;
      while (m < src_.size() && std::isspace(static_cast<unsigned char>(src_[m]))) ++m;
      bool end_minus = m < src_.size() && src_[m] == '-';
      if (end_minus) ++m;
      if (src_.compare(m, 2, "%}") != 0) continue;
      std::string text = src_.substr(i, k - i);
      if (minus) rstrip_space(text);
      emit_text(std::move(text), i);
      tokens_.push_back({Token::Kind::StmtBegin, "", pos(k)});
      tokens_.push_back({Token::Kind::Name, "endraw", pos(k)});
      tokens_.push_back({Token::Kind::End, "", pos(m)});
      m += 2;
      *line_starting = after_end(m, end_minus, true);
      return m;
    }
    fail("chat template {}: 'raw' block without 'endraw'", where(i));
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(const std::string& source) { return Lexer(source).run(); }

}  // namespace uneven::jinja
