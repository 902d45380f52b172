// `uneven bench`: prompt and decode speed of a model on one rank or many, with the weight-read
// bandwidth decode achieves beside the machine's streaming read bandwidth, and per-rank compute and
// communication time per token beside the plan's prediction.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/compute_setup.h"
#include "cli/run_setup.h"
#include "runtime/node_info.h"
#include "engine/session.h"
#include "util/error.h"

namespace uneven::cli {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

nlohmann::json reads_json(const WeightReads& r) {
  return {{"attention", r.attention}, {"linear_attention", r.linear}, {"dense_mlp", r.mlp},
          {"routers_and_gates", r.router}, {"shared_experts", r.shared}, {"routed_experts", r.experts},
          {"head_and_embedding", r.head}, {"total", r.total()}};
}

// (a - b) * scale, part by part: the reads of one stretch of the run, per token or per chunk.
WeightReads reads_between(const WeightReads& a, const WeightReads& b, double scale) {
  return {(a.attention - b.attention) * scale, (a.linear - b.linear) * scale, (a.mlp - b.mlp) * scale,
          (a.router - b.router) * scale, (a.shared - b.shared) * scale, (a.experts - b.experts) * scale,
          (a.head - b.head) * scale};
}

// Bytes of routed-expert weights this rank holds (what one pass over every expert reads).
double expert_bytes_held(const Model& model) {
  double n = 0;
  for (const LayerWeights& l : model.weights().layers) {
    for (const Linear& m : l.expert_gate_up) n += double(m.bytes.size());
    for (const Linear& m : l.expert_down) n += double(m.bytes.size());
  }
  return n;
}

// The dtype of the weight matrices (the first one held).
DType held_dtype(const Model& model) {
  for (const LayerWeights& l : model.weights().layers)
    for (const Linear* m : {&l.q, &l.linear_in, &l.gate_up, &l.shared_gate_up})
      if (m->view.rows > 0) return m->view.dtype;
  return model.weights().embedding.view.dtype;
}

// Mean seconds of one all-reduce of `count` floats (0 on a single rank).
double all_reduce_latency(Collective& comm, int64_t count) {
  if (comm.size() == 1) return 0;
  std::vector<float> buf(size_t(count), 1.0f);
  for (int i = 0; i < 10; ++i) comm.all_reduce_sum(buf.data(), count);
  const int reps = 200;
  comm.barrier();
  double t0 = now_s();
  for (int i = 0; i < reps; ++i) comm.all_reduce_sum(buf.data(), count);
  return (now_s() - t0) / reps;
}

struct BenchOptions {
  ModelOptions model;
  DistributedOptions dist;
  int64_t prompt_tokens = 32;
  int64_t decode_tokens = 16;
  bool skip_bandwidth = false;
  bool json = false;
  std::vector<int64_t> streams;  // also decode this many sequences at once (a server's batch), each count
};

// Aggregate decode speed of `streams` sequences decoded together (one forward per step over all of them,
// as the server's batches run): each gets a short prompt of its own, then `steps` steps.
double batched_decode_tokens_per_second(const Model& model, Collective& comm, Backend& backend, int64_t streams,
                                        int64_t steps, int64_t context) {
  const int64_t vocab = model.config().vocab_size;
  Session session(model, comm, backend, context, streams);
  std::vector<float> logits;
  std::vector<std::vector<TokenId>> prompts(static_cast<size_t>(streams));
  std::vector<TokenId> next(static_cast<size_t>(streams));
  for (int64_t k = 0; k < streams; ++k) {
    for (int64_t i = 0; i < 8; ++i) prompts[size_t(k)].push_back(TokenId((k * 131 + i * 7919 + 13) % vocab));
    session.forward_batch({Segment{k, prompts[size_t(k)].data(), 8, true}}, logits);
    next[size_t(k)] = TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<Segment> segments;
  for (int64_t k = 0; k < streams; ++k) segments.push_back({k, &next[size_t(k)], 1, true});
  session.forward_batch(segments, logits);  // warm-up of the batched step
  comm.barrier();
  const double t0 = now_s();
  for (int64_t step = 0; step < steps; ++step) {
    session.forward_batch(segments, logits);
    for (int64_t k = 0; k < streams; ++k) {
      const float* l = logits.data() + k * vocab;
      next[size_t(k)] = TokenId(std::max_element(l, l + vocab) - l);
    }
  }
  return double(streams * steps) / (now_s() - t0);
}

int run_bench(const BenchOptions& opt) {
  double t0 = now_s();
  Run run = start_run(opt.model, opt.dist, false);
  const double load_s = now_s() - t0;
  const ModelConfig& c = run.files.config;
  Collective& comm = *run.comm;
  ThreadPool pool(opt.model.threads);
  const int64_t context = std::min(std::max(opt.model.context_for(c), opt.prompt_tokens + opt.decode_tokens + 1), c.max_position);
  Compute compute = make_compute(opt.model, run, pool, gpu_memory_cap(opt.dist, comm));
  Session session(*run.model, *compute.session_comm, *compute.backend, context);

  // Deterministic token ids; speed does not depend on them.
  std::vector<TokenId> prompt(size_t(opt.prompt_tokens));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = TokenId((i * 7919 + 13) % uint64_t(c.vocab_size));
  std::vector<float> logits;
  // Warm-up of both paths (pages in the weights; a GPU loads its kernels and records the decode step).
  session.forward(prompt.data(), std::min<int64_t>(opt.prompt_tokens, session.max_chunk()), logits);
  session.forward(prompt.data(), 1, logits);
  session.reset();
  comm.barrier();
  const WeightReads before_prompt = session.times().reads;
  t0 = now_s();
  session.forward(prompt.data(), int64_t(prompt.size()), logits);
  const double prompt_s = now_s() - t0;
  const ForwardTimes before = session.times();
  const int64_t chunks = (opt.prompt_tokens + session.max_chunk() - 1) / session.max_chunk();
  const WeightReads per_chunk = reads_between(before.reads, before_prompt, 1.0 / double(chunks));
  t0 = now_s();
  for (int64_t i = 0; i < opt.decode_tokens; ++i) {
    TokenId next = TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin());
    session.forward(&next, 1, logits);  // every rank picks the same argmax of identical logits
  }
  const double decode_s = now_s() - t0;
  const double per_token_compute = (session.times().compute_s - before.compute_s) / double(opt.decode_tokens);
  const double per_token_comm = (session.times().comm_s - before.comm_s) / double(opt.decode_tokens);
  const double allreduce_s = all_reduce_latency(comm, c.hidden_size);
  const double all_reduces_per_token = double(session.times().all_reduces - before.all_reduces) / double(opt.decode_tokens);
  const double stream_gbps = opt.skip_bandwidth ? 0.0 : compute.backend->measure_read_bandwidth() / 1e9;
  // Weight bytes decode actually read per token: every held matrix but the embedding (one row per token)
  // and, of the routed experts, only the ones the router chose.
  const WeightReads per_token = reads_between(session.times().reads, before.reads, 1.0 / double(opt.decode_tokens));
  const double bytes_per_token = per_token.total();
  const double rank_gbps = bytes_per_token / (decode_s / double(opt.decode_tokens)) / 1e9;
  const double experts_held = expert_bytes_held(*run.model);

  nlohmann::json mine = {
      {"rank", comm.rank()},
      {"weight_bytes", run.model->weights().bytes},
      {"planned_weight_bytes", run.setup.planned[size_t(comm.rank())].weights},
      {"planned_bytes", run.setup.planned[size_t(comm.rank())].total()},
      {"resident_weight_bytes", run.resident_weight_bytes},
      {"file_bytes_read", run.file_bytes_read},
      {"os_file_bytes_loaded", run.os_file_bytes_loaded},
      {"decode_weight_bytes_per_token", bytes_per_token},
      {"decode_read_bytes_per_token", reads_json(per_token)},
      {"decode_read_gb_per_second", rank_gbps},
      {"fraction_of_own_stream_bandwidth", stream_gbps > 0 ? rank_gbps / stream_gbps : 0.0},
      {"prompt_read_bytes_per_chunk", reads_json(per_chunk)},
      {"routed_expert_bytes_held", experts_held},
      {"compute_ms_per_token", per_token_compute * 1e3},
      {"comm_ms_per_token", per_token_comm * 1e3},
      // Of the communication time, what the all-reduces cost at their measured latency; the rest is
      // waiting for slower ranks (load imbalance) and the output head's gather.
      {"all_reduces_per_token", all_reduces_per_token},
      {"all_reduce_ms_per_token_at_measured_latency", all_reduces_per_token * allreduce_s * 1e3},
      {"stream_read_gb_per_second", stream_gbps},
  };
  // The bandwidth the plan split by (given, or measured at start; 0: unknown, shares by memory alone).
  double planned_gbps = 0;
  if (!run.setup.plan_json.empty()) {
    const nlohmann::json plan = nlohmann::json::parse(run.setup.plan_json);
    if (plan.contains("nodes") && size_t(comm.rank()) < plan["nodes"].size())
      planned_gbps = plan["nodes"][size_t(comm.rank())].value("bandwidth", 0.0);
  }
  mine["planned_bandwidth_gb_per_second"] = planned_gbps;
  // Batched decode (before the gather, every rank takes part).
  std::vector<std::pair<int64_t, double>> stream_rates;
  for (int64_t n : opt.streams) {
    if (n > session.max_chunk())
      fail("--streams {} is more than the {} tokens one step runs on this backend", n, session.max_chunk());
    stream_rates.emplace_back(n, batched_decode_tokens_per_second(*run.model, *compute.session_comm, *compute.backend,
                                                                  n, opt.decode_tokens, std::min<int64_t>(context, 8 + opt.decode_tokens + 2)));
  }
  mine["peak_resident_bytes"] = peak_resident_memory_bytes();
  std::vector<std::string> ranks_json = all_gather_strings(comm, mine.dump());
  if (!run.leader()) return 0;

  const double decode_tps = double(opt.decode_tokens) / decode_s;
  const double weight_gbps = bytes_per_token * decode_tps / 1e9;
  nlohmann::json out = {
      {"model", run.files.weights->describe() + " " + opt.model.model_path},
      {"architecture", c.architecture},
      {"weight_dtype", std::string(dtype_name(held_dtype(*run.model)))},
      {"ranks", comm.size()},
      {"threads", pool.size()},
      {"simd_target", kernels::simd_target()},
      {"device", compute.backend->name()},
      // The mode the plan chose (under --mode auto: by the link measured at start).
      {"mode", run.setup.plan_json.empty() ? std::string("single")
                                           : nlohmann::json::parse(run.setup.plan_json).value("mode", std::string("?"))},
      {"load_seconds", load_s},
      {"prompt_tokens", opt.prompt_tokens},
      {"prompt_tokens_per_second", double(opt.prompt_tokens) / prompt_s},
      {"prompt_chunks", chunks},
      {"decode_tokens", opt.decode_tokens},
      {"decode_tokens_per_second", decode_tps},
      {"decode_weight_read_gb_per_second", weight_gbps},
      {"stream_read_gb_per_second", stream_gbps},
      {"fraction_of_stream_bandwidth", stream_gbps > 0 ? weight_gbps / stream_gbps : 0.0},
      {"all_reduce_hidden_us", allreduce_s * 1e6},
      {"predicted_ms_per_token", run.setup.predicted_seconds_per_token * 1e3},
      {"per_rank", nlohmann::json::array()},
  };
  // What the plan's shares predict on the bandwidths measured in this run (the planner's own time model, with
  // measured instead of given GB/s): each rank's bytes read per token over its streaming bandwidth; the
  // slowest rank's in tensor parallelism, the sum over stages in a pipeline (stages run one after another).
  const bool pipeline = !run.model->slices().stage_layers.empty();
  double measured_prediction_s = 0, all_ranks_bytes = 0;
  for (const auto& r : ranks_json) {
    out["per_rank"].push_back(nlohmann::json::parse(r));
    const auto& last = out["per_rank"].back();
    const double gbps = last["stream_read_gb_per_second"];
    const double rank_s = gbps > 0 ? last["decode_weight_bytes_per_token"].get<double>() / (gbps * 1e9) : 0.0;
    measured_prediction_s = pipeline ? measured_prediction_s + rank_s : std::max(measured_prediction_s, rank_s);
    all_ranks_bytes += last["decode_weight_bytes_per_token"].get<double>();
  }
  out["predicted_ms_per_token_at_measured_bandwidth"] = measured_prediction_s * 1e3;
  // What the ranks read together per second of decode (on one machine they share its memory bandwidth).
  out["all_ranks_read_bytes_per_token"] = all_ranks_bytes;
  out["all_ranks_read_gb_per_second"] = all_ranks_bytes * decode_tps / 1e9;
  out["streams"] = nlohmann::json::array();
  const double one_stream = stream_rates.empty() ? 0 : stream_rates.front().second / double(stream_rates.front().first);
  for (const auto& [n, rate] : stream_rates)
    out["streams"].push_back({{"streams", n}, {"aggregate_decode_tokens_per_second", rate},
                              {"per_stream_tokens_per_second", rate / double(n)}});
  if (opt.json) {
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("model        %s (%s, %s weights, %d rank(s), %d threads, rank 0 on %s, loaded in %.1f s)\n",
              opt.model.model_path.c_str(), c.architecture.c_str(), out["weight_dtype"].get<std::string>().c_str(),
              comm.size(), pool.size(), compute.backend->name().c_str(), load_s);
  std::printf("prompt       %lld tokens  %.1f tok/s\n", (long long)opt.prompt_tokens, double(opt.prompt_tokens) / prompt_s);
  std::printf("             %lld chunk(s) of up to %lld tokens; weights read per chunk %.1f MB", (long long)chunks,
              (long long)session.max_chunk(), per_chunk.total() / 1e6);
  if (experts_held > 0)
    std::printf(", routed experts %.1f MB of %.1f MB held (each expert at most once per chunk)", per_chunk.experts / 1e6,
                experts_held / 1e6);
  std::printf("\n");
  std::printf("decode       %lld tokens  %.2f tok/s  (%.2f ms/token)\n", (long long)opt.decode_tokens, decode_tps, 1e3 / decode_tps);
  std::printf("read/token   %.1f MB: attention %.1f, linear attention %.1f, dense MLP %.1f, routers %.2f, shared experts "
              "%.1f, routed experts %.1f, head %.1f\n", bytes_per_token / 1e6, per_token.attention / 1e6,
              per_token.linear / 1e6, per_token.mlp / 1e6, per_token.router / 1e6, per_token.shared / 1e6,
              per_token.experts / 1e6, per_token.head / 1e6);
  if (stream_gbps > 0)
    std::printf("weight read  %.2f GB/s on rank 0 of %.2f GB/s streaming read bandwidth (%.0f%%)\n", weight_gbps, stream_gbps,
                100.0 * weight_gbps / stream_gbps);
  else
    std::printf("weight read  %.2f GB/s on rank 0 (streaming read bandwidth not measured)\n", weight_gbps);
  for (const auto& [n, rate] : stream_rates)
    std::printf("streams %3lld %.2f tok/s together, %.2f each (%.2fx the first row's per-stream rate)\n", (long long)n,
                rate, rate / double(n), one_stream > 0 ? rate / one_stream : 0.0);
  if (comm.size() > 1) {
    const double together = out["all_ranks_read_gb_per_second"];
    std::printf("all ranks    %.1f MB/token read, %.2f GB/s together", all_ranks_bytes / 1e6, together);
    if (stream_gbps > 0) std::printf(" (%.0f%% of rank 0's streaming read bandwidth)", 100.0 * together / stream_gbps);
    std::printf("\n");
    std::printf("all-reduce   %.1f us for %lld floats (hidden size)\n", allreduce_s * 1e6, (long long)c.hidden_size);
    if (run.setup.predicted_seconds_per_token > 0)
      std::printf("plan         predicted %.2f ms/token (from the bandwidths it was planned with)\n", run.setup.predicted_seconds_per_token * 1e3);
    if (measured_prediction_s > 0)
      std::printf("plan         predicted %.2f ms/token at the streaming bandwidths measured here (%s)\n",
                  measured_prediction_s * 1e3, pipeline ? "sum of the stages" : "slowest rank");
    std::printf("rank  weights(GB)  read MB/tok  read GB/s  of own stream  compute ms/tok  comm ms/tok  comm share  "
                "of which all-reduce transfers\n");
    for (const auto& r : out["per_rank"]) {
      double cm = r["compute_ms_per_token"], co = r["comm_ms_per_token"];
      std::printf("%4d  %11.3f  %11.1f  %9.2f  %12.0f%%  %14.2f  %11.2f  %9.0f%%  %.2f ms (%.0f x %.1f us)\n",
                  r["rank"].get<int>(), r["weight_bytes"].get<double>() / 1e9,
                  r["decode_weight_bytes_per_token"].get<double>() / 1e6, r["decode_read_gb_per_second"].get<double>(),
                  100.0 * r["fraction_of_own_stream_bandwidth"].get<double>(), cm, co,
                  cm + co > 0 ? 100.0 * co / (cm + co) : 0.0,
                  r["all_reduce_ms_per_token_at_measured_latency"].get<double>(), r["all_reduces_per_token"].get<double>(),
                  allreduce_s * 1e6);
    }
  }
  return 0;
}

}  // namespace

Action register_bench(CLI::App& app) {
  auto opt = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prompt and decode speed (fixed token ids)");
  opt->model.add_to(*cmd);
  opt->dist.add_to(*cmd);
  cmd->add_option("--prompt-tokens", opt->prompt_tokens, "prompt length (default 32)")->check(CLI::PositiveNumber);
  cmd->add_option("--decode-tokens", opt->decode_tokens, "tokens decoded one at a time (default 16)")->check(CLI::PositiveNumber);
  cmd->add_flag("--skip-bandwidth", opt->skip_bandwidth, "do not measure the streaming read bandwidth");
  cmd->add_flag("--json", opt->json, "print the figures as one JSON object");
  cmd->add_option("--streams", opt->streams,
                  "also decode N sequences together (a server's batch), e.g. --streams 1,4,8: aggregate tok/s")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  return [opt]() -> int { return run_distributed(opt->dist, [opt] { return run_bench(*opt); }); };
}

}  // namespace uneven::cli
