// Continuous batching over the session's slots: rank 0 admits jobs, composes each step (a decode token per
// running sequence plus a piece of a waiting prompt), broadcasts it, and samples; every rank runs it.
#include "serve/batch_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/generator.h"
#include "util/error.h"

namespace uneven {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// What rank 0 broadcasts per step: a command, then per segment (slot, count, flags) and the token ids.
constexpr int64_t kStop = 0, kStep = 1;             // commands
constexpr int64_t kWantLogits = 1, kResetFirst = 2;  // segment flags

// log-softmax of logits / temperature (raw logits when greedy): the distribution reported as logprobs.
void log_softmax(const float* logits, int64_t vocab, float temperature, std::vector<float>& out) {
  const float t = temperature > 0 ? temperature : 1.0f;
  out.resize(size_t(vocab));
  float max_logit = *std::max_element(logits, logits + vocab);
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) total += std::exp(double(logits[i] - max_logit) / t);
  const double log_total = std::log(total);
  for (int64_t i = 0; i < vocab; ++i) out[size_t(i)] = float(double(logits[i] - max_logit) / t - log_total);
}

}  // namespace

std::optional<JobEvent> JobHandle::next(int timeout_ms) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty(); }))
    return std::nullopt;
  JobEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void JobHandle::push(JobEvent e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  ready_.notify_all();
}

// A sequence in a slot (rank 0 only).
struct BatchEngine::Active {
  CompletionJob job;
  std::shared_ptr<JobHandle> handle;
  int64_t slot = 0;
  int64_t prompt_done = 0;  // prompt tokens in the cache
  bool started = false;     // its slot was reset (the first piece of its prompt was sent)
  Sampler sampler;
  StreamDecoder stream;
  std::string text;          // generated text so far (cut at a stop string)
  size_t emitted = 0;        // bytes of text already sent
  std::vector<TokenLogprob> unsent_logprobs;
  int64_t generated = 0;
  TokenId next_input = 0;    // the last sampled token, fed at the next step
  bool has_next = false;

  Active(CompletionJob j, std::shared_ptr<JobHandle> h, int64_t s, const Tokenizer& tokenizer)
      : job(std::move(j)), handle(std::move(h)), slot(s), sampler(job.sampling), stream(tokenizer) {}
  bool prefilling() const { return prompt_done < int64_t(job.prompt.size()); }
};

BatchEngine::BatchEngine(Session& session, Collective& comm, const Tokenizer* tokenizer, BatchOptions options)
    : session_(session), comm_(comm), tokenizer_(tokenizer), options_(options) {
  if (options_.max_batch <= 0) fail("--max-batch must be at least 1, got {}", options_.max_batch);
  if (options_.max_batch > session.slots())
    fail("--max-batch {} needs as many sequence slots, the session has {}", options_.max_batch, session.slots());
  if (options_.max_batch > session.max_chunk())
    fail("--max-batch {} is more than the {} tokens one step runs on this backend", options_.max_batch,
         session.max_chunk());
  if (options_.queue_limit < 0) fail("the queue limit must be >= 0, got {}", options_.queue_limit);
  if (options_.prompt_tokens_per_step <= 0 || options_.prompt_tokens_per_step > session.max_chunk())
    options_.prompt_tokens_per_step = session.max_chunk();
  if (comm.rank() == 0) {
    if (!tokenizer_) fail("rank 0 needs a tokenizer to serve");
    eos_ = tokenizer_->eos_ids();
    for (int64_t id : session.model().config().eos_token_ids) eos_.push_back(TokenId(id));
  }
  active_.resize(size_t(options_.max_batch));
}

BatchEngine::~BatchEngine() { fail_all("the server is shutting down"); }

std::shared_ptr<JobHandle> BatchEngine::submit(CompletionJob job) {
  const int64_t context = session_.context(), vocab = session_.model().config().vocab_size;
  if (job.prompt.empty()) fail("the prompt encodes to no tokens; give a non-empty prompt");
  if (int64_t(job.prompt.size()) >= context)
    fail("the prompt is {} tokens long but the context holds {} tokens (prompt and at least one generated token)",
         job.prompt.size(), context);
  for (TokenId id : job.prompt)
    if (id < 0 || id >= vocab) fail("token id {} is outside the vocabulary of {} tokens", id, vocab);
  if (job.max_tokens <= 0) fail("max_tokens must be at least 1, got {}", job.max_tokens);
  if (job.top_logprobs > 20) fail("top_logprobs must be between 0 and 20, got {}", job.top_logprobs);
  for (const auto& s : job.stop)
    if (s.empty()) fail("stop strings must not be empty");
  validate(job.sampling);
  job.max_tokens = std::min<int64_t>(job.max_tokens, context - int64_t(job.prompt.size()));
  auto handle = std::make_shared<JobHandle>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) fail("the server is shutting down");
    int64_t free_slots = 0;
    for (const auto& a : active_) free_slots += a ? 0 : 1;
    if (int64_t(queue_.size()) >= options_.queue_limit + free_slots) {
      ++stats_.rejected;
      throw QueueFull(fmt::format("{} requests are waiting (the queue holds {} beyond the {} running); retry later",
                                  queue_.size(), options_.queue_limit, options_.max_batch));
    }
    queue_.emplace_back(std::move(job), handle);
    ++stats_.requests;
  }
  work_.notify_all();
  return handle;
}

void BatchEngine::stop() {
  stopping_ = true;
  work_.notify_all();
}

BatchStats BatchEngine::stats() const {
  std::lock_guard lock(mutex_);
  BatchStats s = stats_;
  // Tokens sampled in the last 5 seconds (of wall time, idle included).
  constexpr double kWindow = 5.0;
  const double now = now_s();
  int64_t tokens = 0;
  for (const auto& [t, n] : recent_) tokens += t >= now - kWindow ? n : 0;
  s.decode_tokens_per_second = double(tokens) / kWindow;
  s.queued = int64_t(queue_.size());
  s.active = 0;
  for (const auto& a : active_) s.active += a ? 1 : 0;
  return s;
}

void BatchEngine::fail_all(const std::string& why) {
  std::lock_guard lock(mutex_);
  JobEvent e;
  e.kind = JobEvent::Kind::Failed;
  e.error = why;
  for (auto& a : active_)
    if (a) {
      a->handle->push(e);
      ++stats_.failed;
      a.reset();
    }
  for (auto& [job, handle] : queue_) {
    handle->push(e);
    ++stats_.failed;
  }
  queue_.clear();
}

void BatchEngine::run() {
  try {
    while (step()) {
    }
  } catch (const std::exception& e) {
    fail_all(fmt::format("the cluster stopped: {}", e.what()));
    throw;
  }
  fail_all("the server is shutting down");
}

bool BatchEngine::step() {
  const bool leader = comm_.rank() == 0;
  // The step's composition: [command, segments, tokens] then per segment [slot, count, flags], then ids.
  std::vector<int64_t> plan;
  std::vector<TokenId> tokens;
  std::vector<Active*> owners;  // rank 0: the sequence behind each segment
  if (leader) {
    std::unique_lock lock(mutex_);
    for (;;) {
      // Cancelled sequences leave; waiting jobs take free slots.
      for (auto& a : active_)
        if (a && a->handle->cancelled()) {
          ++stats_.cancelled;
          a.reset();
        }
      for (size_t slot = 0; slot < active_.size() && !queue_.empty(); ++slot) {
        if (active_[slot]) continue;
        auto [job, handle] = std::move(queue_.front());
        queue_.pop_front();
        if (handle->cancelled()) {
          ++stats_.cancelled;
          continue;
        }
        active_[slot] = std::make_unique<Active>(std::move(job), std::move(handle), int64_t(slot), *tokenizer_);
      }
      bool any = false;
      for (const auto& a : active_) any = any || a;
      if (stopping_ || any) break;
      // Idle: wait for work (bounded, so a stop is noticed even without a notify).
      work_.wait_for(lock, std::chrono::milliseconds(100));
    }
    if (stopping_) {
      plan = {kStop, 0, 0};
    } else {
      plan = {kStep, 0, 0};
      // Running sequences first, a token each; then prompt pieces in slot order within the step's budget.
      int64_t budget = session_.max_chunk();
      for (auto& a : active_)
        if (a && !a->prefilling() && a->has_next) {
          plan.insert(plan.end(), {a->slot, 1, kWantLogits});
          tokens.push_back(a->next_input);
          owners.push_back(a.get());
          --budget;
        }
      int64_t prompt_budget = std::min(budget, options_.prompt_tokens_per_step);
      for (auto& a : active_) {
        if (!a || !a->prefilling() || prompt_budget <= 0) continue;
        const int64_t n = std::min(prompt_budget, int64_t(a->job.prompt.size()) - a->prompt_done);
        const bool completes = a->prompt_done + n == int64_t(a->job.prompt.size());
        plan.insert(plan.end(), {a->slot, n, (completes ? kWantLogits : 0) | (a->started ? 0 : kResetFirst)});
        tokens.insert(tokens.end(), a->job.prompt.begin() + a->prompt_done, a->job.prompt.begin() + a->prompt_done + n);
        owners.push_back(a.get());
        prompt_budget -= n;
      }
      plan[1] = int64_t(owners.size());
      plan[2] = int64_t(tokens.size());
    }
  }
  if (comm_.size() > 1) {
    int64_t header[3] = {leader ? plan[0] : 0, leader ? plan[1] : 0, leader ? plan[2] : 0};
    comm_.broadcast(header, sizeof header, 0);
    plan.resize(size_t(3 + 3 * header[1]));
    std::copy(header, header + 3, plan.begin());
    tokens.resize(size_t(header[2]));
    comm_.broadcast(plan.data() + 3, int64_t(3 * header[1] * sizeof(int64_t)), 0);
    comm_.broadcast(tokens.data(), int64_t(tokens.size() * sizeof(TokenId)), 0);
  }
  if (plan[0] == kStop) return false;

  const double t0 = now_s();
  std::vector<Segment> segments;
  int64_t at = 0;
  for (int64_t i = 0; i < plan[1]; ++i) {
    const int64_t slot = plan[size_t(3 + 3 * i)], count = plan[size_t(4 + 3 * i)], flags = plan[size_t(5 + 3 * i)];
    if (flags & kResetFirst) session_.reset(slot);
    segments.push_back({slot, tokens.data() + at, count, (flags & kWantLogits) != 0});
    at += count;
  }
  std::vector<float> logits;
  session_.forward_batch(segments, logits);
  if (!leader) return true;

  // Rank 0: advance each sequence; sample where logits came back.
  const int64_t vocab = session_.model().config().vocab_size;
  std::lock_guard lock(mutex_);
  ++stats_.steps;
  size_t row = 0;
  std::vector<float> logprobs;
  for (size_t i = 0; i < segments.size(); ++i) {
    Active& a = *owners[i];
    if (a.prefilling()) {
      a.started = true;
      a.prompt_done += segments[i].count;
      if (!a.prefilling()) stats_.prompt_tokens += int64_t(a.job.prompt.size());
    }
    if (!segments[i].logits) continue;
    const float* l = logits.data() + row++ * vocab;
    const TokenId token = a.sampler.sample(l, vocab);
    a.next_input = token;
    a.has_next = true;
    ++a.generated;
    ++stats_.completion_tokens;
    std::string finish;
    if (!a.job.ignore_eos && std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
      a.text += a.stream.flush();
      finish = "stop";
    } else {
      if (a.job.top_logprobs >= 0) {
        log_softmax(l, vocab, a.job.sampling.temperature, logprobs);
        TokenLogprob lp{token, tokenizer_->token_bytes(token), logprobs[size_t(token)], {}};
        std::vector<TokenId> best(static_cast<size_t>(vocab));
        for (int64_t k = 0; k < vocab; ++k) best[size_t(k)] = TokenId(k);
        const size_t n = std::min<size_t>(size_t(a.job.top_logprobs), best.size());
        std::partial_sort(best.begin(), best.begin() + long(n), best.end(), [&](TokenId x, TokenId y) {
          return logprobs[size_t(x)] > logprobs[size_t(y)] || (logprobs[size_t(x)] == logprobs[size_t(y)] && x < y);
        });
        for (size_t k = 0; k < n; ++k) lp.top.emplace_back(tokenizer_->token_bytes(best[k]), logprobs[size_t(best[k])]);
        a.unsent_logprobs.push_back(std::move(lp));
      }
      a.text += a.stream.push(token);
      size_t cut = std::string::npos;
      for (const auto& s : a.job.stop) cut = std::min(cut, a.text.find(s));
      if (cut != std::string::npos) {
        a.text.resize(cut);
        finish = "stop";
      } else if (a.generated >= a.job.max_tokens) {
        a.text += a.stream.flush();
        finish = "length";
      }
    }
    const size_t end = finish.empty() ? a.text.size() - stop_hold_back(a.text, a.job.stop) : a.text.size();
    if (end > a.emitted || (!a.unsent_logprobs.empty() && !finish.empty())) {
      JobEvent e;
      e.text = a.text.substr(a.emitted, end - std::min(end, a.emitted));
      e.tokens = std::move(a.unsent_logprobs);
      a.unsent_logprobs.clear();
      a.emitted = std::max(a.emitted, end);
      a.handle->push(std::move(e));
    }
    if (!finish.empty()) {
      JobEvent done;
      done.kind = JobEvent::Kind::Done;
      done.finish_reason = finish;
      done.prompt_tokens = int64_t(a.job.prompt.size());
      done.completion_tokens = a.generated;
      a.handle->push(std::move(done));
      ++stats_.completed;
      active_[size_t(a.slot)].reset();
    }
  }
  const double t1 = now_s();
  stats_.busy_s += t1 - t0;
  stats_.times = session_.times();
  recent_.emplace_back(t1, int64_t(row));
  while (!recent_.empty() && recent_.front().first < t1 - 5.0) recent_.pop_front();
  return true;
}

}  // namespace uneven
