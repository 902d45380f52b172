// `uneven serve`: an OpenAI-compatible HTTP server on rank 0 over a continuous-batching engine that every
// rank runs (one rank, or many under mpirun / --ranks N).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/compute_setup.h"
#include "cli/run_setup.h"
#include "comm/collective.h"
#include "runtime/node_info.h"
#include "serve/batch_engine.h"
#include "serve/http_server.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  DistributedOptions dist;
  serve::ServerOptions server;
  int64_t max_batch = 8;
  int64_t queue = 64;
  std::string chat_template_file;
};

// Set by SIGINT/SIGTERM/SIGUSR1; polled, since nothing else is safe to do inside a handler.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGUSR1, &sa, nullptr);  // what mpirun forwards to the ranks (see StopForwarder)
  // A client that goes away mid-write must not kill the server: the write fails instead.
  std::signal(SIGPIPE, SIG_IGN);
}

// "models/stories260K.gguf" -> "stories260K"; "path/to/Qwen3-0.6B/" -> "Qwen3-0.6B".
std::string default_model_id(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.size() > 5 && name.ends_with(".gguf")) name.resize(name.size() - 5);
  return name.empty() ? "model" : name;
}

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

// What every rank holds, gathered to rank 0 for GET /v1/cluster (every rank calls it, in the same order).
nlohmann::json gather_cluster(Run& run, const Session& session, const ServeOptions& opt) {
  const int rank = run.comm->rank();
  const uint64_t weights = run.model->weights().bytes;
  nlohmann::json mine = {
      {"rank", rank},
      {"host", host_name()},
      {"device", opt.model.device},
      {"weight_bytes", weights},
      {"planned_bytes", run.setup.planned[size_t(rank)].weights},
      {"planned_memory_bytes", run.setup.planned[size_t(rank)].total()},  // weights, KV cache, state and reserve
      {"pid", int(::getpid())},  // for an operator (or a test) watching each rank's process
      {"resident_weight_bytes", run.resident_weight_bytes},
      {"kv_cache_bytes", session.kv_cache_bytes() + session.state_bytes()},
      {"resident_bytes", resident_memory_bytes()},
      {"available_bytes", available_memory_bytes()},
  };
  nlohmann::json ranks = nlohmann::json::array();
  uint64_t total = 0;
  for (const std::string& s : all_gather_strings(*run.comm, mine.dump())) {
    ranks.push_back(nlohmann::json::parse(s));
    total += ranks.back()["weight_bytes"].get<uint64_t>();
  }
  for (auto& r : ranks) r["weight_share"] = total ? double(r["weight_bytes"].get<uint64_t>()) / double(total) : 0.0;
  // The mode the plan chose (auto resolves to one), not the option.
  std::string mode = "single rank";
  if (!run.setup.plan_json.empty()) {
    const nlohmann::json plan = nlohmann::json::parse(run.setup.plan_json, nullptr, false);
    if (plan.is_object() && plan.contains("mode") && plan["mode"].is_string()) mode = plan["mode"].get<std::string>();
  }
  return {{"ranks", ranks}, {"mode", mode}, {"world_size", run.comm->size()}};
}

// The chat template: --chat-template FILE, else the model's own; none is not an error (completions work).
std::optional<ChatTemplate> chat_template_for(const ServeOptions& opt, const Tokenizer& tokenizer, std::string& why_none) {
  try {
    if (opt.chat_template_file.empty()) return load_chat_template(opt.model.model_path);
    std::ifstream in(opt.chat_template_file, std::ios::binary);
    if (!in) fail("{}: cannot read the chat template file", opt.chat_template_file);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const TokenId bos = tokenizer.bos_id();
    const auto eos = tokenizer.eos_ids();
    ChatTemplate t = make_chat_template(text, bos >= 0 ? tokenizer.decode({bos}) : "", eos.empty() ? "" : tokenizer.decode({eos[0]}));
    t.origin = opt.chat_template_file;
    return t;
  } catch (const Error& e) {
    if (!opt.chat_template_file.empty()) throw;  // asked for explicitly: a bad file stops the start
    why_none = fmt::format("this model has no usable chat template ({}); use /v1/completions, or start the server with "
                           "--chat-template FILE",
                           e.what());
    return std::nullopt;
  }
}

// The process that started mpirun for --ranks N passes a stop signal on to mpirun as SIGUSR1: mpirun (Open
// MPI) forwards SIGUSR1 to the ranks, where it stops rank 0's engine like SIGTERM; a SIGTERM to mpirun itself
// would tear the job down instead (exit code 1, no clean stop).
class StopForwarder {
 public:
  StopForwarder() {
    thread_ = std::thread([this] {
      while (!g_stop_signal && !done_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (done_) return;
      for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream children(task.path() / "children");
        for (pid_t pid; children >> pid;) ::kill(pid, SIGUSR1);
      }
    });
  }
  ~StopForwarder() {
    done_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

int run_serve(const ServeOptions& opt) {
  if (opt.max_batch < 1) fail("--max-batch must be at least 1, got {}", opt.max_batch);
  if (opt.queue < 0) fail("--queue must be >= 0, got {}", opt.queue);
  if (opt.server.port < 0 || opt.server.port > 65535) fail("--port must be in [0, 65535], got {}", opt.server.port);
  // The plan (or, alone, the memory check) counts the KV cache and state of every sequence of the batch.
  DistributedOptions dist = opt.dist;
  dist.cluster.sequences = opt.max_batch;
  Run run = start_run(opt.model, dist, true);
  if (run.leader() && !run.files.tokenizer)
    fail("{}: serve needs a tokenizer (tokenizer.json or a GGUF vocabulary)", run.files.path);
  ThreadPool pool(opt.model.threads);
  Compute compute = make_compute(opt.model, run, pool, gpu_memory_cap(opt.dist, *run.comm));
  const int64_t context = opt.model.context_for(run.files.config);
  Session session(*run.model, *compute.session_comm, *compute.backend, context, opt.max_batch);
  const nlohmann::json cluster = gather_cluster(run, session, opt);
  const Tokenizer* tokenizer = run.leader() ? run.files.tokenizer.get() : nullptr;
  BatchEngine engine(session, *run.comm, tokenizer, BatchOptions{opt.max_batch, opt.queue, 0});
  if (!run.leader()) {
    engine.run();  // until rank 0 says stop
    return 0;
  }

  std::string why_none;
  const std::optional<ChatTemplate> chat = chat_template_for(opt, *tokenizer, why_none);
  serve::ServerOptions so = opt.server;
  if (so.model_id.empty()) so.model_id = default_model_id(opt.model.model_path);
  so.context = context;
  serve::HttpServer server(engine, *tokenizer, chat ? &*chat : nullptr, why_none, so);
  server.set_cluster_info(cluster);
  const int port = server.bind();
  const bool v6 = so.host.find(':') != std::string::npos;
  std::printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", so.host.c_str(), v6 ? "]" : "", port);
  if (!chat) std::printf("note: %s\n", why_none.c_str());
  std::fflush(stdout);

  std::thread http([&] { server.listen(); });
  // Stops on a signal, or when the engine ends on its own (a rank failed): the engine first, so that every
  // open request gets its Failed event and the HTTP workers can finish, then the listener.
  std::atomic<bool> engine_done{false};
  std::thread watcher([&] {
    while (!g_stop_signal && !engine_done) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    engine.stop();
    server.stop();
  });
  auto finish = [&] {
    engine_done = true;
    watcher.join();
    http.join();
  };
  try {
    engine.run();
  } catch (...) {
    finish();
    throw;
  }
  finish();
  if (g_stop_signal) std::fprintf(stderr, "stopped (signal %d)\n", int(g_stop_signal));
  return 0;
}

}  // namespace

Action register_serve(CLI::App& app) {
  auto opt = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "serve the model over an OpenAI-compatible HTTP API (rank 0 listens)");
  opt->model.add_to(*cmd);
  opt->dist.add_to(*cmd);
  cmd->add_option("--host", opt->server.host, "address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", opt->server.port, "port to listen on (default 8080; 0: any free port, printed)");
  cmd->add_option("--max-batch", opt->max_batch, "sequences computed together in each step (default 8)");
  cmd->add_option("--queue", opt->queue, "requests that may wait beyond the batch; more get HTTP 429 (default 64)");
  cmd->add_option("--api-key", opt->server.api_key, "require 'Authorization: Bearer KEY' on every /v1 request");
  cmd->add_option("--model-id", opt->server.model_id, "the model's name in the API (default: the model file or directory name)");
  cmd->add_option("--chat-template", opt->chat_template_file, "a Jinja chat template file to use instead of the model's");
  cmd->add_option("--max-body", opt->server.max_body_bytes, "largest request body in bytes (default 8 MiB; larger: HTTP 413)");
  return [opt]() -> int {
    install_stop_handlers();  // before any thread starts, on every rank and in a --ranks launcher
    std::optional<StopForwarder> forwarder;
    if (opt->dist.ranks > 1 && !launched_by_mpirun()) forwarder.emplace();
    return run_distributed(opt->dist, [opt] { return run_serve(*opt); });
  };
}

}  // namespace uneven::cli
