#!/usr/bin/env bash
# The built-in ONNX quantizer: throughput and peak RSS per model (a generated
# ~34 MB MLP and the real npm models of scripts/ort), their accuracy in ONNX
# Runtime, and the agent's RSS while a session quantizes in its child
# process; prints the `## onnxq` section. Needs scripts/ort installed
# (scripts/test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/ort/install.sh >/dev/null
exec go run ./agent/onnxq/internal/quantbench ${BENCH_ONNXQ_ARGS:-}
