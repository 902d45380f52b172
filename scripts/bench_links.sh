#!/usr/bin/env bash
# Bench over shaped links (needs root; scripts/netns_cluster.sh): per profile, 2 hosts 3:1 with a Llama-3.2-1B
# shape in BF16 (random weights, 1 thread per rank): decode tok/s of asymmetric TP, equal TP and pipeline,
# the planner's predicted ms/token beside the measured one, MPI's all-reduce of the hidden size beside a raw
# TCP round trip of the same 8 KB, and the communication share of rank 0's step.
# Usage: sudo scripts/bench_links.sh [profile...]   (default: thunderbolt 10gbe 1gbe wifi; also: none)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/build/uneven
rtt=$root/build/tools/tcp_rtt/uneven_tcp_rtt
[ -x "$bin" ] && [ -x "$rtt" ] || { echo "build first: bash scripts/build.sh build" >&2; exit 2; }
profiles=("$@")
[ ${#profiles[@]} -eq 0 ] && profiles=(thunderbolt 10gbe 1gbe wifi)
model="--model configs/llama-3.2-1b.json --random-weights --weight-dtype bf16 --threads 1 --json --skip-bandwidth"
decode=${BENCH_DECODE_TOKENS:-16}

# The planner's time model needs each rank's bandwidth: what one thread achieves decoding this model alone
# (its matrix-vector products reach ~60% of the streaming rate, which would make every prediction fast).
gbps=$("$bin" bench $model --decode-tokens 8 --prompt-tokens 4 | tail -1 |
       python3 -c 'import json,sys; print(round(json.load(sys.stdin)["decode_weight_read_gb_per_second"], 2))')
echo "== one thread decodes this model alone at $gbps GB/s of weights; decode $decode tokens per run; $(nproc) cores"
printf '%-12s %-10s %9s %9s %11s %12s %11s %11s %10s\n' profile mode "tok/s" "ms/token" "predicted" "allreduce_us" "raw_rtt_us" "ar/rtt" "comm_share"
prefix=bl$$-
cleanup() { bash scripts/netns_cluster.sh down "$prefix" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for profile in "${profiles[@]}"; do
  bash scripts/netns_cluster.sh up 2 "$profile" "$prefix" >/dev/null
  addr1=$(bash scripts/netns_cluster.sh addr "$prefix" 1)
  ip netns exec "${prefix}1" timeout 120 "$rtt" serve 7777 >/dev/null &
  raw=$(ip netns exec "${prefix}0" timeout 120 "$rtt" ping "$addr1" 7777 8192 1000 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["median_us"])')
  wait || true
  for mode in "tensor --split 3,1" "equal" "pipeline --split 3,1"; do
    out=$(timeout 600 bash scripts/netns_cluster.sh run "$prefix" -- "$bin" bench $model --decode-tokens "$decode" \
          --prompt-tokens 16 --context 64 --bandwidth "$gbps,$gbps" --mode $mode 2>/dev/null | tail -1)
    echo "$out" | PROFILE=$profile MODE="${mode%% *}" RAW=$raw python3 -c '
import json, os, sys
j = json.load(sys.stdin)
r0 = j["per_rank"][0]
ms = 1e3 / j["decode_tokens_per_second"]
comm = r0["comm_ms_per_token"]; compute = r0["compute_ms_per_token"]
raw = float(os.environ["RAW"]); ar = j["all_reduce_hidden_us"]
mode = {"tensor": "tp-3:1", "equal": "tp-equal", "pipeline": "pipe-3:1"}[os.environ["MODE"]]
print("%-12s %-10s %9.2f %9.1f %11.1f %12.1f %11.1f %11.2f %10.2f" % (os.environ["PROFILE"], mode,
      j["decode_tokens_per_second"], ms, j["predicted_ms_per_token"], ar, raw, ar / raw if raw else 0,
      comm / (comm + compute) if comm + compute else 0))'
  done
  bash scripts/netns_cluster.sh down "$prefix" >/dev/null
done
