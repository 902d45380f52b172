#!/usr/bin/env python3
"""Make tiny random-weight Hugging Face checkpoints with transformers' own fp32 logits and greedy ids as test fixtures.

Runs where torch, transformers and tokenizers are installed (the GPU device machine; it computes on the CPU
in float32 so the numbers do not depend on GPU kernels or TF32). Writes one directory per fixture under
--out (default tests/data/hf):

    config.json, model.safetensors (or model-0000x-of-0000y.safetensors + model.safetensors.index.json),
    generation_config.json, tokenizer.json, tokenizer_config.json,
    reference.json   prompt, prompt ids, 32 greedy ids, versions, ...
    logits.f32       fp32 little-endian logits, shape [prompt positions, vocab], row-major

The Qwen3-MoE / Qwen3-Next / Qwen3.5 fixtures (appended after the dense ones, so the dense fixtures keep their
seeds) also record router margins, the layer types, the tensor-name prefixes and the experts layout on disk.

Usage: python3 scripts/make_hf_fixtures.py [--out tests/data/hf] [--only NAME ...]
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import safetensors
import safetensors.torch
import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

# ---------------------------------------------------------------------------------------------------------
# Tokenizer training text. Written for this script; it only has to be varied enough English (with a few
# digits, punctuation and non-ASCII letters) to give a few hundred useful byte-level BPE merges.
TRAIN_TEXT = """\
The morning train left the valley a little after six, carrying farmers, students and a tired violinist.
Nobody on the platform noticed the small grey cat that slipped into the last carriage.
She curled up under a bench and listened to the wheels, which sang the same two notes over and over.
At the third station a woman with a green umbrella sat down and opened a book about old bridges.
The book said that the oldest stone bridge in the region was built in 1342 and had never been repaired.
"That cannot be true," she said to nobody, and turned the page.
Outside, the river was wide and brown, and the fields were full of yellow flowers and slow white cows.
The violinist woke up, looked at the cat, and smiled for the first time that week.
He had played at a wedding until three o'clock in the morning, and his fingers still hurt.
In the city, the market opened at eight. Bakers carried trays of bread, and the air smelled of coffee.
A boy named Tomas sold newspapers at the corner; he shouted the headlines as if they were songs.
Today the headline was about rain: forty millimetres in one night, the most since 1987.
People bought umbrellas, then complained that the sun came out before noon.
The café near the museum served a soup that tasted of garlic, lemon and something nobody could name.
Its owner, Mrs. Alvarez, refused to share the recipe, even with her own daughter.
"When you are ready, you will know," she said, which annoyed everyone who heard it.
The museum itself held maps, clocks, and a long table covered with machines that no longer worked.
One clock had stopped at 4:17 on a Tuesday in 1911, and the guides told a different story about it each day.
Children liked the room with the stuffed bear; adults liked the room with the chairs, because they could sit.
Programmers are people who turn coffee into code, or so the old joke says.
A function takes some input, does some work, and returns a result; if it does too much, split it in two.
Good tests are small, fast and honest: they fail when the code is wrong and pass when it is right.
Numbers such as 3.14159, 2.71828 and 1.41421 appear in many programs, usually with a comment nearby.
The weather report for the mountains promised snow above 2000 metres and strong winds in the afternoon.
Hikers were told to carry water, a map, a warm coat, and to tell someone where they were going.
In the evening the lights of the town came on one by one, like a slow wave moving up the hill.
The grey cat got off the train at the last station, walked past the ticket office, and disappeared.
Some say she lives in the library now, sleeping on the shelf of books about the sea.
Others say she rides the train every day, from the valley to the city and back again.
Whatever the truth, the violinist wrote a short piece of music about her and called it "The Passenger".
He played it for the first time at a small concert in the museum, next to the clock that never moves.
The audience was quiet, then clapped for a long time, and Mrs. Alvarez brought soup for everyone.
Her daughter asked once more for the recipe. "Not yet," said Mrs. Alvarez, "but soon."
Learning a new language is like walking into a house where every door opens onto another hallway.
You learn the words for bread and water first, then the words for weather, and much later the jokes.
Über den Bergen liegt Schnee, and the naïve tourist still wore sandals; his friends laughed at him.
The river keeps moving, the train keeps running, and the old bridge, they say, keeps standing.
"""

# The pre-tokenizer regex that Qwen2/Qwen3 tokenizer.json files declare (digits split one by one, letters
# with one optional leading non-letter, etc.). The qwen fixtures use it so the engine's regex path is tested
# with the real pattern; the llama fixtures use the plain ByteLevel (GPT-2 regex) pre-tokenizer.
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

TRAINED_VOCAB = 510  # merges + 256 bytes; the special tokens are appended after it (like Llama 3 / Qwen)

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ---------------------------------------------------------------------------------------------------------
# Fixture definitions. Sizes are small to keep the committed files at a few MB, but every shape feature the
# engine must handle shows up at least once: GQA with groups of 3 and 4, head_dim != hidden/heads, an FFN
# width that is not a multiple of 64, tied and untied output heads, llama3 RoPE scaling, q/k/v biases,
# q/k RMSNorm, a sharded checkpoint, a transformers-4.x-style config.json and a BF16 copy.
FIXTURES = [
    dict(
        name="llama3_scaled",
        arch="llama",
        tokenizer="llama",
        hidden=128, layers=3, heads=8, kv_heads=2, head_dim=16, intermediate=344,
        tied=False, eps=1e-5, max_pos=512,
        # original_max_position_embeddings 64 makes wavelengths 16..64 smoothed and > 64 divided by 8, so at
        # head_dim 16 and theta 500000 all three llama3 regimes occur.
        rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=64),
        config_style="4.x", shard="300KB", bf16=False,
        prompt="The grey cat rode the morning train to the city, and at 4:17 the violinist played "
               "\"The Passenger\" in the café.",
    ),
    dict(
        name="llama_tied",
        arch="llama",
        tokenizer="llama",
        hidden=96, layers=3, heads=6, kv_heads=2, head_dim=16, intermediate=256,
        tied=True, eps=1e-5, max_pos=256,
        rope=dict(rope_type="default", rope_theta=10000.0),
        config_style="5.x", shard=None, bf16=False,
        prompt="Good tests are small and honest; the old bridge was built in 1342 and the river keeps moving.",
    ),
    dict(
        name="qwen2",
        arch="qwen2",
        tokenizer="qwen",
        hidden=128, layers=3, heads=8, kv_heads=2, head_dim=16, intermediate=384,
        tied=False, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        config_style="5.x", shard=None, bf16=True,
        prompt="Mrs. Alvarez served soup at the museum café; 40 people clapped, then it rained for 2 hours.",
    ),
    dict(
        name="qwen3",
        arch="qwen3",
        tokenizer="qwen",
        # head_dim 32 while hidden/heads = 16: q_proj is 128 -> 256, o_proj 256 -> 128.
        hidden=128, layers=3, heads=8, kv_heads=2, head_dim=32, intermediate=320,
        tied=True, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        config_style="5.x", shard=None, bf16=False,
        prompt="A function takes some input, does some work, and returns a result: 3.14159 is written "
               "with a comment nearby.",
    ),
]

N_GREEDY = 32
SEEDS_TO_TRY = 40
MIN_DISTINCT = 12       # greedy continuation must use at least this many different tokens
MIN_MARGIN = 2e-3       # top-1 minus top-2 logit at each greedy step, far above fp32 rounding noise


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Tokenizers


def train_base_tokenizer():
    """Byte-level BPE trained on TRAIN_TEXT, no special tokens yet (returned as JSON so variants can copy it)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    # Train on single lines, as a corpus of sentences, repeated so that min_frequency is easy to reach.
    lines = [l for l in TRAIN_TEXT.splitlines() if l.strip()]
    tok.train_from_iterator(lines * 3, trainer=trainer)
    return tok.to_str()


def make_tokenizer(base_json, kind):
    tok = Tokenizer.from_str(base_json)
    if kind == "llama":
        tok.add_special_tokens(LLAMA_SPECIALS)
        bos = LLAMA_SPECIALS[0]
        bos_id = tok.token_to_id(bos)
        # Like Llama 3's tokenizer.json: BOS comes from the post-processor template.
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                          special_tokens=[(bos, bos_id)]),
        ])
    elif kind == "qwen":
        tok.add_special_tokens(QWEN_SPECIALS)
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        raise ValueError(kind)
    return tok


def tokenizer_config(tok, kind):
    added = {}
    for tid, t in sorted(tok.get_added_tokens_decoder().items()):
        added[str(tid)] = dict(content=t.content, lstrip=t.lstrip, normalized=t.normalized, rstrip=t.rstrip,
                               single_word=t.single_word, special=t.special)
    cfg = dict(added_tokens_decoder=added, clean_up_tokenization_spaces=False, model_max_length=4096,
               tokenizer_class="PreTrainedTokenizerFast")
    if kind == "llama":
        cfg.update(bos_token=LLAMA_SPECIALS[0], eos_token=LLAMA_SPECIALS[1], add_bos_token=True,
                   add_eos_token=False)
    else:
        cfg.update(bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>", errors="replace",
                   split_special_tokens=False)
    return cfg


# ---------------------------------------------------------------------------------------------------------
# Models


def expected_inv_freq(rope, head_dim):
    """RoPE inverse frequencies computed here from the published formulas, to check transformers' own."""
    theta = rope["rope_theta"]
    inv = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    if rope["rope_type"] == "default":
        return inv
    assert rope["rope_type"] == "llama3"
    factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    orig = rope["original_max_position_embeddings"]
    out = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < orig / hi:
            out.append(f)
        elif wavelen > orig / lo:
            out.append(f / factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def make_config(fx, tok):
    common = dict(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        hidden_size=fx["hidden"],
        intermediate_size=fx["intermediate"],
        num_hidden_layers=fx["layers"],
        num_attention_heads=fx["heads"],
        num_key_value_heads=fx["kv_heads"],
        head_dim=fx["head_dim"],
        max_position_embeddings=fx["max_pos"],
        rms_norm_eps=fx["eps"],
        tie_word_embeddings=fx["tied"],
        attn_implementation="eager",
        rope_parameters=dict(fx["rope"]),
    )
    if fx["tokenizer"] == "llama":
        common.update(bos_token_id=tok.token_to_id(LLAMA_SPECIALS[0]), eos_token_id=tok.token_to_id(LLAMA_SPECIALS[1]))
    else:
        eot = tok.token_to_id("<|endoftext|>")
        common.update(bos_token_id=eot, eos_token_id=eot)
    cls, more = {
        "llama": (transformers.LlamaConfig, dict(attention_bias=False, mlp_bias=False)),
        "qwen2": (transformers.Qwen2Config, dict(use_sliding_window=False)),
        "qwen3": (transformers.Qwen3Config, dict(attention_bias=False, use_sliding_window=False)),
    }[fx["arch"]]
    cfg = cls(**common, **more)
    rp = getattr(cfg, "rope_parameters", None)
    if not (isinstance(rp, dict) and rp.get("rope_type") == fx["rope"]["rope_type"]):
        # Not the transformers-5 API after all: give RoPE the 4.x way (the inv_freq checks still apply).
        log(f"  WARNING: config did not take rope_parameters ({rp!r}); using rope_theta/rope_scaling")
        rope = dict(common.pop("rope_parameters"))
        common["rope_theta"] = rope.pop("rope_theta")
        if rope["rope_type"] != "default":
            common["rope_scaling"] = rope
        cfg = cls(**common, **more)
    return cfg


def randomize(model, fx, seed):
    """Seeded weights with O(1) activations so logits are spread out and greedy continuations vary.

    transformers' own init (std 0.02) gives nearly flat logits, whose greedy continuation is one token
    repeated; here every projection is scaled by 1/sqrt(fan_in) and norm weights, biases and embeddings get
    non-trivial random values, so that a wrong norm weight, bias or permutation shows in the logits.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = fx["hidden"]
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):
                # Tied: this matrix is also the output head, so it gets the head's scale.
                std = 2.0 / math.sqrt(hidden) if fx["tied"] else 0.5
                p.copy_(std * torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(2.0 / math.sqrt(hidden) * torch.randn(p.shape, generator=g))
            elif name.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                raise RuntimeError(f"unexpected parameter {name}")
    if fx["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"


def rewrite_config_4x(path, rope):
    """Turn transformers-5 config.json (rope_parameters) into the 4.x layout (rope_theta + rope_scaling)."""
    with open(path) as f:
        cfg = json.load(f)
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = rope["rope_theta"]
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    cfg["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    cfg["transformers_version"] = "4.46.0"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def shard_by_hand(d, model, max_size):
    """Fallback when save_pretrained does not shard: same file names and index layout, written here."""
    from safetensors.torch import save_file

    limit = int(max_size.upper().rstrip("B").rstrip("K")) * 1000
    os.remove(os.path.join(d, "model.safetensors"))
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
    groups, cur, size = [], {}, 0
    for k in sorted(sd):
        nbytes = sd[k].numel() * sd[k].element_size()
        if cur and size + nbytes > limit:
            groups.append(cur)
            cur, size = {}, 0
        cur[k], size = sd[k], size + nbytes
    groups.append(cur)
    weight_map, total = {}, 0
    for i, g in enumerate(groups):
        fn = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(g, os.path.join(d, fn), metadata={"format": "pt"})
        for k, v in g.items():
            weight_map[k] = fn
            total += v.numel() * v.element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


def get_inv_freq(model):
    """The RoPE inverse frequencies the model actually uses (its rotary embedding's buffer)."""
    for name, b in model.named_buffers():
        if name.endswith("inv_freq") and "original" not in name:
            return b.double().tolist()
    raise RuntimeError("model has no inv_freq buffer")


def load(d):
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def reference_run(model, prompt_ids, special_ids):
    """Prompt logits, 32 greedy ids through generate(), and checks that make the fixture a fair test."""
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        # eos_token_id=None: a fixed 32 tokens; generate() would fall back to the model's eos, so clear it.
        model.generation_config.eos_token_id = None
        gc = GenerationConfig(do_sample=False, max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY,
                              eos_token_id=None, pad_token_id=special_ids[-1], num_beams=1)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        greedy = out[0, len(prompt_ids):].tolist()
        # One uncached forward over prompt + continuation: every greedy id must be the plain argmax there
        # (no processor changed it), with a margin well above rounding noise.
        full = model(torch.tensor([prompt_ids + greedy])).logits[0].float()
    n = len(prompt_ids)
    margins, argmax_ok = [], True
    for t in range(N_GREEDY):
        row = full[n - 1 + t]
        top2 = torch.topk(row, 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        argmax_ok &= int(top2.indices[0]) == greedy[t]
    prompt_consistency = float((full[:n] - logits).abs().max())
    stats = dict(
        n_new=len(greedy),
        distinct=len(set(greedy)),
        min_margin=min(margins),
        argmax_ok=bool(argmax_ok),
        specials=[t for t in greedy if t in special_ids],
        max_abs_logit=float(logits.abs().max()),
        logit_std=float(logits.std()),
        prompt_vs_full_max_diff=prompt_consistency,
    )
    return logits, greedy, stats


def acceptable(st):
    return (st["n_new"] == N_GREEDY and st["argmax_ok"] and st["distinct"] >= MIN_DISTINCT
            and st["min_margin"] >= MIN_MARGIN and not st["specials"])


def save_tokenizer(d, tok, kind):
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok, kind), f, indent=2)
        f.write("\n")


def encode_prompt(d, tok, prompt):
    """Prompt ids as transformers' AutoTokenizer makes them, checked against the tokenizers library."""
    try:
        hf_tok = AutoTokenizer.from_pretrained(d)
    except Exception as e:  # keep the run going; the log says which class loaded it
        log(f"  WARNING: AutoTokenizer failed ({e!r}); using PreTrainedTokenizerFast directly")
        with open(os.path.join(d, "tokenizer_config.json")) as f:
            kw = {k: v for k, v in json.load(f).items() if k not in ("tokenizer_class", "added_tokens_decoder")}
        hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), **kw)
    log(f"  tokenizer class {type(hf_tok).__name__}")
    ids = hf_tok(prompt)["input_ids"]
    raw = tok.encode(prompt).ids
    if ids != raw:
        log(f"  WARNING: AutoTokenizer ids differ from tokenizers' ids:\n    {ids}\n    {raw}")
    return ids, raw, hf_tok


def write_reference(d, fx, prompt, prompt_ids, raw_ids, greedy, greedy_text, logits, stats, seed, wdtype,
                    extra):
    arr = logits.numpy().astype("<f4")
    arr.tofile(os.path.join(d, "logits.f32"))
    ref = dict(
        fixture=os.path.basename(d),
        architecture=fx["arch"],
        prompt=prompt,
        prompt_ids=prompt_ids,
        tokenizers_ids=raw_ids,
        greedy_ids=greedy,
        greedy_text=greedy_text,
        logits_file="logits.f32",
        logits_shape=list(arr.shape),
        logits_dtype="float32 little-endian, row-major [position, vocab]",
        weights_dtype=wdtype,
        compute_dtype="float32",
        config_style=("transformers 4.x (rope_theta, rope_scaling)" if fx["config_style"] == "4.x"
                      else "transformers 5.x (rope_parameters)"),
        sharded=bool(extra.get("sharded")),
        seed=seed,
        stats=stats,
        tolerance=dict(logits_max_abs=1e-4, greedy="exact"),
        versions=dict(transformers=transformers.__version__, torch=torch.__version__,
                      tokenizers=tokenizers.__version__, safetensors=safetensors.__version__,
                      numpy=np.__version__),
        generated_by="scripts/make_hf_fixtures.py",
    )
    ref.update({k: v for k, v in extra.items() if k != "sharded"})
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


def try_seed(fx, tok, d, seed, special_ids):
    """Build, save, reload and run one fixture (and its BF16 copy) with one seed; returns everything."""
    name = fx["name"]
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(fx, tok)).float().eval()
    randomize(model, fx, seed)

    exp = expected_inv_freq(fx["rope"], fx["head_dim"])
    inv = get_inv_freq(model)
    if len(inv) != len(exp) or max(abs(a - b) / b for a, b in zip(inv, exp)) > 1e-5:
        raise RuntimeError(f"{name}: rope inv_freq {inv} != expected {exp}")

    if fx["shard"]:
        model.save_pretrained(d, max_shard_size=fx["shard"])
        if not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
            log(f"  WARNING: save_pretrained(max_shard_size={fx['shard']}) wrote one file; sharding by hand")
            shard_by_hand(d, model, fx["shard"])
    else:
        model.save_pretrained(d)
    save_tokenizer(d, tok, fx["tokenizer"])
    extra = {}
    if fx["shard"]:
        shards = sorted(f for f in os.listdir(d) if f.startswith("model-") and f.endswith(".safetensors"))
        if len(shards) < 2:
            raise RuntimeError(f"{name}: not sharded: {os.listdir(d)}")
        extra.update(sharded=True, shards=shards)

    prompt = fx["prompt"]
    prompt_ids, raw_ids, hf_tok = encode_prompt(d, tok, prompt)
    with torch.no_grad():
        mem_logits = model(torch.tensor([prompt_ids])).logits[0]

    # The reference numbers come from the checkpoint as written (transformers-5 config), reloaded the way
    # users load it.
    loaded = load(d)
    inv2 = get_inv_freq(loaded)
    if len(inv2) != len(exp) or max(abs(a - b) / b for a, b in zip(inv2, exp)) > 1e-5:
        raise RuntimeError(f"{name}: reloaded rope inv_freq {inv2} != expected {exp}")
    logits, greedy, st = reference_run(loaded, prompt_ids, special_ids)
    st["rope_inv_freq"] = inv2
    st["reload_vs_memory_max_diff"] = float((logits - mem_logits).abs().max())
    if st["reload_vs_memory_max_diff"] != 0.0:
        log(f"  WARNING: reloaded model differs from the in-memory one by {st['reload_vs_memory_max_diff']}")

    if fx["config_style"] == "4.x":
        # Rewrite config.json the way transformers 4.x wrote it and check transformers reads it the same.
        rewrite_config_4x(os.path.join(d, "config.json"), fx["rope"])
        legacy = load(d)
        inv3 = get_inv_freq(legacy)
        with torch.no_grad():
            lg3 = legacy(torch.tensor([prompt_ids])).logits[0].float()
        extra["legacy_config_reload_max_diff"] = float((lg3 - logits).abs().max())
        extra["legacy_config_inv_freq_equal"] = inv3 == inv2
        if extra["legacy_config_reload_max_diff"] != 0.0 or inv3 != inv2:
            log(f"  WARNING: 4.x-style config loads differently: max diff {extra['legacy_config_reload_max_diff']},"
                f" inv_freq {inv3} vs {inv2}")

    bf16 = None
    if fx["bf16"]:
        d16 = d + "_bf16"
        shutil.rmtree(d16, ignore_errors=True)
        m16 = AutoModelForCausalLM.from_config(make_config(fx, tok))
        m16.load_state_dict(model.state_dict())
        m16.to(torch.bfloat16).save_pretrained(d16)
        save_tokenizer(d16, tok, fx["tokenizer"])
        # Reference for a BF16 loader: the bf16 weights upcast exactly to fp32, then fp32 compute.
        l16 = load(d16)
        for n_, p in l16.named_parameters():
            assert p.dtype == torch.float32, n_
        lg16, gr16, st16 = reference_run(l16, prompt_ids, special_ids)
        bf16 = dict(dir=d16, logits=lg16, greedy=gr16, stats=st16)
    return dict(seed=seed, prompt=prompt, prompt_ids=prompt_ids, raw_ids=raw_ids, logits=logits, greedy=greedy,
                stats=st, extra=extra, bf16=bf16, hf_tok=hf_tok)


def build_fixture(fx, tok, out_root, seed_base):
    name = fx["name"]
    d = os.path.join(out_root, name)
    special_ids = sorted(tok.get_added_tokens_decoder())
    best, best_score, r = None, None, None
    for seed in range(seed_base, seed_base + SEEDS_TO_TRY):
        r = try_seed(fx, tok, d, seed, special_ids)
        st, b = r["stats"], r["bf16"]
        ok = acceptable(st) and (b is None or acceptable(b["stats"]))
        log(f"  {name} seed {seed}: distinct {st['distinct']}, min margin {st['min_margin']:.4g}, argmax "
            f"{st['argmax_ok']}, specials {st['specials']}, max|logit| {st['max_abs_logit']:.3g}"
            + (f"; bf16 distinct {b['stats']['distinct']}, margin {b['stats']['min_margin']:.4g}" if b else ""))
        if ok:
            break
        score = (st["argmax_ok"] and not st["specials"], min(st["min_margin"], b["stats"]["min_margin"] if b else 1e9),
                 st["distinct"])
        if best_score is None or score > best_score:
            best, best_score = seed, score
    else:
        # No seed met every criterion: rebuild the best one and say so (the tests may then be fragile).
        log(f"  WARNING: {name}: no seed in {SEEDS_TO_TRY} met all criteria; using seed {best}")
        r = try_seed(fx, tok, d, best, special_ids)

    assert len(r["prompt_ids"]) >= 16, (name, len(r["prompt_ids"]))
    text = r["hf_tok"].decode(r["greedy"], skip_special_tokens=False)
    write_reference(d, fx, r["prompt"], r["prompt_ids"], r["raw_ids"], r["greedy"], text, r["logits"], r["stats"],
                    r["seed"], "float32", r["extra"])
    log(f"  {name}: seed {r['seed']}, {len(r['prompt_ids'])} prompt ids, greedy text {text!r}")
    if r["bf16"]:
        b = r["bf16"]
        write_reference(b["dir"], fx, r["prompt"], r["prompt_ids"], r["raw_ids"], b["greedy"],
                        r["hf_tok"].decode(b["greedy"], skip_special_tokens=False), b["logits"], b["stats"],
                        r["seed"], "bfloat16",
                        dict(bf16_of=name, bf16_vs_fp32_logits_max_diff=float((b["logits"] - r["logits"]).abs().max())))
        log(f"  {name}_bf16: greedy equal to fp32: {b['greedy'] == r['greedy']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/hf")
    ap.add_argument("--only", nargs="*", help="fixture names to make (default: all)")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: the same summation order on every run
    log(f"transformers {transformers.__version__}, torch {torch.__version__}, tokenizers {tokenizers.__version__}")

    base = train_base_tokenizer()
    toks = {k: make_tokenizer(base, k) for k in ("llama", "qwen")}
    for k, t in toks.items():
        log(f"tokenizer {k}: {t.get_vocab_size(with_added_tokens=True)} tokens")
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for i, fx in enumerate(FIXTURES):
        if args.only and fx["name"] not in args.only:
            continue
        log(f"== {fx['name']}")
        try:
            build_fixture(fx, toks[fx["tokenizer"]], args.out, seed_base=1000 * (i + 1))
        except Exception as e:  # keep going so one run gives all the other fixtures
            import traceback
            traceback.print_exc()
            failed.append(fx["name"])
    if failed:
        log(f"FAILED: {failed}")
        sys.exit(1)
    log("all fixtures written")


if __name__ == "__main__":
    main()
