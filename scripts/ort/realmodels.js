#!/usr/bin/env node
// Runs a real model and its quantized copy in ONNX Runtime (CPU) on
// realistic inputs and prints how close they are, as the model's users would
// judge it:
//
//   node realmodels.js melspec   <orig.onnx> <quant.onnx>
//   node realmodels.js embedding <orig.onnx> <quant.onnx> <melspectrogram.onnx>
//   node realmodels.js vad       <orig.onnx> <quant.onnx> [16000|8000]
//
// The audio is a synthesised speech-like clip (see synthSpeech): voiced
// syllables with a moving pitch and formants, consonant noise bursts, pauses
// and a noise floor, so a VAD fires on it. Prints one JSON object; exit
// status 1 (with {"error": ...}) when a model cannot run.
'use strict';

const ort = require('onnxruntime-node');

const rng = require('./rng');

// Vowel formants F1..F3 (Hz) of an adult male speaker (Peterson & Barney).
const VOWELS = [
  [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
  [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240],
];

// synthSpeech returns `seconds` of audio in [-1, 1] at sample rate sr:
// silence, two phrases of words separated by a long pause, silence. Each
// syllable is a glottal pulse train (harmonics falling 12 dB/octave, f0
// gliding 95-170 Hz with declination and a little jitter) through three
// formant resonators, with a raised-cosine envelope; some syllables start
// with a fricative noise burst. The layout (in seconds) is returned too, so
// callers know where speech is.
function synthSpeech(sr, seconds, seed) {
  const r = rng(seed);
  const n = Math.round(sr * seconds);
  const out = new Float32Array(n);
  const segments = [];
  let t = 0.6; // leading silence
  const phrases = [seconds * 0.42 - 0.6, seconds - 0.7 - seconds * 0.42 - 0.5];
  for (const [pi, plen] of phrases.entries()) {
    const end = t + plen;
    const start = t;
    let f0 = 150 + 20 * r();
    while (t < end - 0.3) {
      const syllables = 1 + Math.floor(r() * 3);
      for (let s = 0; s < syllables && t < end - 0.2; s++) {
        const dur = 0.14 + 0.12 * r();
        if (r() < 0.4) t += addFricative(out, sr, t, 0.04 + 0.03 * r(), r);
        addVowel(out, sr, t, dur, f0, VOWELS[Math.floor(r() * VOWELS.length)], r);
        t += dur;
        f0 = Math.max(95, f0 - 4 - 6 * r()); // declination
      }
      t += 0.06 + 0.1 * r(); // between words
    }
    segments.push([start, t]);
    t = end + (pi === 0 ? 0.5 : 0); // long pause between phrases
  }
  // Noise floor at about -55 dBFS.
  for (let i = 0; i < n; i++) out[i] += (r() * 2 - 1) * 0.003;
  return { audio: out, speech: segments };
}

function resonate(x, sr, f, bw) {
  const rr = Math.exp(-Math.PI * bw / sr);
  const a1 = 2 * rr * Math.cos(2 * Math.PI * f / sr);
  const a2 = -rr * rr;
  const g = 1 - rr; // rough unity gain at the peak
  let y1 = 0, y2 = 0;
  for (let i = 0; i < x.length; i++) {
    const y = g * x[i] + a1 * y1 + a2 * y2;
    y2 = y1; y1 = y; x[i] = y;
  }
}

function addVowel(out, sr, t, dur, f0, formants, r) {
  const len = Math.round(dur * sr);
  const src = new Float32Array(len);
  let phase = 0;
  for (let i = 0; i < len; i++) {
    const f = f0 * (1 + 0.06 * Math.sin(Math.PI * i / len)) * (1 + 0.004 * (r() - 0.5));
    phase += f / sr;
    for (let k = 1; k * f < Math.min(4000, sr / 2 - 200); k++) {
      src[i] += Math.sin(2 * Math.PI * k * phase) / (k * k);
    }
  }
  const bws = [80, 100, 150];
  const voiced = new Float32Array(len);
  formants.forEach((fm, j) => {
    if (fm >= sr / 2 - 100) return;
    const band = Float32Array.from(src);
    resonate(band, sr, fm, bws[j]);
    resonate(band, sr, fm, bws[j]);
    for (let i = 0; i < len; i++) voiced[i] += band[i] * [1, 0.6, 0.3][j];
  });
  let peak = 1e-9;
  for (let i = 0; i < len; i++) peak = Math.max(peak, Math.abs(voiced[i]));
  const amp = 0.25 + 0.2 * r();
  const start = Math.round(t * sr);
  for (let i = 0; i < len && start + i < out.length; i++) {
    const env = Math.sin(Math.PI * Math.min(1, i / (0.25 * len), (len - i) / (0.25 * len)) / 2);
    out[start + i] += amp * env * voiced[i] / peak;
  }
}

function addFricative(out, sr, t, dur, r) {
  const len = Math.round(dur * sr);
  const start = Math.round(t * sr);
  let prev = 0;
  for (let i = 0; i < len && start + i < out.length; i++) {
    const w = r() * 2 - 1;
    const hp = w - prev; // crude high-pass: sibilant-like
    prev = w;
    out[start + i] += 0.05 * hp * Math.sin(Math.PI * i / len);
  }
  return dur;
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na === 0 && nb === 0 ? 1 : dot / Math.sqrt(na * nb);
}

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 1 };

// melspec: openWakeWord's front end on int16-scaled audio, at two input
// lengths (one 80 ms frame, and 2 s).
async function melspec(origPath, quantPath) {
  const [a, b] = await Promise.all([origPath, quantPath].map((p) => ort.InferenceSession.create(p, opts)));
  const { audio } = synthSpeech(16000, 4, 11);
  const sizes = [];
  for (const [len, off] of [[1280, 16000], [32000, 8000]]) {
    const x = new Float32Array(len);
    for (let i = 0; i < len; i++) x[i] = audio[off + i] * 32767;
    const feeds = { [a.inputNames[0]]: new ort.Tensor('float32', x, [1, len]) };
    const ya = (await a.run(feeds))[a.outputNames[0]].data;
    const yb = (await b.run(feeds))[b.outputNames[0]].data;
    sizes.push({ samples: len, cosine: cosine(ya, yb), max_abs_diff: maxAbsDiff(ya, yb), values: ya.length });
  }
  return { sizes, cosine: Math.min(...sizes.map((s) => s.cosine)) };
}

// embedding: openWakeWord's speech embedding on 76×32 windows of real
// log-mel features (the float melspectrogram model on the clip, scaled as
// openWakeWord does: x/10 + 2), every 8 frames; reports the worst and the
// mean cosine over the windows of the 96-d embeddings.
async function embedding(origPath, quantPath, melPath) {
  const mel = await ort.InferenceSession.create(melPath, opts);
  const { audio } = synthSpeech(16000, 4, 12);
  const x = Float32Array.from(audio, (v) => v * 32767);
  const m = (await mel.run({ [mel.inputNames[0]]: new ort.Tensor('float32', x, [1, x.length]) }))[mel.outputNames[0]];
  const frames = m.dims[2];
  const feats = Float32Array.from(m.data, (v) => v / 10 + 2);
  const windows = [];
  for (let f = 0; f + 76 <= frames; f += 8) windows.push(feats.subarray(f * 32, (f + 76) * 32));
  const batch = new Float32Array(windows.length * 76 * 32);
  windows.forEach((w, i) => batch.set(w, i * 76 * 32));
  const [a, b] = await Promise.all([origPath, quantPath].map((p) => ort.InferenceSession.create(p, opts)));
  const feeds = { [a.inputNames[0]]: new ort.Tensor('float32', batch, [windows.length, 76, 32, 1]) };
  const ya = (await a.run(feeds))[a.outputNames[0]].data;
  const yb = (await b.run(feeds))[b.outputNames[0]].data;
  const per = [];
  for (let i = 0; i < windows.length; i++) per.push(cosine(ya.subarray(i * 96, (i + 1) * 96), yb.subarray(i * 96, (i + 1) * 96)));
  return {
    windows: windows.length, cosine: cosine(ya, yb), min_window_cosine: Math.min(...per),
    mean_window_cosine: per.reduce((s, v) => s + v, 0) / per.length, max_abs_diff: maxAbsDiff(ya, yb),
  };
}

// vad: Silero VAD streamed over the clip in 32 ms frames with its recurrent
// state and 64/32-sample context, as the package's own processChunk does.
// Per frame it reports two decisions: the raw one (p >= 0.5) and the one
// Silero's speech-timestamp logic makes, with hysteresis (speech starts at
// p >= 0.5 and ends when p < 0.35), which is what users of the VAD get.
async function vad(origPath, quantPath, srArg) {
  const sr = Number(srArg || 16000);
  const win = sr === 16000 ? 512 : 256;
  const ctxLen = sr === 16000 ? 64 : 32;
  const { audio, speech } = synthSpeech(sr, 6, 13);
  const run = async (path) => {
    const s = await ort.InferenceSession.create(path, opts);
    let state = new Float32Array(2 * 128);
    const ctx = new Float32Array(ctxLen);
    const srT = new ort.Tensor('int64', BigInt64Array.from([BigInt(sr)]), []);
    const probs = [];
    for (let off = 0; off + win <= audio.length; off += win) {
      const inp = new Float32Array(ctxLen + win);
      inp.set(ctx, 0);
      inp.set(audio.subarray(off, off + win), ctxLen);
      const res = await s.run({ input: new ort.Tensor('float32', inp, [1, inp.length]), state: new ort.Tensor('float32', state, [2, 1, 128]), sr: srT });
      probs.push(res[s.outputNames[0]].data[0]);
      state = Float32Array.from(res[s.outputNames[1]].data);
      ctx.set(inp.subarray(inp.length - ctxLen));
    }
    return probs;
  };
  const pa = await run(origPath);
  const pb = await run(quantPath);
  let same = 0, speechA = 0, speechB = 0, inSpeech = 0, firedInSpeech = 0, firedInSilence = 0, silence = 0;
  const differ = [];
  let margin = 1; // the float model's closest call: min |p - 0.5|
  const ha = hysteresis(pa), hb = hysteresis(pb);
  let sameVad = 0;
  for (let i = 0; i < pa.length; i++) {
    const da = pa[i] >= 0.5, db = pb[i] >= 0.5;
    margin = Math.min(margin, Math.abs(pa[i] - 0.5));
    if (ha[i] === hb[i]) sameVad++;
    if (da === db) same++;
    else differ.push({ frame: i, float: pa[i], quantized: pb[i] });
    if (da) speechA++;
    if (db) speechB++;
    const tt = (i + 0.5) * win / sr;
    const isSpeech = speech.some(([s, e]) => tt >= s && tt <= e);
    if (isSpeech) { inSpeech++; if (da) firedInSpeech++; } else { silence++; if (da) firedInSilence++; }
  }
  return {
    sr, frames: pa.length, same_vad_decisions: sameVad, same_decisions: same, speech_frames: speechA, speech_frames_quantized: speechB,
    float_recall: firedInSpeech / Math.max(1, inSpeech), float_false_alarms: firedInSilence / Math.max(1, silence),
    cosine: cosine(pa, pb), max_abs_diff: maxAbsDiff(pa, pb), float_margin: margin, differ,
  };
}

function hysteresis(p, threshold = 0.5, neg = 0.35) {
  let on = false;
  return p.map((v) => {
    if (!on && v >= threshold) on = true;
    else if (on && v < neg) on = false;
    return on;
  });
}

async function main() {
  const [kind, orig, quant, extra] = process.argv.slice(2);
  const fns = { melspec, embedding, vad };
  if (!fns[kind] || !orig || !quant) {
    console.error('usage: realmodels.js melspec|embedding|vad <orig.onnx> <quant.onnx> [extra]');
    process.exit(2);
  }
  console.log(JSON.stringify(await fns[kind](orig, quant, extra)));
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e) }));
  process.exit(1);
});
