// Continuous batching: jobs queue from any thread; every rank runs the same steps, each step one forward
// over every active sequence (a decode token each, plus a piece of a prompt), so weights are read once per
// step for all of them.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "comm/collective.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "tokenizer/tokenizer.h"

namespace uneven {

// One completion to run: prompt token ids (already rendered and encoded) and how to sample.
struct CompletionJob {
  std::vector<TokenId> prompt;
  int64_t max_tokens = 16;  // > 0; capped by what the context leaves after the prompt
  SamplingParams sampling;
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool ignore_eos = false;
  int top_logprobs = -1;  // -1: no logprobs; 0..20: the sampled token's log-probability and this many best
};

// The log-probabilities of one generated token under the distribution it was sampled from (after
// temperature, before the top-k/top-p/min-p filters: what OpenAI reports).
struct TokenLogprob {
  TokenId id = 0;
  std::string text;  // the token's own bytes (may be part of a UTF-8 character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // best first
};

// What the engine tells the job's owner, in order: text pieces as they become final (never half a UTF-8
// character, never part of a stop string), then exactly one end.
struct JobEvent {
  enum class Kind { Text, Done, Failed } kind = Kind::Text;
  std::string text;                  // Text: the new piece
  std::vector<TokenLogprob> tokens;  // Text: the tokens behind this piece (with top_logprobs >= 0)
  // Done:
  std::string finish_reason;  // "stop" (eos or a stop string) or "length"
  int64_t prompt_tokens = 0, completion_tokens = 0;
  // Failed: why (the server answers with an error, not a hang).
  std::string error;
};

// The owner's side of a queued job; thread-safe.
class JobHandle {
 public:
  // Waits up to timeout_ms for the next event; nullopt on timeout.
  std::optional<JobEvent> next(int timeout_ms);
  // The client went away: the engine drops the sequence at its next step and frees its slot.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class BatchEngine;
  void push(JobEvent e);
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<JobEvent> events_;
  std::atomic<bool> cancelled_{false};
};

struct BatchStats {
  int64_t requests = 0, completed = 0, failed = 0, cancelled = 0, rejected = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  int64_t active = 0, queued = 0;
  int64_t steps = 0;
  double busy_s = 0;  // wall time inside steps
  ForwardTimes times;  // rank 0's compute and communication time
  double decode_tokens_per_second = 0;  // tokens sampled over the last 5 seconds (0 when idle that long)
};

struct BatchOptions {
  int64_t max_batch = 8;     // sequences at once (the session's slots)
  int64_t queue_limit = 64;  // jobs waiting beyond max_batch; more are refused (QueueFull)
  // Prompt tokens per step beside the decode tokens (so a long prompt does not stall the others); at most
  // the session's chunk.
  int64_t prompt_tokens_per_step = 0;  // 0: the session's chunk
};

struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class BatchEngine {
 public:
  // `session` must have at least options.max_batch slots. Only rank 0 needs `tokenizer`.
  BatchEngine(Session& session, Collective& comm, const Tokenizer* tokenizer, BatchOptions options);
  ~BatchEngine();

  // Rank 0, any thread: queues a job. Throws QueueFull when queue_limit jobs are waiting, uneven::Error on
  // a job that cannot run (empty prompt, prompt longer than the context, max_tokens <= 0, bad sampling).
  std::shared_ptr<JobHandle> submit(CompletionJob job);

  // Every rank: runs steps until stop() (rank 0 then tells the others). Jobs in flight when it returns,
  // or when a step throws (a rank died), get a Failed event; the exception goes on.
  void run();
  // Any thread on rank 0: run() returns after the current step.
  void stop();

  BatchStats stats() const;
  const BatchOptions& options() const { return options_; }

 private:
  struct Active;
  bool step();  // one step on every rank; false when told to stop
  void fail_all(const std::string& why);

  Session& session_;
  Collective& comm_;
  const Tokenizer* tokenizer_;
  BatchOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::deque<std::pair<CompletionJob, std::shared_ptr<JobHandle>>> queue_;
  std::vector<std::unique_ptr<Active>> active_;  // by slot; null when free
  std::atomic<bool> stopping_{false};
  BatchStats stats_;
  std::deque<std::pair<double, int64_t>> recent_;  // (end time, tokens sampled) of the last 5 s of steps
  std::vector<TokenId> eos_;
};

}  // namespace uneven
