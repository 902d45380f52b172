// The HTTP side of `uneven serve` on rank 0: OpenAI-compatible endpoints over a BatchEngine, metrics, the web page.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "chat/chat_template.h"
#include "serve/batch_engine.h"
#include "tokenizer/tokenizer.h"

namespace uneven::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;          // 0: any free port (bind() says which)
  std::string api_key;      // non-empty: every /v1 request needs "Authorization: Bearer <key>"
  size_t max_body_bytes = 8u << 20;  // larger request bodies get 413
  std::string model_id;     // what /v1/models lists and requests may name
  int64_t context = 0;      // tokens per sequence (prompt + completion)
  int threads = 0;          // HTTP worker threads; 0: max_batch + queue_limit + 4 (each open request holds one)
};

// Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/ID], GET /v1/cluster,
// GET /health, GET /metrics, GET / (the web page). Errors are OpenAI's error objects with the status:
// 400 bad JSON / field / prompt too long / template failure, 401 key, 404 model or URL, 413 body, 429 queue
// full, 500 engine failure, 503 shutting down. A bad request never affects the others.
class HttpServer {
 public:
  // `chat_template` null: chat requests get 400 with `no_template_reason`. The engine, tokenizer and
  // template must outlive the server.
  HttpServer(BatchEngine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
             std::string no_template_reason, ServerOptions options);
  ~HttpServer();

  // What GET /v1/cluster reports beside the live figures: {"ranks": [{rank, host, planned_bytes, ...}], ...}.
  void set_cluster_info(nlohmann::json info);
  // Binds host:port; returns the port (the real one for port 0). Throws uneven::Error when it cannot.
  int bind();
  // Serves until stop(); call after bind(), from the thread that is to serve.
  void listen();
  // Any thread: stops accepting, ends open streams; listen() returns.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uneven::serve
