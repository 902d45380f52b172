// The generation loop: prompt as one batch, then one token per step, with stop strings held back.
#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "util/error.h"

namespace uneven {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

size_t stop_hold_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}

double GenerateResult::prompt_tokens_per_second() const {
  return prompt_seconds > 0 ? double(prompt_ids.size()) / prompt_seconds : 0;
}
double GenerateResult::decode_tokens_per_second() const {
  // The first generated token comes from the prompt pass; decode speed counts the steps after it.
  return decode_seconds > 0 && generated_ids.size() > 1 ? double(generated_ids.size() - 1) / decode_seconds : 0;
}

GenerateResult generate(Session& session, Collective& comm, const Tokenizer* tokenizer, const GenerateRequest& request,
                        const std::function<void(std::string_view)>& on_text) {
  const bool leader = comm.rank() == 0;
  GenerateResult result;
  int64_t max_tokens = request.max_tokens;
  if (leader) {
    if (!tokenizer) fail("rank 0 needs a tokenizer to generate");
    if (max_tokens < 0) fail("the number of tokens to generate must be >= 0, got {}", max_tokens);
    for (const auto& s : request.stop)
      if (s.empty()) fail("stop strings must not be empty");
    result.prompt_ids = tokenizer->encode(request.prompt, true);
    if (result.prompt_ids.empty()) fail("the prompt encodes to no tokens; give a non-empty prompt");
    if (int64_t(result.prompt_ids.size()) > session.context())
      fail("the prompt is {} tokens long but the context holds {} tokens", result.prompt_ids.size(), session.context());
    max_tokens = std::min<int64_t>(max_tokens, session.context() - int64_t(result.prompt_ids.size()));
  }
  // The leader's decisions travel to the followers: prompt ids, then each sampled token.
  int64_t header[2] = {int64_t(result.prompt_ids.size()), max_tokens};
  comm.broadcast(header, sizeof header, 0);
  result.prompt_ids.resize(size_t(header[0]));
  comm.broadcast(result.prompt_ids.data(), int64_t(result.prompt_ids.size() * sizeof(TokenId)), 0);
  max_tokens = header[1];

  session.reset();
  Sampler sampler(request.sampling);
  std::vector<TokenId> eos;
  std::optional<StreamDecoder> stream;
  if (leader) {
    eos = tokenizer->eos_ids();
    for (int64_t id : session.model().config().eos_token_ids) eos.push_back(TokenId(id));
    stream.emplace(*tokenizer);
  }
  size_t emitted = 0;  // bytes of result.text already passed to on_text
  auto emit_until = [&](size_t end) {
    if (on_text && end > emitted) on_text(std::string_view(result.text).substr(emitted, end - emitted));
    emitted = std::max(emitted, end);
  };

  std::vector<float> logits;
  const int64_t vocab = session.model().config().vocab_size;
  double t0 = now_s();
  if (max_tokens > 0) session.forward(result.prompt_ids.data(), int64_t(result.prompt_ids.size()), logits);
  double t_prompt_done = now_s();
  result.prompt_seconds = t_prompt_done - t0;
  result.finish_reason = "length";
  for (int64_t step = 0; step < max_tokens; ++step) {
    if (leader && request.record_logits) result.step_logits.insert(result.step_logits.end(), logits.begin(), logits.end());
    int64_t next = leader ? sampler.sample(logits.data(), vocab) : 0;
    comm.broadcast(&next, sizeof next, 0);
    TokenId token = TokenId(next);
    if (leader && !request.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
      result.finish_reason = "eos";
    }
    int64_t stop_flag = result.finish_reason == "eos" ? 1 : 0;
    if (leader && stop_flag == 0) {
      result.generated_ids.push_back(token);
      result.text += stream->push(token);
      size_t cut = std::string::npos;
      for (const auto& s : request.stop) cut = std::min(cut, result.text.find(s));
      if (cut != std::string::npos) {
        result.text.resize(cut);
        result.finish_reason = "stop";
        stop_flag = 1;
      }
      emit_until(stop_flag ? result.text.size() : result.text.size() - stop_hold_back(result.text, request.stop));
    }
    if (comm.size() > 1) comm.broadcast(&stop_flag, sizeof stop_flag, 0);
    if (stop_flag) break;
    if (!leader) result.generated_ids.push_back(token);
    if (step + 1 < max_tokens) session.forward(&token, 1, logits);
  }
  if (leader && result.finish_reason != "stop") {
    result.text += stream->flush();
    emit_until(result.text.size());
  }
  result.decode_seconds = now_s() - t_prompt_done;
  return result;
}

}  // namespace uneven
