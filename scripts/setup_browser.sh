#!/usr/bin/env bash
# Installs what tests/web_page_test.cpp drives the `uneven serve` page with: Debian's chromium (when missing)
# and playwright-core, pinned by tests/browser/package-lock.json, into build/browser_clients (git-ignored;
# UNEVEN_BROWSER_CLIENTS overrides). The test skips, saying which is missing, when this has not been run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${UNEVEN_BROWSER_CLIENTS:-$root/build/browser_clients}
if ! command -v chromium >/dev/null; then
  echo "setup_browser: installing chromium"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v npm >/dev/null || { echo "npm is missing (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dest"
cp "$root/tests/browser/package.json" "$root/tests/browser/package-lock.json" "$dest/"
cd "$dest"
npm ci --no-audit --no-fund --loglevel=error
echo "chromium $(chromium --version 2>/dev/null | awk '{print $2}') and playwright-core installed in $dest/node_modules"
