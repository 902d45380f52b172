// Post-processors of tokenizer.json for one sequence: TemplateProcessing, RobertaProcessing,
// BertProcessing, ByteLevel (no change to ids), Sequence.
#include "tokenizer/components.h"
#include "util/error.h"
#include "util/json_integer.h"

namespace uneven {
namespace {

class IdentityPost : public PostProcessor {
 public:
  void process(std::vector<TokenId>&) const override {}
  std::vector<TokenId> inserted_ids() const override { return {}; }
};

// The "single" template: a list of the sequence ($A) and special tokens, each with its ids.
class TemplatePost : public PostProcessor {
 public:
  TemplatePost(const nlohmann::json& j, const std::string& source) {
    const auto& specials = j.contains("special_tokens") ? j["special_tokens"] : nlohmann::json::object();
    for (const auto& item : json_get::required(j, "single", source)) {
      if (item.contains("Sequence")) {
        const std::string id = json_get::string(item["Sequence"], "id", "A", source);
        if (id != "A") fail("{}: the single-sequence template uses sequence '{}', expected A", source, id);
        items_.push_back({true, {}});
      } else if (item.contains("SpecialToken")) {
        const std::string name = json_get::string(item["SpecialToken"], "id", "", source);
        auto it = specials.find(name);
        if (it == specials.end()) fail("{}: template token '{}' is not in special_tokens", source, name);
        Item s{false, {}};
        for (const auto& v : json_get::required(*it, "ids", source)) {
          const std::optional<TokenId> id = json_integer<TokenId>(v);
          if (!id) fail("{}: special token '{}' has id {}, not a token id", source, name, v.dump());
          s.ids.push_back(*id);
        }
        items_.push_back(std::move(s));
      } else {
        fail("{}: template item {} is neither Sequence nor SpecialToken", source, item.dump());
      }
    }
  }
  void process(std::vector<TokenId>& ids) const override {
    std::vector<TokenId> out;
    out.reserve(ids.size() + 4);
    for (const Item& it : items_) {
      if (it.sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    ids = std::move(out);
  }
  std::vector<TokenId> inserted_ids() const override {
    std::vector<TokenId> all;
    for (const Item& it : items_) all.insert(all.end(), it.ids.begin(), it.ids.end());
    return all;
  }

 private:
  struct Item {
    bool sequence;
    std::vector<TokenId> ids;
  };
  std::vector<Item> items_;
};

// [CLS] sequence [SEP], the cls/sep given as ["token", id].
class ClsSepPost : public PostProcessor {
 public:
  ClsSepPost(const nlohmann::json& j, const std::string& source) : cls_(id_of(j, "cls", source)), sep_(id_of(j, "sep", source)) {}
  void process(std::vector<TokenId>& ids) const override {
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }
  std::vector<TokenId> inserted_ids() const override { return {cls_, sep_}; }

 private:
  static TokenId id_of(const nlohmann::json& j, const char* key, const std::string& source) {
    const auto& v = json_get::required(j, key, source);
    const std::optional<TokenId> id = v.is_array() && v.size() == 2 ? json_integer<TokenId>(v[1]) : std::nullopt;
    if (!id) fail("{}: '{}' must be [token, id], got {}", source, key, v.dump());
    return *id;
  }
  TokenId cls_, sep_;
};

class SequencePost : public PostProcessor {
 public:
  explicit SequencePost(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<TokenId>& ids) const override {
    for (const auto& s : steps_) s->process(ids);
  }
  std::vector<TokenId> inserted_ids() const override {
    std::vector<TokenId> all;
    for (const auto& s : steps_) {
      const std::vector<TokenId> mine = s->inserted_ids();
      all.insert(all.end(), mine.begin(), mine.end());
    }
    return all;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  const std::string type = json_get::string(j, "type", "", source + " post_processor");
  const std::string where = source + " post_processor " + type;
  if (type == "ByteLevel") return std::make_unique<IdentityPost>();
  if (type == "TemplateProcessing") return std::make_unique<TemplatePost>(j, where);
  if (type == "RobertaProcessing" || type == "BertProcessing") return std::make_unique<ClsSepPost>(j, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (const auto& s : json_get::required(j, "processors", where))
      if (auto p = make_post_processor(s, source)) steps.push_back(std::move(p));
    return std::make_unique<SequencePost>(std::move(steps));
  }
  fail("{}: unsupported post_processor type '{}' (supported: TemplateProcessing, RobertaProcessing, "
       "BertProcessing, ByteLevel, Sequence)", source, type);
}

}  // namespace uneven
