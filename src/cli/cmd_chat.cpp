// `uneven chat`: a terminal conversation with the model's chat template and the server's sampling,
// streamed, on one rank or many; Ctrl-C stops the answer, not the program.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/compute_setup.h"
#include "cli/run_setup.h"
#include "comm/collective.h"
#include "serve/batch_engine.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

struct ChatOptions {
  ModelOptions model;
  DistributedOptions dist;
  CompletionJob defaults;  // sampling, max tokens, stop strings
  std::string system;
  bool no_thinking = false;
};

std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int) { interrupted = true; }

// The prompt text -> ids: the template writes BOS itself where the model has one (Llama 3), so it is added
// only when the text does not start with it.
std::vector<TokenId> encode_prompt(const Tokenizer& tokenizer, const std::string& text, const std::string& bos) {
  const bool has_bos = !bos.empty() && text.rfind(bos, 0) == 0;
  return tokenizer.encode(text, !has_bos);
}

// Rank 0's side: read lines, render the conversation, queue it, print the answer as it streams.
void converse(const ChatOptions& opt, BatchEngine& engine, const Tokenizer& tokenizer,
              const std::optional<ChatTemplate>& chat_template) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!opt.system.empty()) messages.push_back({{"role", "system"}, {"content", opt.system}});
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  if (opt.no_thinking) extra["enable_thinking"] = false;
  std::string line;
  for (;;) {
    std::fprintf(stdout, "> ");
    std::fflush(stdout);
    interrupted = false;
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.erase(messages.begin() + (opt.system.empty() ? 0 : 1), messages.end());
      std::fprintf(stdout, "(conversation cleared)\n");
      continue;
    }
    if (line.empty()) continue;
    CompletionJob job = opt.defaults;
    try {
      if (chat_template) {
        messages.push_back({{"role", "user"}, {"content", line}});
        const std::string text = render_chat(*chat_template, messages, nullptr, true, extra);
        job.prompt = encode_prompt(tokenizer, text, chat_template->bos_token);
      } else {
        job.prompt = tokenizer.encode(line, true);
      }
    } catch (const std::exception& e) {
      if (chat_template) messages.erase(messages.end() - 1);
      std::fprintf(stdout, "error: %s\n", e.what());
      continue;
    }
    std::shared_ptr<JobHandle> handle;
    try {
      handle = engine.submit(job);
    } catch (const std::exception& e) {
      if (chat_template) messages.erase(messages.end() - 1);
      std::fprintf(stdout, "error: %s\n", e.what());
      continue;
    }
    std::string answer;
    for (;;) {
      if (interrupted && !handle->cancelled()) {
        handle->cancel();
        std::fprintf(stdout, " [stopped]");
        break;
      }
      auto e = handle->next(50);
      if (!e) continue;
      if (e->kind == JobEvent::Kind::Text) {
        answer += e->text;
        std::fwrite(e->text.data(), 1, e->text.size(), stdout);
        std::fflush(stdout);
        continue;
      }
      if (e->kind == JobEvent::Kind::Failed) std::fprintf(stdout, "\nerror: %s", e->error.c_str());
      break;
    }
    std::fprintf(stdout, "\n");
    if (chat_template) messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
  engine.stop();
}

int run_chat(const ChatOptions& opt) {
  validate(opt.defaults.sampling);
  Run run = start_run(opt.model, opt.dist, true);
  if (run.leader() && !run.files.tokenizer)
    fail("{}: chat needs a tokenizer (tokenizer.json or a GGUF vocabulary)", run.files.path);
  std::optional<ChatTemplate> chat_template;
  if (run.leader()) {
    try {
      chat_template = load_chat_template(run.files.path);
    } catch (const std::exception& e) {
      // Under mpirun stdout and stderr are forwarded separately and would interleave with the prompt: the
      // notice goes to stdout there, as generate's figures do.
      std::fprintf(launched_by_mpirun() ? stdout : stderr, "no chat template (%s): each line is completed as plain text\n",
                   e.what());
      std::fflush(stdout);
    }
  }
  ThreadPool pool(opt.model.threads);
  Compute compute = make_compute(opt.model, run, pool, gpu_memory_cap(opt.dist, *run.comm));
  Session session(*run.model, *compute.session_comm, *compute.backend, opt.model.context_for(run.files.config), 1);
  BatchEngine engine(session, *run.comm, run.files.tokenizer.get(), {.max_batch = 1, .queue_limit = 0});
  if (!run.leader()) {
    engine.run();
    return 0;
  }
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  action.sa_flags = SA_RESTART;  // a Ctrl-C at the prompt does not end the read
  sigaction(SIGINT, &action, nullptr);
  std::thread io([&] { converse(opt, engine, *run.files.tokenizer, chat_template); });
  try {
    engine.run();
  } catch (...) {
    io.detach();  // it waits on stdin; the process ends with the error
    throw;
  }
  io.join();
  return 0;
}

}  // namespace

Action register_chat(CLI::App& app) {
  auto opt = std::make_shared<ChatOptions>();
  opt->defaults.max_tokens = 512;
  CLI::App* cmd = app.add_subcommand("chat", "talk to the model in the terminal (its chat template, streamed)");
  opt->model.add_to(*cmd);
  opt->dist.add_to(*cmd);
  cmd->add_option("--system", opt->system, "a system message to start the conversation with");
  cmd->add_option("-n,--max-tokens", opt->defaults.max_tokens, "most tokens per answer (default 512)")
      ->check(CLI::PositiveNumber);
  add_sampling_options(*cmd, opt->defaults.sampling, opt->defaults.stop);
  cmd->add_flag("--no-thinking", opt->no_thinking, "pass enable_thinking=false to the template (Qwen3)");
  return [opt]() -> int { return run_distributed(opt->dist, [opt] { return run_chat(*opt); }); };
}

}  // namespace uneven::cli
