// Batched sequences: a session's slots run together equal each sequence run alone (dense, hybrid, MoE,
// split over ranks); the batch engine gives every job the tokens it gets alone, whatever else is running.
#include <gtest/gtest.h>

#include <thread>

#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine_test_util.h"
#include "test_files.h"
#include "serve/batch_engine.h"
#include "util/error.h"

namespace uneven {
namespace {

using testing::planned_slices;
using testing::tiny_config;
using testing::tiny_hybrid;


// A sequence to feed: its prompt, then the tokens it will be fed after it (teacher forcing, so a batched
// run feeds the same tokens as the solo run whatever its logits).
struct Feed {
  std::vector<TokenId> prompt, decode;
};

std::vector<Feed> feeds(int64_t vocab) {
  std::vector<Feed> out;
  for (int64_t n : {int64_t(5), int64_t(17), int64_t(40), int64_t(9)}) {
    Feed f;
    for (int64_t i = 0; i < n; ++i) f.prompt.push_back(TokenId((i * 31 + n * 7 + 3) % vocab));
    for (int64_t i = 0; i < 6; ++i) f.decode.push_back(TokenId((i * 13 + n) % vocab));
    out.push_back(f);
  }
  return out;
}

// Solo: the logits after the prompt, then after each decode token (slot 0 of a one-slot session).
std::vector<std::vector<float>> solo_logits(Session& s, const Feed& f) {
  std::vector<std::vector<float>> out(1);
  s.reset();
  s.forward(f.prompt.data(), int64_t(f.prompt.size()), out[0]);
  for (size_t i = 0; i + 1 < f.decode.size(); ++i) {
    out.emplace_back();
    s.forward(&f.decode[i], 1, out.back());
  }
  return out;
}

// Batched: sequence k goes into slot k % slots once the previous occupant is done; each step takes prompt
// pieces of varying size (a prompt crosses steps and shares them with others' decode tokens).
std::vector<std::vector<std::vector<float>>> batched_logits(Session& s, const std::vector<Feed>& fs) {
  const int64_t vocab = s.model().config().vocab_size;
  std::vector<std::vector<std::vector<float>>> out(fs.size());
  std::vector<size_t> fed(fs.size(), 0);  // tokens of prompt + decode fed so far
  std::vector<int64_t> occupant(size_t(s.slots()), -1);
  size_t next = 0;
  for (int step = 0; step < 200; ++step) {
    for (int64_t slot = 0; slot < s.slots(); ++slot) {
      int64_t& k = occupant[size_t(slot)];
      if (k >= 0 && fed[size_t(k)] == fs[size_t(k)].prompt.size() + fs[size_t(k)].decode.size() - 1) k = -1;
      if (k < 0 && next < fs.size()) {
        k = int64_t(next++);
        s.reset(slot);
      }
    }
    std::vector<Segment> segments;
    std::vector<int64_t> owners;
    std::vector<std::vector<TokenId>> pieces(size_t(s.slots()));
    int64_t budget = s.max_chunk();
    for (int64_t slot = 0; slot < s.slots(); ++slot) {
      const int64_t k = occupant[size_t(slot)];
      if (k < 0) continue;
      const Feed& f = fs[size_t(k)];
      size_t& done = fed[size_t(k)];
      std::vector<TokenId>& piece = pieces[size_t(slot)];
      if (done < f.prompt.size()) {
        const size_t n = std::min<size_t>({f.prompt.size() - done, size_t(3 + (step * 7 + slot * 5) % 11), size_t(budget)});
        piece.assign(f.prompt.begin() + long(done), f.prompt.begin() + long(done + n));
      } else {
        piece = {f.decode[done - f.prompt.size()]};
      }
      if (piece.empty()) continue;
      budget -= int64_t(piece.size());
      done += piece.size();
      segments.push_back({slot, piece.data(), int64_t(piece.size()), done >= f.prompt.size()});
      owners.push_back(k);
    }
    if (segments.empty()) break;
    std::vector<float> logits;
    s.forward_batch(segments, logits);
    size_t row = 0;
    for (size_t i = 0; i < segments.size(); ++i)
      if (segments[i].logits) {
        out[size_t(owners[i])].emplace_back(logits.begin() + long(row * vocab), logits.begin() + long((row + 1) * vocab));
        ++row;
      }
  }
  return out;
}

// On every rank of a split (thread ranks), the batched run of `fs` over `slots` slots against the solo
// runs; logits within `tol`.
void expect_batched_equals_solo(const ModelConfig& c, const std::vector<RankSlices>& slices, int64_t slots, float tol) {
  auto src = make_random_weight_source(c, DType::F32, 11);
  const std::vector<Feed> fs = feeds(c.vocab_size);
  auto group = make_thread_group(int(slices.size()));
  std::vector<std::vector<std::vector<std::vector<float>>>> solo(slices.size()), batched(slices.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < slices.size(); ++r)
    threads.emplace_back([&, r] {
      Model model(c, slices[r], *src);
      ThreadPool pool(1);
      Session one(model, *group[r], pool, 64);
      for (const Feed& f : fs) solo[r].push_back(solo_logits(one, f));
      Session many(model, *group[r], pool, 64, slots);
      batched[r] = batched_logits(many, fs);
    });
  for (auto& t : threads) t.join();
  float worst = 0;
  for (size_t k = 0; k < fs.size(); ++k) {
    ASSERT_EQ(batched[0][k].size(), solo[0][k].size()) << "sequence " << k;
    for (size_t i = 0; i < solo[0][k].size(); ++i) {
      const float d = testing::max_abs_diff(batched[0][k][i], solo[0][k][i]);
      worst = std::max(worst, d);
      EXPECT_LE(d, tol) << "sequence " << k << ", logits " << i;
      const auto argmax = [](const std::vector<float>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); };
      EXPECT_EQ(argmax(batched[0][k][i]), argmax(solo[0][k][i])) << "sequence " << k << ", logits " << i;
    }
  }
  std::printf("%s, %zu ranks, %lld slots: batched vs alone max |logit diff| %.2e\n", c.architecture.c_str(),
              slices.size(), (long long)slots, worst);
}

TEST(BatchedSession, DenseSequencesTogetherEqualEachAlone) {
  const ModelConfig c = tiny_config();
  expect_batched_equals_solo(c, {single_rank_slices(c)}, 3, 1e-4f);
  expect_batched_equals_solo(c, planned_slices(c, {5, 2, 1}), 2, 1e-4f);
}

TEST(BatchedSession, HybridMoeSequencesTogetherEqualEachAlone) {
  const ModelConfig c = tiny_hybrid(false);
  expect_batched_equals_solo(c, {single_rank_slices(c)}, 3, 1e-4f);
  expect_batched_equals_solo(c, planned_slices(c, {3, 1}), 4, 1e-4f);
}

TEST(BatchedSession, BadBatchesAreRefused) {
  const ModelConfig c = tiny_config();
  auto src = make_random_weight_source(c, DType::F32, 1);
  Model model(c, single_rank_slices(c), *src);
  ThreadPool pool(1);
  auto comm = make_local_collective();
  Session s(model, *comm, pool, 16, 2);
  std::vector<TokenId> t(20, 1);
  std::vector<float> logits;
  testing::expect_error([&] { s.forward_batch({}, logits); }, {"no segments"});
  testing::expect_error([&] { s.forward_batch({{2, t.data(), 1, true}}, logits); }, {"slot 2 is outside the session's 2 slots"});
  testing::expect_error([&] { s.forward_batch({{0, t.data(), 1, true}, {0, t.data(), 1, true}}, logits); },
                        {"slot 0 appears twice"});
  testing::expect_error([&] { s.forward_batch({{1, t.data(), 17, true}}, logits); },
                        {"17 tokens at position 0 of slot 1 exceed the context length of 16"});
  std::vector<TokenId> bad = {1, 96};
  testing::expect_error([&] { s.forward_batch({{1, bad.data(), 2, true}}, logits); },
                        {"token id 96 at index 1 is outside the vocabulary of 96"});
  testing::expect_error([&] { Session(model, *comm, pool, 16, 0); }, {"1 to 4096 sequences, asked for 0"});
}

// The engine on a real model and tokenizer: stories260K.
class BatchEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = open_model(std::string(UNEVEN_SOURCE_DIR) + "/models/stories260K.gguf", {});
    model_ = std::make_unique<Model>(files_.config, single_rank_slices(files_.config), *files_.weights);
    comm_ = make_local_collective();
  }
  // What generate() gives this prompt alone (greedy).
  GenerateResult alone(const std::string& prompt, int64_t max_tokens, std::vector<std::string> stop = {}) {
    Session s(*model_, *comm_, pool_, 256);
    GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.stop = std::move(stop);
    return generate(s, *comm_, files_.tokenizer.get(), r);
  }
  CompletionJob job(const std::string& prompt, int64_t max_tokens) {
    CompletionJob j;
    j.prompt = files_.tokenizer->encode(prompt, true);
    j.max_tokens = max_tokens;
    return j;
  }
  // Collects a job's events until its end (bounded wait).
  static std::pair<std::string, JobEvent> collect(JobHandle& h) {
    std::string text;
    for (int i = 0; i < 600; ++i) {
      auto e = h.next(100);
      if (!e) continue;
      if (e->kind == JobEvent::Kind::Text) text += e->text;
      else return {text, *e};
    }
    ADD_FAILURE() << "no end event within 60 s";
    return {text, {}};
  }
  ModelFiles files_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Collective> comm_;
  ThreadPool pool_{2};
};

TEST_F(BatchEngineTest, ConcurrentJobsGetWhatEachGetsAlone) {
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog", "Lily and Ben went to the park",
                                            "One day", "Tom had a red ball", "The sun was", "She", "A big"};
  std::vector<GenerateResult> want;
  for (size_t i = 0; i < prompts.size(); ++i) want.push_back(alone(prompts[i], 12 + int64_t(i) * 5));

  Session session(*model_, *comm_, pool_, 256, 3);
  BatchEngine engine(session, *comm_, files_.tokenizer.get(), {.max_batch = 3, .queue_limit = 16, .prompt_tokens_per_step = 4});
  std::thread runner([&] { engine.run(); });
  std::vector<std::shared_ptr<JobHandle>> handles;
  for (size_t i = 0; i < prompts.size(); ++i) handles.push_back(engine.submit(job(prompts[i], 12 + int64_t(i) * 5)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto [text, end] = collect(*handles[i]);
    EXPECT_EQ(end.kind, JobEvent::Kind::Done) << end.error;
    EXPECT_EQ(text, want[i].text) << prompts[i];
    EXPECT_EQ(end.completion_tokens, int64_t(want[i].generated_ids.size())) << prompts[i];
    EXPECT_EQ(end.prompt_tokens, int64_t(want[i].prompt_ids.size()));
    EXPECT_EQ(end.finish_reason, want[i].finish_reason == "eos" ? "stop" : want[i].finish_reason);
  }
  engine.stop();
  runner.join();
  const BatchStats st = engine.stats();
  EXPECT_EQ(st.completed, int64_t(prompts.size()));
  EXPECT_EQ(st.active, 0);
  EXPECT_GT(st.steps, 0);
}

TEST_F(BatchEngineTest, StopStringsCancellationAndLimits) {
  const GenerateResult full = alone("Once upon a time", 40);
  ASSERT_GT(full.text.size(), 20u);
  const std::string stop = full.text.substr(10, 4);
  const GenerateResult stopped = alone("Once upon a time", 40, {stop});
  ASSERT_EQ(stopped.finish_reason, "stop");

  Session session(*model_, *comm_, pool_, 256, 2);
  BatchEngine engine(session, *comm_, files_.tokenizer.get(), {.max_batch = 2, .queue_limit = 1});
  // Bad jobs are refused at submit, before they queue.
  testing::expect_error([&] { engine.submit(job("Once", 0)); }, {"max_tokens must be at least 1, got 0"});
  CompletionJob empty;
  testing::expect_error([&] { engine.submit(empty); }, {"no tokens"});
  CompletionJob longer = job("Once", 4);
  longer.prompt.assign(256, 1);
  testing::expect_error([&] { engine.submit(longer); }, {"the prompt is 256 tokens long but the context holds 256"});
  CompletionJob bad_stop = job("Once", 4);
  bad_stop.stop = {""};
  testing::expect_error([&] { engine.submit(bad_stop); }, {"stop strings must not be empty"});

  // Before run(): two fit the free slots, one the queue, the fourth is refused.
  CompletionJob with_stop = job("Once upon a time", 40);
  with_stop.stop = {stop};
  auto a = engine.submit(with_stop);
  auto b = engine.submit(job("The little dog", 200));
  auto c = engine.submit(job("Once upon a time", 40));
  EXPECT_THROW(engine.submit(job("One day", 5)), QueueFull);
  b->cancel();  // gone before it ran: its slot goes to c
  std::thread runner([&] { engine.run(); });
  auto [text_a, end_a] = collect(*a);
  auto [text_c, end_c] = collect(*c);
  EXPECT_EQ(text_a, stopped.text);
  EXPECT_EQ(end_a.finish_reason, "stop");
  EXPECT_EQ(text_c, full.text);
  EXPECT_EQ(end_c.finish_reason, full.finish_reason == "eos" ? "stop" : full.finish_reason);
  // Cancelled mid-run: the slot frees and a later job runs as if alone.
  auto d = engine.submit(job("Lily and Ben", 200));
  ASSERT_TRUE(d->next(10000).has_value());
  d->cancel();
  auto e = engine.submit(job("Once upon a time", 40));
  auto [text_e, end_e] = collect(*e);
  EXPECT_EQ(text_e, full.text);
  engine.stop();
  runner.join();
  const BatchStats st = engine.stats();
  EXPECT_EQ(st.cancelled, 2);
  EXPECT_EQ(st.rejected, 1);
  EXPECT_EQ(st.active, 0);
}

TEST_F(BatchEngineTest, LogprobsAreTheLogSoftmaxOfTheSampledDistribution) {
  Session session(*model_, *comm_, pool_, 256, 1);
  BatchEngine engine(session, *comm_, files_.tokenizer.get(), {.max_batch = 1});
  std::thread runner([&] { engine.run(); });
  CompletionJob j = job("Once upon a time", 6);
  j.top_logprobs = 3;
  auto h = engine.submit(j);
  std::vector<TokenLogprob> got;
  for (int i = 0; i < 600; ++i) {
    auto e = h->next(100);
    if (!e) continue;
    if (e->kind != JobEvent::Kind::Text) break;
    got.insert(got.end(), e->tokens.begin(), e->tokens.end());
  }
  engine.stop();
  runner.join();
  ASSERT_EQ(got.size(), 6u);
  // The reference: logits of the solo run, log-softmaxed here.
  Session s(*model_, *comm_, pool_, 256);
  GenerateRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 6;
  r.record_logits = true;
  GenerateResult want = generate(s, *comm_, files_.tokenizer.get(), r);
  const int64_t vocab = files_.config.vocab_size;
  for (size_t i = 0; i < got.size(); ++i) {
    const float* l = want.step_logits.data() + i * size_t(vocab);
    const float mx = *std::max_element(l, l + vocab);
    double z = 0;
    for (int64_t k = 0; k < vocab; ++k) z += std::exp(double(l[k] - mx));
    EXPECT_EQ(got[i].id, want.generated_ids[i]);
    EXPECT_NEAR(got[i].logprob, double(l[got[i].id] - mx) - std::log(z), 1e-4);
    ASSERT_EQ(got[i].top.size(), 3u);
    EXPECT_EQ(got[i].top[0].first, files_.tokenizer->token_bytes(got[i].id));  // greedy: the best is the sampled one
    EXPECT_GE(got[i].top[0].second, got[i].top[1].second);
    EXPECT_GE(got[i].top[1].second, got[i].top[2].second);
  }
}

}  // namespace
}  // namespace uneven
