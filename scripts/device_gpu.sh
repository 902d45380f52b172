#!/usr/bin/env bash
# On a bare GPU machine (no package registry): unpacks carried Debian packages, builds the CUDA build, runs the
# GPU tests and the one-GPU benches; every log goes to $OUT (or ./gpu-logs).
#
#   bash scripts/device_gpu.sh [phases]    phases: build,test,bench (default all)
# Carried paths: .devdeps/*.deb (scripts/device_gpu.sh --fetch here makes them), .devshare/ (copy of ../shared's
# fixtures/ and models/), optionally .devmpi/*.deb when the machine has no OpenMPI.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --fetch ]]; then  # on the development machine: download what the GPU image lacks
  mkdir -p .devdeps && (cd .devdeps && apt-get download libhwy-dev libhwy1 nlohmann-json3-dev libcli11-dev \
    libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 \
    libgtest-dev libgmock-dev libcpp-httplib-dev libcpp-httplib0.11 libfmt-dev libfmt9 libbenchmark-dev \
    libbenchmark1debian libbrotli-dev libbrotli1)
  mkdir -p .devshare/fixtures .devshare/models && cp -r ../shared/fixtures/hf ../shared/fixtures/gguf .devshare/fixtures/ &&
    cp -r ../shared/models/stories260K .devshare/models/ && chmod -R u+w .devshare
  exit
fi
phases=${1:-build,test,bench,mixed}
out=${OUT:-gpu-logs}; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export UNEVEN_SHARED=$PWD/.devshare OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

deps=/opt/uneven-deps
mkdir -p $deps
for f in .devdeps/*.deb .devmpi/*.deb; do [[ -f $f ]] && dpkg -x "$f" $deps; done
# The .pc files name prefix=/usr: point them at the unpacked tree.
for pc in $(find $deps -name '*.pc'); do sed -i "s#^prefix=/usr#prefix=$deps/usr#" "$pc"; done
export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig
export CMAKE_PREFIX_PATH=$deps/usr LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
[[ -d $deps/usr/bin && -x $deps/usr/bin/mpirun ]] && export PATH=$deps/usr/bin:$PATH OPAL_PREFIX=$deps/usr

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1
  grep -m1 'model name' /proc/cpuinfo; nproc; grep -o -m1 'avx512f' /proc/cpuinfo; which mpirun cmake ninja
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

if [[ $phases == *build* ]]; then
  start=$SECONDS
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUNEVEN_CUDA=ON >"$out/build.log" 2>&1 &&
    cmake --build build-cuda -j"$(nproc)" >>"$out/build.log" 2>&1
  echo "build: rc $? in $((SECONDS - start)) s"; grep -E 'error|Error' "$out/build.log" | head -20
fi
if [[ $phases == *test* ]]; then
  start=$SECONDS
  timeout 400 ctest --test-dir build-cuda -L gpu --output-on-failure >"$out/gpu_tests.log" 2>&1
  echo "gpu tests: rc $? in $((SECONDS - start)) s"; grep -E 'tests passed|Failed|\*\*\*' "$out/gpu_tests.log" | head -30
fi
if [[ $phases == *bench* ]]; then
  cfg=tests/data/configs/llama-3.1-8b.json
  {
    for dtype in bf16 q8_0 q4_k mlx8 mlx4; do
      timeout 120 ./build-cuda/uneven bench -m $cfg --random-weights --weight-dtype $dtype --device cuda \
        --prompt-tokens 2048 --decode-tokens 64 --context 4096 --gpu-prompt-precision bf16 --json
    done
    timeout 60 ./build-cuda/cuda_matmul_bench
    PYTHONUNBUFFERED=1 timeout 200 python3 scripts/torch_decode_bench.py $cfg --decode 64 --prompt 2048
  } >"$out/bench.log" 2>&1
  cat "$out/bench.log" | cut -c1-600
fi
if [[ $phases == *mixed* ]]; then
  # A GPU rank beside a CPU rank: the split planned by the bandwidths measured at start against an equal one.
  for mode in tensor equal; do
    timeout 150 ./build-cuda/uneven bench -m configs/llama-3.2-1b.json --random-weights --weight-dtype bf16 \
      --ranks 2 --device cuda,cpu --mode $mode -t 8 --decode-tokens 32
  done >"$out/mixed.log" 2>&1
  cat "$out/mixed.log"
fi
