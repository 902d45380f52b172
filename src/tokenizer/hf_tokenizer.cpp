// Loads a Hugging Face tokenizer.json (BPE model) and tokenizer_config.json into a BpeTokenizer.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/bpe_tokenizer.h"
#include "util/error.h"
#include "util/json_integer.h"

namespace uneven {
namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

std::vector<std::pair<std::string, std::string>> read_merges(const nlohmann::json& merges, const std::string& source) {
  std::vector<std::pair<std::string, std::string>> out;
  if (merges.is_null()) return out;
  if (!merges.is_array()) fail("{}: model.merges must be an array", source);
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& m = merges[i];
    if (m.is_string()) {  // older format: "left right"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        fail("{}: merge {} '{}' must be two tokens separated by one space", source, i, s);
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail("{}: merge {} must be \"a b\" or [\"a\", \"b\"], got {}", source, i, m.dump());
    }
  }
  return out;
}

// A special-token entry of tokenizer_config.json: "text", {"content": "text", ...}, or null.
std::string config_token(const nlohmann::json& config, const char* key) {
  if (!config.is_object()) return {};
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return {};
}

// The BOS a TemplateProcessing post-processor puts first (inside a Sequence too), or -1.
TokenId template_bos(const nlohmann::json& post) {
  if (!post.is_object()) return -1;
  if (post.value("type", "") == "Sequence" && post.contains("processors")) {
    for (const auto& p : post["processors"])
      if (TokenId id = template_bos(p); id >= 0) return id;
    return -1;
  }
  if (post.value("type", "") != "TemplateProcessing" || !post.contains("single") || !post["single"].is_array() ||
      post["single"].empty() || !post["single"][0].contains("SpecialToken"))
    return -1;
  const auto& name = post["single"][0]["SpecialToken"].value("id", "");
  const auto& specials = post.value("special_tokens", nlohmann::json::object());
  if (!specials.contains(name) || !specials[name].contains("ids") || specials[name]["ids"].size() != 1) return -1;
  const auto& id = specials[name]["ids"][0];
  return json_integer<TokenId>(id).value_or(-1);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_hf_json(const nlohmann::json& tj, const nlohmann::json& config,
                                                  const std::string& source) {
  if (!tj.is_object()) fail("{}: tokenizer.json must hold a JSON object", source);
  const auto& model = json_get::required(tj, "model", source);
  const std::string type = json_get::string(model, "type", "BPE", source + " model");
  if (type != "BPE") fail("{}: model type '{}' is not supported (only BPE)", source, type);

  StringMap<TokenId> vocab;
  const auto& vj = json_get::required(model, "vocab", source + " model");
  if (!vj.is_object()) fail("{}: model.vocab must be an object of token -> id", source);
  vocab.reserve(vj.size());
  for (auto it = vj.begin(); it != vj.end(); ++it) {
    const std::optional<TokenId> id = json_integer<TokenId>(it.value());
    if (!id || *id < 0) fail("{}: model.vocab['{}'] is {}, not a token id", source, it.key(), it.value().dump());
    vocab.emplace(it.key(), *id);
  }
  BpeModel::Options options;
  const std::string where = source + " model";
  options.unk_token = json_get::string(model, "unk_token", "", where);
  options.fuse_unk = json_get::boolean(model, "fuse_unk", false, where);
  options.byte_fallback = json_get::boolean(model, "byte_fallback", false, where);
  options.ignore_merges = json_get::boolean(model, "ignore_merges", false, where);
  options.continuing_subword_prefix = json_get::string(model, "continuing_subword_prefix", "", where);
  options.end_of_word_suffix = json_get::string(model, "end_of_word_suffix", "", where);
  // model.dropout is a training-time regulariser; inference encodes deterministically without it.

  BpeTokenizerParts parts;
  parts.source = source;
  parts.model = std::make_unique<BpeModel>(std::move(vocab), read_merges(model.value("merges", nlohmann::json()), source),
                                           options, source);
  if (auto it = tj.find("added_tokens"); it != tj.end() && !it->is_null()) {
    for (const auto& a : *it) {
      const std::string w = source + " added_tokens";
      AddedToken t;
      t.content = json_get::string(a, "content", "", w);
      const auto& id = json_get::required(a, "id", w);
      const std::optional<TokenId> tid = json_integer<TokenId>(id);
      if (!tid || *tid < 0) fail("{}: '{}' has a bad id {}", w, t.content, id.dump());
      t.id = *tid;
      t.special = json_get::boolean(a, "special", false, w);
      t.lstrip = json_get::boolean(a, "lstrip", false, w);
      t.rstrip = json_get::boolean(a, "rstrip", false, w);
      t.single_word = json_get::boolean(a, "single_word", false, w);
      t.normalized = json_get::boolean(a, "normalized", !t.special, w);
      parts.added.push_back(std::move(t));
    }
  }
  parts.normalizer = make_normalizer(tj.value("normalizer", nlohmann::json()), source);
  parts.pre_tokenizer = make_pre_tokenizer(tj.value("pre_tokenizer", nlohmann::json()), source);
  parts.post_processor = make_post_processor(tj.value("post_processor", nlohmann::json()), source);
  parts.decoder = make_decoder(tj.value("decoder", nlohmann::json()), source);

  // BOS / EOS come from tokenizer_config.json, looked up among added tokens first, then the model.
  auto lookup = [&](const std::string& content) -> TokenId {
    if (content.empty()) return -1;
    for (const AddedToken& t : parts.added)
      if (t.content == content) return t.id;
    return parts.model->find(content);
  };
  parts.bos = lookup(config_token(config, "bos_token"));
  if (parts.bos < 0) parts.bos = template_bos(tj.value("post_processor", nlohmann::json()));
  if (TokenId eos = lookup(config_token(config, "eos_token")); eos >= 0) parts.eos.push_back(eos);
  // transformers' Llama-family tokenizers rebuild the post-processor from add_bos_token; honour a true.
  parts.force_bos =
      config.is_object() && json_get::boolean(config, "add_bos_token", false, source + " (tokenizer_config.json)") &&
      parts.bos >= 0;
  return make_bpe_tokenizer(std::move(parts));
}

std::unique_ptr<Tokenizer> tokenizer_from_hf_dir(const std::string& dir) {
  const std::filesystem::path d(dir);
  const auto tokenizer_path = d / "tokenizer.json";
  const auto config_path = d / "tokenizer_config.json";
  nlohmann::json config;
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) config = read_json(config_path);
  return tokenizer_from_hf_json(read_json(tokenizer_path), config, tokenizer_path.string());
}

}  // namespace uneven
