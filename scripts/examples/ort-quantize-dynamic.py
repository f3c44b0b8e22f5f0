#!/usr/bin/env python3
"""ort-quantize-dynamic.py: a robot-agent exec runner around ONNX Runtime's
dynamic (weight-only) int8 quantization, speaking the agent's progress
protocol (docs/PIPELINES.md).

EXAMPLE: it needs Python 3 and the onnxruntime package on the robot
(`pip install onnxruntime`, or onnxruntime-gpu on Jetson wheels). The agent
itself does not need it; see configs/pipelines/onnxruntime-quantize.yaml.

Progress lines go to stdout, one JSON object each; everything else (the
library's own logging, tracebacks) goes to stderr and so to the session log,
and its last 4 KiB into session.failed's error.detail.
"""
import argparse
import json
import os
import sys
import time


def emit(obj):
    # One line per object, flushed at once: the agent reads stdout line by line.
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def progress(pct, stage, message, eta_s=None):
    line = {"progress": pct, "stage": stage, "message": message}
    if eta_s is not None:
        line["eta_s"] = eta_s
    emit(line)


def flag(v):
    return v == "true"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="input ONNX model ({model})")
    ap.add_argument("--output-dir", required=True, help="where the result goes ({output_dir})")
    ap.add_argument("--weight-type", choices=["qint8", "quint8"], default="qint8")
    ap.add_argument("--per-channel", choices=["true", "false"], default="false")
    ap.add_argument("--reduce-range", choices=["true", "false"], default="false")
    ap.add_argument("--preprocess", choices=["true", "false"], default="true",
                    help="run onnxruntime.quantization's shape inference and optimization first")
    a = ap.parse_args()

    start = time.monotonic()
    progress(0, "load", "importing onnxruntime")
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    print(f"onnxruntime {ort.__version__}", file=sys.stderr)
    src = a.model
    base = os.path.splitext(os.path.basename(src))[0]
    if flag(a.preprocess):
        progress(10, "preprocess", "shape inference and graph optimization")
        from onnxruntime.quantization.shape_inference import quant_pre_process
        # The working directory is the session's own; only results go to the output dir.
        pre = os.path.join(os.getcwd(), base + ".preprocessed.onnx")
        quant_pre_process(src, pre)
        src = pre

    progress(40, "quantize", f"quantize_dynamic weight_type={a.weight_type} per_channel={a.per_channel}")
    out = os.path.join(a.output_dir, base + ".int8.onnx")
    quantize_dynamic(
        src,
        out,
        weight_type=QuantType.QInt8 if a.weight_type == "qint8" else QuantType.QUInt8,
        per_channel=flag(a.per_channel),
        reduce_range=flag(a.reduce_range),
    )

    progress(90, "verify", "loading the quantized model with the CPU provider")
    ort.InferenceSession(out, providers=["CPUExecutionProvider"])

    before, after = os.path.getsize(a.model), os.path.getsize(out)
    progress(100, "done", f"{before} -> {after} bytes")
    emit({"result": {"metrics": {
        "size_before": before,
        "size_after": after,
        "compression_ratio": before / after if after else 0,
        "quantize_s": time.monotonic() - start,
    }}})


if __name__ == "__main__":
    main()
