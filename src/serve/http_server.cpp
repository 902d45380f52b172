// The HTTP server of `uneven serve`: routes, authentication, request limits and the bridge from a request to
// a BatchEngine job and back (one response, or an SSE stream), plus /metrics and /v1/cluster.
#include "serve/http_server.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <mutex>
#include <random>

#include "serve/openai_api.h"
#include "serve/web_page.h"
#include "util/error.h"

namespace uneven::serve {
namespace {

using nlohmann::json;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_text(e), "application/json");
}

// Byte strings compared in time independent of where they differ (the API key).
bool same_secret(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= unsigned(uint8_t(a[i]) ^ uint8_t(i < b.size() ? b[i] : 0));
  return diff == 0;
}

// Where a request is counted in /metrics: a known route, or "other" (so that scanners cannot grow the label set).
std::string endpoint_label(const std::string& path) {
  static const char* known[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/cluster", "/health", "/metrics", "/"};
  for (const char* k : known)
    if (path == k) return k;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// httplib listens with a backlog of 5 (compiled into Debian's library): a burst of clients overflows the
// accept queue and the kernel drops connections it had already acknowledged. Linux lets listen() be called
// again on a listening socket to change the backlog; the socket is found by its port.
void widen_backlog(int port) {
  for (int fd = 0; fd < 1024; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    const int p = addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                              : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (p == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

struct HttpServer::Impl {
  BatchEngine& engine;
  const Tokenizer& tokenizer;
  const ChatTemplate* chat_template;
  std::string no_template_reason;
  ServerOptions options;
  httplib::Server http;
  std::atomic<bool> stopping{false};
  bool tokenizer_adds_bos = false;  // encode(text, true) puts BOS first (llama-style vocabularies)
  std::mutex mutex;                 // guards the members below
  json cluster = json::object();
  std::map<std::pair<std::string, int>, int64_t> requests;  // (endpoint, status) -> count

  Impl(BatchEngine& e, const Tokenizer& t, const ChatTemplate* c, std::string why, ServerOptions o)
      : engine(e), tokenizer(t), chat_template(c), no_template_reason(std::move(why)), options(std::move(o)) {
    const TokenId bos = tokenizer.bos_id();
    const auto with = tokenizer.encode("a", true);
    tokenizer_adds_bos = bos >= 0 && !with.empty() && with[0] == bos;
    routes();
  }

  void routes();
  void completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  std::vector<TokenId> prompt_of(const CompletionRequest& r);
  void respond_whole(httplib::Response& res, const CompletionRequest& r, std::shared_ptr<JobHandle> handle, ResponseMeta meta);
  void respond_stream(httplib::Response& res, const CompletionRequest& r, std::shared_ptr<JobHandle> handle, ResponseMeta meta);
  std::string metrics();
  json cluster_json();
};

void HttpServer::Impl::routes() {
  const int threads = options.threads > 0 ? options.threads
                                          : int(std::min<int64_t>(engine.options().max_batch + engine.options().queue_limit + 4, 512));
  http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http.set_payload_max_length(options.max_body_bytes);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  http.set_keep_alive_timeout(5);

  // Authentication of /v1 (the page and /health, /metrics stay open, as a load balancer's probe needs them).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), options.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, {401,
                     auth.empty() ? "You didn't provide an API key: send 'Authorization: Bearer <key>' (the server was started with --api-key)"
                                  : "Incorrect API key provided in the Authorization header",
                     "invalid_request_error", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib makes itself (unknown URL, body over the limit, unreadable request) get OpenAI's shape too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.is_chunked_content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413)
      send_error(res, {413, fmt::format("the request body is larger than the {} bytes this server accepts", options.max_body_bytes),
                       "invalid_request_error", "", "request_too_large"});
    else if (res.status == 404)
      send_error(res, {404, fmt::format("Unknown request URL: {} {}", req.method, req.path), "invalid_request_error", "", "unknown_url"});
    else
      send_error(res, {res.status, fmt::format("the request could not be handled (HTTP {})", res.status), "invalid_request_error", "", ""});
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, {500, "internal error: " + what, "server_error", "", ""});
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::lock_guard lock(mutex);
    ++requests[{endpoint_label(req.path), res.status}];
  });

  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, Endpoint::Chat); });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, Endpoint::Completion); });
  auto model_object = [this] { return json{{"id", options.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "uneven"}}; };
  http.Get("/v1/models", [model_object](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"object", "list"}, {"data", json::array({model_object()})}}), "application/json");
  });
  http.Get(R"(/v1/models/(.+))", [this, model_object](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != options.model_id)
      return send_error(res, {404, fmt::format("The model '{}' does not exist; this server serves '{}'", req.matches[1].str(), options.model_id),
                              "invalid_request_error", "model", "model_not_found"});
    res.set_content(dump(model_object()), "application/json");
  });
  http.Get("/v1/cluster", [this](const httplib::Request&, httplib::Response& res) { res.set_content(dump(cluster_json()), "application/json"); });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = stopping ? 503 : 200;
    res.set_content(stopping ? R"({"status":"stopping"})" : R"({"status":"ok"})", "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics(), "text/plain; version=0.0.4"); });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_page_html(), "text/html; charset=utf-8"); });
}

// The prompt's token ids: a chat rendered by the template, or a completion's text or ids.
std::vector<TokenId> HttpServer::Impl::prompt_of(const CompletionRequest& r) {
  if (r.endpoint == Endpoint::Completion) {
    if (!r.prompt_is_ids) return tokenizer.encode(r.prompt_text, true);
    const int64_t vocab = tokenizer.vocab_size();
    for (size_t i = 0; i < r.prompt_ids.size(); ++i)
      if (r.prompt_ids[i] >= vocab)
        invalid("prompt", fmt::format("'prompt[{}]' is token id {}, outside the vocabulary of {} tokens", i, r.prompt_ids[i], vocab), "invalid_value");
    return r.prompt_ids;
  }
  if (!chat_template) invalid("messages", no_template_reason, "no_chat_template");
  std::string text;
  try {
    text = render_chat(*chat_template, r.messages, r.tools, true, r.chat_template_kwargs.is_null() ? nlohmann::ordered_json::object() : r.chat_template_kwargs);
  } catch (const Error& e) {
    invalid("messages", fmt::format("the chat template ({}) failed on these messages: {}", chat_template->origin, e.what()), "template_error");
  }
  // Templates write the BOS token themselves where the model wants one (Llama 3's <|begin_of_text|>):
  // encode without special additions, then add BOS only where the tokenizer would and the template did not.
  std::vector<TokenId> ids = tokenizer.encode(text, false);
  if (tokenizer_adds_bos && (ids.empty() || ids[0] != tokenizer.bos_id())) ids.insert(ids.begin(), tokenizer.bos_id());
  return ids;
}

void HttpServer::Impl::completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  try {
    if (stopping) throw ApiException({503, "the server is shutting down", "server_error", "", "shutting_down"});
    nlohmann::ordered_json body;
    try {
      body = nlohmann::ordered_json::parse(req.body);
    } catch (const nlohmann::json::parse_error& e) {
      invalid("", fmt::format("We could not parse the JSON body of your request ({} bytes): {}", req.body.size(), e.what()), "invalid_json");
    }
    CompletionRequest r = endpoint == Endpoint::Chat ? parse_chat_request(body) : parse_completion_request(body);
    if (!r.model.empty() && r.model != options.model_id)
      throw ApiException({404, fmt::format("The model '{}' does not exist; this server serves '{}'", r.model, options.model_id),
                          "invalid_request_error", "model", "model_not_found"});
    CompletionJob job;
    job.prompt = prompt_of(r);
    const int64_t prompt = int64_t(job.prompt.size());
    if (prompt == 0) invalid(endpoint == Endpoint::Chat ? "messages" : "prompt", "the prompt encodes to no tokens", "invalid_value");
    if (prompt >= options.context)
      invalid(endpoint == Endpoint::Chat ? "messages" : "prompt",
              fmt::format("This model's maximum context length is {} tokens, and your prompt is {} tokens: at most {} prompt tokens "
                          "leave room for one generated token",
                          options.context, prompt, options.context - 1),
              "context_length_exceeded");
    // Without max_tokens a chat may use what the context leaves (the engine caps any larger value there).
    job.max_tokens = r.max_tokens.value_or(options.context - prompt);
    job.sampling = r.sampling;
    if (!r.seeded) job.sampling.seed = std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
    job.stop = r.stop;
    job.ignore_eos = r.ignore_eos;
    job.top_logprobs = r.top_logprobs;
    std::shared_ptr<JobHandle> handle;
    try {
      handle = engine.submit(std::move(job));
    } catch (const QueueFull& e) {
      throw ApiException({429, fmt::format("the server is busy: {}", e.what()), "rate_limit_exceeded", "", "rate_limit_exceeded"});
    } catch (const Error& e) {
      throw ApiException({stopping ? 503 : 400, e.what(), stopping ? "server_error" : "invalid_request_error", "", ""});
    }
    ResponseMeta meta{new_response_id(endpoint), unix_now(), options.model_id};
    if (r.stream) respond_stream(res, r, std::move(handle), std::move(meta));
    else respond_whole(res, r, std::move(handle), std::move(meta));
  } catch (const ApiException& e) {
    send_error(res, e.error);
  } catch (const Error& e) {
    send_error(res, {400, e.what(), "invalid_request_error", "", ""});
  }
}

void HttpServer::Impl::respond_whole(httplib::Response& res, const CompletionRequest& r, std::shared_ptr<JobHandle> handle,
                                     ResponseMeta meta) {
  ChoiceResult c;
  for (;;) {
    // The engine ends every job with Done or Failed (also when it stops), so this loop ends; the timeout
    // only lets a stopping server give up on a job the engine has not finished.
    std::optional<JobEvent> e = handle->next(1000);
    if (!e) {
      if (stopping && !http.is_running()) {
        handle->cancel();
        return send_error(res, {503, "the server stopped before the completion finished", "server_error", "", "shutting_down"});
      }
      continue;
    }
    if (e->kind == JobEvent::Kind::Text) {
      c.text += e->text;
      c.logprobs.insert(c.logprobs.end(), e->tokens.begin(), e->tokens.end());
    } else if (e->kind == JobEvent::Kind::Failed) {
      return send_error(res, {500, "the completion failed: " + e->error, "server_error", "", ""});
    } else {
      c.finish_reason = e->finish_reason;
      c.prompt_tokens = e->prompt_tokens;
      c.completion_tokens = e->completion_tokens;
      break;
    }
  }
  const bool lp = r.top_logprobs >= 0;
  res.set_content(dump(r.endpoint == Endpoint::Chat ? chat_response(meta, c, lp) : completion_response(meta, c, lp)), "application/json");
}

void HttpServer::Impl::respond_stream(httplib::Response& res, const CompletionRequest& r, std::shared_ptr<JobHandle> handle,
                                      ResponseMeta meta) {
  // What the chunk provider keeps between its calls; shared with the releaser, which cancels an unfinished job.
  struct Stream {
    std::shared_ptr<JobHandle> handle;
    ResponseMeta meta;
    Endpoint endpoint;
    bool include_usage, logprobs;
    bool started = false, finished = false;
    int64_t text_offset = 0;
  };
  auto s = std::make_shared<Stream>(Stream{std::move(handle), std::move(meta), r.endpoint, r.include_usage, r.top_logprobs >= 0});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, s](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& bytes) {
          if (sink.write(bytes.data(), bytes.size())) return true;
          s->handle->cancel();  // the client is gone: free its slot
          return false;
        };
        if (!s->started) {
          s->started = true;
          if (s->endpoint == Endpoint::Chat && !write(sse(chat_chunk(s->meta, {{"role", "assistant"}, {"content", ""}}, "", nullptr, s->include_usage))))
            return false;
        }
        std::optional<JobEvent> e = s->handle->next(500);
        if (!e) {
          if (stopping && !http.is_running()) {
            s->handle->cancel();
            return false;
          }
          return true;  // called again: keeps waiting
        }
        if (e->kind == JobEvent::Kind::Text) {
          json lp = nullptr;
          if (s->logprobs)
            lp = s->endpoint == Endpoint::Chat ? chat_logprobs_json(e->tokens) : completion_logprobs_json(e->tokens, s->text_offset);
          s->text_offset += int64_t(e->text.size());
          const json chunk = s->endpoint == Endpoint::Chat ? chat_chunk(s->meta, {{"content", e->text}}, "", lp, s->include_usage)
                                                           : completion_chunk(s->meta, e->text, "", lp, s->include_usage);
          return write(sse(chunk));
        }
        s->finished = true;
        if (e->kind == JobEvent::Kind::Failed) {
          // Headers (200) are out already: the failure goes into the stream as an error event.
          if (!write(sse(error_body({500, "the completion failed: " + e->error, "server_error", "", ""})))) return false;
        } else {
          const json last = s->endpoint == Endpoint::Chat ? chat_chunk(s->meta, json::object(), e->finish_reason, nullptr, s->include_usage)
                                                          : completion_chunk(s->meta, "", e->finish_reason, nullptr, s->include_usage);
          if (!write(sse(last))) return false;
          if (s->include_usage && !write(sse(usage_chunk(s->meta, s->endpoint, e->prompt_tokens, e->completion_tokens)))) return false;
        }
        if (!write(sse_done())) return false;
        sink.done();
        return true;
      },
      [s](bool success) {
        if (!s->finished) s->handle->cancel();
      });
}

std::string HttpServer::Impl::metrics() {
  const BatchStats st = engine.stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  metric("uneven_http_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
  {
    std::lock_guard lock(mutex);
    for (const auto& [key, n] : requests)
      out += fmt::format("uneven_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  }
  auto one = [&](const char* name, const char* type, const char* help, double value) {
    metric(name, type, help);
    out += fmt::format("{} {}\n", name, value);
  };
  one("uneven_prompt_tokens_total", "counter", "Prompt tokens of the completions run.", double(st.prompt_tokens));
  one("uneven_completion_tokens_total", "counter", "Tokens generated.", double(st.completion_tokens));
  one("uneven_decode_tokens_per_second", "gauge", "Generated tokens per second over the last few seconds.", st.decode_tokens_per_second);
  one("uneven_queue_depth", "gauge", "Jobs waiting for a slot.", double(st.queued));
  one("uneven_active_sequences", "gauge", "Sequences in the batch now.", double(st.active));
  one("uneven_batch_slots", "gauge", "Sequences the batch holds at most (--max-batch).", double(engine.options().max_batch));
  one("uneven_engine_steps_total", "counter", "Batched forward steps run.", double(st.steps));
  one("uneven_engine_busy_seconds_total", "counter", "Wall time inside steps.", st.busy_s);
  metric("uneven_jobs_total", "counter", "Engine jobs by outcome.");
  out += fmt::format("uneven_jobs_total{{outcome=\"submitted\"}} {}\nuneven_jobs_total{{outcome=\"completed\"}} {}\n", st.requests, st.completed);
  out += fmt::format("uneven_jobs_total{{outcome=\"failed\"}} {}\nuneven_jobs_total{{outcome=\"cancelled\"}} {}\n", st.failed, st.cancelled);
  out += fmt::format("uneven_jobs_total{{outcome=\"rejected\"}} {}\n", st.rejected);
  // Only rank 0's times reach the server (the engine reports its own rank); the label keeps room for more.
  metric("uneven_rank_compute_seconds_total", "counter", "Time in computation, by rank (rank 0 only).");
  out += fmt::format("uneven_rank_compute_seconds_total{{rank=\"0\"}} {}\n", st.times.compute_s);
  metric("uneven_rank_communication_seconds_total", "counter", "Time in collectives incl. waiting for slower ranks, by rank (rank 0 only).");
  out += fmt::format("uneven_rank_communication_seconds_total{{rank=\"0\"}} {}\n", st.times.comm_s);
  return out;
}

json HttpServer::Impl::cluster_json() {
  const BatchStats st = engine.stats();
  json out;
  {
    std::lock_guard lock(mutex);
    out = cluster;
  }
  out["model"] = options.model_id;
  out["context"] = options.context;
  out["max_batch"] = engine.options().max_batch;
  out["live"] = {{"decode_tokens_per_second", st.decode_tokens_per_second}, {"active", st.active}, {"queued", st.queued},
                 {"completed", st.completed}, {"prompt_tokens", st.prompt_tokens}, {"completion_tokens", st.completion_tokens},
                 {"compute_s", st.times.compute_s}, {"comm_s", st.times.comm_s}, {"steps", st.steps}};
  return out;
}

HttpServer::HttpServer(BatchEngine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                       std::string no_template_reason, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, tokenizer, chat_template, std::move(no_template_reason), std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::set_cluster_info(json info) {
  std::lock_guard lock(impl_->mutex);
  impl_->cluster = std::move(info);
}

int HttpServer::bind() {
  const ServerOptions& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    if (port < 0) fail("cannot listen on {}: no free port to bind", o.host);
  } else if (!impl_->http.bind_to_port(o.host, port)) {
    fail("cannot listen on {}:{} (is the port in use, or the address not this machine's?)", o.host, port);
  }
  widen_backlog(port);
  return port;
}

void HttpServer::listen() { impl_->http.listen_after_bind(); }

void HttpServer::stop() {
  impl_->stopping = true;
  impl_->http.stop();
}

}  // namespace uneven::serve
