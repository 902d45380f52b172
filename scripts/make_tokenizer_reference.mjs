#!/usr/bin/env node
// Writes the tokenizer reference data under tests/data/tokenizer/:
//  - qwen3_parity.json: generated lines with the ids and decoded text of @lenml/tokenizers (a port of
//    transformers.js) loading the Qwen3 tokenizer.json; where that port departs from Hugging Face
//    tokenizers' semantics the case also holds hf_ids / hf_decoded (see `divergence` there).
//  - stories260k_reference.json: ids and decoded text of llama2.c's tokenizer (re-implemented in
//    tokref/llama2c_tokenizer.mjs) over tok512.bin, for the GGUF "llama" vocabulary of stories260K.
// Usage: (cd scripts/tokref && npm ci) && node scripts/make_tokenizer_reference.mjs
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { generateLines } from "./tokref/generate_lines.mjs";
import { loadLlama2cTokenizer } from "./tokref/llama2c_tokenizer.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..");
const outDir = path.join(repo, "tests/data/tokenizer");
const qwenDir = process.env.QWEN3_TOKENIZER_DIR ?? "/work/shared/tokenizers/qwen3";
const tok512 = process.env.TOK512_BIN ?? "/work/shared/models/stories260K/tok512.bin";
const require = createRequire(path.join(here, "tokref/package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");

// Oniguruma (Hugging Face's regex engine) vs JavaScript: \s is Unicode White_Space there (it has
// U+0085 and lacks U+FEFF, unlike JS), and (?i:'s) also matches 'ſ (U+017F folds to s), which the JS
// rewrite [sS] of transformers.js misses. This JS pattern spells Oniguruma's meaning out.
const WS = "\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const QWEN_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN_REGEX_AS_ONIGURUMA = `(?:'(?:[sS\\u017f]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|[${WS}]*[\\r\\n]+|[${WS}]+(?![^${WS}])|[${WS}]+`;

function loadQwen(regexOverride) {
  const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(qwenDir, "tokenizer.json"), "utf8"));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(qwenDir, "tokenizer_config.json"), "utf8"));
  const split = tokenizerJSON.pre_tokenizer.pretokenizers[0];
  if (split.pattern.Regex !== QWEN_REGEX) throw new Error("unexpected Qwen3 split regex: " + split.pattern.Regex);
  if (regexOverride) split.pattern.Regex = regexOverride;
  return TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
}

// One JSON value per line inside the array, so diffs of the data stay readable.
function writeCases(file, header, cases) {
  const body = cases.map((c) => JSON.stringify(c)).join(",\n");
  const head = JSON.stringify(header, null, 1);  // ends with "\n}"
  const text = head.slice(0, -2) + `,\n "cases": [\n${body}\n]}\n`;
  fs.writeFileSync(file, text);
  console.log(`wrote ${file}: ${cases.length} cases, ${text.length} bytes`);
}

// @lenml throws on an empty id list; its text is "".
const decode = (tok, ids) => (ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "");

function makeQwenParity() {
  const lenml = loadQwen(null);
  const hf = loadQwen(QWEN_REGEX_AS_ONIGURUMA);
  const lines = generateLines();
  // Lines that exercise the known regex differences, so the divergence stays covered.
  lines.push("x \ufeffy", "!!\u0085\u0085abc", "a \u0085\n b", "\ufeff\ufeff hi", "it'\u017f here", "IT'\u017fS",
    "x\u0085 \u0085y", "don'\u017ft", "'\u017ftrue", "\u0085\u0085 \u0085");
  const cases = [];
  let divergent = 0;
  lines.forEach((text, line) => {
    const ids = lenml.encode(text, { add_special_tokens: true });
    const decoded = decode(lenml, ids);
    const c = { line, text, ids, decoded };
    const hfIds = hf.encode(text, { add_special_tokens: true });
    if (JSON.stringify(hfIds) !== JSON.stringify(ids)) {
      c.hf_ids = hfIds;
      c.hf_decoded = decode(hf, hfIds);
      ++divergent;
    }
    cases.push(c);
  });
  writeCases(path.join(outDir, "qwen3_parity.json"), {
    about: "Qwen3 tokenizer reference: ids = encode(text, add_special_tokens=true) and decoded = " +
      "decode(ids, skip_special_tokens=false) by @lenml/tokenizers 3.7.2 (transformers.js port). " +
      "Made by scripts/make_tokenizer_reference.mjs from lines of scripts/tokref/generate_lines.mjs.",
    divergence: "Where @lenml departs from Hugging Face tokenizers, hf_ids / hf_decoded give the Hugging Face " +
      "result: its Oniguruma regex treats \\s as Unicode White_Space (U+0085 yes, U+FEFF no; JavaScript's \\s is " +
      "the reverse) and (?i:'s) matches 'ſ by case folding (transformers.js rewrites it to [sS]). hf_ids come " +
      "from @lenml with the split regex rewritten to spell out Oniguruma's meaning.",
    tokenizer: "/work/shared/tokenizers/qwen3 (tokenizer.json + tokenizer_config.json)",
    divergent_cases: divergent,
  }, cases);
}

function makeStoriesReference() {
  const tok = loadLlama2cTokenizer(tok512, 512);
  const texts = ["Once upon a time", "Once upon a time, there was a little girl named Lily.", "Hello world",
    "Lily and Tom played in the park. They were happy!", "  two leading spaces", "trailing space ",
    "tab\there and newline\nthere", "unicode: caf\u00e9 \u4f60\u597d \ud83d\ude00", "\"Why?\" asked Ben. 'Because.'",
    "1234567890", "a", " ", "THE END", ""];
  const cases = texts.map((text) => {
    const ids = tok.encode(text, true, false);
    return { text, ids, decoded: tok.decode(ids) };
  });
  writeCases(path.join(outDir, "stories260k_reference.json"), {
    about: "llama2.c tokenizer reference for stories260K: ids = encode(text, bos=1, eos=0) and decoded = " +
      "decode(ids) (BOS dropped, its following space dropped) by an independent JS re-implementation of " +
      "llama2.c run.c over tok512.bin. Made by scripts/make_tokenizer_reference.mjs.",
    tokenizer: "/work/shared/models/stories260K/tok512.bin (sha256 037cb335...c312)",
  }, cases);
}

fs.mkdirSync(outDir, { recursive: true });
makeStoriesReference();
makeQwenParity();
