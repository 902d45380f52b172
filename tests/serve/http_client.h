// Test-only: JSON requests to a server on loopback (cpp-httplib's client), the reply parsed when it is JSON.
#pragma once
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

namespace uneven::testing {

using nlohmann::json;

struct Reply {
  int status = 0;  // 0: no response (text says why)
  json body;
  std::string text;
};

inline Reply post(int port, const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);
  c.set_read_timeout(120);
  auto r = c.Post(path.c_str(), headers, body, "application/json");
  if (!r) return {0, nullptr, "no response: " + httplib::to_string(r.error())};
  return {r->status, json::parse(r->body, nullptr, false), r->body};
}
inline Reply post(int port, const std::string& path, const json& body, const httplib::Headers& headers = {}) {
  return post(port, path, body.dump(), headers);
}
inline Reply get(int port, const std::string& path, const httplib::Headers& headers = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);
  c.set_read_timeout(30);
  auto r = c.Get(path.c_str(), headers);
  if (!r) return {0, nullptr, "no response: " + httplib::to_string(r.error())};
  return {r->status, json::parse(r->body, nullptr, false), r->body};
}

}  // namespace uneven::testing
