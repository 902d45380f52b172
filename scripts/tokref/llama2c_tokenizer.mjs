// An independent re-implementation of llama2.c's tokenizer (run.c: encode / decode) over a
// tokenizer.bin (int32 max_token_length, then per token: float32 score, int32 length, bytes).
import fs from "node:fs";

function loadLlama2cTokenizer(path, vocabSize) {
  const buf = fs.readFileSync(path);
  let off = 4;  // max_token_length is not needed here
  const vocab = [], scores = [];
  for (let i = 0; i < vocabSize; ++i) {
    scores.push(buf.readFloatLE(off));
    const len = buf.readInt32LE(off + 4);
    vocab.push(buf.subarray(off + 8, off + 8 + len));  // raw bytes: pieces may be partial UTF-8
    off += 8 + len;
  }
  if (off !== buf.length) throw new Error(`${path}: ${buf.length - off} bytes left after ${vocabSize} tokens`);
  const key = (bytes) => bytes.toString("latin1");  // one char per byte: exact byte-string keys
  const lookup = new Map();
  vocab.forEach((v, i) => { if (!lookup.has(key(v))) lookup.set(key(v), i); });
  const find = (bytes) => (lookup.has(key(bytes)) ? lookup.get(key(bytes)) : -1);

  // encode(text, bos, eos): dummy space prefix, code points (bytes + 3 when unknown), then the
  // highest-scoring adjacent merge (first on ties) until none applies.
  function encode(text, bos = true, eos = false) {
    const bytes = Buffer.from(text, "utf8");
    const tokens = [];
    if (bos) tokens.push(1);
    if (bytes.length > 0) tokens.push(find(Buffer.from(" ")));
    for (let i = 0; i < bytes.length;) {
      let n = 1;  // a lead byte and its continuation bytes, at most 4
      while (i + n < bytes.length && (bytes[i + n] & 0xc0) === 0x80 && n < 4) ++n;
      const piece = bytes.subarray(i, i + n);
      const id = find(piece);
      if (id !== -1) tokens.push(id);
      else for (const b of piece) tokens.push(b + 3);
      i += n;
    }
    for (;;) {
      let bestScore = -1e10, bestId = -1, bestIdx = -1;
      for (let i = 0; i + 1 < tokens.length; ++i) {
        const id = find(Buffer.concat([vocab[tokens[i]], vocab[tokens[i + 1]]]));
        if (id !== -1 && scores[id] > bestScore) {
          bestScore = scores[id];
          bestId = id;
          bestIdx = i;
        }
      }
      if (bestIdx === -1) break;
      tokens.splice(bestIdx, 2, bestId);
    }
    if (eos) tokens.push(2);
    return tokens;
  }

  // decode(ids): pieces concatenated; after BOS (1) a leading space is dropped; <0xXX> is that byte.
  function decode(ids) {
    const parts = [];
    let prev = -1;
    for (const id of ids) {
      if (id === 1 || id === 2) { prev = id; continue; }  // BOS / EOS carry no text when decoding
      let piece = vocab[id];
      if (prev === 1 && piece[0] === 0x20) piece = piece.subarray(1);
      const m = /^<0x([0-9A-F]{2})>$/.exec(piece.toString("latin1"));
      parts.push(m ? Buffer.from([parseInt(m[1], 16)]) : piece);
      prev = id;
    }
    return new TextDecoder("utf-8").decode(Buffer.concat(parts));
  }
  return { encode, decode, vocab };
}

export { loadLlama2cTokenizer };
