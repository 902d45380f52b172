// Builds a tokenizer from GGUF metadata: "llama" -> SPM, "gpt2" -> byte-level BPE whose split regex
// is chosen by tokenizer.ggml.pre.
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/spm_tokenizer.h"
#include "util/error.h"

namespace uneven {
namespace {

const nlohmann::json& array_of(const nlohmann::json& md, const char* key, size_t expected, const std::string& source) {
  auto it = md.find(key);
  if (it == md.end()) fail("{}: metadata has no {}", source, key);
  if (!it->is_array()) fail("{}: metadata {} must be an array", source, key);
  if (expected != size_t(-1) && it->size() != expected)
    fail("{}: metadata {} has {} entries but tokenizer.ggml.tokens has {}", source, key, it->size(), expected);
  return *it;
}

// An optional token id; absent, or outside the vocabulary (GGUF writes 0xFFFFFFFF for "none"): -1.
TokenId optional_id(const nlohmann::json& md, const char* key, size_t n_tokens, const std::string& source) {
  auto it = md.find(key);
  if (it == md.end()) return -1;
  if (!it->is_number_integer()) fail("{}: metadata {} must be an integer, got {}", source, key, it->dump());
  const int64_t v = it->get<int64_t>();
  return v >= 0 && uint64_t(v) < n_tokens ? TokenId(v) : -1;
}

bool optional_bool(const nlohmann::json& md, const char* key, bool fallback, const std::string& source) {
  auto it = md.find(key);
  if (it == md.end()) return fallback;
  if (!it->is_boolean()) fail("{}: metadata {} must be a boolean, got {}", source, key, it->dump());
  return it->get<bool>();
}

std::vector<TokenId> eos_list(const nlohmann::json& md, size_t n, const std::string& source) {
  std::vector<TokenId> eos;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (TokenId id = optional_id(md, key, n, source); id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end())
      eos.push_back(id);
  return eos;
}

std::vector<GgufTokenType> token_types(const nlohmann::json& md, size_t n, const std::string& source) {
  std::vector<GgufTokenType> types(n, GgufTokenType::Normal);
  if (!md.contains("tokenizer.ggml.token_type")) return types;
  const auto& tj = array_of(md, "tokenizer.ggml.token_type", n, source);
  for (size_t i = 0; i < n; ++i) {
    if (!tj[i].is_number_integer()) fail("{}: tokenizer.ggml.token_type[{}] is not an integer", source, i);
    const int64_t t = tj[i].get<int64_t>();
    if (t < 1 || t > 6) fail("{}: tokenizer.ggml.token_type[{}] = {} is not a known type (1..6)", source, i, t);
    types[i] = GgufTokenType(t);
  }
  return types;
}

std::unique_ptr<Tokenizer> spm_from_metadata(const nlohmann::json& md, std::vector<std::string> tokens,
                                             const std::string& source) {
  SpmVocab v;
  const size_t n = tokens.size();
  v.source = source;
  v.types = token_types(md, n, source);
  const auto& sj = array_of(md, "tokenizer.ggml.scores", n, source);
  v.scores.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!sj[i].is_number()) fail("{}: tokenizer.ggml.scores[{}] is not a number", source, i);
    v.scores.push_back(sj[i].get<float>());
  }
  v.tokens = std::move(tokens);
  v.bos = optional_id(md, "tokenizer.ggml.bos_token_id", n, source);
  v.unk = optional_id(md, "tokenizer.ggml.unknown_token_id", n, source);
  v.eos = eos_list(md, n, source);
  v.add_bos = optional_bool(md, "tokenizer.ggml.add_bos_token", true, source);
  v.add_space_prefix = optional_bool(md, "tokenizer.ggml.add_space_prefix", true, source);
  return make_spm_tokenizer(std::move(v));
}

std::unique_ptr<Tokenizer> bpe_from_metadata(const nlohmann::json& md, std::vector<std::string> tokens,
                                             const std::string& source) {
  const size_t n = tokens.size();
  std::string pre = "default";
  if (auto it = md.find("tokenizer.ggml.pre"); it != md.end() && it->is_string()) pre = it->get<std::string>();
  const char* regex = nullptr;
  if (pre == "qwen2") regex = kQwen2SplitRegex;
  else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "default") regex = kLlama3SplitRegex;
  else if (pre == "gpt-2" || pre == "gpt2") regex = kGpt2SplitRegex;
  else fail("{}: tokenizer.ggml.pre '{}' is not supported (supported: qwen2, llama-bpe, llama3, default, gpt-2)", source, pre);

  const std::vector<GgufTokenType> types = token_types(md, n, source);
  BpeTokenizerParts parts;
  parts.source = source;
  StringMap<TokenId> vocab;
  vocab.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    vocab.emplace(tokens[i], TokenId(i));  // a repeated string keeps its first id
    const GgufTokenType t = types[i];
    // Control and user-defined tokens are found in the raw text before pre-tokenization (llama.cpp's
    // special-token partition; Hugging Face's added tokens).
    if (t == GgufTokenType::Control || t == GgufTokenType::UserDefined) {
      AddedToken a;
      a.content = tokens[i];
      a.id = TokenId(i);
      a.special = t == GgufTokenType::Control;
      parts.added.push_back(std::move(a));
    }
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const auto& mj = array_of(md, "tokenizer.ggml.merges", size_t(-1), source);
  merges.reserve(mj.size());
  for (size_t i = 0; i < mj.size(); ++i) {
    if (!mj[i].is_string()) fail("{}: tokenizer.ggml.merges[{}] is not a string", source, i);
    const std::string s = mj[i].get<std::string>();
    const size_t space = s.find(' ', 1);
    if (space == std::string::npos) fail("{}: tokenizer.ggml.merges[{}] '{}' has no separating space", source, i, s);
    merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  }
  parts.model = std::make_unique<BpeModel>(std::move(vocab), merges, BpeModel::Options{}, source);
  // Qwen2's tokenizer.json normalizes to NFC; the other byte-level tokenizers have no normalizer.
  if (pre == "qwen2") parts.normalizer = make_normalizer({{"type", "NFC"}}, source);
  parts.pre_tokenizer = make_pre_tokenizer(
      {{"type", "Sequence"},
       {"pretokenizers",
        {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}},
      source);
  parts.decoder = make_decoder({{"type", "ByteLevel"}}, source);
  parts.bos = optional_id(md, "tokenizer.ggml.bos_token_id", n, source);
  parts.eos = eos_list(md, n, source);
  parts.force_bos = optional_bool(md, "tokenizer.ggml.add_bos_token", false, source);
  return make_bpe_tokenizer(std::move(parts));
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf_metadata(const nlohmann::json& md, const std::string& source) {
  if (!md.is_object()) fail("{}: GGUF metadata is not an object", source);
  auto it = md.find("tokenizer.ggml.model");
  if (it == md.end() || !it->is_string()) fail("{}: metadata has no tokenizer.ggml.model string", source);
  const std::string model = it->get<std::string>();
  const auto& tj = array_of(md, "tokenizer.ggml.tokens", size_t(-1), source);
  if (tj.empty()) fail("{}: tokenizer.ggml.tokens is empty", source);
  std::vector<std::string> tokens;
  tokens.reserve(tj.size());
  for (size_t i = 0; i < tj.size(); ++i) {
    if (!tj[i].is_string()) fail("{}: tokenizer.ggml.tokens[{}] is not a string", source, i);
    tokens.push_back(tj[i].get<std::string>());
  }
  if (model == "llama") return spm_from_metadata(md, std::move(tokens), source);
  if (model == "gpt2") return bpe_from_metadata(md, std::move(tokens), source);
  fail("{}: tokenizer.ggml.model '{}' is not supported (supported: llama, gpt2)", source, model);
}

}  // namespace uneven
