#!/usr/bin/env bash
# Installs the Debian packages uneven builds with; idempotent and quiet when all are present.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libhwy-dev nlohmann-json3-dev libcli11-dev
          libpcre2-dev libutf8proc-dev libgtest-dev libgmock-dev libbenchmark-dev libopenmpi-dev openmpi-bin
          libcpp-httplib-dev libfmt-dev clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
