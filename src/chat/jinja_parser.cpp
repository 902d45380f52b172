// Parser: tokens into the statement tree and expression trees, with jinja2's operator precedence.
#include <cerrno>
#include <cstdlib>
#include <set>

#include "chat/jinja_ast.h"
#include "util/error.h"

namespace uneven::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Options& options) : t_(std::move(tokens)), max_depth_(options.max_depth) {}

  std::shared_ptr<const Program> run() {
    auto program = std::make_shared<Program>();
    std::string stop = parse_body(program->body, {});
    (void)stop;
    return program;
  }

 private:
  // Guards the recursion of blocks and of expressions: a hostile template cannot overflow the stack.
  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, Pos at) : p(parser) {
      if (++p.depth_ > p.max_depth_)
        fail("chat template {}:{}: nesting deeper than {} levels", at.line, at.col, p.max_depth_);
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  [[noreturn]] void error(const Token& at, const std::string& what) const {
    fail("chat template {}:{}: {}", at.pos.line, at.pos.col, what);
  }
  std::string describe(const Token& t) const {
    switch (t.kind) {
      case Token::Kind::End: return "end of tag";
      case Token::Kind::Eof: return "end of template";
      case Token::Kind::Text: return "template text";
      case Token::Kind::String: return "string '" + t.text + "'";
      default: return "'" + t.text + "'";
    }
  }
  bool is_op(const char* op) const { return cur().kind == Token::Kind::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().kind == Token::Kind::Name && cur().text == name; }
  void expect_op(const char* op) {
    if (!is_op(op)) error(cur(), std::string("expected '") + op + "', found " + describe(cur()));
    ++i_;
  }
  std::string expect_name() {
    if (cur().kind != Token::Kind::Name) error(cur(), "expected a name, found " + describe(cur()));
    return t_[i_++].text;
  }
  void expect_end() {
    if (cur().kind != Token::Kind::End) error(cur(), "expected end of tag, found " + describe(cur()));
    ++i_;
  }

  // Parses nodes until a tag named in `stop` (consumed up to its name) or the end of the template.
  std::string parse_body(Body& body, const std::set<std::string>& stop) {
    static const std::set<std::string> closers = {"elif", "else", "endif", "endfor", "endset", "endmacro",
                                                  "endgeneration", "endraw", "endfilter", "endcall"};
    while (true) {
      const Token& t = cur();
      if (t.kind == Token::Kind::Eof) {
        if (!stop.empty()) error(t, "unexpected end of template, expected '" + *stop.rbegin() + "'");
        return "";
      }
      if (t.kind == Token::Kind::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Text;
        n->pos = t.pos;
        n->text = t.text;
        body.push_back(std::move(n));
        ++i_;
      } else if (t.kind == Token::Kind::ExprBegin) {
        ++i_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Output;
        n->pos = t.pos;
        n->expr = parse_tuple();
        expect_end();
        body.push_back(std::move(n));
      } else if (t.kind == Token::Kind::StmtBegin) {
        ++i_;
        const Token& kw = cur();
        if (kw.kind != Token::Kind::Name) error(kw, "expected a tag name, found " + describe(kw));
        if (stop.count(kw.text)) {
          ++i_;
          return kw.text;
        }
        if (closers.count(kw.text)) error(kw, "unexpected '" + kw.text + "'");
        body.push_back(parse_statement());
      } else {
        error(t, "unexpected " + describe(t));
      }
    }
  }

  NodePtr parse_statement() {
    const Token kw = t_[i_++];
    DepthGuard guard(*this, kw.pos);
    auto n = std::make_unique<Node>();
    n->pos = kw.pos;
    const std::string& k = kw.text;
    if (k == "if") {
      n->kind = Node::Kind::If;
      n->conds.push_back(parse_tuple());
      expect_end();
      while (true) {
        n->bodies.emplace_back();
        std::string s = parse_body(n->bodies.back(), {"elif", "else", "endif"});
        if (s == "elif") {
          n->conds.push_back(parse_tuple());
          expect_end();
        } else if (s == "else") {
          expect_end();
          n->bodies.emplace_back();
          parse_body(n->bodies.back(), {"endif"});
          expect_end();
          break;
        } else {
          expect_end();
          break;
        }
      }
    } else if (k == "for") {
      n->kind = Node::Kind::For;
      n->names.push_back(expect_name());
      while (is_op(",")) {
        ++i_;
        n->names.push_back(expect_name());
      }
      if (!is_name("in")) error(cur(), "expected 'in' in for loop, found " + describe(cur()));
      ++i_;
      n->expr = parse_tuple(/*with_cond=*/false);
      if (is_name("if")) {
        ++i_;
        n->cond = parse_expr();
      }
      if (is_name("recursive")) error(cur(), "recursive for loops are not supported");
      expect_end();
      n->bodies.resize(2);
      if (parse_body(n->bodies[0], {"else", "endfor"}) == "else") {
        expect_end();
        parse_body(n->bodies[1], {"endfor"});
      }
      expect_end();
    } else if (k == "set") {
      n->names.push_back(expect_name());
      if (is_op(".")) {
        ++i_;
        n->names.push_back(expect_name());
        n->attr_target = true;
      } else {
        while (is_op(",")) {
          ++i_;
          n->names.push_back(expect_name());
        }
      }
      if (is_op("=")) {
        ++i_;
        n->kind = Node::Kind::Set;
        n->expr = parse_tuple();
        expect_end();
      } else {
        if (n->attr_target || n->names.size() != 1) error(cur(), "a block set takes one plain name");
        n->kind = Node::Kind::SetBlock;
        expect_end();
        n->bodies.emplace_back();
        parse_body(n->bodies[0], {"endset"});
        expect_end();
      }
    } else if (k == "macro") {
      n->kind = Node::Kind::Macro;
      n->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        n->names.push_back(expect_name());
        if (is_op("=")) {
          ++i_;
          n->defaults.push_back(parse_expr());
        } else {
          n->defaults.push_back(nullptr);
        }
        if (!is_op(")")) expect_op(",");
      }
      ++i_;
      expect_end();
      n->bodies.emplace_back();
      parse_body(n->bodies[0], {"endmacro"});
      if (cur().kind == Token::Kind::Name && cur().text == n->text) ++i_;
      expect_end();
    } else if (k == "break" || k == "continue") {
      n->kind = k == "break" ? Node::Kind::Break : Node::Kind::Continue;
      expect_end();
    } else if (k == "generation" || k == "raw") {
      // {% generation %} marks assistant text for transformers' mask; rendering ignores it.
      n->kind = Node::Kind::Scope;
      expect_end();
      n->bodies.emplace_back();
      parse_body(n->bodies[0], {k == "raw" ? "endraw" : "endgeneration"});
      expect_end();
    } else {
      error(kw, "unknown or unsupported tag '" + k + "'");
    }
    return n;
  }

  ExprPtr make(Expr::Kind kind, Pos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  // An expression, or several separated by commas (a tuple: `{% set a = 1, 2 %}`).
  ExprPtr parse_tuple(bool with_cond = true) {
    Pos p = cur().pos;
    ExprPtr first = with_cond ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::Tuple, p);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (cur().kind == Token::Kind::End) break;
      t->args.push_back(with_cond ? parse_expr() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expr() {
    DepthGuard guard(*this, cur().pos);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      auto c = make(Expr::Kind::Cond, cur().pos);
      ++i_;
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (is_name("else")) {
        ++i_;
        otherwise = parse_expr();
      }
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(otherwise));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Expr::Kind kind, Pos p, ExprPtr a, ExprPtr b, std::string op = "") {
    auto e = make(kind, p);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      Pos p = cur().pos;
      ++i_;
      e = binary(Expr::Kind::Or, p, std::move(e), parse_and());
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      Pos p = cur().pos;
      ++i_;
      e = binary(Expr::Kind::And, p, std::move(e), parse_not());
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this, cur().pos);
      auto e = make(Expr::Kind::Unary, cur().pos);
      ++i_;
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    Pos p = cur().pos;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == Token::Kind::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        ++i_;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && peek().kind == Token::Kind::Name && peek().text == "in") {
        op = "not in";
        i_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::Compare, p);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      Pos p = cur().pos;
      std::string op = t_[i_++].text;
      e = binary(Expr::Kind::Binary, p, std::move(e), parse_concat(), op);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      Pos p = cur().pos;
      ++i_;
      e = binary(Expr::Kind::Binary, p, std::move(e), parse_math2(), "~");
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Pos p = cur().pos;
      std::string op = t_[i_++].text;
      e = binary(Expr::Kind::Binary, p, std::move(e), parse_pow(), op);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary();
    while (is_op("**")) {
      Pos p = cur().pos;
      ++i_;
      e = binary(Expr::Kind::Binary, p, std::move(e), parse_unary(), "**");
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter = true) {
    DepthGuard guard(*this, cur().pos);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(Expr::Kind::Unary, cur().pos);
      e->name = t_[i_++].text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    Pos p = t.pos;
    switch (t.kind) {
      case Token::Kind::Name: {
        ++i_;
        auto e = make(Expr::Kind::Literal, p);
        if (t.text == "true" || t.text == "True") e->value = Value(true);
        else if (t.text == "false" || t.text == "False") e->value = Value(false);
        else if (t.text == "none" || t.text == "None") e->value = Value::none();
        else {
          e->kind = Expr::Kind::Name;
          e->name = t.text;
        }
        return e;
      }
      case Token::Kind::String: {
        std::string s;
        while (cur().kind == Token::Kind::String) s += t_[i_++].text;
        auto e = make(Expr::Kind::Literal, p);
        e->value = Value(std::move(s));
        return e;
      }
      case Token::Kind::Int: {
        ++i_;
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(t.text.c_str(), &end, 10);
        if (errno == ERANGE) error(t, "integer literal " + t.text + " out of range");
        auto e = make(Expr::Kind::Literal, p);
        e->value = Value(int64_t(v));
        return e;
      }
      case Token::Kind::Float: {
        ++i_;
        auto e = make(Expr::Kind::Literal, p);
        e->value = Value(std::strtod(t.text.c_str(), nullptr));
        return e;
      }
      case Token::Kind::Op:
        if (t.text == "(") {
          ++i_;
          if (is_op(")")) {
            ++i_;
            return make(Expr::Kind::Tuple, p);
          }
          ExprPtr e = parse_expr();
          if (is_op(",")) {
            auto tup = make(Expr::Kind::Tuple, p);
            tup->args.push_back(std::move(e));
            while (is_op(",")) {
              ++i_;
              if (is_op(")")) break;
              tup->args.push_back(parse_expr());
            }
            e = std::move(tup);
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          ++i_;
          auto e = make(Expr::Kind::List, p);
          while (!is_op("]")) {
            e->args.push_back(parse_expr());
            if (!is_op("]")) expect_op(",");
          }
          ++i_;
          return e;
        }
        if (t.text == "{") {
          ++i_;
          auto e = make(Expr::Kind::Dict, p);
          while (!is_op("}")) {
            e->args.push_back(parse_expr());
            expect_op(":");
            e->args2.push_back(parse_expr());
            if (!is_op("}")) expect_op(",");
          }
          ++i_;
          return e;
        }
        break;
      default: break;
    }
    error(t, "unexpected " + describe(t) + " in expression");
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) error(cur(), "*args and **kwargs in calls are not supported");
      if (cur().kind == Token::Kind::Name && peek().kind == Token::Kind::Op && peek().text == "=") {
        std::string key = t_[i_].text;
        i_ += 2;
        call.kwargs.emplace_back(key, parse_expr());
      } else {
        if (!call.kwargs.empty()) error(cur(), "positional argument after keyword argument");
        call.args.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++i_;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      Pos p = cur().pos;
      if (is_op(".")) {
        ++i_;
        if (cur().kind == Token::Kind::Int) {
          auto idx = make(Expr::Kind::Index, p);
          auto lit = make(Expr::Kind::Literal, cur().pos);
          lit->value = Value(int64_t(std::strtoll(cur().text.c_str(), nullptr, 10)));
          ++i_;
          idx->args.push_back(std::move(e));
          idx->args.push_back(std::move(lit));
          e = std::move(idx);
        } else {
          auto a = make(Expr::Kind::Attr, p);
          a->name = expect_name();
          a->args.push_back(std::move(e));
          e = std::move(a);
        }
      } else if (is_op("[")) {
        ++i_;
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expr();
          if (k < 2 && is_op(":")) {
            slice = true;
            ++i_;
          } else {
            break;
          }
        }
        expect_op("]");
        auto s = make(slice ? Expr::Kind::Slice : Expr::Kind::Index, p);
        if (!slice && !parts[0]) error(cur(), "empty subscript");
        s->args.push_back(std::move(e));
        s->args.push_back(std::move(parts[0]));
        if (slice) {
          s->args.push_back(std::move(parts[1]));
          s->args.push_back(std::move(parts[2]));
        }
        e = std::move(s);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call, p);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      Pos p = cur().pos;
      if (is_op("|")) {
        ++i_;
        auto f = make(Expr::Kind::Filter, p);
        f->name = expect_name();
        while (is_op(".")) {
          ++i_;
          f->name += "." + expect_name();
        }
        if (!has_filter(f->name)) error(t_[i_ - 1], "unknown filter '" + f->name + "'");
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        ++i_;
        auto t = make(Expr::Kind::Test, p);
        if (is_name("not")) {
          ++i_;
          t->negated = true;
        }
        const Token& name_tok = cur();
        t->name = expect_name();
        if (!has_test(t->name)) error(name_tok, "unknown test '" + t->name + "'");
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((cur().kind == Token::Kind::Name || cur().kind == Token::Kind::String ||
                    cur().kind == Token::Kind::Int || cur().kind == Token::Kind::Float || is_op("[") ||
                    is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) error(cur(), "'is' after a test");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call, p);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  int max_depth_;
};

}  // namespace

std::shared_ptr<const Program> parse(const std::string& source, const Options& options) {
  return Parser(lex(source), options).run();
}

}  // namespace uneven::jinja
