#!/usr/bin/env bash
# Configures and builds uneven with the CUDA backend and NCCL (-DUNEVEN_CUDA=ON) into build-cuda/ (or $1,
# extra CMake arguments after it); needs nvcc (CUDA 12+, default /usr/local/cuda) but no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-cuda}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUNEVEN_CUDA=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" | grep -vE '^\[[0-9]+/[0-9]+\] (Building|Linking)' || true
test -x "$dir/uneven"
