#!/usr/bin/env bash
# One command for the whole test suite: install, build, run every test; then again under ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# llama.cpp itself (node-llama-cpp's prebuilt build, from npm) for the interop tests; they skip without it.
bash scripts/setup_llamacpp.sh || echo "warning: llama.cpp reference not installed; the llama.cpp interop tests will skip"
# Debian's chromium and playwright-core (pinned in tests/browser) for the web page test; it skips without them.
bash scripts/setup_browser.sh >/dev/null || echo "warning: chromium/playwright-core not installed; the web page test will skip"
# The official openai npm client for the server tests (they skip without it).
bash scripts/setup_node_clients.sh >/dev/null || echo "warning: openai npm client not installed; the server's client tests will skip"
# iproute2 and nftables for the namespace-cluster tests (they skip without them).
bash scripts/setup_netns_tools.sh || echo "warning: iproute2/nftables not installed; the namespace-cluster tests will skip parts"
jobs=$(nproc)
# Each phase's start, with the minutes since this script began (CI must stay under 20).
phase() { printf '== %s [%dm%02ds]\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

phase "build and test (RelWithDebInfo)"
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j"$jobs"

# The CUDA backend compiles wherever nvcc is (no GPU needed): its sources and the GPU-only host code. The GPU
# tests themselves (ctest -L gpu in build-cuda) run on a GPU machine: see docs/cuda.md.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  phase "compile the CUDA backend and GPU tests (nvcc found; not run here)"
  cmake -S . -B build-cuda-ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUNEVEN_CUDA=ON >/dev/null
  cmake --build build-cuda-ci -j"$jobs" --target uneven_cuda CMakeFiles/uneven.dir/src/cli/compute_setup.cpp.o \
    CMakeFiles/cuda_engine_test.dir/tests/cuda/cuda_engine_test.cpp.o \
    CMakeFiles/cuda_backend_test.dir/tests/cuda/cuda_backend_test.cpp.o
fi

phase "build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
bash scripts/build.sh build-sanitize -DUNEVEN_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan_suppressions.txt" \
  ctest --test-dir build-sanitize --output-on-failure -j"$((jobs + 1))" -E '^(NetnsCluster|Memory)\.'
# (The namespace-cluster tests run the same code as the multirank tests, over shaped links; the normal build
# runs them, and under the sanitizers they only add minutes to a CI that must stay under 20. The memory tests
# measure resident sets, which the sanitizers' shadow memory and quarantine inflate. One job more than
# cores: many sanitized tests wait on mpirun and child processes.)

# Every parser's libFuzzer harness for 20 s on its committed corpus (scripts/fuzz.sh 600 is the long run).
phase "fuzz every parser for 20 s (libFuzzer, ASan + UBSan)"
bash scripts/fuzz.sh 20
phase "done"
