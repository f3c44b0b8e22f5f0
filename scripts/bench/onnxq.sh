#!/usr/bin/env bash
# The built-in ONNX quantizer: throughput and peak RSS on the largest
# generated model (~34 MB MLP); prints the `## onnxq` section.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./agent/onnxq/internal/quantbench ${BENCH_ONNXQ_ARGS:-}
