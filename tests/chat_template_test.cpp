// Chat templates: byte-identical renders against jinja2 references (Qwen3, Qwen3.5, Llama 3.1), and loading.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "chat/chat_template.h"
#include "model/gguf_writer.h"
#include "test_files.h"

namespace uneven {
namespace {

const std::string kDataDir = std::string(UNEVEN_SOURCE_DIR) + "/tests/data/chat_templates/";

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The clock scripts/make_chat_template_refs.py fixes: 2024-07-26 12:00:00, a Friday.
std::tm fixed_now() {
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_wday = 5;
  tm.tm_yday = 207;
  return tm;
}

std::string show(const std::string& s, size_t at) {
  size_t from = at > 60 ? at - 60 : 0;
  return nlohmann::json(s.substr(from, 120)).dump();
}

void check_references(const std::string& name) {
  jinja::Options options;
  options.now = fixed_now;
  auto special = nlohmann::json::parse(read(kDataDir + name + ".json"));
  auto token = [&](const char* key) { return special[key].is_string() ? special[key].get<std::string>() : ""; };
  ChatTemplate t = make_chat_template(read(kDataDir + name + ".jinja"), token("bos_token"), token("eos_token"), options);
  auto refs = nlohmann::ordered_json::parse(read(kDataDir + name + ".cases.json"));
  const auto& cases = refs["cases"];
  ASSERT_GE(cases.size(), 200u) << name;
  size_t matched = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    std::string context = name + " case " + std::to_string(i) + ": messages " + c["messages"].dump() +
                          "\ntools " + c["tools"].dump() + " add_generation_prompt " +
                          c["add_generation_prompt"].dump() + " extra " + c["extra"].dump();
    if (c.contains("error")) {
      std::string expected = c["error"].get<std::string>();
      try {
        render_chat(t, c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["extra"]);
        ADD_FAILURE() << "rendered, but jinja2 raised " << expected << "\n" << context;
        return;
      } catch (const jinja::RaisedError& e) {
        ASSERT_EQ("TemplateError: " + std::string(e.what()), expected) << context;
      } catch (const Error& e) {
        ASSERT_EQ(expected.rfind("TemplateError: ", 0), std::string::npos)
            << "jinja2 raised from the template (" << expected << "), we failed with: " << e.what() << "\n" << context;
      }
      ++matched;
      continue;
    }
    std::string got;
    try {
      got = render_chat(t, c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["extra"]);
    } catch (const Error& e) {
      ADD_FAILURE() << "threw " << e.what() << "\n" << context;
      return;
    }
    const std::string expected = c["expected"].get<std::string>();
    if (got != expected) {
      size_t at = 0;
      while (at < got.size() && at < expected.size() && got[at] == expected[at]) ++at;
      ADD_FAILURE() << "first difference at byte " << at << " (lengths " << got.size() << " vs " << expected.size()
                    << ")\n  ours:   " << show(got, at) << "\n  jinja2: " << show(expected, at) << "\n" << context;
      return;  // the first differing conversation is what helps
    }
    ++matched;
  }
  EXPECT_EQ(matched, cases.size());
}

TEST(ChatTemplateReference, Qwen3) { check_references("qwen3"); }
TEST(ChatTemplateReference, Qwen3_5) { check_references("qwen3_5"); }
TEST(ChatTemplateReference, Llama3_1) { check_references("llama3_1"); }

const char* kTiny = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
                    "{% if add_generation_prompt %}<gen>{% endif %}{{ eos_token }}";

nlohmann::ordered_json hello() { return nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])"); }

TEST(ChatTemplateLoad, FromTokenizerConfigWithAddedTokenObjects) {
  testing::ScratchDir dir;
  nlohmann::json config = {{"chat_template", kTiny},
                           {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
                           {"eos_token", "</s>"}};
  testing::write_file(dir.file("tokenizer_config.json"), config.dump());
  ChatTemplate t = load_chat_template(dir.str());
  EXPECT_EQ(t.bos_token, "<s>");
  EXPECT_EQ(t.eos_token, "</s>");
  EXPECT_EQ(render_chat(t, hello(), nullptr, true, nullptr), "<s>[user:hi]<gen></s>");
}

TEST(ChatTemplateLoad, NamedTemplateListTakesDefault) {
  testing::ScratchDir dir;
  nlohmann::json config = {{"chat_template", {{{"name", "tool_use"}, {"template", "TOOLS"}},
                                              {{"name", "default"}, {"template", "DEFAULT"}}}}};
  testing::write_file(dir.file("tokenizer_config.json"), config.dump());
  EXPECT_EQ(render_chat(load_chat_template(dir.str()), hello(), nullptr, false, nullptr), "DEFAULT");
  config["chat_template"] = {{{"name", "tool_use"}, {"template", "TOOLS"}}};
  testing::write_file(dir.file("tokenizer_config.json"), config.dump());
  EXPECT_THROW(load_chat_template(dir.str()), Error);
}

TEST(ChatTemplateLoad, JinjaFileWinsThenChatTemplateJson) {
  testing::ScratchDir dir;
  testing::write_file(dir.file("tokenizer_config.json"), nlohmann::json({{"chat_template", "CONFIG"}}).dump());
  testing::write_file(dir.file("chat_template.jinja"), "FILE\n");
  EXPECT_EQ(render_chat(load_chat_template(dir.str()), hello(), nullptr, false, nullptr), "FILE");
  std::filesystem::remove(dir.file("chat_template.jinja"));
  testing::write_file(dir.file("tokenizer_config.json"), "{}");
  testing::write_file(dir.file("chat_template.json"), nlohmann::json({{"chat_template", "JSON"}}).dump());
  EXPECT_EQ(render_chat(load_chat_template(dir.str()), hello(), nullptr, false, nullptr), "JSON");
  std::filesystem::remove(dir.file("chat_template.json"));
  EXPECT_THROW(load_chat_template(dir.str()), Error);
}

TEST(ChatTemplateLoad, FromGgufMetadata) {
  testing::ScratchDir dir;
  std::string path = dir.file("tiny.gguf");
  {
    GgufFileWriter w(path);
    w.set("general.architecture", GgufValue::string("llama"));
    w.set("tokenizer.ggml.tokens", GgufValue::strings({"<unk>", "<s>", "</s>", "hi"}));
    w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
    w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
    w.set("tokenizer.chat_template", GgufValue::string(kTiny));
    w.begin_data();
    w.finish();
  }
  ChatTemplate t = load_chat_template(path);
  EXPECT_EQ(t.bos_token, "<s>");
  EXPECT_EQ(t.eos_token, "</s>");
  EXPECT_EQ(render_chat(t, hello(), nullptr, false, nullptr), "<s>[user:hi]</s>");
}

TEST(ChatTemplateLoad, ParseErrorsNameTheFileAndPosition) {
  testing::ScratchDir dir;
  testing::write_file(dir.file("tokenizer_config.json"), nlohmann::json({{"chat_template", "ok\n{% if x %}"}}).dump());
  try {
    load_chat_template(dir.str());
    FAIL() << "expected a parse error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("tokenizer_config.json"), std::string::npos) << what;
    EXPECT_NE(what.find("endif"), std::string::npos) << what;
  }
  EXPECT_THROW(load_chat_template(dir.file("missing")), Error);
}

TEST(ChatTemplateRender, RejectsBadMessages) {
  ChatTemplate t = make_chat_template(kTiny, "", "");
  auto bad = [&](const char* messages) {
    try {
      render_chat(t, nlohmann::ordered_json::parse(messages), nullptr, false, nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(bad(R"({"role": "user"})").find("must be an array"), std::string::npos);
  EXPECT_NE(bad(R"([{"content": "x"}])").find("message 0 has no \"role\""), std::string::npos);
  EXPECT_NE(bad(R"([{"role": "user"}, 3])").find("message 1 must be an object"), std::string::npos);
  EXPECT_NE(bad(R"([{"role": 1}])").find("\"role\" must be a string"), std::string::npos);
  EXPECT_THROW(render_chat(t, hello(), nlohmann::ordered_json::object(), false, nullptr), Error);
}

TEST(ChatTemplateRender, PassesExtraContextAndNoneTools) {
  ChatTemplate t = make_chat_template(
      "{{ tools is none }} {{ documents is none }} {{ enable_thinking }} {{ bos_token is defined }}", "", "");
  auto extra = nlohmann::ordered_json::parse(R"({"enable_thinking": false})");
  EXPECT_EQ(render_chat(t, hello(), nullptr, false, extra), "True True False False");
}

}  // namespace
}  // namespace uneven
