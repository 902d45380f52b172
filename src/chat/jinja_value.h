// The interpreter's value type: Python-like undefined/None/bool/int/float/str/list/dict/callable.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace uneven::jinja {

class Value;
struct Object;
struct Callable;
using Array = std::vector<Value>;

// Arguments of a call: positional, then keyword in call order.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  const Value* get(size_t index, std::string_view name) const;  // positional index or keyword
};

// Lists and dicts are shared by reference as in Python; the sandbox is immutable, so only namespace()
// objects are ever modified after construction.
class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object, Callable };

  Value() = default;  // undefined
  static Value none() { Value v; v.kind_ = Kind::None; return v; }
  Value(bool b) : kind_(Kind::Bool), i_(b) {}
  Value(int64_t i) : kind_(Kind::Int), i_(i) {}
  Value(int i) : kind_(Kind::Int), i_(i) {}
  Value(double d) : kind_(Kind::Float), d_(d) {}
  Value(std::string s) : kind_(Kind::String), s_(std::move(s)) {}
  Value(const char* s) : kind_(Kind::String), s_(s) {}
  Value(Array a);
  static Value tuple(Array a) { Value v(std::move(a)); v.tuple_ = true; return v; }  // repr "(1, 2)"
  Value(std::shared_ptr<Object> o);
  Value(std::shared_ptr<Callable> c);

  template <class Json> static Value from_json(const Json& j);
  nlohmann::ordered_json to_json() const;  // throws for undefined and callables

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }     // bool is not, unlike Python
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_callable() const { return kind_ == Kind::Callable; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }  // Int or Bool
  double as_double() const { return kind_ == Kind::Float ? d_ : double(i_); }
  const std::string& str() const { return s_; }
  const Array& array() const { return *a_; }
  Object& object() const { return *o_; }
  const std::shared_ptr<Callable>& callable() const { return c_; }

  bool truthy() const;
  std::string to_str() const;  // Python str(); undefined is ""
  std::string repr() const;    // Python repr()
  std::string kind_name() const;
  size_t length() const;  // str (code points), list, dict; throws for others

 private:
  Kind kind_ = Kind::Undefined;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  bool tuple_ = false;
  std::shared_ptr<const Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<Callable> c_;
};

// A dict in insertion order (Python 3.7+), string keys only (all JSON and chat-template dicts are).
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace(): the one mutable object, attribute assignment allowed
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> fn;
};

bool values_equal(const Value& a, const Value& b);  // Python ==
// Python <; throws uneven::Error for unorderable kinds.
bool values_less(const Value& a, const Value& b);
std::string py_float_repr(double d);
// json.dumps(v, ensure_ascii, indent (<0: None), separators, sort_keys); empty separators mean
// Python's defaults: (", ", ": ") without indent, (",", ": ") with it.
struct JsonFormat {
  int indent = -1;
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_sep, key_sep;
};
std::string to_json_text(const Value& v, const JsonFormat& format = {});

template <class Json> Value Value::from_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return none();
    case Json::value_t::boolean: return Value(j.template get<bool>());
    case Json::value_t::number_integer: return Value(j.template get<int64_t>());
    case Json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value(double(u));
      return Value(int64_t(u));
    }
    case Json::value_t::number_float: return Value(j.template get<double>());
    case Json::value_t::string: return Value(j.template get<std::string>());
    case Json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& e : j) a.push_back(from_json(e));
      return Value(std::move(a));
    }
    case Json::value_t::object: {
      auto o = std::make_shared<Object>();
      o->items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) o->items.emplace_back(it.key(), from_json(it.value()));
      return Value(std::move(o));
    }
    default: return Value();  // binary, discarded
  }
}

// UTF-8 helpers: Python strings index code points, not bytes.
std::vector<size_t> utf8_offsets(std::string_view s);  // start offset of each code point, then s.size()
bool is_py_space(char32_t c);
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);

}  // namespace uneven::jinja
