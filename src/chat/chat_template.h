// A model's chat template (from a Hugging Face directory or a GGUF file) and rendering a conversation.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "chat/jinja.h"

namespace uneven {

struct ChatTemplate {
  std::string source;     // the Jinja text
  std::string bos_token;  // empty: the model has none, and the template sees bos_token undefined
  std::string eos_token;  // likewise
  std::string origin;     // where it was read from, for messages
  // Parsed by load/make with their Options; render_chat parses `source` with default Options when null.
  std::shared_ptr<const jinja::Template> compiled;
};

// From a model path, in transformers' order of preference:
//  - a directory: chat_template.jinja, else tokenizer_config.json's "chat_template" (a string, or a list of
//    {name, template} from which "default" is taken), else chat_template.json; bos/eos tokens from
//    tokenizer_config.json (strings or {"content": ...} objects);
//  - a .gguf file: the tokenizer.chat_template metadata string, bos/eos from the vocabulary's token ids;
//  - any other file: its text is the template.
// Throws uneven::Error naming the path and what was missing or malformed, and parse errors with line:column.
ChatTemplate load_chat_template(const std::string& model_path, const jinja::Options& options = {});

// A template given as text (the server's --chat-template override, tests).
ChatTemplate make_chat_template(std::string source, std::string bos_token, std::string eos_token,
                                const jinja::Options& options = {});

// Renders `messages` as transformers' apply_chat_template(tokenize=False) does: the variables are
// messages, tools (None when `tools` is null), documents (None), add_generation_prompt, bos_token and
// eos_token where the model has them, then every key of `extra_context` (e.g. enable_thinking).
// messages must be an array of objects with a string "role"; tools null or an array. ordered_json keeps
// the key order of the request, which tojson output shows.
std::string render_chat(const ChatTemplate& chat_template, const nlohmann::ordered_json& messages,
                        const nlohmann::ordered_json& tools, bool add_generation_prompt,
                        const nlohmann::ordered_json& extra_context);

}  // namespace uneven
