// Filters and tests (`x | name(...)`, `x is name ...`) as jinja2 defines them, tojson as transformers does.
#include <cfenv>
#include <cmath>
#include <map>

#include "chat/jinja_ast.h"
#include "chat/jinja_strings.h"
#include "util/error.h"

namespace uneven::jinja {
namespace {

using FilterFn = Value (*)(const Value&, const CallArgs&);
using TestFn = bool (*)(const Value&, const CallArgs&);

bool flag(const CallArgs& a, size_t index, std::string_view name, bool fallback) {
  const Value* v = a.get(index, name);
  return v ? v->truthy() : fallback;
}

int64_t need_int(const Value& v, const char* what) {
  if (!v.is_int() && !v.is_bool()) fail("{} expects an integer, got {}", what, v.kind_name());
  return v.as_int();
}

Value f_length(const Value& v, const CallArgs&) { return Value(int64_t(v.length())); }

Value f_tojson(const Value& v, const CallArgs& a) {
  JsonFormat f;
  f.ensure_ascii = flag(a, 0, "ensure_ascii", false);
  const Value& indent = arg(a, 1, "indent", kNone);
  if (indent.is_int()) f.indent = int(std::clamp<int64_t>(indent.as_int(), 0, 64));
  else if (indent.is_string()) fail("tojson(): a string indent is not supported");
  const Value& seps = arg(a, 2, "separators", kNone);
  if (seps.is_array()) {
    if (seps.array().size() != 2) fail("tojson(): separators must be a pair");
    f.item_sep = need_str(seps.array()[0], "tojson() separators");
    f.key_sep = need_str(seps.array()[1], "tojson() separators");
  }
  f.sort_keys = flag(a, 3, "sort_keys", false);
  return Value(to_json_text(v, f));
}

Value f_trim(const Value& v, const CallArgs& a) { return Value(strip(v.to_str(), arg(a, 0, "chars", kNone), true, true)); }
Value f_upper(const Value& v, const CallArgs&) { return Value(upper(v.to_str())); }
Value f_lower(const Value& v, const CallArgs&) { return Value(lower(v.to_str())); }
Value f_capitalize(const Value& v, const CallArgs&) { return Value(capitalize(v.to_str())); }

// jinja2's title: each piece between runs of '-', whitespace and opening brackets gets first-upper, rest-lower.
Value f_title(const Value& v, const CallArgs&) {
  std::u32string u = utf8_decode(v.to_str()), out;
  auto sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_py_space(c); };
  for (size_t i = 0; i < u.size();) {
    size_t j = i;
    bool is_sep = sep(u[i]);
    while (j < u.size() && sep(u[j]) == is_sep) ++j;
    std::string piece = utf8_encode(std::u32string_view(u).substr(i, j - i));
    out += utf8_decode(is_sep ? piece : capitalize(piece));
    i = j;
  }
  return Value(utf8_encode(out));
}

Value f_default(const Value& v, const CallArgs& a) {
  bool boolean = flag(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.truthy())) return arg(a, 0, "default_value", Value(""));
  return v;
}

Value f_join(const Value& v, const CallArgs& a) {
  const std::string& d = arg(a, 0, "d", Value("")).to_str();
  const Value& attr = arg(a, 1, "attribute", kNone);
  std::string out;
  Array items = to_list(v);
  for (size_t k = 0; k < items.size(); ++k) {
    if (k) out += d;
    out += (attr.is_string() ? get_path(items[k], attr.str()) : items[k]).to_str();
  }
  return Value(out);
}

Value f_first(const Value& v, const CallArgs&) {
  Array items = to_list(v);
  return items.empty() ? Value() : items.front();
}
Value f_last(const Value& v, const CallArgs&) {
  Array items = to_list(v);
  return items.empty() ? Value() : items.back();
}
Value f_list(const Value& v, const CallArgs&) { return Value(to_list(v)); }
Value f_string(const Value& v, const CallArgs&) { return Value(v.to_str()); }
Value f_safe(const Value& v, const CallArgs&) { return v; }

Value f_escape(const Value& v, const CallArgs&) {
  std::string out;
  for (char c : v.to_str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value(out);
}

Value f_int(const Value& v, const CallArgs& a) {
  const Value& dflt = arg(a, 0, "default", Value(int64_t(0)));
  if (v.is_int() || v.is_bool()) return Value(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_double()) || std::fabs(v.as_double()) >= 9.2e18) return dflt;
    return Value(int64_t(v.as_double()));
  }
  if (v.is_string()) {
    std::string s = strip(v.str(), kNone, true, true);
    std::string digits;
    for (char c : s)
      if (c != '_') digits += c;
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(digits.c_str(), &end, 10);
    if (!digits.empty() && end && *end == 0 && errno == 0) return Value(int64_t(i));
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0 && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value(int64_t(d));
  }
  return dflt;
}

Value f_float(const Value& v, const CallArgs& a) {
  const Value& dflt = arg(a, 0, "default", Value(0.0));
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string()) {
    std::string s = strip(v.str(), kNone, true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0) return Value(d);
  }
  return dflt;
}

Value f_items(const Value& v, const CallArgs&) {
  if (v.is_undefined()) return Value(Array{});
  if (!v.is_object()) fail("items expects a mapping, got {}", v.kind_name());
  Array out;
  for (const auto& [k, x] : v.object().items) out.push_back(Value::tuple(Array{Value(k), x}));
  return Value(out);
}

// select/reject/selectattr/rejectattr: keep the items whose (attribute's) test result equals `keep`.
Value select_impl(const Value& v, const CallArgs& a, bool by_attr, bool keep) {
  size_t first = 0;
  std::string attr;
  if (by_attr) attr = need_str(arg(a, first++, "attribute", kUndefined), "selectattr()");
  const Value* test = a.get(first, "");
  CallArgs test_args;
  for (size_t k = first + 1; k < a.pos.size(); ++k) test_args.pos.push_back(a.pos[k]);
  Array out;
  for (const auto& item : to_list(v)) {
    Value x = by_attr ? get_path(item, attr) : item;
    bool ok = test ? apply_test(need_str(*test, "select() test name"), x, test_args) : x.truthy();
    if (ok == keep) out.push_back(item);
  }
  return Value(out);
}
Value f_select(const Value& v, const CallArgs& a) { return select_impl(v, a, false, true); }
Value f_reject(const Value& v, const CallArgs& a) { return select_impl(v, a, false, false); }
Value f_selectattr(const Value& v, const CallArgs& a) { return select_impl(v, a, true, true); }
Value f_rejectattr(const Value& v, const CallArgs& a) { return select_impl(v, a, true, false); }

Value f_map(const Value& v, const CallArgs& a) {
  Array out;
  if (const Value* attr = a.get(size_t(-1), "attribute")) {
    const Value* dflt = a.get(size_t(-1), "default");
    for (const auto& item : to_list(v)) {
      Value x = get_path(item, need_str(*attr, "map(attribute=)"));
      out.push_back(x.is_undefined() && dflt ? *dflt : x);
    }
    return Value(out);
  }
  if (a.pos.empty()) fail("map() needs a filter name or attribute=");
  const std::string& name = need_str(a.pos[0], "map() filter name");
  if (!has_filter(name)) fail("map(): unknown filter '{}'", name);
  CallArgs rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const auto& item : to_list(v)) out.push_back(apply_filter(name, item, rest));
  return Value(out);
}

Value f_replace(const Value& v, const CallArgs& a) {
  const Value& count = arg(a, 2, "count", kNone);
  return Value(replace(v.to_str(), arg(a, 0, "old", kUndefined).to_str(), arg(a, 1, "new", kUndefined).to_str(),
                       count.is_none() ? -1 : need_int(count, "replace() count")));
}

Value f_unique(const Value& v, const CallArgs& a) {
  bool cs = flag(a, 0, "case_sensitive", false);
  const Value& attr = arg(a, 1, "attribute", kNone);
  Array out, seen;
  for (const auto& item : to_list(v)) {
    Value key = sort_key(item, cs, attr);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, key); })) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return Value(out);
}

Value f_reverse(const Value& v, const CallArgs&) {
  if (v.is_string()) {
    std::u32string u = utf8_decode(v.str());
    std::reverse(u.begin(), u.end());
    return Value(utf8_encode(u));
  }
  Array items = to_list(v);
  std::reverse(items.begin(), items.end());
  return Value(items);
}

Value f_sort(const Value& v, const CallArgs& a) {
  bool rev = flag(a, 0, "reverse", false), cs = flag(a, 1, "case_sensitive", false);
  const Value& attr = arg(a, 2, "attribute", kNone);
  Array items = to_list(v);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return rev ? values_less(sort_key(y, cs, attr), sort_key(x, cs, attr))
               : values_less(sort_key(x, cs, attr), sort_key(y, cs, attr));
  });
  return Value(items);
}

Value f_dictsort(const Value& v, const CallArgs& a) {
  bool cs = flag(a, 0, "case_sensitive", false);
  const std::string& by = arg(a, 1, "by", Value("key")).to_str();
  bool rev = flag(a, 2, "reverse", false);
  Array pairs = f_items(v, {}).array();
  size_t pos = by == "value" ? 1 : 0;
  if (by != "key" && by != "value") fail("dictsort(): by must be 'key' or 'value'");
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    Value kx = sort_key(x.array()[pos], cs, kNone), ky = sort_key(y.array()[pos], cs, kNone);
    return rev ? values_less(ky, kx) : values_less(kx, ky);
  });
  return Value(pairs);
}

Value f_abs(const Value& v, const CallArgs&) {
  if (v.is_float()) return Value(std::fabs(v.as_double()));
  if (!v.is_number()) fail("bad operand type for abs(): '{}'", v.kind_name());
  if (v.as_int() == INT64_MIN) fail("integer overflow");
  return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
}

Value f_round(const Value& v, const CallArgs& a) {
  int64_t precision = need_int(arg(a, 0, "precision", Value(int64_t(0))), "round() precision");
  const std::string& method = arg(a, 1, "method", Value("common")).to_str();
  if (!v.is_number()) fail("round() expects a number, got {}", v.kind_name());
  if (method == "common" && !v.is_float()) return Value(v.as_int());
  double scale = std::pow(10.0, double(std::clamp<int64_t>(precision, -300, 300)));
  double x = v.as_double() * scale;
  if (method == "common") x = std::nearbyint(x);  // Python rounds half to even
  else if (method == "floor") x = std::floor(x);
  else if (method == "ceil") x = std::ceil(x);
  else fail("round(): method must be 'common', 'ceil' or 'floor'");
  return Value(x / scale);
}

Value f_indent(const Value& v, const CallArgs& a) {
  const Value& w = arg(a, 0, "width", Value(int64_t(4)));
  std::string pad = w.is_string() ? w.str() : std::string(size_t(std::clamp<int64_t>(need_int(w, "indent() width"), 0, 256)), ' ');
  bool first = flag(a, 1, "first", false), blank = flag(a, 2, "blank", false);
  std::string s = v.to_str(), out;
  size_t start = 0;
  bool is_first = true;
  while (true) {
    size_t nl = s.find('\n', start);
    std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if ((is_first ? first : true) && (blank || !line.empty())) out += pad;
    out += line;
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    is_first = false;
  }
  return Value(out);
}

Value f_wordcount(const Value& v, const CallArgs&) {
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : utf8_decode(v.to_str())) {
    bool w = cp_word(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

Value f_sum(const Value& v, const CallArgs& a) {
  const Value& attr = arg(a, 0, "attribute", kNone);
  Value total = arg(a, 1, "start", Value(int64_t(0)));
  for (const auto& item : to_list(v)) {
    Value x = attr.is_string() ? get_path(item, attr.str()) : item;
    if (!x.is_number() || !total.is_number()) fail("sum() of non-numbers");
    if (x.is_float() || total.is_float()) total = Value(total.as_double() + x.as_double());
    else {
      int64_t r;
      if (__builtin_add_overflow(total.as_int(), x.as_int(), &r)) fail("integer overflow");
      total = Value(r);
    }
  }
  return total;
}

Value minmax(const Value& v, const CallArgs& a, bool want_max) {
  bool cs = flag(a, 0, "case_sensitive", false);
  const Value& attr = arg(a, 1, "attribute", kNone);
  Array items = to_list(v);
  if (items.empty()) return Value();
  size_t best = 0;
  for (size_t k = 1; k < items.size(); ++k) {
    bool better = want_max ? values_less(sort_key(items[best], cs, attr), sort_key(items[k], cs, attr))
                           : values_less(sort_key(items[k], cs, attr), sort_key(items[best], cs, attr));
    if (better) best = k;
  }
  return items[best];
}
Value f_max(const Value& v, const CallArgs& a) { return minmax(v, a, true); }
Value f_min(const Value& v, const CallArgs& a) { return minmax(v, a, false); }
Value f_attr(const Value& v, const CallArgs& a) {
  const std::string& name = need_str(arg(a, 0, "name", kUndefined), "attr()");
  if (v.is_object()) {
    const Value* x = v.object().find(name);
    return x ? *x : Value();
  }
  return bound_method(v, name);
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> table = {
      {"abs", f_abs}, {"attr", f_attr}, {"capitalize", f_capitalize}, {"count", f_length}, {"d", f_default},
      {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape}, {"escape", f_escape}, {"first", f_first},
      {"float", f_float}, {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join},
      {"last", f_last}, {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map},
      {"max", f_max}, {"min", f_min}, {"reject", f_reject}, {"rejectattr", f_rejectattr},
      {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round}, {"safe", f_safe},
      {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort}, {"string", f_string},
      {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim}, {"unique", f_unique},
      {"upper", f_upper}, {"wordcount", f_wordcount}};
  return table;
}

// Tests. `number` includes bool and `sequence` includes str and dict, as in Python.
bool t_defined(const Value& v, const CallArgs&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, const CallArgs&) { return v.is_undefined(); }
bool t_none(const Value& v, const CallArgs&) { return v.is_none(); }
bool t_string(const Value& v, const CallArgs&) { return v.is_string(); }
bool t_mapping(const Value& v, const CallArgs&) { return v.is_object() && !v.object().is_namespace; }
bool t_iterable(const Value& v, const CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
}
bool t_number(const Value& v, const CallArgs&) { return v.is_number(); }
bool t_integer(const Value& v, const CallArgs&) { return v.is_int(); }
bool t_float(const Value& v, const CallArgs&) { return v.is_float(); }
bool t_boolean(const Value& v, const CallArgs&) { return v.is_bool(); }
bool t_true(const Value& v, const CallArgs&) { return v.is_bool() && v.as_bool(); }
bool t_false(const Value& v, const CallArgs&) { return v.is_bool() && !v.as_bool(); }
bool t_callable(const Value& v, const CallArgs&) { return v.is_callable(); }
bool t_odd(const Value& v, const CallArgs&) { return need_int(v, "odd test") % 2 != 0; }
bool t_even(const Value& v, const CallArgs&) { return need_int(v, "even test") % 2 == 0; }
bool t_divisibleby(const Value& v, const CallArgs& a) {
  int64_t d = need_int(arg(a, 0, "num", kUndefined), "divisibleby");
  if (d == 0) fail("divisibleby 0");
  return need_int(v, "divisibleby") % d == 0;
}
Value other(const CallArgs& a) { return arg(a, 0, "other", kUndefined); }
bool t_eq(const Value& v, const CallArgs& a) { return values_equal(v, other(a)); }
bool t_ne(const Value& v, const CallArgs& a) { return !values_equal(v, other(a)); }
bool t_lt(const Value& v, const CallArgs& a) { return values_less(v, other(a)); }
bool t_gt(const Value& v, const CallArgs& a) { return values_less(other(a), v); }
bool t_le(const Value& v, const CallArgs& a) { return !values_less(other(a), v); }
bool t_ge(const Value& v, const CallArgs& a) { return !values_less(v, other(a)); }
bool t_in(const Value& v, const CallArgs& a) {
  const Value& seq = arg(a, 0, "seq", kUndefined);
  if (seq.is_string()) return v.is_string() && seq.str().find(v.str()) != std::string::npos;
  for (const auto& x : to_list(seq))
    if (values_equal(x, v)) return true;
  return false;
}
bool t_sameas(const Value& v, const CallArgs& a) {
  const Value& o = other(a);
  if (v.kind() != o.kind()) return false;
  if (v.is_object()) return &v.object() == &o.object();
  if (v.is_array()) return &v.array() == &o.array();
  return v.is_none() || v.is_undefined() || (v.is_bool() && v.as_bool() == o.as_bool());
}
bool t_lower(const Value& v, const CallArgs&) { return v.is_string() && lower(v.str()) == v.str(); }
bool t_upper(const Value& v, const CallArgs&) { return v.is_string() && upper(v.str()) == v.str(); }

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> table = {
      {"defined", t_defined}, {"undefined", t_undefined}, {"none", t_none}, {"string", t_string},
      {"mapping", t_mapping}, {"iterable", t_iterable}, {"sequence", t_iterable}, {"number", t_number},
      {"integer", t_integer}, {"float", t_float}, {"boolean", t_boolean}, {"true", t_true},
      {"false", t_false}, {"callable", t_callable}, {"odd", t_odd}, {"even", t_even},
      {"divisibleby", t_divisibleby}, {"equalto", t_eq}, {"eq", t_eq}, {"==", t_eq}, {"ne", t_ne},
      {"!=", t_ne}, {"lt", t_lt}, {"<", t_lt}, {"lessthan", t_lt}, {"gt", t_gt}, {">", t_gt},
      {"greaterthan", t_gt}, {"le", t_le}, {"<=", t_le}, {"ge", t_ge}, {">=", t_ge}, {"in", t_in},
      {"sameas", t_sameas}, {"lower", t_lower}, {"upper", t_upper}};
  return table;
}

}  // namespace

bool has_filter(const std::string& name) { return filters().count(name) != 0; }
bool has_test(const std::string& name) { return tests().count(name) != 0; }

Value apply_filter(const std::string& name, const Value& input, const CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) fail("unknown filter '{}'", name);
  return it->second(input, args);
}

bool apply_test(const std::string& name, const Value& input, const CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) fail("unknown test '{}'", name);
  return it->second(input, args);
}

}  // namespace uneven::jinja
