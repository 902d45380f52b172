# Writes the binary fuzz seeds (tiny GGUF and safetensors files) from the repo's real model files.
import json, struct, sys, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"

def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b

def read_gguf_metadata(path):
    """Raw metadata entries (key, type, raw value bytes) of a GGUF v2/v3 file."""
    d = path.read_bytes()
    pos = 4 + 4
    n_t, n_kv = struct.unpack_from("<QQ", d, pos); pos += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(t, pos):
        if t in sizes: return pos + sizes[t]
        if t == 8:
            (n,) = struct.unpack_from("<Q", d, pos); return pos + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", d, pos); pos += 12
            for _ in range(n): pos = skip(et, pos)
            return pos
        raise ValueError(t)
    out = []
    for _ in range(n_kv):
        (kl,) = struct.unpack_from("<Q", d, pos); key = d[pos + 8:pos + 8 + kl].decode(); pos += 8 + kl
        (t,) = struct.unpack_from("<I", d, pos); pos += 4
        end = skip(t, pos)
        out.append((key, t, d[pos:end])); pos = end
    return out

def write_gguf(path, kvs, tensors, alignment=32):
    """kvs: (key, type, raw bytes); tensors: (name, ne list, ggml type, data bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, raw in kvs:
        head += gguf_str(key) + struct.pack("<I", t) + raw
    data, infos = b"", b""
    for name, ne, gtype, blob in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", gtype, len(data))
        data += blob
    body = head + infos
    body += b"\0" * (-len(body) % alignment)
    path.write_bytes(body + data)

def tiny_tensors():
    # (ggml type, block elements, block bytes) for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K
    kinds = [(0, 1, 4), (1, 1, 2), (30, 1, 2), (2, 32, 18), (3, 32, 20), (6, 32, 22), (7, 32, 24), (8, 32, 34),
             (12, 256, 144), (13, 256, 176), (14, 256, 210)]
    out = []
    for i, (gtype, per, nbytes) in enumerate(kinds):
        cols = max(per, 8)
        rows = 2
        blob = bytes((j * 37 + i) & 0x3F for j in range(rows * (cols // per) * nbytes))
        out.append((f"blk.0.t{i}.weight", [cols, rows], gtype, blob))
    return out

def u32(v): return struct.pack("<I", v)

def main():
    (OUT / "gguf").mkdir(parents=True, exist_ok=True)
    (OUT / "safetensors").mkdir(parents=True, exist_ok=True)
    # 1. The stories260K metadata (llama config + its 512-token vocabulary) over tiny tensors of every type.
    kvs = read_gguf_metadata(ROOT / "models" / "stories260K.gguf")
    write_gguf(OUT / "gguf" / "stories260k_meta.gguf", kvs, tiny_tensors())
    # 2. A hand-made minimal file: a handful of keys and two tensors.
    small = [("general.architecture", 8, gguf_str("llama")), ("general.alignment", 4, u32(32)),
             ("llama.block_count", 4, u32(1)), ("llama.embedding_length", 4, u32(8)),
             ("llama.attention.head_count", 4, u32(2)), ("llama.context_length", 4, u32(16))]
    t = tiny_tensors()
    write_gguf(OUT / "gguf" / "minimal.gguf", small, [t[0], t[3]])
    write_gguf(OUT / "gguf" / "empty.gguf", [], [])
    # 3. safetensors: the real header of tests/data/hf/qwen3 with tensors shrunk to a few elements.
    src = (ROOT / "tests" / "data" / "hf" / "qwen3" / "model.safetensors").read_bytes()
    (hl,) = struct.unpack_from("<Q", src, 0)
    header = json.loads(src[8:8 + hl])
    size = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I64": 8}
    new, off = {}, 0
    for name in list(header)[:12]:
        v = header[name]
        if name == "__metadata__":
            new[name] = v; continue
        shape = [2, 4] if len(v["shape"]) >= 2 else [4]
        n = 1
        for s in shape: n *= s
        nb = n * size.get(v["dtype"], 4)
        new[name] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [off, off + nb]}
        off += nb
    for dt, i in (("F16", 0), ("BF16", 1), ("U32", 2)):
        nb = 8 * size[dt]
        new[f"extra.{i}.weight"] = {"dtype": dt, "shape": [2, 4], "data_offsets": [off, off + nb]}; off += nb
    hj = json.dumps(new).encode()
    hj += b" " * (-len(hj) % 8)
    (OUT / "safetensors" / "qwen3_shrunk.safetensors").write_bytes(
        struct.pack("<Q", len(hj)) + hj + bytes(i & 0x7F for i in range(off)))
    hj = b'{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
    (OUT / "safetensors" / "minimal.safetensors").write_bytes(struct.pack("<Q", len(hj)) + hj + bytes(16))

main()
