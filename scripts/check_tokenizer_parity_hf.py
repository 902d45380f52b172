#!/usr/bin/env python3
"""Checks the committed Qwen3 tokenizer parity data against Hugging Face `tokenizers` itself.

The reference ids in tests/data/tokenizer/qwen3_parity.json come from @lenml/tokenizers (npm); where that
library departs from Hugging Face, a case carries hf_ids / hf_decoded. This script encodes every line with
the real `tokenizers` library (run it where that is installed, e.g. the device machine) and reports how many
cases agree with the ids the C++ parity test expects (hf_ids where present, else ids) and with the decoded text.

Usage: python3 scripts/check_tokenizer_parity_hf.py TOKENIZER_JSON [PARITY_JSON]
"""
import json
import sys

from tokenizers import Tokenizer


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    data = json.load(open(sys.argv[2] if len(sys.argv) > 2 else "tests/data/tokenizer/qwen3_parity.json"))
    cases = data["cases"]
    id_mismatch, text_mismatch = [], []
    for case in cases:
        want_ids = case.get("hf_ids", case["ids"])
        want_text = case.get("hf_decoded", case["decoded"])
        ids = tok.encode(case["text"], add_special_tokens=True).ids
        if ids != want_ids:
            id_mismatch.append(case["line"])
        if tok.decode(ids, skip_special_tokens=False) != want_text:
            text_mismatch.append(case["line"])
    print(f"{len(cases)} cases: ids agree on {len(cases) - len(id_mismatch)}, decoded text agrees on "
          f"{len(cases) - len(text_mismatch)}")
    if id_mismatch or text_mismatch:
        print("id mismatches (lines):", id_mismatch[:20])
        print("text mismatches (lines):", text_mismatch[:20])
        sys.exit(1)


if __name__ == "__main__":
    main()
