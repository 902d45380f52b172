#!/usr/bin/env bash
# Installs the official `openai` npm client, pinned by tests/serve/package-lock.json, into build/node_clients
# (git-ignored) for tests/serve_test.cpp, which skips its client tests when this has not been run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${UNEVEN_NODE_CLIENTS:-$root/build/node_clients}
command -v npm >/dev/null || { echo "npm is missing (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dest"
cp "$root/tests/serve/package.json" "$root/tests/serve/package-lock.json" "$dest/"
cd "$dest"
npm ci --no-audit --no-fund
echo "openai client installed in $dest/node_modules"
