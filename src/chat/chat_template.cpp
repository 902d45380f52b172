// Finding a model's chat template (HF directory or GGUF) and rendering conversations the way transformers does.
#include "chat/chat_template.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/gguf_writer.h"
#include "util/error.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}

// tokenizer_config.json spells special tokens as strings or as AddedToken objects {"content": ...}.
std::string token_text(const nlohmann::json& config, const char* key, const fs::path& path) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  fail("{}: \"{}\" must be a string or an object with a string \"content\"", path.string(), key);
}

// "chat_template" as a string, or a list of {"name", "template"} from which "default" is taken.
std::string template_field(const nlohmann::json& value, const fs::path& path) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string names;
    for (const auto& entry : value) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string())
        fail("{}: each \"chat_template\" list entry must be {{\"name\": str, \"template\": str}}", path.string());
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
    }
    fail("{}: \"chat_template\" lists no \"default\" template (it has: {})", path.string(), names);
  }
  fail("{}: \"chat_template\" must be a string or a list of named templates", path.string());
}

// GGUF metadata payloads (as read_gguf_metadata_raw keeps them): strings are a u64 length then bytes.
struct Payload {
  const std::string& bytes;
  size_t pos = 0;
  const std::string& path;
  template <class T> T read() {
    if (pos + sizeof(T) > bytes.size()) fail("{}: truncated GGUF metadata value", path);
    T v;
    std::memcpy(&v, bytes.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string string() {
    uint64_t n = read<uint64_t>();
    if (n > bytes.size() - pos) fail("{}: GGUF string of {} bytes runs past its value", path, n);
    std::string s = bytes.substr(pos, size_t(n));
    pos += size_t(n);
    return s;
  }
};

std::optional<uint64_t> gguf_uint(const GgufKv& kv, const std::string& path) {
  Payload p{kv.value.payload, 0, path};
  switch (kv.value.type) {
    case GgufType::U32: return p.read<uint32_t>();
    case GgufType::I32: return uint64_t(uint32_t(p.read<int32_t>()));
    case GgufType::U64: return p.read<uint64_t>();
    default: return std::nullopt;
  }
}

ChatTemplate load_gguf(const std::string& path, const jinja::Options& options) {
  std::vector<GgufKv> kvs = read_gguf_metadata_raw(path);
  const GgufKv* tmpl = nullptr;
  const GgufKv* tokens = nullptr;
  std::optional<uint64_t> bos, eos;
  for (const auto& kv : kvs) {
    if (kv.key == "tokenizer.chat_template") tmpl = &kv;
    else if (kv.key == "tokenizer.ggml.tokens") tokens = &kv;
    else if (kv.key == "tokenizer.ggml.bos_token_id") bos = gguf_uint(kv, path);
    else if (kv.key == "tokenizer.ggml.eos_token_id") eos = gguf_uint(kv, path);
  }
  if (!tmpl) fail("{}: the GGUF file has no tokenizer.chat_template metadata", path);
  if (tmpl->value.type != GgufType::String) fail("{}: tokenizer.chat_template is not a string", path);
  std::string source = Payload{tmpl->value.payload, 0, path}.string();
  // The token texts of the bos/eos ids, from the string array tokenizer.ggml.tokens.
  std::string bos_text, eos_text;
  if (tokens && tokens->value.type == GgufType::Array && (bos || eos)) {
    Payload p{tokens->value.payload, 0, path};
    if (p.read<uint32_t>() == uint32_t(GgufType::String)) {
      uint64_t n = p.read<uint64_t>();
      uint64_t last = std::max(bos.value_or(0), eos.value_or(0));
      for (uint64_t i = 0; i < n && i <= last; ++i) {
        std::string s = p.string();
        if (bos && i == *bos) bos_text = s;
        if (eos && i == *eos) eos_text = s;
      }
    }
  }
  ChatTemplate t = make_chat_template(std::move(source), std::move(bos_text), std::move(eos_text), options);
  t.origin = path + " (tokenizer.chat_template)";
  return t;
}

}  // namespace

ChatTemplate make_chat_template(std::string source, std::string bos_token, std::string eos_token,
                                const jinja::Options& options) {
  ChatTemplate t;
  t.source = std::move(source);
  t.bos_token = std::move(bos_token);
  t.eos_token = std::move(eos_token);
  t.compiled = std::make_shared<const jinja::Template>(t.source, options);
  return t;
}

ChatTemplate load_chat_template(const std::string& model_path, const jinja::Options& options) {
  fs::path path(model_path);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    nlohmann::json config = nlohmann::json::object();
    fs::path config_path = path / "tokenizer_config.json";
    if (fs::exists(config_path)) config = read_json(config_path);
    if (!config.is_object()) fail("{}: expected a JSON object", config_path.string());
    std::string bos = token_text(config, "bos_token", config_path), eos = token_text(config, "eos_token", config_path);
    std::string source, origin;
    if (fs::exists(path / "chat_template.jinja")) {
      origin = (path / "chat_template.jinja").string();
      source = read_text(path / "chat_template.jinja");
    } else if (config.contains("chat_template") && !config["chat_template"].is_null()) {
      origin = config_path.string() + " (chat_template)";
      source = template_field(config["chat_template"], config_path);
    } else if (fs::exists(path / "chat_template.json")) {
      fs::path json_path = path / "chat_template.json";
      nlohmann::json j = read_json(json_path);
      if (!j.is_object() || !j.contains("chat_template"))
        fail("{}: expected an object with \"chat_template\"", json_path.string());
      origin = json_path.string();
      source = template_field(j["chat_template"], json_path);
    } else {
      fail("{}: no chat template (looked for chat_template.jinja, \"chat_template\" in tokenizer_config.json, "
           "chat_template.json)", model_path);
    }
    try {
      ChatTemplate t = make_chat_template(std::move(source), std::move(bos), std::move(eos), options);
      t.origin = origin;
      return t;
    } catch (const Error& e) {
      fail("{}: {}", origin, e.what());
    }
  }
  if (!fs::is_regular_file(path, ec)) fail("{}: no such model file or directory", model_path);
  char magic[4] = {};
  std::ifstream(path, std::ios::binary).read(magic, 4);
  try {
    if (std::memcmp(magic, "GGUF", 4) == 0) return load_gguf(model_path, options);
    ChatTemplate t = make_chat_template(read_text(path), "", "", options);
    t.origin = model_path;
    return t;
  } catch (const jinja::RaisedError&) {
    throw;
  } catch (const Error& e) {
    std::string what = e.what();
    if (what.rfind(model_path, 0) == 0) throw;
    fail("{}: {}", model_path, what);
  }
}

std::string render_chat(const ChatTemplate& chat_template, const nlohmann::ordered_json& messages,
                        const nlohmann::ordered_json& tools, bool add_generation_prompt,
                        const nlohmann::ordered_json& extra_context) {
  if (!messages.is_array()) fail("chat messages must be an array, got {}", messages.type_name());
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object()) fail("chat message {} must be an object, got {}", i, m.type_name());
    auto role = m.find("role");
    if (role == m.end()) fail("chat message {} has no \"role\"", i);
    if (!role->is_string()) fail("chat message {}: \"role\" must be a string, got {}", i, role->type_name());
  }
  if (!tools.is_null() && !tools.is_array()) fail("chat tools must be null or an array, got {}", tools.type_name());
  if (!extra_context.is_null() && !extra_context.is_object())
    fail("chat template extra context must be an object, got {}", extra_context.type_name());
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = messages;
  vars["tools"] = tools;
  vars["documents"] = nullptr;
  vars["add_generation_prompt"] = add_generation_prompt;
  if (!chat_template.bos_token.empty()) vars["bos_token"] = chat_template.bos_token;
  if (!chat_template.eos_token.empty()) vars["eos_token"] = chat_template.eos_token;
  if (extra_context.is_object())
    for (auto it = extra_context.begin(); it != extra_context.end(); ++it) vars[it.key()] = it.value();
  if (chat_template.compiled) return chat_template.compiled->render(vars);
  return jinja::Template(chat_template.source).render(vars);
}

}  // namespace uneven
