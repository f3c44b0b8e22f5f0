#!/usr/bin/env node
// Runs an original and an optimized ONNX model in ONNX Runtime (CPU) on the
// same pseudo-random float inputs and prints how close their outputs are:
//
//   node verify.js <original.onnx> <optimized.onnx> [seed]
//   -> {"loaded":true,"cosine":0.99998,"max_abs_diff":0.0012,"identical":false,"batches":[1,3]}
//
// Every symbolic (dim_param) input dimension is treated as the batch and set
// to 1 and then 3, so dynamic-batch handling is exercised. Exit status is 0
// when both models load and run, 1 otherwise (JSON still printed, loaded:false).
'use strict';

const ort = require('onnxruntime-node');

const rng = require('./rng');

function makeInputs(session, batch, seed) {
  const feeds = {};
  const meta = session.inputMetadata || [];
  session.inputNames.forEach((name, i) => {
    const m = meta[i] || meta[name];
    if (!m || !m.isTensor || !Array.isArray(m.shape)) {
      throw new Error(`input ${name}: no tensor shape metadata`);
    }
    if (m.type !== 'float32') {
      throw new Error(`input ${name}: unsupported type ${m.type}`);
    }
    const dims = m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : batch));
    const n = dims.reduce((a, b) => a * b, 1);
    const r = rng(seed * 7919 + batch * 104729 + i);
    const data = new Float32Array(n);
    for (let k = 0; k < n; k++) data[k] = r() * 2 - 1;
    feeds[name] = new ort.Tensor('float32', data, dims);
  });
  return feeds;
}

async function main() {
  const [origPath, optPath, seedArg] = process.argv.slice(2);
  if (!origPath || !optPath) {
    console.error('usage: verify.js <original.onnx> <optimized.onnx> [seed]');
    process.exit(2);
  }
  const seed = Number(seedArg || 1) | 0;
  const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 1 };
  const orig = await ort.InferenceSession.create(origPath, opts);
  const opt = await ort.InferenceSession.create(optPath, opts);

  let dot = 0, na = 0, nb = 0, maxAbs = 0, identical = true, count = 0;
  const batches = [1, 3];
  for (const batch of batches) {
    const feeds = makeInputs(orig, batch, seed);
    const ra = await orig.run(feeds);
    const rb = await opt.run(feeds);
    for (const name of orig.outputNames) {
      const a = ra[name].data, b = rb[name] && rb[name].data;
      if (!b || a.length !== b.length) throw new Error(`output ${name}: shape mismatch`);
      if (ra[name].dims.join(',') !== rb[name].dims.join(',')) throw new Error(`output ${name}: dims differ`);
      for (let k = 0; k < a.length; k++) {
        const x = Number(a[k]), y = Number(b[k]);
        dot += x * y; na += x * x; nb += y * y;
        const d = Math.abs(x - y);
        if (d > maxAbs || Number.isNaN(d)) maxAbs = d;
        if (x !== y) identical = false;
        count++;
      }
    }
  }
  const cosine = na === 0 && nb === 0 ? 1 : dot / (Math.sqrt(na) * Math.sqrt(nb));
  console.log(JSON.stringify({ loaded: true, cosine, max_abs_diff: maxAbs, identical, values: count, batches }));
}

main().catch((e) => {
  console.log(JSON.stringify({ loaded: false, error: String(e && e.message ? e.message : e) }));
  process.exit(1);
});
