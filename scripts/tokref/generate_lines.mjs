// Deterministic generator of varied tokenizer test lines (prose, code, scripts, emoji, whitespace,
// numbers, special tokens, non-NFC text, punctuation): same seed, same lines, on any machine.

// mulberry32: a tiny seeded PRNG, so the lines never depend on Math.random.
function makeRng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (arr) => arr[int(arr.length)];
  return { next, int, pick, chance: (p) => next() < p };
}

const PROSE = [
  "The quick brown fox jumps over the lazy dog.",
  "It was the best of times, it was the worst of times.",
  "She sells sea shells by the sea shore, doesn't she?",
  "We've been waiting for hours; they'll arrive when they're ready.",
  "I'm not sure what you'd say if I told you the truth.",
  "Tokenizers split text into pieces that a model can count.",
  "On Tuesday, 14 March 2023, the committee approved the budget of $4,500,000.",
  "\"Hello,\" said Dr. O'Neil, \"isn't it a lovely day?\"",
  "The meeting starts at 09:30 a.m. sharp -- don't be late!",
  "Rock 'n' roll never dies; it just changes its haircut.",
  "Mr. Smith's car, which was parked outside, wasn't locked.",
  "THE SHOUTING MAN SAID: IT'S OVER, WE'RE DONE, YOU'LL SEE!",
  "Please e-mail support@example.com or call +1 (555) 010-9999.",
  "Visit https://example.org/path?query=value&x=1#anchor for details.",
  "A stitch in time saves nine, or so my grandmother's saying went.",
  "Can't, won't, shouldn't, couldn't, mustn't, needn't, y'all'd've.",
  "In 1969, Apollo 11 landed; in 2024 people still argue about it.",
  "The temperature dropped to -17.5°C overnight, a record low.",
  "Naïve café owners in Zürich serve crème brûlée with façade.",
  "Once upon a time, there was a little girl named Lily.",
  "He said 'yes', then 'no', then 'maybe' -- typical Tuesday.",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
  "Why do we park on driveways and drive on parkways?",
  "The ratio was 3:2, the odds were 7-to-1, and the score 21–14.",
  "I'll've finished by then, unless they've changed the plan.",
  "Whose line is it anyway? It's hers, not theirs.",
  "   Leading spaces, trailing spaces, and   double   spaces.   ",
  "Version 2.0.1-beta.3+build.42 fixes bug #1337 (see PR !99).",
  "E = mc², a² + b² = c², and ½ + ¼ = ¾.",
  "Bullet points: • first • second • third … and so on.",
];

const CODE = [
  "int main(int argc, char** argv) {\n    std::cout << \"hi\" << std::endl;\n    return 0;\n}",
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
  "const add = (a, b) => a + b;\nconsole.log(add(2, 3)); // 5",
  "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
  "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY id DESC;",
  "<div class=\"card\">\n  <p>Hello &amp; welcome</p>\n</div>",
  "for i in $(seq 1 10); do echo \"$i\"; done | grep -v 3 > out.txt 2>&1",
  "{\"name\": \"uneven\", \"version\": \"0.1.0\", \"deps\": [\"fmt\", \"pcre2\"]}",
  "#include <vector>\ntemplate <typename T> T sum(const std::vector<T>& v) { T s{}; for (auto x : v) s += x; return s; }",
  "if (x != nullptr && x->next) { x = x->next; } else { x = head; }",
  "public static void main(String[] args) throws IOException {\n\tSystem.out.println(args.length);\n}",
  "lambda x: [y**2 for y in range(x) if y % 3 == 0]",
  "#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\nimport os, sys",
  "x += 1; y -= 2; z *= 3; w /= 4; q %= 5; r <<= 1; s >>= 2; t &= 0xFF; u |= 0b1010; v ^= ~0;",
  "match value {\n    Some(ref x) if *x > 0 => x.to_string(),\n    _ => String::new(),\n}",
  "\tindented\twith\ttabs\n\t\tand two tabs\n",
  "    four spaces\n        eight spaces\n            twelve spaces",
  "# Heading\n\n- item one\n- item two\n\n```python\nprint('hi')\n```",
  "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL DEFAULT '');",
  "a=>b; c->d; e<=f; g>=h; i==j; k!=l; m===n; o!==p; q??r; s?.t; u::v",
  "std::unique_ptr<Tokenizer> tok = tokenizer_from_hf_dir(\"/models/qwen3\");",
  "git commit -m \"Fix: don't crash on empty input\" && git push origin main",
  "\\documentclass{article}\n\\begin{document}\n$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$\n\\end{document}",
  "0x7fffffff 0xDEADBEEF 1e-9 3.14159f 1_000_000 0o755 0b1101",
];

const WORLD = [
  "你好，世界！今天天气很好，我们去公园散步吧。",
  "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
  "日本語のテキストも正しく分割されるべきです。カタカナ、ひらがな、漢字。",
  "東京都渋谷区で新しいレストランがオープンしました。",
  "한국어 문장도 테스트합니다. 안녕하세요, 반갑습니다!",
  "서울은 대한민국의 수도이며 인구가 약 천만 명입니다.",
  "مرحبا بالعالم! كيف حالك اليوم؟ أتمنى أن تكون بخير.",
  "اللغة العربية تكتب من اليمين إلى اليسار، والأرقام ١٢٣٤٥ أيضاً.",
  "नमस्ते दुनिया! आप कैसे हैं? मैं ठीक हूँ, धन्यवाद।",
  "हिन्दी भाषा देवनागरी लिपि में लिखी जाती है और इसमें १२३ अंक हैं।",
  "Привет, мир! Как дела? Всё хорошо, спасибо.",
  "Съешь же ещё этих мягких французских булок да выпей чаю.",
  "Γειά σου Κόσμε! Η γλώσσα είναι όμορφη.",
  "שלום עולם! מה שלומך היום?",
  "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
  "Tiếng Việt có rất nhiều dấu: ắ ằ ẳ ẵ ặ, ố ồ ổ ỗ ộ.",
  "Türkçe: İstanbul'da ığdır, şeker, çiçek, öğretmen, üzüm.",
  "Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň.",
  "Ελληνικά και русский и 中文 и العربية mixed together.",
  "ᚠᛇᚻ᛫ᛒᛦᚦ᛫ᚠᚱᚩᚠᚢᚱ᛫ᚠᛁᚱᚪ᛫ᚷᛖᚻᚹᛦᛚᚳᚢᛗ",
  "Ethiopic: ሰላም ለዓለም። Armenian: Բարեւ աշխարհ։ Georgian: გამარჯობა",
  "Tamil: வணக்கம் உலகம். Bengali: হ্যালো বিশ্ব। Gujarati: નમસ્તે",
];

const EMOJI = [
  "😀", "😂", "🥲", "👍", "👍🏻", "👍🏽", "👍🏿", "🙏🏾", "❤️", "🔥", "✨", "🎉", "🚀", "🐍", "🦀",
  "👨‍👩‍👧‍👦", "👩‍💻", "👩🏽‍💻", "🧑🏿‍🚀", "🏳️‍🌈", "🏴‍☠️", "👁️‍🗨️", "❤️‍🔥", "🧔‍♀️", "🤷🏼‍♂️",
  "🇺🇸", "🇯🇵", "🇩🇪", "🇮🇳", "🇧🇷", "1️⃣", "#️⃣", "*️⃣", "©️", "™️", "☺︎", "⚠️", "🈚", "🀄",
  "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🫠", "🫶🏽", "🥹",
];

const WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0",
  "\u3000", "\u2003", "\u2009", "\u200b", "\n\n\n", "  \n  ", "\r", "\f", "\v", "\u2028"];

const SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|object_ref_start|>", "<|box_end|>",
  "<|vision_pad|>", "<tool_call>", "</tool_call>", "<think>", "</think>", "<|fim_prefix|>", "<|fim_middle|>",
  "<|fim_suffix|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>"];
const NEAR_SPECIALS = ["<|im_start|", "<|im_start", "|im_end|>", "<|endoftext", "<|im_star t|>", "<| im_end |>",
  "<|IM_START|>", "<think", "think>", "<<|im_end|>>", "<|im_end|><|im_start|>", "<|endoftext|><|endoftext|>"];

// Decomposed (non-NFC) sequences: NFC changes them, so normalization must run before splitting.
const NON_NFC = [
  "e\u0301", "a\u0300", "o\u0308", "u\u0308", "n\u0303", "c\u0327", "A\u030a", "E\u0301", "I\u0302",
  "a\u0323\u0302", "a\u0302\u0323", "o\u031b\u0301", "u\u031b\u0300", "s\u0323\u0307", "\u212b", "\u2126",
  "\u1100\u1161\u11a8", "\u1112\u1161\u11ab", "\u3131\u314f", "\u0915\u093c", "\u0627\u0653", "\uf900",
  "\u00c5\u0301", "i\u0307", "\u0041\u030a\u0301", "\u03b1\u0301", "\u0438\u0306", "\u0435\u0308",
];

const WORDS = ["time", "model", "token", "split", "uneven", "memory", "machine", "network", "layer", "weight",
  "the", "a", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as",
  "with", "his", "they", "I", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word",
  "Hello", "World", "GPU", "CPU", "NCCL", "MPI", "Qwen", "Llama", "attention", "transformer",
  "antidisestablishmentarianism", "supercalifragilisticexpialidocious", "pneumonoultramicroscopic",
  "résumé", "naïve", "Straße", "Ærø", "ﬁnance", "ǅemal", "İstanbul", "ß", "ẞ", "ΣΊΣΥΦΟΣ", "ﬀ"];
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
  "'Re", "'lL", "’s", "’t", "’re", "n't", "N'T", "'", "''", "'x", "'sa", "'tis", "'twas", "'em"];
const PUNCT = ["!", "?", ".", ",", ";", ":", "...", "…", "!!", "?!", "???", "--", "—", "–", "-", "(", ")", "[",
  "]", "{", "}", "<", ">", "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "_", "=", "+", "~", "`", "\"",
  "“", "”", "‘", "’", "«", "»", "¿", "¡", "§", "¶", "†", "‡", "•", "°", "′", "″", "※", "、", "。", "，", "！",
  "？", "（", "）", "「", "」", "『", "』", "【", "】", "《", "》", "·", "¯\\_(ツ)_/¯", "=>", "->", "::",
  "!==", "<=>", "/*", "*/", "//", "<!--", "-->", "&&", "||", "**"];
const NUMBERS = ["0", "7", "42", "100", "2024", "12345", "1234567890", "9876543210123456789",
  "3.14159265358979", "-0.001", "1e10", "6.022e23", "1,000,000", "1.000.000,50", "$19.99", "€5", "¥1000",
  "50%", "v1.2.3", "192.168.0.1", "2024-05-17", "12:34:56", "+44 20 7946 0958", "0xFF", "١٢٣٤", "१२३४",
  "１２３４", "²³", "½", "Ⅻ", "ⅷ", "①②③", "𝟙𝟚𝟛", "٣.١٤", "000123", "007", "3rd", "21st", "1st-2nd"];

// Characters from long-assigned blocks (Unicode <= 13) so every library's tables agree on them.
const RANDOM_RANGES = [[0x20, 0x7e], [0xa1, 0x17f], [0x370, 0x3ff], [0x400, 0x4ff], [0x5d0, 0x5ea],
  [0x620, 0x64a], [0x900, 0x97f], [0xe01, 0xe3a], [0x3041, 0x3096], [0x30a1, 0x30fa], [0x4e00, 0x9fa5],
  [0xac00, 0xd7a3], [0x1f600, 0x1f64f], [0x2200, 0x22ff], [0x2500, 0x257f], [0x1d400, 0x1d6a5]];

function generateLines(count = 2400, seed = 20240517) {
  const r = makeRng(seed);
  const word = () => r.pick(WORDS);
  const spaces = () => r.pick(WHITESPACE);
  const sentence = (n) => Array.from({ length: n }, () => word()).join(" ");
  const randomChars = (n) => {
    let s = "";
    for (let i = 0; i < n; ++i) {
      const [lo, hi] = r.pick(RANDOM_RANGES);
      s += String.fromCodePoint(lo + r.int(hi - lo + 1));
    }
    return s;
  };
  const generators = [
    () => r.pick(PROSE),
    () => r.pick(PROSE) + " " + r.pick(PROSE),
    () => r.pick(CODE),
    () => r.pick(CODE).replace(/\n/g, r.pick(["\n", "\r\n", "\n\n"])),
    () => r.pick(WORLD),
    () => r.pick(WORLD) + " " + r.pick(PROSE),
    () => sentence(3 + r.int(6)) + " " + r.pick(EMOJI) + r.pick(EMOJI),
    () => Array.from({ length: 1 + r.int(8) }, () => r.pick(EMOJI)).join(r.pick(["", " ", "\u200d", "\n"])),
    () => word() + spaces() + word() + spaces() + spaces() + word(),
    () => spaces() + sentence(2 + r.int(4)) + spaces(),
    () => Array.from({ length: 2 + r.int(6) }, () => spaces()).join(r.pick(["", "x", "."])),
    () => Array.from({ length: 1 + r.int(5) }, () => r.pick(NUMBERS)).join(r.pick([" ", ", ", "", "+", "\n"])),
    () => "The answer is " + r.pick(NUMBERS) + " (approximately " + r.pick(NUMBERS) + ").",
    () => String(r.int(1e9)) + String(r.int(1e9)) + String(r.int(1e9)),
    () => r.pick(SPECIALS) + r.pick(["user", "assistant", "system"]) + "\n" + r.pick(PROSE) + r.pick(SPECIALS),
    () => "<|im_start|>user\n" + r.pick(WORLD) + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n" +
      r.pick(PROSE) + "<|im_end|>",
    () => word() + r.pick(SPECIALS) + word() + r.pick([" ", ""]) + r.pick(SPECIALS) + r.pick([" ", "\n", ""]),
    () => sentence(2) + " " + r.pick(NEAR_SPECIALS) + " " + sentence(2),
    () => r.pick(NEAR_SPECIALS) + r.pick(SPECIALS) + r.pick(NEAR_SPECIALS),
    () => word() + r.pick(NON_NFC) + word() + " " + r.pick(NON_NFC) + r.pick(NON_NFC),
    () => "Caf" + r.pick(NON_NFC) + " " + r.pick(NON_NFC) + r.pick(WORDS) + r.pick(PUNCT),
    () => r.pick(SPECIALS) + r.pick(NON_NFC) + r.pick(["", " "]) + r.pick(NON_NFC),
    () => Array.from({ length: 3 + r.int(10) }, () => r.pick(PUNCT)).join(r.chance(0.5) ? "" : " "),
    () => word() + r.pick(PUNCT) + r.pick(PUNCT) + word() + r.pick(PUNCT) + spaces() + r.pick(PUNCT),
    () => r.pick(["I", "you", "they", "She", "WE", "it", "John", "O", "rock"]) + r.pick(CONTRACTIONS) + " " +
      word() + r.pick(CONTRACTIONS) + r.pick([" ", "", "\n"]) + r.pick(CONTRACTIONS) + word(),
    () => Array.from({ length: 2 + r.int(5) }, () => r.pick(CONTRACTIONS)).join(r.pick(["", " ", "'"])),
    () => randomChars(3 + r.int(25)),
    () => randomChars(2 + r.int(6)) + spaces() + randomChars(2 + r.int(6)),
    () => {
      const pools = [PROSE, CODE, WORLD, EMOJI, NUMBERS, PUNCT, SPECIALS, NON_NFC, CONTRACTIONS, WHITESPACE];
      return Array.from({ length: 3 + r.int(6) }, () => r.pick(r.pick(pools))).join(r.pick(["", " ", "\n"]));
    },
    () => word().toUpperCase() + r.pick(CONTRACTIONS).toUpperCase() + " " + word().toLowerCase(),
    () => r.pick(["x", "a", "ab", "中", "😀", "1"]).repeat(1 + r.int(40)),
    () => " ".repeat(1 + r.int(20)) + word() + "\t".repeat(r.int(4)) + "\n".repeat(r.int(4)) + word(),
  ];
  // Fixed edge cases first, then generated lines; duplicates are dropped so every line adds coverage.
  const lines = ["", " ", "\n", "\t", "a", "A", "'s", "<|im_start|>", "<|endoftext|>", "<|im_end|>\n",
    "Once upon a time", "Hello world", "  ", "\r\n", "😀", "👨‍👩‍👧‍👦", "e\u0301"];
  const seen = new Set(lines);
  while (lines.length < count) {
    const line = r.pick(generators)();
    if (!seen.has(line)) {
      seen.add(line);
      lines.push(line);
    }
  }
  return lines;
}

export { generateLines };
