#!/usr/bin/env python3
"""Turn a Hugging Face fixture directory into an MLX (mlx-lm) quantized checkpoint.

Python 3 standard library only (no numpy / torch / mlx), so it runs on a bare Debian 12.
What it does, and where each rule comes from, is written up in docs/mlx-format.md:

1. read config.json + model.safetensors (F32 or BF16; a sharded index is followed too);
2. apply mlx-lm's `sanitize` for the family (llama, qwen2, qwen3, qwen3_moe, qwen3_next,
   qwen3_5 / qwen3_5_moe): per-expert tensors stacked into `mlp.switch_mlp.*`, fused
   `experts.gate_up_proj` split, `language_model.` prefix, conv1d axis move, `+1` on the
   (1 + w) RMSNorms, `mtp.*` / vision tower / `rotary_emb.inv_freq` / tied `lm_head` dropped;
3. quantize every Linear / Embedding / SwitchLinear whose last dimension is divisible by the
   group size with mlx's affine scheme (an emulation of the Metal `affine_quantize` kernel
   in float32, scales and biases stored in the weights' dtype), honouring the model's own
   quant_predicate (8-bit router gates for the MoE families) or one of mlx-lm's mixed
   recipes (--mixed);
4. write config.json (with the `quantization` / `quantization_config` blocks, keys sorted,
   as mlx-lm's save_config does), model.safetensors (+ model.safetensors.index.json),
   the tokenizer files, and reference.json: for a few quantized tensors the unpacked codes,
   the first rows dequantized in float32 and y = W x for x[i] = float32(sin(i + 1)).

`--layers 0,3` keeps only those decoder layers (renumbered), to keep fixtures small; the
config's layer count / layer_types / full_attention_interval / mlp_only_layers are updated
so that the result is still a consistent model (it no longer matches the HF reference
logits, only its weights do).
"""

import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
from array import array

# --------------------------------------------------------------------------- float helpers

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


def f32(x):
    """Round a Python float (double) to the nearest float32 (ties to even)."""
    return _F32.unpack(_F32.pack(x))[0]


def f32_bits(x):
    return _U32.unpack(_F32.pack(x))[0]


def bits_f32(u):
    return _F32.unpack(_U32.pack(u & 0xFFFFFFFF))[0]


def bf16_round(x):
    """float32 -> bfloat16 (round to nearest even, as mlx casts), returned as a float."""
    u = f32_bits(f32(x))
    if (u & 0x7F800000) == 0x7F800000:  # inf / nan: truncate
        return bits_f32(u & 0xFFFF0000)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return bits_f32(u)


def bf16_bits(x):
    return f32_bits(bf16_round(x)) >> 16


def round_half_away(x):
    """Metal's round(): halfway cases away from zero."""
    r = math.floor(abs(x) + 0.5)
    return -r if x < 0 else r


def cast(x, dtype):
    if dtype == "F32":
        return f32(x)
    if dtype == "BF16":
        return bf16_round(x)
    raise ValueError(dtype)


# --------------------------------------------------------------------------- safetensors I/O

class Tensor:
    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype, shape, data):
        self.dtype = dtype      # "F32", "BF16" or "U32"
        self.shape = list(shape)
        self.data = data        # flat list/array of Python floats (F32/BF16) or ints (U32)

    @property
    def size(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dt = info["dtype"]
            if dt == "F32":
                a = array("f")
                a.frombytes(raw)
                if sys.byteorder != "little":
                    a.byteswap()
                data = list(a)
            elif dt == "BF16":
                h = array("H")
                h.frombytes(raw)
                if sys.byteorder != "little":
                    h.byteswap()
                w = array("I", (v << 16 for v in h))
                data = list(array("f", w.tobytes()))
            else:
                raise SystemExit(f"{path}: tensor {name} has dtype {dt}; only F32/BF16 inputs are supported")
            out[name] = Tensor(dt, info["shape"], data)
    return out


def read_checkpoint(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for fn in files:
        weights.update(read_safetensors(os.path.join(d, fn)))
    return weights


def tensor_bytes(t):
    if t.dtype == "F32":
        a = array("f", t.data)
    elif t.dtype == "BF16":
        a = array("H", (bf16_bits(v) for v in t.data))
    elif t.dtype == "U32":
        a = array("I", t.data)
    else:
        raise ValueError(t.dtype)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name]
        b = tensor_bytes(t)
        header[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


# --------------------------------------------------------------------------- small tensor ops

def stack(ts):
    t0 = ts[0]
    data = []
    for t in ts:
        assert t.shape == t0.shape and t.dtype == t0.dtype
        data.extend(t.data)
    return Tensor(t0.dtype, [len(ts)] + t0.shape, data)


def split_rows(t, mid):
    """Split a [E, R, C] tensor along axis -2 at `mid` -> ([E, mid, C], [E, R-mid, C])."""
    E, R, C = t.shape
    a, b = [], []
    for e in range(E):
        base = e * R * C
        a.extend(t.data[base: base + mid * C])
        b.extend(t.data[base + mid * C: base + R * C])
    return Tensor(t.dtype, [E, mid, C], a), Tensor(t.dtype, [E, R - mid, C], b)


def moveaxis_2_1(t):
    """[A, B, C] -> [A, C, B] (mlx's v.moveaxis(2, 1))."""
    A, B, C = t.shape
    d = [0.0] * (A * B * C)
    for a in range(A):
        for b in range(B):
            for c in range(C):
                d[a * C * B + c * B + b] = t.data[a * B * C + b * C + c]
    return Tensor(t.dtype, [A, C, B], d)


def add_one(t):
    return Tensor(t.dtype, t.shape, [cast(v + 1.0, t.dtype) for v in t.data])


def slice_rows(t, idx):
    """Keep rows `idx` of a 2-D tensor."""
    R, C = t.shape
    d = []
    for r in idx:
        d.extend(t.data[r * C:(r + 1) * C])
    return Tensor(t.dtype, [len(idx), C], d)


# --------------------------------------------------------------------------- affine quantization

def quantize_affine(t, group_size, bits, backend="metal"):
    """mlx.core.quantize(w, group_size, bits, mode="affine") as the Metal kernel computes it
    (backend="cpu": as mlx's CPU kernel, which starts w_max at -inf and rounds with rint).

    Returns (wq U32 [..., in*bits/32], scales [..., in/gs], biases [..., in/gs], stats).
    """
    *lead, cols = t.shape
    if cols % group_size:
        raise ValueError("last dimension not divisible by the group size")
    if (cols * bits) % 32:
        raise ValueError("row does not fill whole uint32 words")
    n_bins = float((1 << bits) - 1)
    eps = f32(1e-7)
    rows = t.size // cols
    words_per_row = cols * bits // 32
    w = t.data
    dt = t.dtype
    scales, biases, words = [], [], []
    stats = {"groups": 0, "all_negative_groups": 0, "half_ties": 0, "q0_zero_groups": 0}
    for r in range(rows):
        row_codes = []
        for g in range(cols // group_size):
            base = r * cols + g * group_size
            grp = w[base: base + group_size]
            stats["groups"] += 1
            # Metal: w_min starts at the type's max, w_max at 0 (so max(group) is clipped below at 0;
            # the CPU kernel starts at -inf and differs only for all-negative groups).
            gmax = max(grp)
            gmin = min(grp)
            if gmax < 0:
                stats["all_negative_groups"] += 1
            w_max = max(0.0, gmax) if backend == "metal" else gmax
            w_min = gmin
            scale = max(f32(f32(w_max - w_min) / n_bins), eps)
            side = abs(w_min) > abs(w_max)
            if not side:
                scale = -scale
            edge = w_min if side else w_max
            rnd = round_half_away if backend == "metal" else round   # Python round(): ties to even = rint
            q0 = rnd(f32(edge / scale))
            if q0 == 0.0:
                stats["q0_zero_groups"] += 1
                bias = 0.0
            else:
                scale = f32(edge / q0)
                bias = edge
            scales.append(cast(scale, dt))
            biases.append(cast(bias, dt))
            for v in grp:
                x = f32(f32(v - bias) / scale)
                if x - math.floor(x) == 0.5:
                    stats["half_ties"] += 1   # rint (CPU) and round (Metal) may differ here
                q = min(rnd(x), n_bins)
                q = int(q) if q > 0 else 0
                row_codes.append(q)
        # pack the row as a little-endian bit stream: code j at bits [j*bits, (j+1)*bits)
        acc = 0
        for j, q in enumerate(row_codes):
            acc |= q << (j * bits)
        for k in range(words_per_row):
            words.append((acc >> (32 * k)) & 0xFFFFFFFF)
    wq = Tensor("U32", lead + [words_per_row], words)
    sc = Tensor(dt, lead + [cols // group_size], scales)
    bi = Tensor(dt, lead + [cols // group_size], biases)
    return wq, sc, bi, stats


def unpack_row(words, bits, cols):
    acc = 0
    for k, wd in enumerate(words):
        acc |= wd << (32 * k)
    mask = (1 << bits) - 1
    return [(acc >> (j * bits)) & mask for j in range(cols)]


def dequant_row(codes, scales, biases, group_size):
    """w = scale * q + bias, each operation rounded to float32."""
    return [f32(f32(scales[j // group_size] * q) + biases[j // group_size]) for j, q in enumerate(codes)]


# --------------------------------------------------------------------------- family sanitize

TEXT_FAMILIES = ("llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_next")
VL_FAMILIES = ("qwen3_5", "qwen3_5_moe")
NORM_SUFFIXES = (".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                 ".q_norm.weight", ".k_norm.weight")


def text_cfg(config):
    return config.get("text_config", config) if config["model_type"] in VL_FAMILIES else config


def sanitize(model_type, config, w):
    tc = text_cfg(config)
    n_layers = tc["num_hidden_layers"]
    n_exp = tc.get("num_experts", 0)
    tied = tc.get("tie_word_embeddings", config.get("tie_word_embeddings", False))

    if model_type in VL_FAMILIES:
        # qwen3_5.py / qwen3_5_moe.py Model.sanitize: drop the vision tower, move the text model
        # under `language_model.` (model.language_model.X -> language_model.model.X).
        out = {}
        for k, v in w.items():
            if k.startswith("vision_tower") or k.startswith("model.visual"):
                continue
            if k.startswith("model.language_model"):
                k = k.replace("model.language_model", "language_model.model", 1)
            elif not k.startswith("language_model."):
                k = "language_model." + k
            out[k] = v
        w = out
        prefix = "language_model."
    else:
        prefix = ""

    if model_type in ("llama", "qwen2"):
        w = {k: v for k, v in w.items() if "self_attn.rotary_emb.inv_freq" not in k}

    if tied:
        w.pop(prefix + "lm_head.weight", None)

    if model_type in ("qwen3_next",) + VL_FAMILIES:
        w = {k: v for k, v in w.items() if "mtp." not in k}

    if n_exp:
        for l in range(n_layers):
            p = f"{prefix}model.layers.{l}.mlp"
            fused = f"{p}.experts.gate_up_proj"
            if fused in w:  # qwen3_5_moe: [E, 2*I, H], first half gate, second half up
                gu = w.pop(fused)
                g, u = split_rows(gu, gu.shape[1] // 2)
                w[f"{p}.switch_mlp.gate_proj.weight"] = g
                w[f"{p}.switch_mlp.up_proj.weight"] = u
                w[f"{p}.switch_mlp.down_proj.weight"] = w.pop(f"{p}.experts.down_proj")
                continue
            for n in ("up_proj", "down_proj", "gate_proj"):
                if f"{p}.experts.0.{n}.weight" in w:
                    w[f"{p}.switch_mlp.{n}.weight"] = stack(
                        [w.pop(f"{p}.experts.{e}.{n}.weight") for e in range(n_exp)])

    if model_type in ("qwen3_next",) + VL_FAMILIES:
        for k in list(w):
            v = w[k]
            if "conv1d.weight" in k and v.shape[-1] != 1:
                w[k] = moveaxis_2_1(v)      # HF [C, 1, K] -> MLX [C, K, 1]
            if any(k.endswith(s) for s in NORM_SUFFIXES) and len(v.shape) == 1:
                w[k] = add_one(v)           # (1 + w) RMSNorm -> plain RMSNorm weight
    return w


def select_layers(config, w, keep):
    """Keep decoder layers `keep` (renumbered 0..), updating the config consistently."""
    tc = text_cfg(config)
    n_old = tc["num_hidden_layers"]
    assert all(0 <= i < n_old for i in keep)
    pat = re.compile(r"^((?:language_model\.)?model\.layers\.)(\d+)(\..*)$")
    out = {}
    for k, v in w.items():
        m = pat.match(k)
        if m:
            i = int(m.group(2))
            if i not in keep:
                continue
            k = f"{m.group(1)}{keep.index(i)}{m.group(3)}"
        out[k] = v
    tc["num_hidden_layers"] = len(keep)
    if "layer_types" in tc:
        lt = [tc["layer_types"][i] for i in keep]
        tc["layer_types"] = lt
        if "full_attention_interval" in tc or config["model_type"] in ("qwen3_next",) + VL_FAMILIES:
            # mlx-lm decides linear vs full by (i + 1) % full_attention_interval != 0
            for k in range(1, len(lt) + 2):
                if all((lt[i] == "linear_attention") == ((i + 1) % k != 0) for i in range(len(lt))):
                    tc["full_attention_interval"] = k
                    break
            else:
                raise SystemExit(f"--layers: layer types {lt} cannot be expressed by full_attention_interval")
    if "mlp_only_layers" in tc:
        tc["mlp_only_layers"] = [keep.index(i) for i in tc["mlp_only_layers"] if i in keep]
    return out


# --------------------------------------------------------------------------- quantization plan

def is_quantizable(name, t):
    """Leaf modules that have `to_quantized`: nn.Linear / nn.Embedding (2-D weight) and
    mlx-lm's SwitchLinear (3-D `switch_mlp.*` weight). Conv1d, norms, A_log, dt_bias: no."""
    if not name.endswith(".weight"):
        return False
    if len(t.shape) == 2:
        return True
    return len(t.shape) == 3 and ".switch_mlp." in name


def model_quant_predicate(model_type, config):
    tc = text_cfg(config)
    if model_type == "qwen3_moe":
        def pred(path):
            return {"group_size": 64, "bits": 8} if path.endswith("mlp.gate") else True
        return pred
    if model_type == "qwen3_next" or (model_type in VL_FAMILIES and tc.get("num_experts", 0) > 0):
        def pred(path):
            if path.endswith("mlp.gate") or path.endswith("shared_expert_gate"):
                return {"group_size": 64, "bits": 8}
            return True
        return pred
    return None


def mixed_predicate(recipe, paths, num_layers, group_size):
    """mlx_lm/convert.py mixed_quant_predicate_builder."""
    high = 6
    low = {"mixed_2_6": 2, "mixed_3_4": 3, "mixed_3_6": 3, "mixed_4_6": 4}[recipe]
    if recipe == "mixed_3_4":
        high = 4
    down = [p for p in paths if "down_proj" in p]
    if not down:
        raise SystemExit("model has no down_proj for a mixed recipe")
    loc = 0
    for loc, part in enumerate(down[0].split(".")):
        if part.isdigit():
            break

    def pred(path):
        parts = path.split(".")
        index = int(parts[loc]) if len(parts) > loc else 0
        more = (index < num_layers // 8 or index >= 7 * num_layers // 8
                or (index - num_layers // 8) % 3 == 2)
        if ("v_proj" in path or "v_a_proj" in path or "v_b_proj" in path) and more:
            return {"group_size": group_size, "bits": high, "mode": "affine"}
        if "down_proj" in path and more:
            return {"group_size": group_size, "bits": high, "mode": "affine"}
        if "lm_head" in path:
            return {"group_size": group_size, "bits": high, "mode": "affine"}
        return {"group_size": group_size, "bits": low, "mode": "affine"}
    return pred


# --------------------------------------------------------------------------- main

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
                   "added_tokens.json", "generation_config.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="src", required=True, help="HF fixture directory")
    ap.add_argument("--out", dest="dst", required=True, help="output directory (created)")
    ap.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 5, 6, 8])
    ap.add_argument("--group-size", type=int, default=64, choices=[32, 64, 128])
    ap.add_argument("--mixed", choices=["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"],
                    help="mlx-lm mixed recipe (--quant-predicate); replaces the model's own predicate")
    ap.add_argument("--layers", help="comma-separated decoder layers to keep (renumbered), e.g. 0,3")
    ap.add_argument("--reference", default="",
                    help="comma-separated module paths for reference.json (default: a few picked automatically)")
    ap.add_argument("--backend", choices=["metal", "cpu"], default="metal",
                    help="which mlx kernel to reproduce (they differ on exact .5 ties and all-negative groups)")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()

    with open(os.path.join(args.src, "config.json")) as f:
        config = json.load(f)
    model_type = config["model_type"]
    tc0 = config.get("text_config", config)
    if "num_experts" not in tc0 and "num_local_experts" in tc0:
        # transformers 5 writes Qwen3-MoE's expert count as num_local_experts; mlx-lm's
        # qwen3_moe ModelArgs requires num_experts, so a checkpoint it saved carries that key.
        tc0["num_experts"] = tc0["num_local_experts"]
    if model_type not in TEXT_FAMILIES + VL_FAMILIES:
        raise SystemExit(f"model_type {model_type} not handled")

    weights = read_checkpoint(args.src)
    src_dtypes = sorted({t.dtype for t in weights.values()})
    weights = sanitize(model_type, config, weights)
    if args.layers:
        keep = [int(x) for x in args.layers.split(",")]
        weights = select_layers(config, weights, keep)

    gs, bits = args.group_size, args.bits
    quant_params = {"group_size": gs, "bits": bits, "mode": "affine"}
    qconfig = dict(quant_params)

    # module paths of the quantizable leaves, in a stable order
    mod_paths = sorted(k[: -len(".weight")] for k, t in weights.items() if is_quantizable(k, t))
    if args.mixed:
        tc = text_cfg(config)
        pred = mixed_predicate(args.mixed, mod_paths, tc["num_hidden_layers"], gs)
    else:
        pred = model_quant_predicate(model_type, config)

    out_w = {}
    plan = {}
    total_params = 0
    stats = {"groups": 0, "all_negative_groups": 0, "half_ties": 0, "q0_zero_groups": 0}
    for k in sorted(weights):
        t = weights[k]
        if not is_quantizable(k, t):
            out_w[k] = t
            total_params += t.size
            continue
        path = k[: -len(".weight")]
        decision = True
        if t.shape[-1] % gs != 0:       # quantize_model's wrapped_predicate uses the default group size
            decision = False
        elif pred is not None:
            decision = pred(path)
        if decision is False:
            out_w[k] = t
            total_params += t.size
            continue
        p = dict(quant_params)
        if isinstance(decision, dict):
            qconfig[path] = decision
            p.update(decision)
        wq, sc, bi, st = quantize_affine(t, p["group_size"], p["bits"], args.backend)
        for s in stats:
            stats[s] += st[s]
        out_w[path + ".weight"] = wq
        out_w[path + ".scales"] = sc
        out_w[path + ".biases"] = bi
        plan[path] = {"bits": p["bits"], "group_size": p["group_size"], "source": t}
        total_params += wq.size * 32 // p["bits"]

    if args.force and os.path.exists(args.dst):
        shutil.rmtree(args.dst)
    os.makedirs(args.dst)

    # config.json as mlx-lm's save_config writes it
    cfg = dict(config)
    cfg["quantization"] = qconfig
    cfg["quantization_config"] = qconfig
    cfg.pop("_name_or_path", None)
    cfg.pop("vision_config", None)
    cfg = dict(sorted(cfg.items()))
    with open(os.path.join(args.dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=4)

    total_size = write_safetensors(os.path.join(args.dst, "model.safetensors"), out_w, {"format": "mlx"})
    index = {"metadata": {"total_size": total_size, "total_parameters": total_params},
             "weight_map": {k: "model.safetensors" for k in sorted(out_w)}}
    with open(os.path.join(args.dst, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=4)

    for fn in TOKENIZER_FILES:
        s = os.path.join(args.src, fn)
        if os.path.exists(s):
            shutil.copy(s, os.path.join(args.dst, fn))

    # ------------------------------------------------------------------ reference.json
    if args.reference:
        ref_paths = [p for p in args.reference.split(",") if p]
    else:
        ref_paths = pick_reference(plan)
    refs = []
    for path in ref_paths:
        if path not in plan:
            raise SystemExit(f"--reference: {path} is not quantized")
        refs.extend(reference_entries(path, plan[path], out_w))

    ref = {
        "generator": "scripts/make_mlx_fixture.py",
        "source": os.path.normpath(args.src),
        "command": " ".join(["python3", "scripts/make_mlx_fixture.py"] + sys.argv[1:]),
        "model_type": model_type,
        "backend": args.backend,
        "source_dtypes": src_dtypes,
        "quantization": qconfig,
        "layers_kept": [int(x) for x in args.layers.split(",")] if args.layers else None,
        "x": "x[i] = float32(sin(i + 1)), i = 0 .. in-1",
        "dequant": "w = f32(f32(scale * q) + bias), scale/bias as stored (bf16 values widened exactly)",
        "y": "y[r] = sum_i w[r][i] * x[i] over all rows, accumulated in float64 from the float32 w and x",
        "quantized_modules": {p: {"bits": v["bits"], "group_size": v["group_size"]} for p, v in sorted(plan.items())},
        "not_quantized_matrices": sorted(k for k, t in out_w.items()
                                         if t.dtype != "U32" and is_quantizable(k, t)),
        "stats": stats,
        "tensors": refs,
    }
    with open(os.path.join(args.dst, "reference.json"), "w") as f:
        f.write(compact_json(ref) + "\n")

    size = sum(os.path.getsize(os.path.join(args.dst, fn)) for fn in os.listdir(args.dst))
    print(f"{args.dst}: {len(plan)} quantized modules, {len(out_w)} tensors, {size} bytes; stats {stats}")


def _short(v):
    if isinstance(v, float):
        return float(f"{v:.9g}")       # 9 significant digits round-trip every float32
    if isinstance(v, list):
        return [_short(x) for x in v]
    if isinstance(v, dict):
        return {k: _short(x) for k, x in v.items()}
    return v


def compact_json(obj):
    """indent=1 JSON with number lists kept on one line."""
    text = json.dumps(_short(obj), indent=1)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def pick_reference(plan):
    """The embedding (or first), a 2-D projection, a per-layer override and an expert tensor."""
    paths = sorted(plan)
    chosen = []

    def add(p):
        if p and p not in chosen:
            chosen.append(p)

    add(next((p for p in paths if p.endswith("embed_tokens")), None))
    add(next((p for p in paths if p.endswith("self_attn.q_proj") or p.endswith("linear_attn.in_proj_qkvz")
              or p.endswith("linear_attn.in_proj_qkv")), None))
    add(next((p for p in paths if p.endswith("down_proj") and ".switch_mlp." not in p), None))
    base = None
    for p in paths:
        if base is None:
            base = (plan[p]["bits"], plan[p]["group_size"])
    # an override (different bits/group) if any
    counts = {}
    for p in paths:
        counts[(plan[p]["bits"], plan[p]["group_size"])] = counts.get((plan[p]["bits"], plan[p]["group_size"]), 0) + 1
    common = max(counts, key=counts.get)
    add(next((p for p in paths if (plan[p]["bits"], plan[p]["group_size"]) != common), None))
    add(next((p for p in paths if ".switch_mlp." in p), None))
    return chosen[:5]


def reference_entries(path, info, out_w):
    src = info["source"]
    bits, gs = info["bits"], info["group_size"]
    wq = out_w[path + ".weight"]
    sc = out_w[path + ".scales"]
    bi = out_w[path + ".biases"]
    *lead, cols = src.shape
    rows = src.shape[-2]
    experts = [0, lead[0] - 1] if len(lead) == 2 else [None]
    wpr = wq.shape[-1]
    gpr = sc.shape[-1]
    x = [f32(math.sin(i + 1)) for i in range(cols)]
    entries = []
    for e in experts:
        off = 0 if e is None else e * rows
        deq_rows, codes_rows, y = [], [], []
        max_err = 0.0
        for r in range(rows):
            rr = off + r
            words = wq.data[rr * wpr:(rr + 1) * wpr]
            codes = unpack_row(words, bits, cols)
            s = sc.data[rr * gpr:(rr + 1) * gpr]
            b = bi.data[rr * gpr:(rr + 1) * gpr]
            deq = dequant_row(codes, s, b, gs)
            orig = src.data[rr * cols:(rr + 1) * cols]
            max_err = max(max_err, max(abs(a - c) for a, c in zip(deq, orig)))
            y.append(math.fsum(a * c for a, c in zip(deq, x)))
            if r < 2:
                deq_rows.append(deq)
                codes_rows.append(codes)
        first = off
        ent = {
            "name": path + ".weight",
            "scales": path + ".scales",
            "biases": path + ".biases",
            "stored_shape": wq.shape,
            "scales_shape": sc.shape,
            "scales_dtype": sc.dtype,
            "logical_shape": src.shape,
            "bits": bits,
            "group_size": gs,
            "expert": e,
            "row0_words": wq.data[first * wpr:(first + 1) * wpr],
            "row0_scales": sc.data[first * gpr:(first + 1) * gpr],
            "row0_biases": bi.data[first * gpr:(first + 1) * gpr],
            "codes_rows_0_1": codes_rows,
            "dequant_rows_0_1": deq_rows,
            "max_abs_err_vs_source": max_err,
            "y": y,
        }
        entries.append(ent)
    return entries


if __name__ == "__main__":
    main()
