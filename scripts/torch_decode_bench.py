#!/usr/bin/env python3
"""PyTorch's decode speed on a model shape (random weights, bf16, one GPU): eager with a dynamic cache, and
torch.compile over a static cache; the reference the CUDA backend's bench is compared with.

  python3 scripts/torch_decode_bench.py tests/data/configs/llama-3.1-8b.json --decode 64 --prompt 2048
Prints one JSON line: decode tok/s (eager, compiled), prompt tok/s, weight bytes and the copy bandwidth."""
import argparse, json, time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache


def copy_bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * n * 10 / (time.perf_counter() - t)  # bytes read + written


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(args.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16).eval()
    # Decode reads every matrix but the embedding (one row per token); tied heads read it as the head.
    emb = model.get_input_embeddings().weight
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if not cfg.tie_word_embeddings:
        weight_bytes -= emb.numel() * emb.element_size()
    out = {"config": args.config, "weight_bytes": weight_bytes, "copy_gb_per_second": copy_bandwidth() / 1e9}
    ids = torch.randint(0, cfg.vocab_size, (1, args.prompt), device="cuda")
    with torch.inference_mode():
        out["prompt_tokens_per_second"] = args.prompt / timed(lambda: model(ids, logits_to_keep=1), 3)
        # Eager decode with the default dynamic cache, one token at a time after a short prompt.
        def eager_decode():
            o = model(ids[:, :16], use_cache=True, logits_to_keep=1)
            cache, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
            for _ in range(args.decode):
                o = model(tok, past_key_values=cache, use_cache=True)
                cache, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
        out["eager_decode_tokens_per_second"] = args.decode / timed(eager_decode, 1)
        if not args.no_compile:
            cache = StaticCache(config=cfg, max_cache_len=16 + args.decode + 8)
            step = torch.compile(lambda tok, pos: model(tok, past_key_values=cache, cache_position=pos,
                                                        use_cache=True).logits, mode="reduce-overhead", fullgraph=True)
            def compiled_decode():
                cache.reset()
                model(ids[:, :16], past_key_values=cache, cache_position=torch.arange(16, device="cuda"), use_cache=True)
                tok = ids[:, 15:16]
                for i in range(args.decode):
                    tok = step(tok, torch.tensor([16 + i], device="cuda")).argmax(-1)
            compiled_decode()  # compiles and captures
            out["compiled_decode_tokens_per_second"] = args.decode / timed(compiled_decode, 1)
    for k in ("eager_decode_tokens_per_second", "compiled_decode_tokens_per_second"):
        if k in out:
            out[k.replace("tokens_per_second", "weight_gb_per_second")] = out[k] * weight_bytes / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
