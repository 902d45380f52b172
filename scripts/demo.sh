#!/usr/bin/env bash
# One command for a new user: install what is missing, build, and generate text with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
./build/uneven generate --model models/stories260K.gguf --prompt "Once upon a time" -n 80 "$@"
