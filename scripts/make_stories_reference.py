#!/usr/bin/env python3
"""Make the stories260K reference: llama2.c checkpoint -> transformers Llama, fp32 greedy ids and prompt logits.

Reads the llama2.c files (stories260K.bin: 7 int32 header then fp32 weights; tok512.bin: the tokenizer),
builds a transformers LlamaForCausalLM from them, encodes the prompt the way llama2.c's run.c does, and
records 60 greedy tokens. An independent numpy forward pass written here in llama2.c's own layout (RoPE on
adjacent pairs, no weight permutation) checks the conversion token by token.

Writes --out/reference.json and --out/logits.f32 (fp32 little-endian, [prompt positions, vocab]).
Needs numpy, torch, transformers (the device machine has them).

Usage: python3 scripts/make_stories_reference.py --bin PATH/stories260K.bin --tok PATH/tok512.bin
           [--out tests/data/stories260K]
"""

import argparse
import hashlib
import json
import os
import struct
import sys

PROMPT = "Once upon a time"
N_GEN = 60
BOS, EOS = 1, 2
EXPECTED_START = ", there was a little girl named Lily. She loved to play outside in the park."


# ---------------------------------------------------------------------------------------------------------
# llama2.c tokenizer (tok512.bin): int32 max_token_length, then per token: float32 score, int32 length, bytes.


def read_tokenizer(path, vocab_size):
    data = open(path, "rb").read()
    off = 4
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n])
        off += n
        scores.append(score)
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} bytes left after {vocab_size} tokens")
    return pieces, scores


def encode(text, pieces, scores, bos=True):
    """Same steps as run.c's encode(): BOS, a dummy-prefix space, one token per UTF-8 character (bytes + 3
    when the character is not a piece), then repeatedly merge the adjacent pair whose joined piece has the
    highest score (the leftmost such pair on ties)."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    tokens = [BOS] if bos else []
    raw = text.encode("utf-8")
    if raw:
        tokens.append(lookup[b" "])
    i = 0
    while i < len(raw):
        j = i + 1
        while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        ch = raw[i:j]
        if ch in lookup:
            tokens.append(lookup[ch])
        else:
            tokens.extend(b + 3 for b in ch)
        i = j
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for k in range(len(tokens) - 1):
            tid = lookup.get(pieces[tokens[k]] + pieces[tokens[k + 1]], -1)
            if tid != -1 and scores[tid] > best_score:
                best_score, best_id, best_idx = scores[tid], tid, k
        if best_idx == -1:
            break
        tokens[best_idx:best_idx + 2] = [best_id]
    return tokens


def decode_piece(prev, tok, pieces):
    """Bytes run.c prints for `tok` after `prev`: no leading space right after BOS, <0xXX> as a raw byte,
    and single non-printable, non-space bytes dropped (run.c's safe_printf)."""
    p = pieces[tok]
    if prev == BOS and p.startswith(b" "):
        p = p[1:]
    if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
        try:
            p = bytes([int(p[3:5], 16)])
        except ValueError:
            pass
    if len(p) == 1 and not (0x20 <= p[0] < 0x7F or p[0] in b" \t\n\v\f\r"):
        return b""
    return p


def decode(prev, toks, pieces):
    out = b""
    for t in toks:
        out += decode_piece(prev, t, pieces)
        prev = t
    return out.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------
# llama2.c checkpoint


def read_checkpoint(path):
    import numpy as np

    data = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    w = np.frombuffer(data, dtype="<f4", offset=28)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = w[off:off + n].reshape(shape).astype(np.float32)
        off += n
        return a

    t = {}
    t["tok"] = take(vocab, dim)
    t["rms_att"] = take(n_layers, dim)
    t["wq"] = take(n_layers, dim, dim)
    t["wk"] = take(n_layers, kv_dim, dim)
    t["wv"] = take(n_layers, kv_dim, dim)
    t["wo"] = take(n_layers, dim, dim)
    t["rms_ffn"] = take(n_layers, dim)
    t["w1"] = take(n_layers, hidden, dim)
    t["w2"] = take(n_layers, dim, hidden)
    t["w3"] = take(n_layers, hidden, dim)
    t["rms_final"] = take(dim)
    off += seq_len * hs // 2 * 2  # freq_cis_real and freq_cis_imag: unused, RoPE is recomputed
    t["wcls"] = t["tok"] if shared else take(vocab, dim)
    if off != w.size:
        raise ValueError(f"{path}: {w.size - off} floats left over; header or layout is not as expected")
    hp = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=vocab,
              seq_len=seq_len, shared_classifier=shared)
    return hp, t


def pairs_to_halves(w, n_heads):
    """Reorder the rows of a q/k projection per head: llama2.c rotates (2i, 2i+1), transformers rotates
    (i, i + head_size/2), so new row i = old row 2i and new row head_size/2 + i = old row 2i + 1."""
    rows, cols = w.shape
    hs = rows // n_heads
    return w.reshape(n_heads, hs // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------------------
# Independent forward pass in llama2.c's layout (numpy, float64 accumulation is not used on purpose: float32
# like the C code), one token at a time with a KV cache.


class NumpyLlama2c:
    def __init__(self, hp, t):
        import numpy as np

        self.np, self.hp, self.t = np, hp, t
        hs = hp["dim"] // hp["n_heads"]
        self.hs = hs
        self.kc = np.zeros((hp["n_layers"], hp["seq_len"], hp["n_kv_heads"] * hs), np.float32)
        self.vc = np.zeros_like(self.kc)

    def rmsnorm(self, x, w):
        np = self.np
        return (x / np.sqrt(np.mean(x * x) + np.float32(1e-5))).astype(np.float32) * w

    def rope(self, v, pos):
        np = self.np
        v = v.copy()
        for i in range(0, v.size, 2):
            head_dim = i % self.hs
            freq = 1.0 / 10000.0 ** (head_dim / self.hs)
            c, s = np.float32(np.cos(pos * freq)), np.float32(np.sin(pos * freq))
            a, b = v[i], v[i + 1]
            v[i], v[i + 1] = a * c - b * s, a * s + b * c
        return v

    def forward(self, token, pos):
        np, hp, t, hs = self.np, self.hp, self.t, self.hs
        x = t["tok"][token].copy()
        group = hp["n_heads"] // hp["n_kv_heads"]
        for l in range(hp["n_layers"]):
            xb = self.rmsnorm(x, t["rms_att"][l])
            q = self.rope(t["wq"][l] @ xb, pos)
            k = self.rope(t["wk"][l] @ xb, pos)
            self.kc[l, pos] = k
            self.vc[l, pos] = t["wv"][l] @ xb
            att_out = np.zeros(hp["dim"], np.float32)
            for h in range(hp["n_heads"]):
                kvh = h // group
                qh = q[h * hs:(h + 1) * hs]
                keys = self.kc[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                sc = keys @ qh / np.float32(np.sqrt(hs))
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att_out[h * hs:(h + 1) * hs] = sc @ self.vc[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
            x = x + t["wo"][l] @ att_out
            xb = self.rmsnorm(x, t["rms_ffn"][l])
            h1 = t["w1"][l] @ xb
            h1 = h1 / (1.0 + np.exp(-h1)) * (t["w3"][l] @ xb)
            x = x + t["w2"][l] @ h1
        return t["wcls"] @ self.rmsnorm(x, t["rms_final"])


# ---------------------------------------------------------------------------------------------------------


def build_hf(hp, t):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=hp["vocab_size"], hidden_size=hp["dim"], intermediate_size=hp["hidden_dim"],
        num_hidden_layers=hp["n_layers"], num_attention_heads=hp["n_heads"], num_key_value_heads=hp["n_kv_heads"],
        max_position_embeddings=hp["seq_len"], rms_norm_eps=1e-5, tie_word_embeddings=hp["shared_classifier"],
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), bos_token_id=BOS, eos_token_id=EOS,
        attention_bias=False, mlp_bias=False, attn_implementation="eager")
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": t["tok"], "model.norm.weight": t["rms_final"], "lm_head.weight": t["wcls"]}
    for l in range(hp["n_layers"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = t["rms_att"][l]
        sd[p + "self_attn.q_proj.weight"] = pairs_to_halves(t["wq"][l], hp["n_heads"])
        sd[p + "self_attn.k_proj.weight"] = pairs_to_halves(t["wk"][l], hp["n_kv_heads"])
        sd[p + "self_attn.v_proj.weight"] = t["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = t["wo"][l]
        sd[p + "post_attention_layernorm.weight"] = t["rms_ffn"][l]
        sd[p + "mlp.gate_proj.weight"] = t["w1"][l]
        sd[p + "mlp.up_proj.weight"] = t["w3"][l]
        sd[p + "mlp.down_proj.weight"] = t["w2"][l]
    sd = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # A tied head is the embedding itself, so its key may be reported as unexpected; nothing else may be.
    if missing or [k for k in unexpected if k != "lm_head.weight"]:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if hp["shared_classifier"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tok", required=True)
    ap.add_argument("--out", default="tests/data/stories260K")
    ap.add_argument("--tokenize-only", action="store_true", help="print the prompt ids and stop (no numpy/torch)")
    args = ap.parse_args()

    with open(args.bin, "rb") as f:
        header = struct.unpack("<7i", f.read(28))
    vocab = abs(header[5])
    pieces, scores = read_tokenizer(args.tok, vocab)
    prompt_ids = encode(PROMPT, pieces, scores)
    print("prompt ids", prompt_ids, [pieces[i] for i in prompt_ids], flush=True)
    if args.tokenize_only:
        return

    import numpy as np
    import torch
    import transformers

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    hp, t = read_checkpoint(args.bin)
    print("checkpoint", hp, flush=True)
    model = build_hf(hp, t)

    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        model.generation_config.eos_token_id = None  # a fixed 60 tokens, whatever they are
        gc = transformers.GenerationConfig(do_sample=False, max_new_tokens=N_GEN, min_new_tokens=N_GEN,
                                           eos_token_id=None, pad_token_id=0, num_beams=1)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        greedy = out[0, len(prompt_ids):].tolist()
        full = model(torch.tensor([prompt_ids + greedy])).logits[0].float()
    n = len(prompt_ids)
    margins = [float(torch.topk(full[n - 1 + i], 2).values.diff().abs()) for i in range(N_GEN)]
    argmax_ok = all(int(full[n - 1 + i].argmax()) == greedy[i] for i in range(N_GEN))

    # Independent check: llama2.c-layout numpy forward over the same tokens.
    ref = NumpyLlama2c(hp, t)
    seq = prompt_ids + greedy
    np_logits = np.stack([ref.forward(tok, pos) for pos, tok in enumerate(seq)])
    np_greedy = [int(np_logits[n - 1 + i].argmax()) for i in range(N_GEN)]
    np_diff = float(np.abs(np_logits - full.numpy()).max())

    text = decode(prompt_ids[-1], greedy, pieces)
    full_text = decode(BOS, prompt_ids[1:] + greedy, pieces)
    print("greedy ids", greedy)
    print("text", repr(text))
    print(f"numpy llama2.c-layout check: max |diff| {np_diff:.3g}, greedy equal {np_greedy == greedy}")
    print(f"min top-1 margin {min(margins):.4g}, argmax consistent {argmax_ok}")
    ok = text.startswith(EXPECTED_START) and np_greedy == greedy and np_diff < 1e-4 and argmax_ok
    if not text.startswith(EXPECTED_START):
        print("ERROR: continuation does not start with the known llama2.c output; conversion is wrong")

    os.makedirs(args.out, exist_ok=True)
    arr = logits.numpy().astype("<f4")
    arr.tofile(os.path.join(args.out, "logits.f32"))
    sha = hashlib.sha256(open(args.bin, "rb").read()).hexdigest()
    res = dict(
        model="stories260K",
        source=dict(checkpoint="stories260K.bin (llama2.c)", sha256=sha, tokenizer="tok512.bin",
                    tokenizer_sha256=hashlib.sha256(open(args.tok, "rb").read()).hexdigest()),
        hyperparameters=hp,
        prompt=PROMPT,
        prompt_ids=prompt_ids,
        greedy_ids=greedy,
        text=text,
        full_text=full_text,
        logits_file="logits.f32",
        logits_shape=list(arr.shape),
        logits_dtype="float32 little-endian, row-major [position, vocab]",
        checks=dict(numpy_llama2c_max_abs_diff=np_diff, numpy_llama2c_greedy_equal=np_greedy == greedy,
                    min_greedy_margin=min(margins), starts_with_expected=text.startswith(EXPECTED_START)),
        tolerance=dict(logits_max_abs=1e-4, greedy="exact"),
        versions=dict(transformers=transformers.__version__, torch=torch.__version__, numpy=np.__version__),
        generated_by="scripts/make_stories_reference.py",
    )
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
