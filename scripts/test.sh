#!/usr/bin/env bash
# One command for the whole test suite: install, build, run every test; then again under ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# llama.cpp itself (node-llama-cpp's prebuilt build, from npm) for the interop tests; they skip without it.
bash scripts/setup_llamacpp.sh || echo "warning: llama.cpp reference not installed; the llama.cpp interop tests will skip"
jobs=$(nproc)

echo "== build and test (RelWithDebInfo)"
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
bash scripts/build.sh build-sanitize -DUNEVEN_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan_suppressions.txt" \
  ctest --test-dir build-sanitize --output-on-failure -j"$jobs"
