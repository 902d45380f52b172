// Internal to the Jinja interpreter: Python str semantics shared by the methods and the filters.
#pragma once
#include <string>

#include "chat/jinja_value.h"

namespace uneven::jinja {

extern const Value kNone;
extern const Value kUndefined;
// The call argument at `index` or keyword `name`, else `fallback` (copies: fallbacks are often temporaries).
Value arg(const CallArgs& a, size_t index, std::string_view name, const Value& fallback);
std::string need_str(const Value& v, const char* what);  // throws naming `what` if not a str

bool cp_word(char32_t c);  // Python regex \w
std::string lower(const std::string& s);
std::string upper(const std::string& s);
std::string capitalize(const std::string& s);
std::string py_title(const std::string& s);  // str.title()
std::string strip(const std::string& s, const Value& chars, bool left, bool right);
Array split(const std::string& s, const Value& sep, int64_t maxsplit);
std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
Array to_list(const Value& v);                          // list(v): items, keys, characters
Value get_path(const Value& v, const std::string& path);  // jinja2's attribute getter: "a.b.0"
Value sort_key(const Value& v, bool case_sensitive, const Value& attribute);

}  // namespace uneven::jinja
