#!/usr/bin/env bash
# Install node-llama-cpp 3.21.1 (prebuilt llama.cpp binaries, linux-x64 CPU) into tools/llamacpp.
# Idempotent: reinstalls only when node_modules is missing or was installed from another lock file.
# Never downloads or builds llama.cpp from source: all npm lifecycle scripts are skipped
# (--ignore-scripts) and node-llama-cpp's own switches are set as a second guard.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/tools/llamacpp"
STAMP="$DIR/node_modules/.uneven-install-stamp"
# LLAMACPP_CPU_VARIANT: which of the prebuilt ggml CPU backends llama.cpp may load.
#   "auto" (default): all are kept and ggml picks the best for this CPU (zen4 / AVX-512 here).
#   a name such as "haswell" (AVX2), "x64", "sse42", "skylakex": only that one is kept; the others are
#   moved aside to node_modules/.uneven-cpu-disabled/ (ggml loads the best *present* libggml-cpu-*.so;
#   node-llama-cpp has no switch for it). Re-run with another value to change; "auto" restores all.
VARIANT="${LLAMACPP_CPU_VARIANT:-auto}"
BINS="$DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
PARKED="$DIR/node_modules/.uneven-cpu-disabled"

# node-llama-cpp switches (see dist/config.js in the package):
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true   # postinstall exits at once; no source download / cmake build
export NODE_LLAMA_CPP_POSTINSTALL=skip     # ditto, for the postinstall command
export NODE_LLAMA_CPP_GPU=false            # CPU backend only: no CUDA / Vulkan probing
export npm_config_node_llama_cpp_postinstall=skip

command -v node >/dev/null || { echo "setup_llamacpp: node not found" >&2; exit 1; }
command -v npm  >/dev/null || { echo "setup_llamacpp: npm not found" >&2; exit 1; }

want="$(cat "$DIR/package.json" "$DIR/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1) node-$(node --version)"
have="$(cat "$STAMP" 2>/dev/null || true)"

if [[ "$want" == "$have" && -f "$DIR/node_modules/@node-llama-cpp/linux-x64/package.json" \
      && -f "$DIR/node_modules/node-llama-cpp/package.json" ]]; then
  action="up to date"
else
  t0=$(date +%s)
  cd "$DIR"
  if [[ -f package-lock.json ]]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    how="npm ci"
  else
    npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    how="npm install"
    want="$(cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -d' ' -f1) node-$(node --version)"
  fi
  echo "$want" > "$STAMP"
  action="$how in $(( $(date +%s) - t0 ))s"
fi

# Select the CPU backend variant.
if [[ -d "$PARKED" ]]; then mv "$PARKED"/libggml-cpu-*.so "$BINS"/ 2>/dev/null || true; fi
if [[ "$VARIANT" != "auto" ]]; then
  [[ -f "$BINS/libggml-cpu-$VARIANT.so" ]] || { echo "setup_llamacpp: no CPU variant '$VARIANT' in $BINS" >&2; exit 1; }
  mkdir -p "$PARKED"
  for f in "$BINS"/libggml-cpu-*.so; do
    [[ "$(basename "$f")" == "libggml-cpu-$VARIANT.so" ]] || mv "$f" "$PARKED"/
  done
fi

# Check that the prebuilt CPU binary loads (no build, no download, no GPU).
cd "$DIR"
# (run from a file, not -e/stdin: node-llama-cpp forks a test process that inherits execArgv, which
#  -e / --input-type break; the file sits in node_modules so it resolves the package and stays untracked)
CHECK="$DIR/node_modules/.uneven-check.mjs"
cat > "$CHECK" <<'JS'
import {getLlama} from "node-llama-cpp";
const logs = [];
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
    progressLogs: false, logLevel: "debug", logger: (l, m) => logs.push(m)});
await new Promise((r) => setTimeout(r, 200));  // addon log lines arrive asynchronously
const cpu = (logs.join("\n").match(/libggml-cpu-([A-Za-z0-9_]+)\.so/) || [])[1] ?? "unknown";
console.log(`gpu=${llama.gpu} llama.cpp=${llama.llamaCppRelease.release} binary=${llama.buildType} cpu_backend=${cpu}`);
await llama.dispose();
JS
info="$(node "$CHECK")"

echo "setup_llamacpp: node-llama-cpp $(node -p 'require("./node_modules/node-llama-cpp/package.json").version') $action; $info"
