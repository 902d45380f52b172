// `uneven bench`: prompt and decode speed of a model, with the weight-read bandwidth decode achieves
// beside the machine's streaming read bandwidth measured in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "comm/collective.h"
#include "engine/session.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Bytes of weights one decode step reads: every matrix this rank holds except the embedding, whose
// lookup reads one row (unless it doubles as the output head).
uint64_t decode_weight_bytes(const Model& model) {
  const ModelWeights& w = model.weights();
  uint64_t embedding = w.embedding.bytes.size();
  return model.config().tie_word_embeddings ? w.bytes : w.bytes - embedding;
}

}  // namespace

Action register_bench(CLI::App& app) {
  struct Options {
    ModelOptions model;
    int64_t prompt_tokens = 32;
    int64_t decode_tokens = 16;
    bool skip_bandwidth = false;
    bool json = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prompt and decode speed (random token ids)");
  opt->model.add_to(*cmd);
  cmd->add_option("--prompt-tokens", opt->prompt_tokens, "prompt length (default 32)")->check(CLI::PositiveNumber);
  cmd->add_option("--decode-tokens", opt->decode_tokens, "tokens decoded one at a time (default 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--skip-bandwidth", opt->skip_bandwidth, "do not measure the streaming read bandwidth");
  cmd->add_flag("--json", opt->json, "print the figures as one JSON object");

  return [opt]() -> int {
    ModelFiles files = open_model(opt->model.model_path, opt->model.open_options(false));
    const ModelConfig& c = files.config;
    double t0 = now_s();
    Model model(c, single_rank_slices(c), *files.weights, terminal_progress("loading"));
    double load_s = now_s() - t0;
    ThreadPool pool(opt->model.threads);
    auto comm = make_local_collective();
    const int64_t context = std::max(opt->model.context_for(c), opt->prompt_tokens + opt->decode_tokens);
    Session session(model, *comm, pool, std::min(context, c.max_position));

    // Deterministic pseudo-random token ids; speed does not depend on them.
    std::vector<TokenId> prompt(size_t(opt->prompt_tokens));
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = TokenId((i * 7919 + 13) % uint64_t(c.vocab_size));
    std::vector<float> logits;
    session.forward(prompt.data(), 1, logits);  // warm-up: pages in the weights
    session.reset();
    t0 = now_s();
    session.forward(prompt.data(), int64_t(prompt.size()), logits);
    const double prompt_s = now_s() - t0;
    t0 = now_s();
    for (int64_t i = 0; i < opt->decode_tokens; ++i) {
      TokenId next = TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin());
      session.forward(&next, 1, logits);
    }
    const double decode_s = now_s() - t0;
    const double decode_tps = double(opt->decode_tokens) / decode_s;
    const uint64_t bytes_per_token = decode_weight_bytes(model);
    const double weight_gbps = double(bytes_per_token) * decode_tps / 1e9;
    const double stream_gbps = opt->skip_bandwidth ? 0.0 : kernels::measure_read_bandwidth(pool) / 1e9;

    nlohmann::json out = {
        {"model", files.weights->describe() + " " + opt->model.model_path},
        {"architecture", c.architecture},
        {"weight_dtype", std::string(dtype_name(model.weights().layers[size_t(model.slices().layers.begin)].q.view.dtype))},
        {"threads", pool.size()},
        {"load_seconds", load_s},
        {"weight_bytes", model.weights().bytes},
        {"decode_weight_bytes_per_token", bytes_per_token},
        {"prompt_tokens", opt->prompt_tokens},
        {"prompt_tokens_per_second", double(opt->prompt_tokens) / prompt_s},
        {"decode_tokens", opt->decode_tokens},
        {"decode_tokens_per_second", decode_tps},
        {"decode_weight_read_gb_per_second", weight_gbps},
        {"stream_read_gb_per_second", stream_gbps},
        {"fraction_of_stream_bandwidth", stream_gbps > 0 ? weight_gbps / stream_gbps : 0.0},
    };
    if (opt->json) {
      std::printf("%s\n", out.dump().c_str());
    } else {
      std::printf("model        %s (%s, %s weights, %.2f GB, %d threads, loaded in %.1f s)\n",
                  opt->model.model_path.c_str(), c.architecture.c_str(), out["weight_dtype"].get<std::string>().c_str(),
                  double(model.weights().bytes) / 1e9, pool.size(), load_s);
      std::printf("prompt       %lld tokens  %.1f tok/s\n", (long long)opt->prompt_tokens, double(opt->prompt_tokens) / prompt_s);
      std::printf("decode       %lld tokens  %.2f tok/s  (%.1f ms/token)\n", (long long)opt->decode_tokens, decode_tps,
                  1e3 / decode_tps);
      std::printf("weight read  %.2f GB/s of %.2f GB/s streaming read bandwidth (%.0f%%)\n", weight_gbps, stream_gbps,
                  stream_gbps > 0 ? 100.0 * weight_gbps / stream_gbps : 0.0);
    }
    return 0;
  };
}

}  // namespace uneven::cli
