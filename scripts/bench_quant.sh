#!/usr/bin/env bash
# Quantized decode and 512-token prompt speed, uneven vs llama.cpp (node-llama-cpp 3.21.1) on the same GGUF
# files at Llama-3.2-1B shape, side by side in one run, with the machine's streaming read bandwidth.
#   THREADS=2 TYPES="q8_0 q4_k_m" bash scripts/bench_quant.sh
# Files are made once by `uneven quantize --random-weights` into build/bench-models (~1-2 GB each); MLX 4-bit
# (no llama.cpp counterpart) runs from random weights against the streaming bandwidth only.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
types=${TYPES:-"q8_0 q4_k_m"}
dir=${BENCH_MODELS:-build/bench-models}
config=${CONFIG:-configs/llama-3.2-1b.json}
prompt=${PROMPT_TOKENS:-512}
decode=${DECODE_TOKENS:-32}
bash scripts/setup_llamacpp.sh
mkdir -p "$dir"
name=$(basename "$config" .json)
for t in $types; do
  f="$dir/$name-$t.gguf"
  [[ -f "$f" ]] || ./build/uneven quantize --random-weights --config "$config" --type "$t" --out "$f" --threads "$threads"
done
printf '%-8s %-9s %12s %12s %7s %12s %12s %7s %10s %8s\n' type target "ours tok/s" "llama tok/s" ratio \
  "ours pp/s" "llama pp/s" ratio "ours GB/s" "% stream"
for t in $types; do
  f="$dir/$name-$t.gguf"
  ours=$(./build/uneven bench --model "$f" --threads "$threads" --prompt-tokens "$prompt" --decode-tokens "$decode" --json)
  theirs=$(node tools/llamacpp/bench.mjs --model "$f" --threads "$threads" --prompt-tokens "$prompt" \
             --decode-tokens "$decode" --repeats 2 2>/dev/null)
  python3 - "$t" "$ours" "$theirs" <<'PY'
import json, sys
t, o, l = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{t:8s} {o['simd_target']:9s} {o['decode_tokens_per_second']:12.2f} {l['decode_tok_s']:12.2f} "
      f"{o['decode_tokens_per_second'] / l['decode_tok_s']:6.2f}x {o['prompt_tokens_per_second']:12.1f} "
      f"{l['prompt_tok_s']:12.1f} {o['prompt_tokens_per_second'] / l['prompt_tok_s']:6.2f}x "
      f"{o['decode_weight_read_gb_per_second']:10.2f} {100 * o['fraction_of_stream_bandwidth']:7.0f}%"
      f"   (stream {o['stream_read_gb_per_second']:.1f} GB/s; llama.cpp {l['cpu_backend']})")
PY
done
for t in ${MLX_TYPES:-mlx4}; do
  ./build/uneven bench --model "$config" --random-weights --weight-dtype "$t" --threads "$threads" \
    --prompt-tokens "$prompt" --decode-tokens "$decode" --json |
    python3 -c "import json,sys; o=json.load(sys.stdin); print(f\"{'$t':8s} {o['simd_target']:9s} {o['decode_tokens_per_second']:12.2f} {'-':>12s} {'-':>7s} {o['prompt_tokens_per_second']:12.1f} {'-':>12s} {'-':>7s} {o['decode_weight_read_gb_per_second']:10.2f} {100*o['fraction_of_stream_bandwidth']:7.0f}%   (stream {o['stream_read_gb_per_second']:.1f} GB/s)\")"
done
