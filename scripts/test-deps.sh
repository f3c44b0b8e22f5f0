#!/usr/bin/env bash
# Installs what the tests need when it is missing: Mosquitto and nats-server (Debian), the npm
# packages of each scripts/*/ folder, Chromium, systemd-analyze and rpm. Idempotent.
# As root it installs system packages; otherwise it only reports what is missing
# (the tests then fail with a message naming it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# fleetctl's completion tests load its scripts into real shells.
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v fish >/dev/null 2>&1 || need+=(fish)
command -v rpm >/dev/null 2>&1 || need+=(rpm)  # e2e/packages reads the .rpm files

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "test-deps: missing ${need[*]} (run as root to install); tests that need them will fail" >&2
  fi
fi

# npm packages: every scripts/<name>/ with a package.json installs into its own
# node_modules, through its install.sh when it has one.
for pj in scripts/*/package.json; do
  [ -e "$pj" ] || continue
  d=$(dirname "$pj")
  if [ -x "$d/install.sh" ]; then
    bash "$d/install.sh"
  elif [ ! -d "$d/node_modules" ] || [ "$pj" -nt "$d/node_modules" ]; then
    echo "test-deps: npm ci in $d"
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
echo "test-deps: ok"
