#!/usr/bin/env bash
# Installs what the namespace-cluster tests shape links with: iproute2 (ip netns, tc) and nftables (packet
# loss with `numgen random`). The tests skip, or skip their loss case, saying which is missing.
set -euo pipefail
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
if ((${#missing[@]})); then
  echo "setup_netns_tools: installing ${missing[*]}"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
