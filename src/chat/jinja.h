// Public API of the Jinja chat-template interpreter: parse a template once, render it with JSON variables.
#pragma once
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "util/error.h"

namespace uneven::jinja {

// Bounds that keep a hostile template from hanging or exhausting the server; exceeding one throws
// uneven::Error naming the limit.
struct Options {
  size_t max_output_bytes = 16u << 20;  // rendered text, macro output included
  int64_t max_iterations = 1000000;     // loop iterations of one render, all loops together
  int max_depth = 100;                  // nesting of macro calls, and of the parse (blocks, brackets)
  // The clock behind strftime_now(); local time now when empty. Tests inject a fixed time.
  std::function<std::tm()> now;
};

struct Program;  // the parsed template (jinja_ast.h)

// What raise_exception('...') in a template throws: what() is exactly the template's message.
class RaisedError : public Error {
 public:
  using Error::Error;
};

// A parsed template. Parsing throws uneven::Error with line:column on bad syntax; render() throws
// uneven::Error with line:column on runtime failures and the template's own text for raise_exception.
// Semantics follow Python's jinja2 as transformers configures it (trim_blocks, lstrip_blocks,
// loopcontrols, ImmutableSandboxedEnvironment, json.dumps-like tojson with ensure_ascii=False).
class Template {
 public:
  explicit Template(const std::string& source, Options options = {});
  // `variables` must be an object; ordered_json keeps dict key order, which tojson output depends on.
  std::string render(const nlohmann::ordered_json& variables) const;

 private:
  std::shared_ptr<const Program> program_;
  Options options_;
};

}  // namespace uneven::jinja
