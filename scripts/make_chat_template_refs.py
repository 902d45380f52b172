#!/usr/bin/env python3
"""Reference renders of real chat templates, for tests/chat_template_test.cpp.

For each tests/data/chat_templates/<name>.jinja (+ <name>.json with bos/eos) this generates seeded
conversations and renders them with jinja2 configured as transformers' apply_chat_template does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, json.dumps-based tojson with
ensure_ascii=False, raise_exception, strftime_now at a fixed date), writing <name>.cases.json:
{"template": name, "cases": [{"messages", "tools", "add_generation_prompt", "extra", "expected" | "error"}]}.

Deterministic: same script + same jinja2 -> same bytes. Needs python3-jinja2 (Debian) only.
Usage: python3 scripts/make_chat_template_refs.py [--count N]
"""
import argparse
import datetime
import json
import os
import random

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "chat_templates")
FIXED_NOW = datetime.datetime(2024, 7, 26, 12, 0, 0)  # the C++ test injects the same clock


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


TEXTS = [
    "Hello!", "What is 2 + 2?", "Tell me a joke about cats.", "Bonjour, ça va ? Très bien.",
    "你好，世界。请介绍一下你自己。", "Emoji: 🙂🚀✨ and ZWJ 👩‍💻", "Quotes \"double\" and 'single' and back\\slash",
    "Braces {{ not a tag }} {% nor this %} {# nor a comment #}", "Line one\nLine two\n\nLine four",
    "  padded with spaces  ", "\n\nleading newlines", "trailing newlines\n\n", "tab\tseparated\tvalues",
    "<tool_response>not really</tool_response>", "ideographic\u3000space and nbsp\u00a0here", "",
    "Unicode math: ∑ x² ≤ ∞, Ελληνικά, русский, עברית, العربية", "control \x01 char and DEL \x7f",
    "JSON-ish: {\"a\": [1, 2, {\"b\": null}]}", "A fairly long sentence that keeps going and going.",
]
REASONING = ["Let me think step by step.", "The user greets me.\nI should greet back.", "", "  spaced  ",
             "多步推理：先算 2+2=4。"]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web (résumé, 日本語 OK).",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 5},
                    "safe": {"type": "boolean"}}, "required": ["query"]}}},
    {"type": "function", "function": {"name": "calc", "description": "Evaluate an expression",
     "parameters": {"type": "object", "properties": {"expr": {"type": "string"}, "precision": {"type": "number"}}}}},
]
ARG_VALUES = ["Paris", "Zürich", "東京", 3, -17, 2.5, 1e-7, 2.0, 1e20, True, False, None, [1, "two", 3.0],
              {"nested": {"deep": [True, None]}}, "", "multi\nline \"quoted\""]


def pick_text(rng):
    return rng.choice(TEXTS)


def tool_call(rng):
    fn = rng.choice(TOOLS)["function"]
    names = list(fn["parameters"]["properties"].keys())
    args = {n: rng.choice(ARG_VALUES) for n in rng.sample(names, rng.randint(0, len(names)))}
    if rng.random() < 0.2:
        args = json.dumps(args, ensure_ascii=False)  # OpenAI clients send arguments as a JSON string
    call = {"name": fn["name"], "arguments": args}
    if rng.random() < 0.8:
        return {"id": "call_%d" % rng.randint(0, 9999), "type": "function", "function": call}
    return call


def assistant(rng, name):
    msg = {"role": "assistant", "content": pick_text(rng)}
    if name != "llama3_1":
        r = rng.random()
        if r < 0.25:
            msg["reasoning_content"] = rng.choice(REASONING)
        elif r < 0.5:
            msg["content"] = "<think>\n" + rng.choice(REASONING) + "\n</think>\n\n" + msg["content"]
        if rng.random() < 0.25:
            msg["tool_calls"] = [tool_call(rng) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                msg["content"] = ""
    return msg


def user_content(rng, name):
    if name == "qwen3_5" and rng.random() < 0.2:
        items = [{"type": "text", "text": pick_text(rng)}]
        if rng.random() < 0.5:
            items.insert(0, {"type": "image", "image": "file:///x.png"})
        if rng.random() < 0.3:
            items.append({"type": "video", "video": "file:///x.mp4"})
        return items
    return pick_text(rng)


def conversation(rng, name):
    msgs = []
    if rng.random() < 0.4:
        msgs.append({"role": "system", "content": rng.choice(["You are a helpful assistant.", "Réponds en français.",
                                                             "", "System with\nnewline  "])})
    for turn in range(rng.randint(1, 6)):
        msgs.append({"role": "user", "content": user_content(rng, name)})
        if turn == 0 and rng.random() < 0.05:
            continue
        a = assistant(rng, name)
        msgs.append(a)
        if "tool_calls" in a:
            for _ in range(rng.randint(1, len(a["tool_calls"]))):
                msgs.append({"role": "tool", "content": rng.choice(["{\"temp\": 21.5}", "42", "no results", ""])})
            if rng.random() < 0.7:
                msgs.append({"role": "assistant", "content": pick_text(rng)})
    if rng.random() < 0.5 and msgs[-1]["role"] == "assistant":
        msgs.pop()  # end on the user's turn, as a request does
    # Rare malformed-but-valid-JSON inputs: the reference decides whether they render or raise.
    r = rng.random()
    if r < 0.03:
        msgs.append({"role": "assistant", "content": None})
    elif r < 0.05 and name == "qwen3_5":
        msgs.insert(len(msgs) // 2, {"role": "system", "content": "late system"})
    return msgs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=210)
    args = ap.parse_args()
    env = make_env()
    for name in ("qwen3", "qwen3_5", "llama3_1"):
        with open(os.path.join(DATA, name + ".jinja"), encoding="utf-8") as f:
            template = env.from_string(f.read())
        with open(os.path.join(DATA, name + ".json"), encoding="utf-8") as f:
            special = {k: v for k, v in json.load(f).items() if v is not None}
        rng = random.Random("uneven-chat-" + name)
        cases, errors = [], 0
        for _ in range(args.count):
            messages = conversation(rng, name)
            tools = None
            if name != "llama3_1" and rng.random() < 0.25:
                tools = rng.sample(TOOLS, rng.randint(1, 2))
            extra = {}
            if name != "llama3_1":
                r = rng.random()
                if r < 0.35:
                    extra["enable_thinking"] = False
                elif r < 0.6:
                    extra["enable_thinking"] = True
                if name == "qwen3_5" and rng.random() < 0.2:
                    extra["add_vision_id"] = True
            agp = rng.random() < 0.6
            case = {"messages": messages, "tools": tools, "add_generation_prompt": agp, "extra": extra}
            try:
                case["expected"] = template.render(messages=messages, tools=tools, documents=None,
                                                   add_generation_prompt=agp, **special, **extra)
            except Exception as e:  # noqa: BLE001 - the C++ renderer must fail on the same inputs
                case["error"] = "%s: %s" % (type(e).__name__, e)
                errors += 1
            cases.append(case)
        out = os.path.join(DATA, name + ".cases.json")
        with open(out, "w", encoding="utf-8") as f:
            f.write('{"template": %s, "generator": "scripts/make_chat_template_refs.py", "jinja2": %s, "cases": [\n'
                    % (json.dumps(name), json.dumps(jinja2.__version__)))
            f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
            f.write("\n]}\n")
        print("%s: %d cases (%d raise), %d bytes" % (out, len(cases), errors, os.path.getsize(out)))


if __name__ == "__main__":
    main()
