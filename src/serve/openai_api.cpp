// Parsing OpenAI request bodies into CompletionRequest, and building OpenAI's response objects and chunks.
#include "serve/openai_api.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

namespace uneven::serve {
namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // requests keep their key order: a template's tojson shows it

// A JSON value's kind in the words OpenAI's errors use.
std::string kind(const ojson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// The field, or null when it is absent or null: OpenAI treats an explicit null as "not given".
const ojson* field(const ojson& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number_in(const ojson& v, const std::string& name, double lo, double hi) {
  if (!v.is_number()) invalid(name, fmt::format("'{}' must be a number, got {}", name, kind(v)), "invalid_type");
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) invalid(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x), "invalid_value");
  return x;
}

int64_t integer(const ojson& v, const std::string& name) {
  if (!v.is_number_integer()) invalid(name, fmt::format("'{}' must be an integer, got {}", name, kind(v)), "invalid_type");
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
    invalid(name, fmt::format("'{}' is too large: {}", name, v.get<uint64_t>()), "invalid_value");
  return v.get<int64_t>();
}

bool boolean(const ojson& v, const std::string& name) {
  if (!v.is_boolean()) invalid(name, fmt::format("'{}' must be a boolean, got {}", name, kind(v)), "invalid_type");
  return v.get<bool>();
}

// The fields both endpoints share: sampling, lengths, stop, stream, n, model.
void parse_common(const ojson& body, CompletionRequest& r) {
  if (!body.is_object()) invalid("", fmt::format("the request body must be a JSON object, got {}", kind(body)));
  if (const ojson* v = field(body, "model")) {
    if (!v->is_string()) invalid("model", fmt::format("'model' must be a string, got {}", kind(*v)), "invalid_type");
    r.model = v->get<std::string>();
  }
  // max_completion_tokens is the newer name; when both are given it is the one OpenAI honours.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const ojson* v = field(body, name)) {
      const int64_t n = integer(*v, name);
      if (n <= 0) invalid(name, fmt::format("'{}' must be at least 1, got {}", name, n), "invalid_value");
      r.max_tokens = n;
    }
  }
  r.sampling.temperature = 1.0f;
  if (const ojson* v = field(body, "temperature")) r.sampling.temperature = float(number_in(*v, "temperature", 0, 2));
  if (const ojson* v = field(body, "top_p")) {
    const double p = number_in(*v, "top_p", 0, 1);
    // The sampler needs a non-empty nucleus; top_p 0 means "only the best token", which greedy gives.
    if (p == 0) r.sampling.temperature = 0;
    r.sampling.top_p = p == 0 ? 1.0f : float(p);
  }
  if (const ojson* v = field(body, "top_k")) {
    const int64_t k = integer(*v, "top_k");
    // -1 is vLLM's "off", accepted so that its clients work too.
    if (k < -1) invalid("top_k", fmt::format("'top_k' must be >= 0 (0 or -1: off), got {}", k), "invalid_value");
    r.sampling.top_k = k < 0 ? 0 : k;
  }
  if (const ojson* v = field(body, "min_p")) r.sampling.min_p = float(number_in(*v, "min_p", 0, 1));
  if (const ojson* v = field(body, "seed")) {
    r.sampling.seed = uint64_t(integer(*v, "seed"));
    r.seeded = true;
  }
  if (const ojson* v = field(body, "stop")) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4) invalid("stop", fmt::format("'stop' holds at most 4 strings, got {}", v->size()), "invalid_value");
      for (size_t i = 0; i < v->size(); ++i) {
        if (!(*v)[i].is_string())
          invalid("stop", fmt::format("'stop[{}]' must be a string, got {}", i, kind((*v)[i])), "invalid_type");
        r.stop.push_back((*v)[i].get<std::string>());
      }
    } else {
      invalid("stop", fmt::format("'stop' must be a string or an array of strings, got {}", kind(*v)), "invalid_type");
    }
    // An empty stop string would end every completion before its first token: it means nothing.
    std::erase(r.stop, std::string());
  }
  if (const ojson* v = field(body, "stream")) r.stream = boolean(*v, "stream");
  if (const ojson* v = field(body, "stream_options")) {
    if (!v->is_object()) invalid("stream_options", fmt::format("'stream_options' must be an object, got {}", kind(*v)), "invalid_type");
    if (!r.stream) invalid("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (const ojson* u = field(*v, "include_usage")) r.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const ojson* v = field(body, "n")) {
    const int64_t n = integer(*v, "n");
    if (n != 1) invalid("n", fmt::format("'n' must be 1 (one choice per request is supported), got {}", n), "invalid_value");
  }
  if (const ojson* v = field(body, "ignore_eos")) r.ignore_eos = boolean(*v, "ignore_eos");
}

// A message's content: a string, null (an assistant turn with tool calls), or an array of text parts.
ojson message_content(const ojson& content, size_t i) {
  const std::string name = fmt::format("messages[{}].content", i);
  if (content.is_null() || content.is_string()) return content;
  if (!content.is_array())
    invalid(name, fmt::format("'{}' must be a string, null or an array of text parts, got {}", name, kind(content)), "invalid_type");
  std::string text;
  for (size_t p = 0; p < content.size(); ++p) {
    const ojson& part = content[p];
    const std::string pname = fmt::format("{}[{}]", name, p);
    if (!part.is_object()) invalid(pname, fmt::format("'{}' must be an object, got {}", pname, kind(part)), "invalid_type");
    const ojson* type = field(part, "type");
    if (!type || !type->is_string() || *type != "text")
      invalid(pname, fmt::format("'{}' must be a text part ({{\"type\": \"text\", \"text\": ...}}); this model reads text only", pname));
    const ojson* t = field(part, "text");
    if (!t || !t->is_string()) invalid(pname + ".text", fmt::format("'{}.text' must be a string", pname), "invalid_type");
    text += t->get<std::string>();
  }
  return text;
}

}  // namespace

void invalid(const std::string& param, const std::string& message, const std::string& code) {
  throw ApiException(ApiError{400, message, "invalid_request_error", param, code});
}

json error_body(const ApiError& e) {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {{"error", {{"message", e.message}, {"type", e.type}, {"param", or_null(e.param)}, {"code", or_null(e.code)}}}};
}

std::string error_text(const ApiError& e) { return dump(error_body(e)); }

CompletionRequest parse_chat_request(const ojson& body) {
  CompletionRequest r;
  r.endpoint = Endpoint::Chat;
  parse_common(body, r);
  const ojson* messages = field(body, "messages");
  if (!messages) invalid("messages", "'messages' is required", "missing_required_parameter");
  if (!messages->is_array()) invalid("messages", fmt::format("'messages' must be an array, got {}", kind(*messages)), "invalid_type");
  if (messages->empty()) invalid("messages", "'messages' must hold at least one message, got an empty array", "invalid_value");
  r.messages = ojson::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const ojson& m = (*messages)[i];
    const std::string name = fmt::format("messages[{}]", i);
    if (!m.is_object()) invalid(name, fmt::format("'{}' must be an object, got {}", name, kind(m)), "invalid_type");
    const ojson* role = field(m, "role");
    if (!role || !role->is_string()) invalid(name + ".role", fmt::format("'{}.role' must be a string", name), "invalid_type");
    static const std::vector<std::string> roles = {"system", "developer", "user", "assistant", "tool"};
    if (std::find(roles.begin(), roles.end(), role->get<std::string>()) == roles.end())
      invalid(name + ".role",
              fmt::format("'{}.role' must be one of system, developer, user, assistant, tool; got '{}'", name, role->get<std::string>()),
              "invalid_value");
    ojson copy = m;  // other fields (name, tool_calls, tool_call_id) go to the template as they are
    auto c = m.find("content");
    if (c == m.end() && *role != "assistant")
      invalid(name + ".content", fmt::format("'{}.content' is required for a {} message", name, role->get<std::string>()),
              "missing_required_parameter");
    copy["content"] = c == m.end() ? ojson(nullptr) : message_content(*c, i);
    r.messages.push_back(std::move(copy));
  }
  if (const ojson* v = field(body, "tools")) {
    if (!v->is_array()) invalid("tools", fmt::format("'tools' must be an array, got {}", kind(*v)), "invalid_type");
    r.tools = *v;
  }
  if (const ojson* v = field(body, "chat_template_kwargs")) {
    if (!v->is_object()) invalid("chat_template_kwargs", fmt::format("'chat_template_kwargs' must be an object, got {}", kind(*v)), "invalid_type");
    r.chat_template_kwargs = *v;
  }
  const ojson* lp = field(body, "logprobs");
  const bool logprobs = lp && boolean(*lp, "logprobs");
  if (const ojson* v = field(body, "top_logprobs")) {
    const int64_t k = integer(*v, "top_logprobs");
    if (k < 0 || k > 20) invalid("top_logprobs", fmt::format("'top_logprobs' must be in [0, 20], got {}", k), "invalid_value");
    if (!logprobs) invalid("top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
    r.top_logprobs = int(k);
  } else if (logprobs) {
    r.top_logprobs = 0;
  }
  return r;
}

CompletionRequest parse_completion_request(const ojson& body) {
  CompletionRequest r;
  r.endpoint = Endpoint::Completion;
  parse_common(body, r);
  if (!r.max_tokens) r.max_tokens = 16;  // OpenAI's default for completions
  const ojson* p = field(body, "prompt");
  if (!p) invalid("prompt", "'prompt' is required", "missing_required_parameter");
  // One prompt only: a string, [string], [ids...] or [[ids...]].
  const ojson* one = p;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) one = &(*p)[0];
  else if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array()))
    invalid("prompt", fmt::format("'prompt' holds {} prompts; one prompt per request is supported", p->size()), "invalid_value");
  if (one->is_string()) {
    r.prompt_text = one->get<std::string>();
    if (r.prompt_text.empty()) invalid("prompt", "'prompt' is empty", "invalid_value");
  } else if (one->is_array()) {
    if (one->empty()) invalid("prompt", "'prompt' is an empty array of token ids", "invalid_value");
    for (size_t i = 0; i < one->size(); ++i) {
      const ojson& id = (*one)[i];
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        invalid("prompt", fmt::format("'prompt[{}]' must be a token id (an integer >= 0), got {}", i, id.is_number() ? id.dump() : kind(id)),
                "invalid_value");
      r.prompt_ids.push_back(TokenId(id.get<int64_t>()));
    }
    r.prompt_is_ids = true;
  } else {
    invalid("prompt", fmt::format("'prompt' must be a string, an array of one string or an array of token ids, got {}", kind(*one)),
            "invalid_type");
  }
  if (const ojson* v = field(body, "logprobs")) {
    const int64_t k = integer(*v, "logprobs");
    if (k < 0 || k > 20) invalid("logprobs", fmt::format("'logprobs' must be in [0, 20], got {}", k), "invalid_value");
    r.top_logprobs = int(k);
  }
  if (const ojson* v = field(body, "echo"); v && boolean(*v, "echo"))
    invalid("echo", "'echo' is not supported (the prompt is not returned)");
  if (const ojson* v = field(body, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    invalid("suffix", "'suffix' is not supported");
  return r;
}

std::string new_response_id(Endpoint endpoint) {
  // Random per process, then counted: unique within the process, unlikely to repeat across restarts.
  static const uint64_t base = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}-{:016x}{:08x}", endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl", base, uint32_t(counter++));
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}, {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {
json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}
}  // namespace

json chat_logprobs_json(const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const TokenLogprob& t : tokens) {
    json top = json::array();
    for (const auto& [text, lp] : t.top) top.push_back({{"token", text}, {"logprob", lp}, {"bytes", bytes_of(text)}});
    content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", bytes_of(t.text)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json completion_logprobs_json(const std::vector<TokenLogprob>& tokens, int64_t text_offset0) {
  json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  int64_t offset = text_offset0;
  for (const TokenLogprob& t : tokens) {
    out["tokens"].push_back(t.text);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& [text, lp] : t.top) top[text] = lp;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    offset += int64_t(t.text.size());
  }
  return out;
}

namespace {
json head(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}
json reason(const std::string& r) { return r.empty() ? json(nullptr) : json(r); }
}  // namespace

json chat_response(const ResponseMeta& meta, const ChoiceResult& c, bool with_logprobs) {
  json out = head(meta, "chat.completion");
  out["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                                 {"logprobs", with_logprobs ? chat_logprobs_json(c.logprobs) : json(nullptr)},
                                 {"finish_reason", reason(c.finish_reason)}}});
  out["usage"] = usage_json(c.prompt_tokens, c.completion_tokens);
  return out;
}

json completion_response(const ResponseMeta& meta, const ChoiceResult& c, bool with_logprobs) {
  json out = head(meta, "text_completion");
  out["choices"] = json::array({{{"index", 0},
                                 {"text", c.text},
                                 {"logprobs", with_logprobs ? completion_logprobs_json(c.logprobs, 0) : json(nullptr)},
                                 {"finish_reason", reason(c.finish_reason)}}});
  out["usage"] = usage_json(c.prompt_tokens, c.completion_tokens);
  return out;
}

json chat_chunk(const ResponseMeta& meta, const json& delta, const std::string& finish_reason, const json& logprobs,
                bool include_usage) {
  json out = head(meta, "chat.completion.chunk");
  out["choices"] = json::array({{{"index", 0}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", reason(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json completion_chunk(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason, const json& logprobs,
                      bool include_usage) {
  json out = head(meta, "text_completion");
  out["choices"] = json::array({{{"index", 0}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", reason(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk(const ResponseMeta& meta, Endpoint endpoint, int64_t prompt_tokens, int64_t completion_tokens) {
  json out = head(meta, endpoint == Endpoint::Chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return out;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& value) { return "data: " + dump(value) + "\n\n"; }

}  // namespace uneven::serve
