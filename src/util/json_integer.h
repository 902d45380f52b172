// Integers read from JSON without undefined behaviour: nlohmann's get<int>() of a float converts with a
// static_cast, which is undefined when the float does not fit the type (1e30 into int64, 3e9 into int).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

#include "util/error.h"

namespace uneven {

// `v` as a T when it is an integer, or a float holding a whole number, within T's range; nullopt otherwise.
template <typename T>
std::optional<T> json_integer(const nlohmann::json& v) {
  static_assert(std::is_integral_v<T>);
  using L = std::numeric_limits<T>;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(L::max())) return std::nullopt;
    return T(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (i < 0 || uint64_t(i) > uint64_t(L::max())) return std::nullopt;
    } else {
      if (i < int64_t(L::min()) || i > int64_t(L::max())) return std::nullopt;
    }
    return T(i);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // A 64-bit type's max() rounds up to 2^63 (2^64) as a double, so its bound is exclusive.
    const bool above = L::digits < 53 ? d > double(L::max()) : d >= std::ldexp(1.0, L::digits);
    if (!(d >= double(L::min())) || above || d != std::floor(d)) return std::nullopt;
    return T(d);
  }
  return std::nullopt;
}

// The same for parsers that turn nlohmann's exceptions into their own message (naming the file): throws
// nlohmann's other_error "<what> must be an integer, got V".
template <typename T>
T json_integer_or_json_error(const nlohmann::json& v, std::string_view what) {
  if (std::optional<T> x = json_integer<T>(v)) return *x;
  throw nlohmann::json::other_error::create(501, fmt::format("{} must be an integer, got {}", what, v.dump()), &v);
}

// The same, throwing uneven::Error "<what> must be an integer from MIN to MAX, got V".
template <typename T>
T require_json_integer(const nlohmann::json& v, std::string_view what) {
  if (std::optional<T> x = json_integer<T>(v)) return *x;
  fail("{} must be an integer from {} to {}, got {}", what, std::numeric_limits<T>::min(), std::numeric_limits<T>::max(),
       v.dump());
}

// An array of such integers.
template <typename T>
std::vector<T> require_json_integers(const nlohmann::json& v, std::string_view what) {
  if (!v.is_array()) fail("{} must be an array of integers, got {}", what, v.dump());
  std::vector<T> out;
  out.reserve(v.size());
  for (const nlohmann::json& e : v) out.push_back(require_json_integer<T>(e, what));
  return out;
}

}  // namespace uneven
