#!/usr/bin/env bash
# Refreshes the dashboard's vendored JavaScript from npm: installs the versions
# pinned in package.json (package-lock.json) and copies the files the page
# loads, with their licence, into cloud/dashboard/static/assets/vendor/. The
# copies are committed, so running the page needs no build step; run this only
# to change a version (edit package.json, then `bash scripts/dashboard/vendor.sh`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dst="$here/../../cloud/dashboard/static/assets/vendor/uplot"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
src=node_modules/uplot
ver=$(node -p 'require("./node_modules/uplot/package.json").version')
mkdir -p "$dst"
cp "$src/dist/uPlot.iife.min.js" "$src/dist/uPlot.min.css" "$src/LICENSE" "$dst/"
echo "$ver" > "$dst/VERSION"
echo "vendor: uplot $ver -> ${dst#"$here/../../"}"
