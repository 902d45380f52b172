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
import re
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
    # ---- Mixture-of-experts and hybrid (gated delta net + gated attention) fixtures. Appended here so the
    # fixtures above keep their index and so their seeds. All use hidden 64, head_dim 16 and the qwen tokenizer.
    # Extra keys: model_type (checked against the config), hf_class (the class that builds and loads it; None
    # means AutoModelForCausalLM), moe (config fields), linear (gated delta net config fields), layer_types,
    # norm_offset (the RMSNorms compute x * (1 + w)), vision (vision_config fields of the multimodal models),
    # mtp (add fake multi-token-prediction tensors to the file), stacked (write the experts as 3-D tensors),
    # expect (what the written checkpoint should hold; a mismatch is logged as a WARNING), min_prompt_tokens.
    dict(
        name="qwen3_moe_e16",
        arch="qwen3_moe",
        model_type="qwen3_moe",
        hf_class=None,
        tokenizer="qwen",
        # Layer 1 is a dense MLP (mlp_only_layers), layers 0 and 2 route to 4 of 16 experts without
        # renormalising the top-4 probabilities (norm_topk_prob False; qwen3_next covers True).
        hidden=64, layers=3, heads=4, kv_heads=2, head_dim=16, intermediate=96,
        tied=False, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        moe=dict(num_experts=16, num_experts_per_tok=4, moe_intermediate_size=32, norm_topk_prob=False,
                 decoder_sparse_step=1, mlp_only_layers=[1]),
        config_style="5.x", shard=None, bf16=False,
        expect=dict(experts_layout="per_expert", weight_prefixes=["lm_head", "model"]),
        prompt="In the city, the market opened at eight; bakers carried trays of bread, and Tomas shouted "
               "the headlines about 40 millimetres of rain.",
    ),
    dict(
        name="qwen3_next",
        arch="qwen3_next",
        model_type="qwen3_next",
        hf_class=None,
        tokenizer="qwen",
        # 3 gated-delta-net layers then one gated full-attention layer (full_attention_interval 4); linear
        # attention with 2 key heads serving 6 value heads (ratio 3) and key dim 16 != value dim 8; layers 0, 1
        # and 3 are MoE (16 experts, top-2, renormalised, plus a sigmoid-gated shared expert), layer 2 is dense.
        # rope_theta 10000 rather than Qwen's 1e7: with 4 rotary dims (16 * 0.25) the second frequency then
        # turns by a visible angle over the prompt.
        hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, intermediate=96,
        tied=False, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear=dict(linear_num_key_heads=2, linear_num_value_heads=6, linear_key_head_dim=16,
                    linear_value_head_dim=8, linear_conv_kernel_dim=4),
        moe=dict(num_experts=16, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                 shared_expert_intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[2]),
        norm_offset=True,
        config_style="5.x", shard=None, bf16=False,
        expect=dict(experts_layout="per_expert", weight_prefixes=["lm_head", "model"],
                    linear_attn_in_proj=["in_proj_ba", "in_proj_qkvz"]),
        # More than 64 tokens: transformers' chunked gated delta rule works in chunks of 64, so the prompt
        # crosses a chunk boundary (and prompt + continuation crosses two).
        min_prompt_tokens=80,
        prompt="The morning train left the valley a little after six. The small grey cat slipped into the last "
               "carriage, curled up under a bench and listened to the wheels. At the third station a woman with "
               "a green umbrella opened a book about old bridges, and the tired violinist woke up, looked at the "
               "cat, and smiled for the first time that week.",
    ),
    dict(
        name="qwen3_5_text",
        arch="qwen3_5_text",
        model_type="qwen3_5_text",
        hf_class=None,
        tokenizer="qwen",
        # Dense Qwen3.5 text model (Qwen3_5ForCausalLM): 3 gated-delta-net layers (2 key heads, 4 value heads,
        # separate in_proj_qkv / in_proj_z / in_proj_b / in_proj_a) then gated full attention; tied embeddings.
        hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, intermediate=96,
        tied=True, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25,
                  mrope_interleaved=True, mrope_section=[1, 1, 0]),
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear=dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=16, linear_conv_kernel_dim=4),
        norm_offset=True,
        config_style="5.x", shard=None, bf16=False,
        expect=dict(experts_layout=None, linear_attn_in_proj=["in_proj_a", "in_proj_b", "in_proj_qkv", "in_proj_z"]),
        min_prompt_tokens=65,
        prompt="Hikers were told to carry water, a map and a warm coat. In the evening the lights of the town "
               "came on one by one, like a slow wave moving up the hill, and the river kept moving.",
    ),
    dict(
        name="qwen3_5_vl",
        arch="qwen3_5",
        model_type="qwen3_5",
        hf_class="Qwen3_5ForConditionalGeneration",
        tokenizer="qwen",
        # The multimodal dense checkpoint layout: text under model.language_model.*, a (tiny, unused) vision
        # tower under model.visual.*, lm_head.weight at the top, plus fake mtp.* tensors that loaders must skip.
        hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, intermediate=96,
        tied=False, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25,
                  mrope_interleaved=True, mrope_section=[1, 1, 0]),
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear=dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=16, linear_conv_kernel_dim=4),
        vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                    temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=16),
        norm_offset=True, mtp=True,
        config_style="5.x", shard=None, bf16=False,
        expect=dict(experts_layout=None, weight_prefixes=["lm_head", "model.language_model", "model.visual", "mtp"],
                    linear_attn_in_proj=["in_proj_a", "in_proj_b", "in_proj_qkv", "in_proj_z"]),
        prompt="Some say the grey cat lives in the library now, sleeping on the shelf of books about the sea; "
               "others say she rides the train every day.",
    ),
    dict(
        name="qwen3_5_moe_stacked",
        arch="qwen3_5_moe",
        model_type="qwen3_5_moe",
        hf_class="Qwen3_5MoeForConditionalGeneration",
        tokenizer="qwen",
        # The multimodal MoE layout with the experts stacked as real Qwen3.5 MoE checkpoints ship them:
        # mlp.experts.gate_up_proj [E, 2 * moe_intermediate, hidden] (per expert: gate rows, then up rows) and
        # mlp.experts.down_proj [E, hidden, moe_intermediate]; every layer MoE (16 experts, top-4, renormalised)
        # with a shared expert.
        hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, intermediate=None,
        tied=False, eps=1e-6, max_pos=512,
        rope=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25,
                  mrope_interleaved=True, mrope_section=[1, 1, 0]),
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear=dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=16, linear_conv_kernel_dim=4),
        moe=dict(num_experts=16, num_experts_per_tok=4, moe_intermediate_size=32,
                 shared_expert_intermediate_size=48),
        vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                    temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=16),
        norm_offset=True, mtp=True, stacked=True,
        config_style="5.x", shard=None, bf16=False,
        expect=dict(experts_layout="stacked", weight_prefixes=["lm_head", "model.language_model", "model.visual", "mtp"],
                    linear_attn_in_proj=["in_proj_a", "in_proj_b", "in_proj_qkv", "in_proj_z"]),
        prompt="Learning a new language is like walking into a house where every door opens onto another "
               "hallway: bread and water first, then the weather, and much later the jokes.",
    ),
]

DENSE_ARCHS = ("llama", "qwen2", "qwen3")  # the original fixtures; their code paths stay as they were

N_GREEDY = 32
SEEDS_TO_TRY = 40
MIN_DISTINCT = 12       # greedy continuation must use at least this many different tokens
MIN_MARGIN = 2e-3       # top-1 minus top-2 logit at each greedy step, far above fp32 rounding noise
MIN_ROUTER_GAP = 1e-4   # k-th minus (k+1)-th router probability, every MoE layer and position (MoE fixtures)


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
    """RoPE inverse frequencies computed here from the published formulas, to check transformers' own.

    With partial_rotary_factor only the first head_dim * factor dimensions rotate, and the frequencies are
    those of a head of that size.
    """
    theta = rope["rope_theta"]
    dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    inv = [1.0 / theta ** (i / dim) for i in range(0, dim, 2)]
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
    if fx["arch"] not in DENSE_ARCHS:
        return make_config_moe_hybrid(fx, tok)
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


def text_config_kwargs(fx, tok):
    """The text-model config fields of a MoE / hybrid fixture (no attn_implementation: given separately)."""
    eot = tok.token_to_id("<|endoftext|>")
    kw = dict(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        hidden_size=fx["hidden"],
        num_hidden_layers=fx["layers"],
        num_attention_heads=fx["heads"],
        num_key_value_heads=fx["kv_heads"],
        head_dim=fx["head_dim"],
        max_position_embeddings=fx["max_pos"],
        rms_norm_eps=fx["eps"],
        tie_word_embeddings=fx["tied"],
        attention_bias=False,
        rope_parameters=dict(fx["rope"]),
        bos_token_id=eot,
        eos_token_id=eot,
    )
    if fx["intermediate"] is not None:  # Qwen3_5MoeTextConfig has no dense MLP and no intermediate_size
        kw["intermediate_size"] = fx["intermediate"]
    if "layer_types" in fx:
        kw["layer_types"] = list(fx["layer_types"])
    kw.update(fx.get("linear", {}))
    kw.update({k: (list(v) if isinstance(v, list) else v) for k, v in fx.get("moe", {}).items()})
    return kw


def make_config_moe_hybrid(fx, tok):
    """Configs of the Qwen3-MoE / Qwen3-Next / Qwen3.5 fixtures (transformers 5 classes only, no 4.x fallback)."""
    text = text_config_kwargs(fx, tok)
    arch = fx["arch"]
    if arch in ("qwen3_moe", "qwen3_next", "qwen3_5_text"):
        cls = {"qwen3_moe": transformers.Qwen3MoeConfig, "qwen3_next": transformers.Qwen3NextConfig,
               "qwen3_5_text": transformers.Qwen3_5TextConfig}[arch]
        cfg = cls(**text, attn_implementation="eager")
        tcfg = cfg
    elif arch in ("qwen3_5", "qwen3_5_moe"):
        cls = {"qwen3_5": transformers.Qwen3_5Config, "qwen3_5_moe": transformers.Qwen3_5MoeConfig}[arch]
        # Sub-configs as dicts: the composite config builds them with its own sub-config classes.
        cfg = cls(text_config=dict(text), vision_config=dict(fx["vision"]), tie_word_embeddings=fx["tied"],
                  attn_implementation="eager")
        tcfg = cfg.text_config
    else:
        raise ValueError(arch)
    if cfg.model_type != fx["model_type"]:
        raise RuntimeError(f"{fx['name']}: config model_type {cfg.model_type!r} != {fx['model_type']!r}")
    rp = getattr(tcfg, "rope_parameters", None)
    want = dict(fx["rope"])
    if not isinstance(rp, dict) or any(rp.get(k) != v for k, v in want.items()):
        raise RuntimeError(f"{fx['name']}: config rope_parameters {rp!r} do not hold {want!r}")
    if "layer_types" in fx and list(tcfg.layer_types) != list(fx["layer_types"]):
        raise RuntimeError(f"{fx['name']}: layer_types {tcfg.layer_types} != {fx['layer_types']}")
    for k, v in list(fx.get("moe", {}).items()) + list(fx.get("linear", {}).items()):
        if getattr(tcfg, k, None) != v:
            raise RuntimeError(f"{fx['name']}: config {k} = {getattr(tcfg, k, None)!r}, wanted {v!r}")
    return cfg


def model_class(fx):
    """The class that builds and loads a fixture: AutoModelForCausalLM, or the named multimodal class."""
    if fx.get("hf_class"):
        return getattr(transformers, fx["hf_class"])
    return AutoModelForCausalLM


def new_model(fx, cfg):
    """A fresh float32 model in eval mode for the config (the dense fixtures exactly as before)."""
    if fx["arch"] in DENSE_ARCHS:
        return AutoModelForCausalLM.from_config(cfg).float().eval()
    cls = model_class(fx)
    if cls is AutoModelForCausalLM:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    else:
        model = cls(cfg)
    if fx.get("hf_class") and type(model).__name__ != fx["hf_class"]:
        raise RuntimeError(f"{fx['name']}: built {type(model).__name__}, wanted {fx['hf_class']}")
    prepare_moe_hybrid(model, fx)
    return model.float().eval()


def prepare_moe_hybrid(model, fx):
    """Eager attention everywhere and, for MoE models, the reference (eager) experts loop, not grouped_mm."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except Exception as e:  # noqa: BLE001 -- keep going; the implementations are logged below
            log(f"  WARNING: set_attn_implementation('eager') failed: {e!r}")
    if "moe" in fx:
        if hasattr(model, "set_experts_implementation"):
            try:
                model.set_experts_implementation("eager")
            except Exception as e:  # noqa: BLE001
                log(f"  WARNING: set_experts_implementation('eager') failed: {e!r}")
        else:
            log("  WARNING: model has no set_experts_implementation; experts run as transformers chooses")
    impl = implementations(model)
    if impl["attention"] != ["eager"] or impl["experts"] not in ([], ["eager"]):
        log(f"  WARNING: implementations are {impl}")


def implementations(model):
    """The attention and experts implementations the modules will use (from the configs they hold)."""
    attn, experts = set(), set()
    for _, mod in model.named_modules():
        cfg = getattr(mod, "config", None)
        if cfg is None:
            continue
        if type(mod).__name__.endswith("Experts"):
            experts.add(str(getattr(cfg, "_experts_implementation", None)))
        if type(mod).__name__.endswith("Attention") and "Vision" not in type(mod).__name__:
            attn.add(str(getattr(cfg, "_attn_implementation", None)))
    return dict(attention=sorted(attn), experts=sorted(experts))


def randomize(model, fx, seed):
    if fx["arch"] not in DENSE_ARCHS:
        return randomize_moe_hybrid(model, fx, seed)
    return randomize_dense(model, fx, seed)


def randomize_moe_hybrid(model, fx, seed):
    """randomize_dense's scheme for the MoE / hybrid fixtures, deciding norms by their module class.

    Qwen3-Next / Qwen3.5 RMSNorms compute x * (1 + w) and transformers initialises w to zeros, so w gets
    U(-0.5, 0.5); their gated norm (linear_attn.norm, class ...RMSNormGated) multiplies by w and gets
    U(0.5, 1.5), as do Qwen3-MoE's plain norms. The gated delta net gets A = exp(A_log) in [1, 16],
    dt_bias in [0.5, 1.5] and conv1d N(0, 1/kernel); routers N(0, (2/sqrt(hidden))^2) so routing is spread;
    stacked experts N(0, 1/fan_in) with fan_in their last dimension; the vision tower (unused by text input)
    small N(0, 0.02^2) values.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = fx["hidden"]
    owner = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, _ in mod.named_parameters(recurse=False, remove_duplicate=False):
            owner[f"{mname}.{pname}" if mname else pname] = mod
    odd_init = []
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            mod = owner[name]
            cls = type(mod).__name__
            leaf = name.rsplit(".", 1)[-1]
            if name.startswith("model.visual.") or ".visual." in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif "RMSNorm" in cls:
                gated = "Gated" in cls
                offset = fx.get("norm_offset", False) and not gated
                # Check the family assumption against transformers' own init: zeros for x * (1 + w), ones else.
                if not bool((p == (0.0 if offset else 1.0)).all()):
                    odd_init.append(f"{name} ({cls})")
                if offset:
                    p.copy_(torch.rand(p.shape, generator=g) - 0.5)
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif leaf == "A_log":
                p.copy_(torch.log(1.0 + 15.0 * torch.rand(p.shape, generator=g)))
            elif leaf == "dt_bias":
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("conv1d.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif name.endswith("embed_tokens.weight"):
                std = 2.0 / math.sqrt(hidden) if fx["tied"] else 0.5
                p.copy_(std * torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(2.0 / math.sqrt(hidden) * torch.randn(p.shape, generator=g))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(2.0 / math.sqrt(hidden) * torch.randn(p.shape, generator=g))
            elif name.endswith("shared_expert_gate.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(hidden))
            elif leaf in ("gate_up_proj", "down_proj") and p.dim() == 3:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif leaf == "weight" and isinstance(mod, torch.nn.Linear):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                raise RuntimeError(f"unexpected parameter {name} ({cls}, {tuple(p.shape)})")
    if odd_init:
        log(f"  WARNING: norm weights not initialised as their class suggests (x*w: ones, x*(1+w): zeros): "
            f"{odd_init}")
    inp, outp = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if fx["tied"]:
        assert outp.data_ptr() == inp.data_ptr(), "not tied"
    else:
        assert outp.data_ptr() != inp.data_ptr(), "tied, but the fixture is untied"


def randomize_dense(model, fx, seed):
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
    """The RoPE inverse frequencies the model actually uses (its text rotary embedding's buffer).

    Multimodal models also have the vision tower's 2-D rotary embedding (model.visual.rotary_pos_emb.inv_freq),
    which is skipped.
    """
    for name, b in model.named_buffers():
        if name.endswith("inv_freq") and "original" not in name and "visual" not in name:
            return b.double().tolist()
    raise RuntimeError("model has no inv_freq buffer")


def load(d, fx=None):
    if fx is None or fx["arch"] in DENSE_ARCHS:
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        return m.eval()
    m, info = model_class(fx).from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                              output_loading_info=True)
    if fx.get("hf_class") and type(m).__name__ != fx["hf_class"]:
        raise RuntimeError(f"{fx['name']}: loaded {type(m).__name__}, wanted {fx['hf_class']}")
    prepare_moe_hybrid(m, fx)
    info = {k: sorted(map(str, v)) for k, v in (info or {}).items() if isinstance(v, (list, set, tuple))}
    if any(info.values()):
        log(f"  loading info: {info}")
    m.fixture_loading_info = info
    return m.float().eval()


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
        # (no processor changed it), with a margin well above rounding noise. MoE models: the router gaps of
        # this forward, i.e. of every position of prompt + continuation, are recorded too.
        routers = find_routers(model)
        gaps, hooks = {}, []
        for rname, rmod, k in routers:
            hooks.append(rmod.register_forward_hook(router_hook(rname, k, gaps), with_kwargs=True))
        try:
            full = model(torch.tensor([prompt_ids + greedy])).logits[0].float()
        finally:
            for h in hooks:
                h.remove()
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
    if routers:
        n_all = len(prompt_ids) + len(greedy)
        per_layer, used = {}, {}
        for rname, _, _ in routers:
            if rname not in gaps:
                raise RuntimeError(f"router {rname} was not called")
            calls = gaps[rname]
            gap = torch.cat([c[0] for c in calls])
            if gap.numel() != n_all:
                raise RuntimeError(f"router {rname} saw {gap.numel()} positions, expected {n_all}")
            per_layer[rname] = float(gap.min())
            used[rname] = len(set(torch.cat([c[1] for c in calls]).flatten().tolist()))
        stats.update(router_min_gap=min(per_layer.values()), router_min_gap_per_layer=per_layer,
                     router_top_k=routers[0][2], router_experts_used=used, router_positions=n_all)
    return logits, greedy, stats


def stepwise_logits(model, prompt_ids):
    """Logits of every prompt position, feeding one token per forward through the model's own cache."""
    rows, cache = [], None
    with torch.no_grad():
        for t, tok_id in enumerate(prompt_ids):
            out = model(input_ids=torch.tensor([[tok_id]]), past_key_values=cache, use_cache=True,
                        cache_position=torch.tensor([t]))
            cache = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


def find_routers(model):
    """(name, module, top_k) of every MoE router (the mlp.gate modules whose weight is [experts, hidden])."""
    tcfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    k = getattr(tcfg, "num_experts_per_tok", None)
    n_exp = getattr(tcfg, "num_experts", None)
    out = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if (name.endswith("mlp.gate") and isinstance(w, torch.Tensor) and w.dim() == 2
                and w.shape[0] == n_exp and k):
            out.append((name, mod, int(k)))
    return out


def router_hook(name, k, gaps):
    """Forward hook: softmax router probabilities recomputed in fp32 from the router's input and weight, then
    per token the gap between the k-th and (k+1)-th largest, and the chosen experts."""
    def hook(mod, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        with torch.no_grad():
            h = x.reshape(-1, x.shape[-1]).float()
            probs = torch.softmax(torch.nn.functional.linear(h, mod.weight.float()), dim=-1)
            top = torch.topk(probs, k + 1, dim=-1)
        gaps.setdefault(name, []).append((top.values[:, k - 1] - top.values[:, k], top.indices[:, :k]))
    return hook


def acceptable(st):
    return (st["n_new"] == N_GREEDY and st["argmax_ok"] and st["distinct"] >= MIN_DISTINCT
            and st["min_margin"] >= MIN_MARGIN and not st["specials"]
            and st.get("router_min_gap", 1.0) >= MIN_ROUTER_GAP)


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
    model = new_model(fx, make_config(fx, tok))
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
    if fx["arch"] not in DENSE_ARCHS:
        extra.update(finish_checkpoint(d, model, fx, seed))

    prompt = fx["prompt"]
    prompt_ids, raw_ids, hf_tok = encode_prompt(d, tok, prompt)
    if len(prompt_ids) < fx.get("min_prompt_tokens", 0):
        raise RuntimeError(f"{name}: prompt has {len(prompt_ids)} tokens, needs {fx['min_prompt_tokens']}")
    with torch.no_grad():
        mem_logits = model(torch.tensor([prompt_ids])).logits[0]

    # The reference numbers come from the checkpoint as written (transformers-5 config), reloaded the way
    # users load it.
    if fx["arch"] in DENSE_ARCHS:
        loaded = load(d)
    else:
        loaded, more = load_moe_hybrid(d, fx, model)
        extra.update(more)
    inv2 = get_inv_freq(loaded)
    if len(inv2) != len(exp) or max(abs(a - b) / b for a, b in zip(inv2, exp)) > 1e-5:
        raise RuntimeError(f"{name}: reloaded rope inv_freq {inv2} != expected {exp}")
    logits, greedy, st = reference_run(loaded, prompt_ids, special_ids)
    st["rope_inv_freq"] = inv2
    st["reload_vs_memory_max_diff"] = float((logits - mem_logits).abs().max())
    if st["reload_vs_memory_max_diff"] != 0.0:
        log(f"  WARNING: reloaded model differs from the in-memory one by {st['reload_vs_memory_max_diff']}")
    if any(t == "linear_attention" for t in (fx.get("layer_types") or [])):
        # The reference for hybrids is transformers' token-by-token run (its recurrent gated delta rule): its
        # chunked prompt form inverts each chunk's triangular matrix explicitly and loses up to ~1e-3 where
        # that matrix is ill-conditioned, while both forms are the same function. The chunked logits are
        # kept beside it (logits_chunked.f32) with their difference.
        stepwise = stepwise_logits(loaded, prompt_ids)
        st["chunked_vs_stepwise_max_diff"] = float((stepwise - logits).abs().max())
        log(f"  {name} seed {seed}: transformers chunked vs token-by-token prompt logits "
            f"{st['chunked_vs_stepwise_max_diff']:.3g}")
        if st["chunked_vs_stepwise_max_diff"] > 1e-2:
            raise RuntimeError(f"{name}: token-by-token logits differ from the prompt forward by "
                               f"{st['chunked_vs_stepwise_max_diff']}: the stepwise run is wrong")
        logits.numpy().astype("<f4").tofile(os.path.join(d, "logits_chunked.f32"))
        extra["logits_chunked_file"] = "logits_chunked.f32"
        extra["logits_method"] = ("one token at a time through the cache (recurrent gated delta rule); the "
                                  "chunked prompt forward is in logits_chunked.f32")
        logits = stepwise

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


def load_moe_hybrid(d, fx, model):
    """Reload a MoE / hybrid fixture; returns (model for the reference, reference.json fields).

    For the stacked-experts checkpoint, written here rather than by save_pretrained, a failed or inexact reload
    is not fatal: the file is kept, the reference comes from the in-memory model, and the log says so.
    """
    try:
        loaded = load(d, fx)
        info = loaded.fixture_loading_info
    except Exception as e:  # noqa: BLE001
        if not fx.get("stacked"):
            raise
        log(f"  WARNING: transformers could not load the stacked checkpoint ({e!r}); reference from memory")
        return model, dict(reference_from="in-memory model (transformers could not load the file)")
    if info.get("missing_keys") or info.get("mismatched_keys"):
        if not fx.get("stacked"):
            raise RuntimeError(f"{fx['name']}: reload left weights uninitialised: {info}")
        log(f"  WARNING: stacked checkpoint reloads incompletely ({info}); reference from memory")
        return model, dict(reference_from="in-memory model (reload incomplete)", loading_info=info)
    more = dict(reference_from="reloaded checkpoint", loading_info=info, implementations=implementations(loaded))
    if fx.get("stacked"):
        with torch.no_grad():
            ids = torch.arange(1, 40).remainder(model.config.get_text_config().vocab_size)[None]
            diff = float((loaded(ids).logits - model(ids).logits).abs().max())
        if diff != 0.0:
            log(f"  WARNING: stacked checkpoint reloads with max logit diff {diff}; reference from memory")
            return model, dict(reference_from=f"in-memory model (reload differs by {diff})", loading_info=info)
    return loaded, more


def read_safetensors(path):
    with safetensors.safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def checkpoint_layout(d):
    """What the written checkpoint holds: tensor names, their top-level prefixes, the experts layout (one
    tensor per expert or 3-D stacked) and the linear-attention input projections."""
    keys = []
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            with safetensors.safe_open(os.path.join(d, fn), framework="pt") as f:
                keys += list(f.keys())
    prefixes = set()
    for k in keys:
        parts = k.split(".")
        if parts[0] == "model" and len(parts) > 2 and parts[1] in ("visual", "language_model"):
            prefixes.add("model." + parts[1])
        else:
            prefixes.add(parts[0])
    main = [k for k in keys if not k.startswith("mtp.")]
    per_expert = any(re.search(r"\.experts\.\d+\.", k) for k in main)
    stacked = any(k.endswith("experts.gate_up_proj") for k in main)
    layout = "mixed" if per_expert and stacked else "per_expert" if per_expert else "stacked" if stacked else None
    in_proj = sorted({m.group(1) for m in (re.search(r"linear_attn\.(in_proj_\w+)\.weight$", k) for k in main) if m})
    return dict(keys=sorted(keys), prefixes=sorted(prefixes), experts_layout=layout, linear_attn_in_proj=in_proj)


def fake_mtp_tensors(fx, seed):
    """Random stand-ins for the multi-token-prediction head that real Qwen3.5 checkpoints carry (mtp.*), which
    transformers (and an engine) must skip. Their own generator, so they do not change the model weights."""
    g = torch.Generator().manual_seed(seed + 777)
    h, hd, nh, nkv = fx["hidden"], fx["head_dim"], fx["heads"], fx["kv_heads"]

    def w(*shape):
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1])

    def norm(n):
        return torch.rand((n,), generator=g) - 0.5

    t = {"mtp.fc.weight": w(h, 2 * h), "mtp.pre_fc_norm_embedding.weight": norm(h),
         "mtp.pre_fc_norm_hidden.weight": norm(h), "mtp.norm.weight": norm(h)}
    p = "mtp.layers.0."
    t.update({p + "input_layernorm.weight": norm(h), p + "post_attention_layernorm.weight": norm(h),
              p + "self_attn.q_proj.weight": w(2 * nh * hd, h), p + "self_attn.k_proj.weight": w(nkv * hd, h),
              p + "self_attn.v_proj.weight": w(nkv * hd, h), p + "self_attn.o_proj.weight": w(h, nh * hd),
              p + "self_attn.q_norm.weight": norm(hd), p + "self_attn.k_norm.weight": norm(hd)})
    moe = fx.get("moe")
    if moe:
        e, i, s = moe["num_experts"], moe["moe_intermediate_size"], moe["shared_expert_intermediate_size"]
        t.update({p + "mlp.gate.weight": w(e, h), p + "mlp.experts.gate_up_proj": w(e, 2 * i, h),
                  p + "mlp.experts.down_proj": w(e, h, i), p + "mlp.shared_expert.gate_proj.weight": w(s, h),
                  p + "mlp.shared_expert.up_proj.weight": w(s, h), p + "mlp.shared_expert.down_proj.weight": w(h, s),
                  p + "mlp.shared_expert_gate.weight": w(1, h)})
    else:
        i = fx["intermediate"]
        t.update({p + "mlp.gate_proj.weight": w(i, h), p + "mlp.up_proj.weight": w(i, h),
                  p + "mlp.down_proj.weight": w(h, i)})
    return {k: v.to(torch.float32).contiguous() for k, v in t.items()}


def check_gate_up_order(model):
    """Run one expert of the first stacked-experts module through transformers' own forward and compare with
    silu(x W[:I]^T) * (x W[I:]^T) W_down^T: proves rows 0..I-1 of gate_up_proj[e] are gate_proj, I..2I-1 up_proj."""
    for name, mod in model.named_modules():
        gu = getattr(mod, "gate_up_proj", None)
        if not (isinstance(gu, torch.Tensor) and gu.dim() == 3):
            continue
        e, two_i, hdim = gu.shape
        i = two_i // 2
        g = torch.Generator().manual_seed(5)
        x = torch.randn((3, hdim), generator=g)
        expert = e - 1
        with torch.no_grad():
            got = mod(x, torch.full((3, 1), expert, dtype=torch.long), torch.ones((3, 1)))
            wgu, wd = gu[expert].float(), mod.down_proj[expert].float()
            want = (torch.nn.functional.silu(x @ wgu[:i].T) * (x @ wgu[i:].T)) @ wd.T
            swapped = (torch.nn.functional.silu(x @ wgu[i:].T) * (x @ wgu[:i].T)) @ wd.T
        d_ok, d_sw = float((got - want).abs().max()), float((got - swapped).abs().max())
        if not d_ok <= 1e-5 < d_sw:
            raise RuntimeError(f"{name}: gate_up_proj is not [gate; up] (diff {d_ok}, swapped {d_sw})")
        return dict(module=name, expert=expert, max_diff=d_ok, max_diff_if_swapped=d_sw)
    raise RuntimeError("no stacked experts module found")


def finish_checkpoint(d, model, fx, seed):
    """After save_pretrained: write the stacked-experts file and the fake mtp.* tensors where the fixture asks,
    check the layout on disk against what the fixture is for, and return the reference.json fields."""
    name = fx["name"]
    path = os.path.join(d, "model.safetensors")
    if not os.path.exists(path) or os.path.exists(path + ".index.json"):
        raise RuntimeError(f"{name}: save_pretrained did not write a single model.safetensors: {os.listdir(d)}")
    saved = checkpoint_layout(d)
    out = {}
    if fx.get("stacked") or fx.get("mtp"):
        tensors, meta = read_safetensors(path)
        meta.setdefault("format", "pt")
        if fx.get("stacked"):
            # The in-memory layout (transformers 5 holds the experts as 3-D parameters), written as is.
            out["save_pretrained_experts_layout"] = saved["experts_layout"]
            sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
            if fx["tied"]:
                sd.pop("lm_head.weight", None)
            if set(sd) != set(tensors):  # transformers 5.17 writes these experts one tensor per expert
                log(f"  stacking the experts: {len(set(tensors) - set(sd))} save_pretrained tensors replaced by "
                    f"{len(set(sd) - set(tensors))} 3-D ones")
            tensors = sd
            tc = model.config.get_text_config()
            e, i, h = tc.num_experts, tc.moe_intermediate_size, tc.hidden_size
            for layer in range(tc.num_hidden_layers):
                pre = f"model.language_model.layers.{layer}.mlp.experts."
                gu, dn = tensors.get(pre + "gate_up_proj"), tensors.get(pre + "down_proj")
                if gu is None or dn is None or tuple(gu.shape) != (e, 2 * i, h) or tuple(dn.shape) != (e, h, i):
                    raise RuntimeError(f"{name}: layer {layer} stacked experts missing or misshapen: "
                                       f"{None if gu is None else tuple(gu.shape)}, "
                                       f"{None if dn is None else tuple(dn.shape)}")
            out["gate_up_order_check"] = check_gate_up_order(model)
        if fx.get("mtp"):
            mtp = fake_mtp_tensors(fx, seed)
            tensors.update(mtp)
            out["mtp_tensors"] = sorted(mtp)
        os.remove(path)
        safetensors.torch.save_file(tensors, path, metadata=meta)
    layout = checkpoint_layout(d)
    out.update(model_type=fx["model_type"], hf_class=type(model).__name__, weight_prefixes=layout["prefixes"],
               experts_layout=layout["experts_layout"], n_tensors=len(layout["keys"]))
    if layout["linear_attn_in_proj"]:
        out["linear_attn_in_proj"] = layout["linear_attn_in_proj"]
    if "layer_types" in fx:
        out["layer_types"] = list(fx["layer_types"])
    if fx.get("hf_class"):
        # The reference is the conditional-generation model fed text-only input_ids, so the multimodal RoPE
        # positions are plain 0..n-1 in all three mrope sections (temporal, height, width).
        out["text_config_key"] = "text_config"
        out["reference_input"] = "text-only input_ids; mrope positions 0..n-1 in every section"
    try:
        from transformers.utils import import_utils as iu
        out["linear_attention_kernels"] = dict(
            fla=bool(iu.is_flash_linear_attention_available()), causal_conv1d=bool(iu.is_causal_conv1d_available()))
    except Exception:  # noqa: BLE001 -- only informative
        pass
    for k, v in fx.get("expect", {}).items():
        if out.get(k) != v:
            log(f"  WARNING: {name}: checkpoint {k} is {out.get(k)!r}, expected {v!r}")
    return out


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
            + (f"; bf16 distinct {b['stats']['distinct']}, margin {b['stats']['min_margin']:.4g}" if b else "")
            + (f"; router min gap {st['router_min_gap']:.3g}, experts used {st['router_experts_used']}"
               if "router_min_gap" in st else ""))
        if ok:
            break
        score = (st["argmax_ok"] and not st["specials"] and st.get("router_min_gap", 1.0) >= MIN_ROUTER_GAP,
                 min(st["min_margin"], b["stats"]["min_margin"] if b else 1e9), st["distinct"])
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
    unknown = sorted(set(args.only or []) - {fx["name"] for fx in FIXTURES})
    if unknown:
        ap.error(f"unknown fixture names {unknown}; known: {[fx['name'] for fx in FIXTURES]}")

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
