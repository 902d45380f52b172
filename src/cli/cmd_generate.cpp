// `uneven generate`: load a model (on one rank or many) and stream a completion of a prompt, ending
// with a line of figures.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/compute_setup.h"
#include "cli/run_setup.h"
#include "comm/collective.h"
#include "engine/generator.h"
#include "runtime/memory_report.h"
#include "util/error.h"
#include "util/text_file.h"

namespace uneven::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  DistributedOptions dist;
  GenerateRequest request;
  bool json = false;
  std::string logits_out;
  std::string prompt_file;
};

int run_generate(const GenerateOptions& opt) {
  validate(opt.request.sampling);
  Run run = start_run(opt.model, opt.dist, true);
  if (run.leader() && !run.files.tokenizer)
    fail("{}: generate needs a tokenizer (tokenizer.json or a GGUF vocabulary)", run.files.path);
  ThreadPool pool(opt.model.threads);
  Compute compute = make_compute(opt.model, run, pool, gpu_memory_cap(opt.dist, *run.comm));
  Session session(*run.model, *compute.session_comm, *compute.backend, opt.model.context_for(run.files.config));
  auto on_text = [&](std::string_view piece) {
    if (opt.json) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  GenerateRequest request = opt.request;
  if (!opt.prompt_file.empty()) request.prompt = read_text_file(opt.prompt_file);
  else if (request.prompt.empty()) fail("give a prompt: --prompt TEXT or --prompt-file FILE");
  request.record_logits = !opt.logits_out.empty();
  GenerateResult r = generate(session, *run.comm, run.files.tokenizer.get(), request, on_text);
  const nlohmann::json memory = gather_memory_report(*run.comm, run.setup.planned[size_t(run.comm->rank())]);
  if (!run.leader()) return 0;
  if (!opt.logits_out.empty()) {
    std::FILE* f = std::fopen(opt.logits_out.c_str(), "wb");
    if (!f) fail("{}: cannot open for writing", opt.logits_out);
    size_t written = std::fwrite(r.step_logits.data(), sizeof(float), r.step_logits.size(), f);
    if (std::fclose(f) != 0 || written != r.step_logits.size()) fail("{}: write failed", opt.logits_out);
  }
  if (opt.json) {
    nlohmann::json out = {
        {"prompt_ids", r.prompt_ids},
        {"generated_ids", r.generated_ids},
        {"text", r.text},
        {"finish_reason", r.finish_reason},
        {"ranks", run.comm->size()},
        {"prompt_tokens", r.prompt_ids.size()},
        {"prompt_tokens_per_second", r.prompt_tokens_per_second()},
        {"generated_tokens", r.generated_ids.size()},
        {"decode_tokens_per_second", r.decode_tokens_per_second()},
        {"memory", memory},
    };
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
    // Under mpirun the two streams are forwarded separately and would interleave: the figures follow the
    // text on stdout there. Alone, they go to stderr, so that stdout holds only the text.
    std::FILE* figures = launched_by_mpirun() ? stdout : stderr;
    std::fprintf(figures, "prompt: %zu tokens, %.1f tok/s | generated: %zu tokens, %.1f tok/s | finish: %s\n",
                 r.prompt_ids.size(), r.prompt_tokens_per_second(), r.generated_ids.size(), r.decode_tokens_per_second(),
                 r.finish_reason.c_str());
    std::fputs(describe_memory_report(memory).c_str(), figures);
  }
  return 0;
}

}  // namespace

Action register_generate(CLI::App& app) {
  auto opt = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  opt->model.add_to(*cmd);
  opt->dist.add_to(*cmd);
  auto* prompt = cmd->add_option("--prompt,-p", opt->request.prompt, "prompt text");
  auto* prompt_file = cmd->add_option("--prompt-file", opt->prompt_file, "read the prompt from this file (bytes as they are)");
  prompt->excludes(prompt_file);
  prompt_file->excludes(prompt);
  cmd->add_option("-n,--max-tokens", opt->request.max_tokens, "tokens to generate (default 64)");
  add_sampling_options(*cmd, opt->request.sampling, opt->request.stop);
  cmd->add_flag("--ignore-eos", opt->request.ignore_eos, "keep generating past end-of-sequence tokens");
  cmd->add_flag("--json", opt->json, "print one JSON object (ids, text, figures) instead of streaming");
  cmd->add_option("--logits-out", opt->logits_out, "write the logits of every sampled step (raw float32) to this file");
  return [opt]() -> int { return run_distributed(opt->dist, [opt] { return run_generate(*opt); }); };
}

}  // namespace uneven::cli
