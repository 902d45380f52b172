// Typed JSON field access for tokenizer configs, failing with the file and field named.
#include "tokenizer/components.h"
#include "util/error.h"

namespace uneven::json_get {

bool boolean(const nlohmann::json& j, const char* key, bool fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("{}: field '{}' must be true or false, got {}", source, key, it->dump());
  return it->get<bool>();
}

std::string string(const nlohmann::json& j, const char* key, const std::string& fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail("{}: field '{}' must be a string, got {}", source, key, it->dump());
  return it->get<std::string>();
}

const nlohmann::json& required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.is_object()) fail("{}: expected an object holding '{}', got {}", source, key, j.dump().substr(0, 200));
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}'", source, key);
  return *it;
}

}  // namespace uneven::json_get
