// `uneven generate`: load a model and stream a completion of a prompt, ending with a line of figures.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "comm/collective.h"
#include "engine/generator.h"
#include "util/error.h"

namespace uneven::cli {

Action register_generate(CLI::App& app) {
  struct Options {
    ModelOptions model;
    GenerateRequest request;
    bool json = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  opt->model.add_to(*cmd);
  cmd->add_option("--prompt,-p", opt->request.prompt, "prompt text")->required();
  cmd->add_option("-n,--max-tokens", opt->request.max_tokens, "tokens to generate (default 64)");
  cmd->add_option("--temp", opt->request.sampling.temperature, "temperature (0 = greedy, default)");
  cmd->add_option("--top-k", opt->request.sampling.top_k, "keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", opt->request.sampling.top_p, "nucleus sampling mass (1 = off)");
  cmd->add_option("--min-p", opt->request.sampling.min_p, "drop tokens below min_p x the top probability (0 = off)");
  cmd->add_option("--seed", opt->request.sampling.seed, "sampling seed");
  cmd->add_option("--stop", opt->request.stop, "stop before this string (repeatable)");
  cmd->add_flag("--ignore-eos", opt->request.ignore_eos, "keep generating past end-of-sequence tokens");
  cmd->add_flag("--json", opt->json, "print one JSON object (ids, text, figures) instead of streaming");

  return [opt]() -> int {
    validate(opt->request.sampling);
    ModelFiles files = open_model(opt->model.model_path, opt->model.open_options(true));
    if (!files.tokenizer) fail("{}: generate needs a tokenizer (tokenizer.json or a GGUF vocabulary)", files.path);
    Model model(files.config, single_rank_slices(files.config), *files.weights, terminal_progress("loading"));
    ThreadPool pool(opt->model.threads);
    auto comm = make_local_collective();
    Session session(model, *comm, pool, opt->model.context_for(files.config));
    auto on_text = [&](std::string_view piece) {
      if (opt->json) return;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
    GenerateResult r = generate(session, *comm, files.tokenizer.get(), opt->request, on_text);
    if (opt->json) {
      nlohmann::json out = {
          {"prompt_ids", r.prompt_ids},
          {"generated_ids", r.generated_ids},
          {"text", r.text},
          {"finish_reason", r.finish_reason},
          {"prompt_tokens", r.prompt_ids.size()},
          {"prompt_tokens_per_second", r.prompt_tokens_per_second()},
          {"generated_tokens", r.generated_ids.size()},
          {"decode_tokens_per_second", r.decode_tokens_per_second()},
      };
      std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
      std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | generated: %zu tokens, %.1f tok/s | finish: %s\n",
                   r.prompt_ids.size(), r.prompt_tokens_per_second(), r.generated_ids.size(),
                   r.decode_tokens_per_second(), r.finish_reason.c_str());
    }
    return 0;
  };
}

}  // namespace uneven::cli
