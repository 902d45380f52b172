// Tokenizer unit tests: UTF-8 and byte-level helpers, regex translation, Qwen3 basics, GGUF "llama"
// (SPM) and "gpt2" vocabularies from metadata, the real stories260K vocabulary against llama2.c,
// Hugging Face pipeline stages (template BOS, byte fallback, added-token flags), StreamDecoder.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/tensor_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace uneven {
namespace {

using Ids = std::vector<TokenId>;
const std::string kQwen3Dir = "/work/shared/tokenizers/qwen3";
const std::string kReplacement = "\xEF\xBF\xBD";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// ---------------------------------------------------------------- UTF-8 and byte-level helpers

TEST(Utf8, RepairReplacesEachMaximalIllFormedSubpart) {
  EXPECT_EQ(utf8::repair("plain ascii"), "plain ascii");
  EXPECT_EQ(utf8::repair("a\xFF" "b"), "a" + kReplacement + "b");
  EXPECT_EQ(utf8::repair("\xE2\x82"), kReplacement);  // a truncated 3-byte sequence is one subpart
  EXPECT_EQ(utf8::repair("\xE2\x82" "A"), kReplacement + "A");
  // A surrogate (ED A0 80): ED cannot be followed by A0, so each byte is its own subpart.
  EXPECT_EQ(utf8::repair("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(utf8::repair("\xC0\xAF"), kReplacement + kReplacement);  // overlong
  EXPECT_EQ(utf8::repair("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, ScanReportsTruncationOnlyAtTheEnd) {
  utf8::Step s = utf8::scan("\xF0\x9F\x98", 0);
  EXPECT_FALSE(s.valid);
  EXPECT_TRUE(s.truncated);
  EXPECT_EQ(s.length, 3u);
  s = utf8::scan("\xF0\x9F" "x", 0);
  EXPECT_FALSE(s.truncated);
  EXPECT_EQ(s.length, 2u);
}

TEST(Utf8, NormalizeComposesAndDecomposes) {
  EXPECT_EQ(utf8::normalize("e\xCC\x81", utf8::Form::NFC), "\xC3\xA9");
  EXPECT_EQ(utf8::normalize("\xC3\xA9", utf8::Form::NFD), "e\xCC\x81");
  EXPECT_EQ(utf8::normalize("\xEF\xAC\x81", utf8::Form::NFKC), "fi");  // the ligature U+FB01
  EXPECT_EQ(utf8::normalize("\xE2\x84\xAB", utf8::Form::NFC), "\xC3\x85");  // ANGSTROM SIGN -> Å
}

TEST(ByteLevel, EveryByteRoundTrips) {
  EXPECT_EQ(byte_level::encode(" "), "\xC4\xA0");   // Ġ
  EXPECT_EQ(byte_level::encode("\n"), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_level::encode("A!"), "A!");
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  std::string back;
  ASSERT_TRUE(byte_level::decode(byte_level::encode(all), back));
  EXPECT_EQ(back, all);
  std::string out = "keep";
  EXPECT_FALSE(byte_level::decode("a\nb", out));  // '\n' itself is not in the alphabet
  EXPECT_EQ(out, "keep");
}

TEST(Regex, TranslatesOnigurumaWordClassAndMatchesUnicodeWhitespace) {
  EXPECT_EQ(Regex::translate("\\s+(?!\\S)"), "\\s+(?!\\S)");
  EXPECT_NE(Regex::translate("\\w+").find("\\p{M}"), std::string::npos);
  EXPECT_EQ(Regex::translate("[\\w-]"), "[\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{200C}\\x{200D}-]");
  std::vector<std::pair<size_t, size_t>> m;
  Regex("\\s+", "test").find_all("a\xC2\x85" "b\xEF\xBB\xBF" "c", m);  // U+0085 is White_Space, U+FEFF is not
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], std::make_pair(size_t(1), size_t(3)));
  m.clear();
  Regex("\\w+", "test").find_all("e\xCC\x81x y", m);  // a combining mark is a word character
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], std::make_pair(size_t(0), size_t(4)));
  EXPECT_THROW(Regex("(unclosed", "tokenizer.json pre_tokenizer"), Error);
}

// ---------------------------------------------------------------- Qwen3 (Hugging Face tokenizer.json)

class Qwen3 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kQwen3Dir + "/tokenizer.json")) GTEST_SKIP() << "no " << kQwen3Dir;
    if (!tok_) tok_ = tokenizer_from_hf_dir(kQwen3Dir);
  }
  static std::unique_ptr<Tokenizer> tok_;
};
std::unique_ptr<Tokenizer> Qwen3::tok_;

TEST_F(Qwen3, EncodesSpecialTokensInTextAndDecodesBack) {
  const std::string text = "Hello world! It's <|im_start|>user\n hi";
  const Ids ids = tok_->encode(text, true);
  EXPECT_EQ(ids, (Ids{9707, 1879, 0, 1084, 594, 220, 151644, 872, 198, 15588}));  // as @lenml/tokenizers
  EXPECT_EQ(tok_->decode(ids), text);
  EXPECT_EQ(tok_->decode(ids, true), "Hello world! It's user\n hi");
  EXPECT_EQ(tok_->encode(text, false), ids);  // Qwen adds no BOS
}

TEST_F(Qwen3, VocabularyFacts) {
  EXPECT_EQ(tok_->vocab_size(), 151669);
  EXPECT_EQ(tok_->bos_id(), -1);
  EXPECT_EQ(tok_->eos_ids(), (Ids{151645}));  // <|im_end|> from tokenizer_config.json
  EXPECT_TRUE(tok_->is_special(151644));
  EXPECT_FALSE(tok_->is_special(151667));  // <think> is an added token but not special
  EXPECT_FALSE(tok_->is_special(9707));
  EXPECT_EQ(tok_->token_id("<|im_end|>"), 151645);
  EXPECT_EQ(tok_->token_id("Hello"), 9707);
  EXPECT_EQ(tok_->token_id("no such token"), -1);
  EXPECT_EQ(tok_->token_bytes(198), "\n");
  EXPECT_EQ(tok_->token_bytes(151644), "<|im_start|>");
  EXPECT_FALSE(tok_->strips_space_after_bos());
}

TEST_F(Qwen3, NfcMakesDecomposedAccentsOneToken) {
  EXPECT_EQ(tok_->encode("e\xCC\x81", true), (Ids{963}));  // é
  EXPECT_EQ(tok_->encode("\xC3\xA9", true), (Ids{963}));
}

TEST_F(Qwen3, InvalidUtf8BecomesReplacementCharacters) {
  Ids bad, repaired;
  EXPECT_NO_THROW(bad = tok_->encode("a\xFF" "b\xE2\x82", true));
  repaired = tok_->encode("a" + kReplacement + "b" + kReplacement, true);
  EXPECT_EQ(bad, repaired);
  EXPECT_EQ(tok_->decode({999999999, -5, 9707}), "Hello");  // ids outside the vocabulary are dropped
}

TEST_F(Qwen3, StreamingHoldsCjkAndEmojiBytesUntilTheCharacterIsComplete) {
  const std::string text = "\xE9\xBE\x98\xF0\x9D\x84\x9E \xF0\x9F\x91\xA9\xF0\x9F\x8F\xBD\xE2\x80\x8D\xF0\x9F\x92\xBB ok";  // 龘𝄞 👩🏽‍💻 ok
  const Ids ids = tok_->encode(text, true);
  StreamDecoder stream(*tok_);
  std::string out;
  int held = 0;
  for (TokenId id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(utf8::is_valid(piece));
    held += piece.empty();
    out += piece;
  }
  out += stream.flush();
  EXPECT_EQ(out, text);
  EXPECT_GT(held, 0) << "expected some character split over byte tokens";
}

// ---------------------------------------------------------------- StreamDecoder on raw bytes

// One token per byte value: the byte itself. Token 256 is a special token.
class ByteTokenizer : public Tokenizer {
 public:
  Ids encode(std::string_view text, bool) const override {
    Ids ids;
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::string decode(const Ids&, bool) const override { return {}; }
  std::string token_bytes(TokenId id) const override { return id < 256 ? std::string(1, char(id)) : "<special>"; }
  int64_t vocab_size() const override { return 257; }
  TokenId bos_id() const override { return 256; }
  Ids eos_ids() const override { return {}; }
  bool is_special(TokenId id) const override { return id == 256; }
};

TEST(StreamDecoder, EmitsOnlyWholeCharacters) {
  ByteTokenizer bytes;
  StreamDecoder s(bytes);
  EXPECT_EQ(s.push(0xE2), "");
  EXPECT_EQ(s.push(0x82), "");
  EXPECT_EQ(s.push(0xAC), "\xE2\x82\xAC");  // €
  EXPECT_EQ(s.push('a'), "a");
  EXPECT_EQ(s.push(0xF0), "");
  EXPECT_EQ(s.push(0x9F), "");
  EXPECT_EQ(s.push(0x98), "");
  EXPECT_EQ(s.push(0x80), "\xF0\x9F\x98\x80");  // 😀
  EXPECT_EQ(s.flush(), "");
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementAtOnceAndTruncatedOnesAtFlush) {
  ByteTokenizer bytes;
  StreamDecoder s(bytes);
  EXPECT_EQ(s.push(0xFF), kReplacement);             // can never start a character
  EXPECT_EQ(s.push(0xE2), "");
  EXPECT_EQ(s.push('x'), kReplacement + "x");        // E2 cut short by an ASCII byte
  EXPECT_EQ(s.push(0xF0), "");
  EXPECT_EQ(s.push(0x9F), "");
  EXPECT_EQ(s.push(256), "");                        // special tokens add no text and keep the held bytes
  EXPECT_EQ(s.flush(), kReplacement);                // F0 9F never completed
  EXPECT_EQ(s.flush(), "");
}

// ---------------------------------------------------------------- GGUF "llama" (SentencePiece-style)

const std::string kSp = "\xE2\x96\x81";  // U+2581

// <unk>, <s>, </s>, 256 byte tokens (ids 3..258), then pieces; "<tag>" is user-defined.
nlohmann::json spm_metadata() {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(fmt::format("<0x{:02X}>", b));
    scores.push_back(0);
    types.push_back(6);
  }
  const std::vector<std::pair<std::string, float>> pieces = {
      {kSp, -1}, {"h", -2}, {"e", -2}, {"l", -2}, {"o", -2}, {"w", -2}, {"r", -2}, {"d", -2},
      {kSp + "h", -3}, {"ll", -4}, {kSp + "he", -5}, {"llo", -6}, {kSp + "hello", -7}, {kSp + "w", -8},
      {"or", -9}, {"ld", -10}, {kSp + "wor", -11}, {kSp + "world", -12}};
  for (const auto& [p, s] : pieces) {
    tokens.push_back(p);
    scores.push_back(s);
    types.push_back(1);
  }
  tokens.push_back("<tag>");
  scores.push_back(0);
  types.push_back(4);
  return {{"tokenizer.ggml.model", "llama"}, {"tokenizer.ggml.tokens", tokens}, {"tokenizer.ggml.scores", scores},
          {"tokenizer.ggml.token_type", types}, {"tokenizer.ggml.bos_token_id", 1},
          {"tokenizer.ggml.eos_token_id", 2}, {"tokenizer.ggml.unknown_token_id", 0}};
}
// Ids of the pieces above: byte token of b = 3 + b; "▁" = 259, "h" 260, ... "▁hello" 271, "▁world" 276, "<tag>" 277.

TEST(GgufSpm, MergesTheHighestScoringPairFirst) {
  auto tok = tokenizer_from_gguf_metadata(spm_metadata(), "test.gguf");
  EXPECT_EQ(tok->encode("hello world", true), (Ids{1, 271, 276}));
  EXPECT_EQ(tok->encode("hello world", false), (Ids{271, 276}));
  EXPECT_EQ(tok->encode("", true), (Ids{1}));
  EXPECT_EQ(tok->decode({1, 271, 276}, true), "hello world");
  EXPECT_EQ(tok->decode({1, 271, 276}, false), "<s>hello world");
  EXPECT_EQ(tok->vocab_size(), 278);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_ids(), (Ids{2}));
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(277));
  EXPECT_TRUE(tok->strips_space_after_bos());
  EXPECT_EQ(tok->token_id(kSp + "hello"), 271);
}

TEST(GgufSpm, UnknownCharactersFallBackToByteTokensAndDecodeBack) {
  auto tok = tokenizer_from_gguf_metadata(spm_metadata(), "test.gguf");
  const Ids ids = tok->encode("h\xC3\xA9", true);  // hé
  EXPECT_EQ(ids, (Ids{1, 267, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->decode(ids, true), "h\xC3\xA9");
  EXPECT_EQ(tok->token_bytes(3 + 0xC3), "\xC3");
  EXPECT_EQ(tok->token_bytes(271), " hello");
}

TEST(GgufSpm, SpecialAndUserDefinedTokensInTextAreSingleTokens) {
  auto tok = tokenizer_from_gguf_metadata(spm_metadata(), "test.gguf");
  // As llama.cpp: text after a special token gets the space prefix again.
  EXPECT_EQ(tok->encode("hello</s>world", true), (Ids{1, 271, 2, 276}));
  EXPECT_EQ(tok->encode("hello<tag>", true), (Ids{1, 271, 277}));
  EXPECT_EQ(tok->decode({1, 271, 277}, true), "hello<tag>");
}

TEST(GgufSpm, MetadataFlagsTurnOffBosAndSpacePrefix) {
  nlohmann::json md = spm_metadata();
  md["tokenizer.ggml.add_bos_token"] = false;
  md["tokenizer.ggml.add_space_prefix"] = false;
  auto tok = tokenizer_from_gguf_metadata(md, "test.gguf");
  EXPECT_EQ(tok->encode("hello", true), (Ids{260, 261, 270}));  // h e llo: "hel" is no token
}

TEST(GgufSpm, StreamDropsTheSpaceAfterBos) {
  auto tok = tokenizer_from_gguf_metadata(spm_metadata(), "test.gguf");
  StreamDecoder s(*tok);
  EXPECT_EQ(s.push(1), "");
  EXPECT_EQ(s.push(271), "hello");
  EXPECT_EQ(s.push(276), " world");
  StreamDecoder continuation(*tok);  // generated tokens after a prompt keep their space
  EXPECT_EQ(continuation.push(276), " world");
}

TEST(GgufSpm, BadMetadataThrowsNamingTheField) {
  nlohmann::json md = spm_metadata();
  md["tokenizer.ggml.scores"].erase(0);
  try {
    tokenizer_from_gguf_metadata(md, "bad.gguf");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.gguf: metadata tokenizer.ggml.scores has 277 entries but tokenizer.ggml.tokens has 278"),
              std::string::npos) << e.what();
  }
  md = spm_metadata();
  md["tokenizer.ggml.model"] = "bert";
  EXPECT_THROW(tokenizer_from_gguf_metadata(md, "bad.gguf"), Error);
  EXPECT_THROW(tokenizer_from_gguf_metadata(nlohmann::json::object(), "bad.gguf"), Error);
}

// ---------------------------------------------------------------- GGUF "gpt2" (byte-level BPE)

// Ids 0..255: the byte-level character of that byte; then merged tokens and two added tokens.
nlohmann::json gpt2_metadata(const std::string& pre) {
  std::vector<std::string> tokens;
  std::vector<int> types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(byte_level::encode(std::string(1, char(b))));
    types.push_back(1);
  }
  const std::string G = "\xC4\xA0";  // Ġ, the byte-level space
  const std::vector<std::string> merged = {"he", "ll", "hell", "hello", G + "w", "or", G + "wor", G + "worl", G + "world", "12"};
  for (const auto& m : merged) {
    tokens.push_back(m);
    types.push_back(1);
  }
  tokens.push_back("<|begin|>");  // 266, control
  types.push_back(3);
  tokens.push_back("<x>");  // 267, user-defined
  types.push_back(4);
  const std::vector<std::string> merges = {"h e", "l l", "he ll", "hell o", G + " w", "o r", G + "w or", G + "wor l",
                                           G + "worl d", "1 2"};
  return {{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", pre}, {"tokenizer.ggml.tokens", tokens},
          {"tokenizer.ggml.token_type", types}, {"tokenizer.ggml.merges", merges},
          {"tokenizer.ggml.bos_token_id", 266}, {"tokenizer.ggml.eos_token_id", 266}};
}

TEST(GgufBpe, Qwen2SplitsDigitsSinglyAndNormalizesToNfc) {
  auto tok = tokenizer_from_gguf_metadata(gpt2_metadata("qwen2"), "qwen.gguf");
  EXPECT_EQ(tok->encode("hello world", true), (Ids{259, 264}));  // no BOS unless add_bos_token
  EXPECT_EQ(tok->encode("123", true), (Ids{'1', '2', '3'}));
  EXPECT_EQ(tok->encode("e\xCC\x81", true), (Ids{0xC3, 0xA9}));  // NFC: é
  EXPECT_EQ(tok->encode("hello<|begin|><x>", true), (Ids{259, 266, 267}));
  EXPECT_EQ(tok->decode({259, 266, 267, 264}, false), "hello<|begin|><x> world");
  EXPECT_EQ(tok->decode({259, 266, 267, 264}, true), "hello<x> world");
  EXPECT_TRUE(tok->is_special(266));
  EXPECT_FALSE(tok->is_special(267));
}

TEST(GgufBpe, LlamaBpeGroupsDigitsAndKeepsTextUnnormalized) {
  nlohmann::json md = gpt2_metadata("llama-bpe");
  md["tokenizer.ggml.add_bos_token"] = true;
  auto tok = tokenizer_from_gguf_metadata(md, "llama3.gguf");
  EXPECT_EQ(tok->encode("123", true), (Ids{266, 265, '3'}));
  EXPECT_EQ(tok->encode("123", false), (Ids{265, '3'}));
  EXPECT_EQ(tok->encode("e\xCC\x81", false), (Ids{'e', 0xCC, 0x81}));
  md["tokenizer.ggml.pre"] = "mystery";
  EXPECT_THROW(tokenizer_from_gguf_metadata(md, "x.gguf"), Error);
}

// ---------------------------------------------------------------- stories260K vs llama2.c

TEST(Stories260K, EncodesAsLlama2cAndDecodesBack) {
  const std::string path = std::string(UNEVEN_SOURCE_DIR) + "/models/stories260K.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path;
  auto tok = tokenizer_from_gguf_metadata(TensorFiles::open_gguf(path).metadata(), path);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_ids(), (Ids{2}));
  EXPECT_EQ(tok->encode("Once upon a time", true), (Ids{1, 403, 407, 261, 378}));
  const auto ref = read_json(std::string(UNEVEN_SOURCE_DIR) + "/tests/data/tokenizer/stories260k_reference.json");
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const Ids want = c["ids"].get<Ids>();
    EXPECT_EQ(tok->encode(text, true), want) << nlohmann::json(text).dump();
    EXPECT_EQ(tok->decode(want, true), c["decoded"].get<std::string>()) << nlohmann::json(text).dump();
    EXPECT_EQ(tok->decode(want, true), text) << "round trip";
    StreamDecoder s(*tok);
    std::string streamed;
    for (TokenId id : want) streamed += s.push(id);
    EXPECT_EQ(streamed + s.flush(), text);
  }
}

// ---------------------------------------------------------------- Hugging Face pipeline stages

// A Llama-style tokenizer.json: "▁" normalization, no pre-tokenizer, BPE with byte fallback and a
// fused unknown token, TemplateProcessing BOS, Replace/ByteFallback/Fuse/Strip decoder.
nlohmann::json llama_style_json() {
  const std::string sp = kSp;
  nlohmann::json added = nlohmann::json::array();
  auto add = [&](int id, const std::string& content, bool special, bool lstrip, bool rstrip, bool single_word) {
    added.push_back({{"id", id}, {"content", content}, {"special", special}, {"lstrip", lstrip}, {"rstrip", rstrip},
                     {"single_word", single_word}, {"normalized", false}});
  };
  add(0, "<unk>", true, false, false, false);
  add(1, "<s>", true, false, false, false);
  add(2, "</s>", true, false, false, false);
  add(10, "<mask>", false, true, false, false);
  add(11, "ab", false, false, false, true);
  add(12, "<r>", false, false, true, false);
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", sp}},
                                                             {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}},
                                                       {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {sp, 3}, {"h", 4}, {"i", 5}, {sp + "h", 6},
                            {sp + "hi", 7}, {"<0xC3>", 8}, {"<0xA9>", 9}}},
                 {"merges", {sp + " h", sp + "h i"}}}},
  };
}

TEST(HfPipeline, TemplateAddsBosAndDecoderStripsThePrefixSpace) {
  auto tok = tokenizer_from_hf_json(llama_style_json(), nullptr, "llama/tokenizer.json");
  EXPECT_EQ(tok->encode("hi hi", true), (Ids{1, 7, 7}));
  EXPECT_EQ(tok->encode("hi hi", false), (Ids{7, 7}));
  EXPECT_EQ(tok->decode({1, 7, 7}, false), "<s> hi hi");  // Hugging Face strips only a leading space
  EXPECT_EQ(tok->decode({1, 7, 7}, true), "hi hi");
  EXPECT_EQ(tok->bos_id(), 1);  // no tokenizer_config.json: the template's first special token
  EXPECT_TRUE(tok->strips_space_after_bos());
  StreamDecoder s(*tok);
  std::string streamed;
  for (TokenId id : Ids{1, 7, 7}) streamed += s.push(id);
  EXPECT_EQ(streamed, "hi hi");
}

TEST(HfPipeline, ByteFallbackAndFusedUnknown) {
  auto tok = tokenizer_from_hf_json(llama_style_json(), nullptr, "llama/tokenizer.json");
  EXPECT_EQ(tok->encode("\xC3\xA9", true), (Ids{1, 3, 8, 9}));  // ▁ <0xC3> <0xA9>
  EXPECT_EQ(tok->decode({1, 3, 8, 9}, true), "\xC3\xA9");
  EXPECT_EQ(tok->decode({8}, true), kReplacement);  // an incomplete byte run decodes to U+FFFD per byte
  EXPECT_EQ(tok->token_bytes(8), "\xC3");
  EXPECT_EQ(tok->encode("xyz", true), (Ids{1, 3, 0}));  // x, y, z have no token and no byte token: one <unk>
}

TEST(HfPipeline, AddedTokenStripAndSingleWordFlags) {
  auto tok = tokenizer_from_hf_json(llama_style_json(), nullptr, "llama/tokenizer.json");
  EXPECT_EQ(tok->encode("hi <mask>hi", false), (Ids{7, 10, 7}));  // lstrip swallows the space before
  EXPECT_EQ(tok->encode("<r>   hi", false), (Ids{12, 7}));        // rstrip swallows the spaces after
  // single_word: "ab" alone is the token; inside "cab" it is not (c is a word character).
  EXPECT_EQ(tok->encode("ab cab", false), (Ids{11, 3, 3, 0}));
}

TEST(HfPipeline, BadFilesThrowNamingThem) {
  try {
    tokenizer_from_hf_dir("/nonexistent/model");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model/tokenizer.json"), std::string::npos) << e.what();
  }
  nlohmann::json j = llama_style_json();
  j["model"]["type"] = "WordPiece";
  EXPECT_THROW(tokenizer_from_hf_json(j, nullptr, "t.json"), Error);
  j = llama_style_json();
  j["model"]["merges"].push_back("h q");  // q is not in the vocabulary
  EXPECT_THROW(tokenizer_from_hf_json(j, nullptr, "t.json"), Error);
  j = llama_style_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "("}}}, {"behavior", "Isolated"}};
  EXPECT_THROW(tokenizer_from_hf_json(j, nullptr, "t.json"), Error);
}

}  // namespace
}  // namespace uneven
