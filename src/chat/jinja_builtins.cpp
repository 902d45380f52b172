// Built-in filters, tests and str/dict methods, following jinja2's and Python's definitions.
#include <utf8proc.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <map>
#include <set>

#include "chat/jinja_ast.h"
#include "chat/jinja_strings.h"
#include "util/error.h"

namespace uneven::jinja {

Value arg(const CallArgs& a, size_t index, std::string_view name, const Value& fallback) {
  const Value* v = a.get(index, name);
  return v ? *v : fallback;
}
const Value kNone = Value::none();
const Value kUndefined;

namespace {

char32_t cp_upper(char32_t c) { return char32_t(utf8proc_toupper(utf8proc_int32_t(c))); }
char32_t cp_lower(char32_t c) { return char32_t(utf8proc_tolower(utf8proc_int32_t(c))); }
bool cp_cased(char32_t c) { return cp_upper(c) != c || cp_lower(c) != c; }
std::string map_chars(const std::string& s, char32_t (*f)(char32_t)) {
  std::u32string u = utf8_decode(s);
  for (auto& c : u) c = f(c);
  return utf8_encode(u);
}

}  // namespace

bool cp_word(char32_t c) {
  if (c == '_') return true;
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}
std::string lower(const std::string& s) { return map_chars(s, cp_lower); }
std::string upper(const std::string& s) { return map_chars(s, cp_upper); }
std::string capitalize(const std::string& s) {
  std::u32string u = utf8_decode(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? cp_upper(u[i]) : cp_lower(u[i]);
  return utf8_encode(u);
}

std::string need_str(const Value& v, const char* what) {
  if (!v.is_string()) fail("{} expects a string, got {}", what, v.kind_name());
  return v.str();
}

// Python str.strip/lstrip/rstrip: whitespace, or the code points of `chars`.
std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::u32string u = utf8_decode(s);
  std::u32string set;
  bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) set = utf8_decode(need_str(chars, "strip()"));
  auto drop = [&](char32_t c) { return ws ? is_py_space(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return utf8_encode(std::u32string_view(u).substr(b, e - b));
}

Array split(const std::string& s, const Value& sep, int64_t maxsplit) {
  Array out;
  if (sep.is_none() || sep.is_undefined()) {
    std::u32string u = utf8_decode(s);
    size_t i = 0;
    while (true) {
      while (i < u.size() && is_py_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
        size_t e = u.size();
        while (e > i && is_py_space(u[e - 1])) --e;
        out.push_back(Value(utf8_encode(std::u32string_view(u).substr(i, e - i))));
        break;
      }
      size_t j = i;
      while (j < u.size() && !is_py_space(u[j])) ++j;
      out.push_back(Value(utf8_encode(std::u32string_view(u).substr(i, j - i))));
      i = j;
    }
    return out;
  }
  const std::string& d = need_str(sep, "split()");
  if (d.empty()) fail("empty separator");
  size_t start = 0;
  while (true) {
    size_t k = s.find(d, start);
    if (k == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) break;
    out.push_back(Value(s.substr(start, k - start)));
    start = k + d.size();
  }
  out.push_back(Value(s.substr(start)));
  return out;
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` around every code point.
    auto offs = utf8_offsets(s);
    int64_t n = 0;
    for (size_t k = 0; k + 1 < offs.size(); ++k) {
      if (count < 0 || n++ < count) out += to;
      out += s.substr(offs[k], offs[k + 1] - offs[k]);
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t k = s.find(from, start);
    if (k == std::string::npos) break;
    out += s.substr(start, k - start) + to;
    start = k + from.size();
    ++n;
  }
  return out + s.substr(start);
}

Array to_list(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Array: return v.array();
    case Value::Kind::Undefined: return {};
    case Value::Kind::Object: {
      Array keys;
      for (const auto& kv : v.object().items) keys.push_back(Value(kv.first));
      return keys;
    }
    case Value::Kind::String: {
      Array chars;
      auto offs = utf8_offsets(v.str());
      for (size_t k = 0; k + 1 < offs.size(); ++k) chars.push_back(Value(v.str().substr(offs[k], offs[k + 1] - offs[k])));
      return chars;
    }
    default: fail("'{}' object is not iterable", v.kind_name());
  }
}

// jinja2's attribute getter for filters: "a.b.0" walks dict keys and list indexes.
Value get_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_object()) {
      const Value* x = cur.object().find(part);
      cur = x ? *x : Value();
    } else if (cur.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      size_t i = std::stoul(part);
      cur = i < cur.array().size() ? cur.array()[i] : Value();
    } else {
      return Value();
    }
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value sort_key(const Value& v, bool case_sensitive, const Value& attribute) {
  Value k = attribute.is_string() ? get_path(v, attribute.str()) : v;
  if (!case_sensitive && k.is_string()) return Value(lower(k.str()));
  return k;
}

std::string py_title(const std::string& s) {
  std::u32string u = utf8_decode(s);
  bool prev_cased = false;
  for (auto& c : u) {
    bool cased = cp_cased(c);
    c = cased ? (prev_cased ? cp_lower(c) : cp_upper(c)) : c;
    prev_cased = cased;
  }
  return utf8_encode(u);
}

namespace {

// Python str.format with {} / {0} / {name} fields; format specs and conversions are not supported.
std::string py_format(const std::string& fmt, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}' ) {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else fail("format(): single '}}' in format string");
      out += '}';
      continue;
    }
    if (c != '{') { out += c; continue; }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') { out += '{'; ++i; continue; }
    size_t end = fmt.find('}', i);
    if (end == std::string::npos) fail("format(): unmatched '{{' in format string");
    std::string field = fmt.substr(i + 1, end - i - 1);
    if (field.find_first_of(":!") != std::string::npos) fail("format(): format specs are not supported");
    const Value* v = nullptr;
    if (field.empty()) v = auto_index < a.pos.size() ? &a.pos[auto_index++] : nullptr;
    else if (std::all_of(field.begin(), field.end(), ::isdigit)) v = a.get(std::stoul(field), "");
    else v = a.get(size_t(-1), field);
    if (!v) fail("format(): no argument for field '{{{}}}'", field);
    out += v->to_str();
    i = end;
  }
  return out;
}

Value call_str_method(const std::string& self, const std::string& name, const CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return Value(strip(self, arg(a, 0, "chars", kNone), name != "rstrip", name != "lstrip"));
  if (name == "split") {
    const Value& ms = arg(a, 1, "maxsplit", Value(int64_t(-1)));
    return Value(split(self, arg(a, 0, "sep", kNone), ms.as_int()));
  }
  if (name == "startswith" || name == "endswith") {
    const Value& p = arg(a, 0, "prefix", kUndefined);
    Array options = p.is_array() ? p.array() : Array{p};
    for (const auto& o : options) {
      const std::string& x = need_str(o, name.c_str());
      bool hit = name == "startswith" ? self.compare(0, x.size(), x) == 0
                                      : self.size() >= x.size() && self.compare(self.size() - x.size(), x.size(), x) == 0;
      if (hit) return Value(true);
    }
    return Value(false);
  }
  if (name == "replace") {
    const Value& count = arg(a, 2, "count", Value(int64_t(-1)));
    return Value(replace(self, need_str(arg(a, 0, "old", kUndefined), "replace()"),
                         need_str(arg(a, 1, "new", kUndefined), "replace()"), count.as_int()));
  }
  if (name == "upper") return Value(upper(self));
  if (name == "lower") return Value(lower(self));
  if (name == "title") return Value(py_title(self));
  if (name == "capitalize") return Value(capitalize(self));
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    const std::string& sub = need_str(arg(a, 0, "sub", kUndefined), name.c_str());
    size_t k = name[0] == 'r' ? self.rfind(sub) : self.find(sub);
    if (k == std::string::npos) {
      if (name.find("index") != std::string::npos) fail("substring not found");
      return Value(int64_t(-1));
    }
    return Value(int64_t(utf8_offsets(self.substr(0, k)).size() - 1));
  }
  if (name == "count") {
    const std::string& sub = need_str(arg(a, 0, "sub", kUndefined), "count()");
    if (sub.empty()) return Value(int64_t(utf8_offsets(self).size()));
    int64_t n = 0;
    for (size_t k = self.find(sub); k != std::string::npos; k = self.find(sub, k + sub.size())) ++n;
    return Value(n);
  }
  if (name == "join") {
    std::string out;
    Array items = to_list(arg(a, 0, "iterable", kUndefined));
    for (size_t k = 0; k < items.size(); ++k) out += (k ? self : "") + need_str(items[k], "join()");
    return Value(out);
  }
  if (name == "format") return Value(py_format(self, a));
  if (name == "splitlines") {
    Array out;
    size_t start = 0;
    for (size_t k = 0; k <= self.size(); ++k)
      if (k == self.size() || self[k] == '\n') {
        if (k < self.size() || start < k) out.push_back(Value(self.substr(start, k - start)));
        start = k + 1;
      }
    return Value(out);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const std::string& x = need_str(arg(a, 0, "affix", kUndefined), name.c_str());
    if (name == "removeprefix") return Value(self.compare(0, x.size(), x) == 0 ? self.substr(x.size()) : self);
    bool ends = self.size() >= x.size() && self.compare(self.size() - x.size(), x.size(), x) == 0;
    return Value(ends ? self.substr(0, self.size() - x.size()) : self);
  }
  std::u32string u = utf8_decode(self);
  auto all = [&](auto pred) { return !u.empty() && std::all_of(u.begin(), u.end(), pred); };
  if (name == "isspace") return Value(all(is_py_space));
  if (name == "isdigit") return Value(all([](char32_t c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha") return Value(all([](char32_t c) { return cp_word(c) && c != '_' && !(c >= '0' && c <= '9'); }));
  if (name == "isalnum") return Value(all([](char32_t c) { return cp_word(c) && c != '_'; }));
  if (name == "islower" || name == "isupper") {
    bool any = false;
    for (char32_t c : u) {
      if (!cp_cased(c)) continue;
      any = true;
      if ((name == "islower") != (cp_lower(c) == c)) return Value(false);
    }
    return Value(any);
  }
  fail("str has no method '{}'", name);
}

Value call_dict_method(const Value& self, const std::string& name, const CallArgs& a) {
  const Object& o = self.object();
  if (name == "items") {
    Array out;
    for (const auto& [k, v] : o.items) out.push_back(Value::tuple(Array{Value(k), v}));
    return Value(out);
  }
  if (name == "keys" || name == "values") {
    Array out;
    for (const auto& [k, v] : o.items) out.push_back(name == "keys" ? Value(k) : v);
    return Value(out);
  }
  // get
  const Value& key = arg(a, 0, "key", kUndefined);
  const Value* v = key.is_string() ? o.find(key.str()) : nullptr;
  return v ? *v : arg(a, 1, "default", kNone);
}

}  // namespace

static const std::set<std::string> kStrMethods = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith", "replace",
                                           "upper", "lower", "title", "capitalize", "find", "rfind", "index",
                                           "rindex", "count", "join", "format", "splitlines", "removeprefix",
                                           "removesuffix", "isspace", "isdigit", "isalpha", "isalnum", "islower",
                                           "isupper"};
static const std::set<std::string> kDictMethods = {"items", "keys", "values", "get"};

Value bound_method(const Value& self, const std::string& name) {
  bool is_str = self.is_string() && kStrMethods.count(name);
  bool is_dict = self.is_object() && kDictMethods.count(name);
  if (!is_str && !is_dict) return Value();
  auto c = std::make_shared<Callable>();
  c->name = self.kind_name() + "." + name;
  c->fn = [self, name, is_str](const CallArgs& a) {
    return is_str ? call_str_method(self.str(), name, a) : call_dict_method(self, name, a);
  };
  return Value(c);
}

}  // namespace uneven::jinja
