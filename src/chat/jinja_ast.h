// Internal to the Jinja interpreter: lexer tokens, the syntax tree, and the entry points between files.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "chat/jinja.h"
#include "chat/jinja_value.h"

namespace uneven::jinja {

struct Pos {
  int line = 1, col = 1;
};

// One lexed piece of the template: literal text, or a tag split into expression tokens.
struct Token {
  enum class Kind { Text, ExprBegin, StmtBegin, End, Name, String, Int, Float, Op, Eof };
  Kind kind;
  std::string text;  // text, name, string value (escapes resolved), operator, or number spelling
  Pos pos;
};

// Splits the source into tokens, applying {%- -%} / {{- -}} whitespace control, trim_blocks,
// lstrip_blocks and the removal of one trailing newline (jinja2's keep_trailing_newline=False).
std::vector<Token> lex(const std::string& source);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // value
    Name,     // name
    List,     // args
    Tuple,    // args (a list at run time)
    Dict,     // kwargs: key expressions in args, values in args2, pairwise
    Attr,     // args[0].name
    Index,    // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]], null children for omitted parts
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..])
    Unary,    // name in {"-", "+", "not"} of args[0]
    Binary,   // args[0] name args[1], name an arithmetic operator or "~"
    Compare,  // args[0] ops[0] args[1] ops[1] args[2] ...  (Python chained comparison)
    And, Or,  // args[0], args[1]
    Cond,     // args[1] if args[0] else args[2] (args[2] null: undefined)
  };
  Kind kind;
  Pos pos;
  Value value;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<ExprPtr> args2;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Macro, Break, Continue, Scope };
  Kind kind;
  Pos pos;
  std::string text;                // Text; Macro name
  std::vector<std::string> names;  // For/Set targets; Macro parameters; Set "ns.attr" as {ns, attr}
  bool attr_target = false;        // Set: names = {object, attribute}
  ExprPtr expr;                    // Output, Set value, For iterable
  ExprPtr cond;                    // For filter (`for x in y if cond`)
  std::vector<ExprPtr> conds;      // If: one per branch; a trailing else has no condition
  std::vector<Body> bodies;        // If branches; For {body, else}; Macro/SetBlock/Scope {body}
  std::vector<ExprPtr> defaults;   // Macro: default per parameter (null where none)
};

struct Program {
  Body body;
};

std::shared_ptr<const Program> parse(const std::string& source, const Options& options);
std::string render_program(const Program& program, const nlohmann::ordered_json& variables,
                           const Options& options);

// Built-ins (jinja_builtins.cpp). `ctx` is the error location prefix supplier: they throw plain
// uneven::Error and the evaluator adds the position.
bool has_filter(const std::string& name);
bool has_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& input, const CallArgs& args);
bool apply_test(const std::string& name, const Value& input, const CallArgs& args);
// A method of a str/dict/list value (`s.strip`, `d.items`), bound to it; undefined when none.
Value bound_method(const Value& self, const std::string& name);

}  // namespace uneven::jinja
