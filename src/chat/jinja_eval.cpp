// Evaluator: runs the statement tree against scopes of variables, within the Options' limits.
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "chat/jinja_ast.h"
#include "chat/jinja_strings.h"
#include "util/error.h"

namespace uneven::jinja {
namespace {

constexpr const char* kPrefix = "chat template ";

// Variables of one level: the template (root), a for-loop iteration, or a macro call. `if` adds none,
// as in jinja2; a macro's parent is the root, so it sees template-level names but not its caller's.
struct Scope {
  std::unordered_map<std::string, Value> vars;
  Scope* parent = nullptr;
  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

template <class Op> int64_t checked(Op op, int64_t a, int64_t b) {
  int64_t r = 0;
  if (op(a, b, &r)) fail("integer overflow");
  return r;
}
bool add_ovf(int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); }
bool sub_ovf(int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); }
bool mul_ovf(int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); }

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value(a.to_str() + b.to_str());
  if (a.is_undefined() || b.is_undefined()) fail("undefined value in '{}'", op);
  bool nums = a.is_number() && b.is_number();
  bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) return Value(checked(add_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
    if (a.is_array() && b.is_array()) {
      Array out = a.array();
      out.insert(out.end(), b.array().begin(), b.array().end());
      return Value(std::move(out));
    }
  } else if (op == "-") {
    if (ints) return Value(checked(sub_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (ints) return Value(checked(mul_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() * b.as_double());
    const Value* seq = a.is_string() || a.is_array() ? &a : b.is_string() || b.is_array() ? &b : nullptr;
    const Value* n = seq == &a ? &b : &a;
    if (seq && (n->is_int() || n->is_bool())) {
      int64_t times = std::max<int64_t>(0, n->as_int());
      size_t unit = seq->is_string() ? seq->str().size() : seq->array().size();
      if (unit && times > int64_t((64u << 20) / unit)) fail("repetition result too large");
      if (seq->is_string()) {
        std::string out;
        for (int64_t k = 0; k < times; ++k) out += seq->str();
        return Value(std::move(out));
      }
      Array out;
      for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq->array().begin(), seq->array().end());
      return Value(std::move(out));
    }
  } else if (op == "/") {
    if (nums) {
      if (b.as_double() == 0) fail("division by zero");
      return Value(a.as_double() / b.as_double());
    }
  } else if (op == "//" || op == "%") {
    if (ints) {
      int64_t x = a.as_int(), y = b.as_int();
      if (y == 0) fail("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) fail("integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) { --q; m += y; }
      return Value(op == "//" ? q : m);
    }
    if (nums) {
      double x = a.as_double(), y = b.as_double();
      if (y == 0) fail("float division by zero");
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value(op == "//" ? std::floor(x / y) : m);
    }
    if (op == "%" && a.is_string()) fail("printf-style string formatting ('%') is not supported");
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t base = a.as_int(), out = 1;
      for (int64_t e = b.as_int(); e > 0; --e) {
        if (__builtin_mul_overflow(out, base, &out)) fail("integer overflow");
        if (out == 0 || out == 1) break;
      }
      return Value(out);
    }
    if (nums) return Value(std::pow(a.as_double(), b.as_double()));
  }
  fail("unsupported operand type(s) for {}: '{}' and '{}'", op, a.kind_name(), b.kind_name());
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::String:
      if (!item.is_string()) fail("'in <string>' requires string as left operand, not {}", item.kind_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::Array:
      for (const auto& e : container.array())
        if (values_equal(e, item)) return true;
      return false;
    case Value::Kind::Object: return item.is_string() && container.object().find(item.str()) != nullptr;
    case Value::Kind::Undefined: return false;
    default: fail("argument of type '{}' is not iterable", container.kind_name());
  }
}

bool compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return values_equal(a, b);
  if (op == "!=") return !values_equal(a, b);
  if (op == "<") return values_less(a, b);
  if (op == ">") return values_less(b, a);
  if (op == "<=") return !values_less(b, a);
  if (op == ">=") return !values_less(a, b);
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // "not in"
}

// Python's slice index normalization for a sequence of length n.
Array slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step_v) {
  auto as_index = [](const Value& v, const char* what) {
    if (!v.is_int() && !v.is_bool()) fail("slice {} must be an integer or None, not {}", what, v.kind_name());
    return v.as_int();
  };
  int64_t step = step_v.is_none() || step_v.is_undefined() ? 1 : as_index(step_v, "step");
  if (step == 0) fail("slice step cannot be zero");
  auto norm = [&](const Value& v, int64_t dflt, const char* what) {
    if (v.is_none() || v.is_undefined()) return dflt;
    int64_t i = as_index(v, what);
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t lo = norm(start, step > 0 ? 0 : n - 1, "start");
  int64_t hi = norm(stop, step > 0 ? n : -1, "stop");
  Array idx;
  for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) idx.push_back(Value(i));
  return idx;
}

class Renderer {
 public:
  Renderer(const Options& options, std::string* out) : opt_(options), out_(out) {}

  void run(const Program& program, const nlohmann::ordered_json& variables) {
    install_globals();
    if (!variables.is_object()) fail("chat template variables must be a JSON object");
    for (auto it = variables.begin(); it != variables.end(); ++it) root_.vars[it.key()] = Value::from_json(it.value());
    exec(program.body, root_);
  }

 private:
  [[noreturn]] static void rethrow_at(Pos p) {
    try {
      throw;
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.rfind(kPrefix, 0) == 0) throw;
      fail("{}{}:{}: {}", kPrefix, p.line, p.col, what);
    }
  }

  void append(const std::string& s) {
    if (out_->size() + s.size() > opt_.max_output_bytes)
      fail("chat template output exceeds the limit of {} bytes", opt_.max_output_bytes);
    *out_ += s;
  }

  void check_size(const Value& v) const {
    if (v.is_string() && v.str().size() > opt_.max_output_bytes)
      fail("string of {} bytes exceeds the limit of {} bytes", v.str().size(), opt_.max_output_bytes);
    if (v.is_array() && int64_t(v.array().size()) > opt_.max_iterations)
      fail("list of {} items exceeds the limit of {}", v.array().size(), opt_.max_iterations);
  }

  void count_iteration() {
    if (++iterations_ > opt_.max_iterations)
      fail("{}loop iterations exceed the limit of {}", kPrefix, opt_.max_iterations);
  }

  std::shared_ptr<Callable> builtin(std::string name, std::function<Value(const CallArgs&)> fn) {
    auto c = std::make_shared<Callable>();
    c->name = std::move(name);
    c->fn = std::move(fn);
    return c;
  }

  void install_globals() {
    root_.vars["raise_exception"] = Value(builtin("raise_exception", [](const CallArgs& a) -> Value {
      const Value* m = a.get(0, "message");
      throw RaisedError(m ? m->to_str() : std::string("raise_exception() called"));
    }));
    root_.vars["namespace"] = Value(builtin("namespace", [](const CallArgs& a) {
      auto o = std::make_shared<Object>();
      o->is_namespace = true;
      for (const auto& p : a.pos) {
        if (!p.is_object()) fail("namespace() positional arguments must be dicts");
        for (const auto& [k, v] : p.object().items) o->set(k, v);
      }
      for (const auto& [k, v] : a.kw) o->set(k, v);
      return Value(o);
    }));
    root_.vars["dict"] = Value(builtin("dict", [](const CallArgs& a) {
      auto o = std::make_shared<Object>();
      for (const auto& p : a.pos) {
        if (!p.is_object()) fail("dict() positional arguments must be dicts");
        for (const auto& [k, v] : p.object().items) o->set(k, v);
      }
      for (const auto& [k, v] : a.kw) o->set(k, v);
      return Value(o);
    }));
    root_.vars["range"] = Value(builtin("range", [this](const CallArgs& a) {
      for (const auto& p : a.pos)
        if (!p.is_int() && !p.is_bool()) fail("range() arguments must be integers, not {}", p.kind_name());
      if (a.pos.empty() || a.pos.size() > 3) fail("range() takes 1 to 3 arguments");
      int64_t start = a.pos.size() > 1 ? a.pos[0].as_int() : 0;
      int64_t stop = a.pos.size() > 1 ? a.pos[1].as_int() : a.pos[0].as_int();
      int64_t step = a.pos.size() > 2 ? a.pos[2].as_int() : 1;
      if (step == 0) fail("range() arg 3 must not be zero");
      double count = std::ceil((double(stop) - double(start)) / double(step));
      if (count > double(opt_.max_iterations)) fail("range() of {} items exceeds the limit of {}", count, opt_.max_iterations);
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value(i));
      return Value(std::move(out));
    }));
    root_.vars["strftime_now"] = Value(builtin("strftime_now", [this](const CallArgs& a) {
      const Value* f = a.get(0, "format");
      if (!f || !f->is_string()) fail("strftime_now() takes a format string");
      std::tm tm{};
      if (opt_.now) {
        tm = opt_.now();
      } else {
        std::time_t t = std::time(nullptr);
        localtime_r(&t, &tm);
      }
      char buf[512];
      size_t n = f->str().empty() ? 0 : std::strftime(buf, sizeof buf, f->str().c_str(), &tm);
      if (n == 0 && !f->str().empty()) fail("strftime_now(): format '{}' gave no output", f->str());
      return Value(std::string(buf, n));
    }));
  }

  Flow exec(const Body& body, Scope& scope) {
    for (const auto& n : body) {
      Flow f = exec_node(*n, scope);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec_node(const Node& n, Scope& scope) {
    switch (n.kind) {
      case Node::Kind::Text: append(n.text); return Flow::Normal;
      case Node::Kind::Output: append(eval(*n.expr, scope).to_str()); return Flow::Normal;
      case Node::Kind::If:
        for (size_t b = 0; b < n.bodies.size(); ++b)
          if (b >= n.conds.size() || eval(*n.conds[b], scope).truthy()) return exec(n.bodies[b], scope);
        return Flow::Normal;
      case Node::Kind::For: return exec_for(n, scope);
      case Node::Kind::Set: {
        Value v = eval(*n.expr, scope);
        if (n.attr_target) {
          const Value* target = scope.lookup(n.names[0]);
          if (!target || !target->is_object() || !target->object().is_namespace)
            fail("{}{}:{}: cannot assign attribute '{}' on '{}': not a namespace()", kPrefix, n.pos.line,
                 n.pos.col, n.names[1], n.names[0]);
          target->object().set(n.names[1], std::move(v));
        } else {
          assign(n, scope, std::move(v));
        }
        return Flow::Normal;
      }
      case Node::Kind::SetBlock: {
        std::string captured;
        std::string* saved = out_;
        out_ = &captured;
        exec(n.bodies[0], scope);
        out_ = saved;
        scope.vars[n.names[0]] = Value(std::move(captured));
        return Flow::Normal;
      }
      case Node::Kind::Macro: scope.vars[n.text] = make_macro(n); return Flow::Normal;
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
      case Node::Kind::Scope: return exec(n.bodies[0], scope);
    }
    return Flow::Normal;
  }

  void assign(const Node& n, Scope& scope, Value v) {
    if (n.names.size() == 1) {
      scope.vars[n.names[0]] = std::move(v);
      return;
    }
    Array items = to_list(v);
    if (items.size() != n.names.size())
      fail("{}{}:{}: cannot unpack {} values into {} names", kPrefix, n.pos.line, n.pos.col, items.size(),
           n.names.size());
    for (size_t k = 0; k < items.size(); ++k) scope.vars[n.names[k]] = items[k];
  }


  Flow exec_for(const Node& n, Scope& scope) {
    Array items;
    try {
      items = to_list(eval(*n.expr, scope));
    } catch (const Error&) {
      rethrow_at(n.expr->pos);
    }
    if (n.cond) {
      Array kept;
      for (auto& item : items) {
        count_iteration();
        Scope s{{}, &scope};
        assign(n, s, item);
        if (eval(*n.cond, s).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const int64_t len = int64_t(items.size());
    for (int64_t k = 0; k < len; ++k) {
      count_iteration();
      Scope s{{}, &scope};
      assign(n, s, items[size_t(k)]);
      auto loop = std::make_shared<Object>();
      loop->items = {{"index", Value(k + 1)},       {"index0", Value(k)},
                     {"revindex", Value(len - k)},  {"revindex0", Value(len - k - 1)},
                     {"first", Value(k == 0)},      {"last", Value(k == len - 1)},
                     {"length", Value(len)},        {"depth", Value(int64_t(1))},
                     {"depth0", Value(int64_t(0))}};
      if (k > 0) loop->items.emplace_back("previtem", items[size_t(k - 1)]);
      if (k + 1 < len) loop->items.emplace_back("nextitem", items[size_t(k + 1)]);
      loop->items.emplace_back("cycle", Value(builtin("cycle", [k](const CallArgs& a) {
        if (a.pos.empty()) fail("loop.cycle() needs at least one argument");
        return a.pos[size_t(k) % a.pos.size()];
      })));
      s.vars["loop"] = Value(loop);
      Flow f = exec(n.bodies[0], s);
      if (f == Flow::Break) break;
    }
    if (len == 0) return exec(n.bodies[1], scope);
    return Flow::Normal;
  }

  Value make_macro(const Node& n) {
    const Node* node = &n;
    return Value(builtin(n.text, [this, node](const CallArgs& a) { return call_macro(*node, a); }));
  }

  Value call_macro(const Node& n, const CallArgs& a) {
    if (a.pos.size() > n.names.size())
      fail("macro '{}' takes not more than {} argument(s), got {}", n.text, n.names.size(), a.pos.size());
    for (const auto& [k, v] : a.kw)
      if (std::find(n.names.begin(), n.names.end(), k) == n.names.end())
        fail("macro '{}' has no parameter named '{}'", n.text, k);
    if (++depth_ > opt_.max_depth) fail("macro calls nested deeper than {} levels", opt_.max_depth);
    Scope s{{}, &root_};
    for (size_t k = 0; k < n.names.size(); ++k) {
      const Value* v = a.get(k, n.names[k]);
      if (v) s.vars[n.names[k]] = *v;
      else if (n.defaults[k]) s.vars[n.names[k]] = eval(*n.defaults[k], s);
      else s.vars[n.names[k]] = Value();
    }
    std::string captured;
    std::string* saved = out_;
    out_ = &captured;
    exec(n.bodies[0], s);
    out_ = saved;
    --depth_;
    return Value(std::move(captured));
  }

  Value eval(const Expr& e, Scope& scope) {
    try {
      Value v = eval_inner(e, scope);
      check_size(v);
      return v;
    } catch (const Error&) {
      rethrow_at(e.pos);
    }
  }

  CallArgs eval_args(const Expr& e, Scope& scope, size_t first) {
    CallArgs a;
    for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k], scope));
    for (const auto& [key, x] : e.kwargs) a.kw.emplace_back(key, eval(*x, scope));
    return a;
  }

  static std::string describe(const Expr& e) {
    if (e.kind == Expr::Kind::Name) return "'" + e.name + "'";
    if (e.kind == Expr::Kind::Attr) return describe(*e.args[0]) + "." + e.name;
    return "value";
  }

  Value get_attr(const Value& obj, const std::string& name, const Expr& obj_expr) {
    if (obj.is_undefined()) fail("{} is undefined (reading attribute '{}')", describe(obj_expr), name);
    if (obj.is_object()) {
      if (!obj.object().is_namespace) {
        Value m = bound_method(obj, name);
        if (!m.is_undefined()) return m;
      }
      const Value* v = obj.object().find(name);
      return v ? *v : Value();
    }
    return bound_method(obj, name);
  }

  Value get_item(const Value& obj, const Value& key, const Expr& obj_expr) {
    if (obj.is_undefined()) fail("{} is undefined (subscripted with {})", describe(obj_expr), key.repr());
    if ((obj.is_array() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      int64_t n = obj.is_array() ? int64_t(obj.array().size()) : int64_t(obj.length());
      int64_t i = key.as_int() < 0 ? key.as_int() + n : key.as_int();
      if (i < 0 || i >= n) return Value();
      if (obj.is_array()) return obj.array()[size_t(i)];
      auto offs = utf8_offsets(obj.str());
      return Value(obj.str().substr(offs[size_t(i)], offs[size_t(i) + 1] - offs[size_t(i)]));
    }
    if (obj.is_object() && key.is_string()) {
      const Value* v = obj.object().find(key.str());
      if (v) return *v;
      return obj.object().is_namespace ? Value() : bound_method(obj, key.str());
    }
    if (key.is_string()) return bound_method(obj, key.str());
    return Value();
  }

  Value eval_inner(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Name: {
        const Value* v = scope.lookup(e.name);
        return v ? *v : Value();
      }
      case Expr::Kind::List: case Expr::Kind::Tuple: {
        Array out;
        for (const auto& x : e.args) out.push_back(eval(*x, scope));
        return e.kind == Expr::Kind::Tuple ? Value::tuple(std::move(out)) : Value(std::move(out));
      }
      case Expr::Kind::Dict: {
        auto o = std::make_shared<Object>();
        for (size_t k = 0; k < e.args.size(); ++k) {
          Value key = eval(*e.args[k], scope);
          if (!key.is_string()) fail("dict keys must be strings here, not {}", key.kind_name());
          o->set(key.str(), eval(*e.args2[k], scope));
        }
        return Value(o);
      }
      case Expr::Kind::Attr: return get_attr(eval(*e.args[0], scope), e.name, *e.args[0]);
      case Expr::Kind::Index: return get_item(eval(*e.args[0], scope), eval(*e.args[1], scope), *e.args[0]);
      case Expr::Kind::Slice: {
        Value obj = eval(*e.args[0], scope);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.args[size_t(k) + 1]) parts[k] = eval(*e.args[size_t(k) + 1], scope);
        if (obj.is_array()) {
          Array out;
          for (const auto& i : slice_indices(int64_t(obj.array().size()), parts[0], parts[1], parts[2]))
            out.push_back(obj.array()[size_t(i.as_int())]);
          return Value(std::move(out));
        }
        if (obj.is_string()) {
          std::u32string u = utf8_decode(obj.str()), out;
          for (const auto& i : slice_indices(int64_t(u.size()), parts[0], parts[1], parts[2])) out += u[size_t(i.as_int())];
          return Value(utf8_encode(out));
        }
        if (obj.is_undefined()) fail("{} is undefined (sliced)", describe(*e.args[0]));
        fail("'{}' object is not subscriptable", obj.kind_name());
      }
      case Expr::Kind::Call: {
        Value callee = eval(*e.args[0], scope);
        if (callee.is_undefined()) fail("{} is undefined (called as a function)", describe(*e.args[0]));
        if (!callee.is_callable()) fail("'{}' object is not callable", callee.kind_name());
        CallArgs a = eval_args(e, scope, 1);
        return callee.callable()->fn(a);
      }
      case Expr::Kind::Filter: {
        Value input = eval(*e.args[0], scope);
        return apply_filter(e.name, input, eval_args(e, scope, 1));
      }
      case Expr::Kind::Test: {
        Value input = eval(*e.args[0], scope);
        return Value(apply_test(e.name, input, eval_args(e, scope, 1)) != e.negated);
      }
      case Expr::Kind::Unary: {
        Value v = eval(*e.args[0], scope);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) fail("bad operand type for unary {}: '{}'", e.name, v.kind_name());
        if (e.name == "+") return v.is_float() ? v : Value(v.as_int());
        if (v.is_float()) return Value(-v.as_double());
        if (v.as_int() == INT64_MIN) fail("integer overflow");
        return Value(-v.as_int());
      }
      case Expr::Kind::Binary: return arithmetic(e.name, eval(*e.args[0], scope), eval(*e.args[1], scope));
      case Expr::Kind::Compare: {
        Value left = eval(*e.args[0], scope);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1], scope);
          if (!compare(e.ops[k], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::And: {
        Value a = eval(*e.args[0], scope);
        return a.truthy() ? eval(*e.args[1], scope) : a;
      }
      case Expr::Kind::Or: {
        Value a = eval(*e.args[0], scope);
        return a.truthy() ? a : eval(*e.args[1], scope);
      }
      case Expr::Kind::Cond:
        if (eval(*e.args[0], scope).truthy()) return eval(*e.args[1], scope);
        return e.args[2] ? eval(*e.args[2], scope) : Value();
    }
    return Value();
  }

  const Options& opt_;
  std::string* out_;
  Scope root_;
  int64_t iterations_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string render_program(const Program& program, const nlohmann::ordered_json& variables, const Options& options) {
  std::string out;
  Renderer(options, &out).run(program, variables);
  return out;
}

Template::Template(const std::string& source, Options options)
    : program_(parse(source, options)), options_(std::move(options)) {}

std::string Template::render(const nlohmann::ordered_json& variables) const {
  return render_program(*program_, variables, options_);
}

}  // namespace uneven::jinja
