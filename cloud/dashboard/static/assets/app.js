// Fleet dashboard: one WebSocket to the relay's /ws (room fleet, plus the
// open robot's and session's rooms, resumed with since_seq after a
// reconnect), and two HTTP reads of the relay's metrics history: every
// robot's latest numbers for the fleet table (polled) and the open robot's
// last 15 minutes for its charts (then extended live from its room).
//
// Rendering is batched: events only mark what changed, and one
// requestAnimationFrame renders it. The fleet table is virtualised: only the
// rows in view exist in the DOM, so 1,000 robots cost what 30 do.
// All text from robots goes through textContent, never innerHTML; styles are
// set through CSSOM (the page's CSP forbids inline style attributes).
"use strict";

const ROW_H = 34;           // px, one fleet table row (style.css .frow)
const OVERSCAN = 6;         // rows rendered above and below the viewport
const POLL_MS = 2000;       // fleet numbers from /api/v1/fleet/metrics
const WINDOW_S = 15 * 60;   // charts
const MAX_NOTIFS = 50;

const state = {
  ws: null,
  connected: false,
  backoff: 1000,
  token: "",
  role: "",              // from the relay's connected frame
  robots: new Map(),     // id -> robot()
  alerts: new Map(),     // robot/alert -> envelope
  sessions: new Map(),   // robot/session -> session()
  rooms: new Map(),      // room -> highest seq seen (resume point)
  seen: new Set(),       // recent event ids (a snapshot and a live event may repeat)
  seenOrder: [],
  system: null,          // latest system.status data
  view: "fleet",
  selectedRobot: "",
  selectedSession: "",   // robot/session key
  pending: new Map(),    // ref -> callback
  nextRef: 1,
  sort: { key: "id", dir: 1 },
  order: [],             // ids of the fleet table, filtered and sorted
  orderDirty: true,
  dirty: new Set(),      // "fleet", "robot", "session", "summary", "alerts", "charts"
  frame: 0,
  notifs: new Map(),     // robot -> [envelope], newest last
  perf: { renders: [], max: 2000, count: 0, msgMs: 0, msgs: 0, polls: [] },
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setText(e, s) { if (e.textContent !== s) e.textContent = s; }
function setWidth(e, p) {
  const w = `${Math.max(0, Math.min(100, p || 0)).toFixed(1)}%`;
  if (e.style.width !== w) e.style.width = w;
}

function fmtBytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${u[i]}`;
}
const pct = (v) => (v == null ? "–" : `${v.toFixed(1)} %`);
function fmtDur(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 10) return `${Math.max(0, s).toFixed(1)} s`;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s % 86400 / 3600)} h`;
}
function ago(ts) {
  if (!ts) return "";
  return fmtDur((Date.now() - Date.parse(ts)) / 1000);
}
function fmtTime(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour12: false }) + (Date.now() - d > 86400e3 ? ` ${d.toLocaleDateString()}` : "");
}
const canCommand = () => state.role !== "viewer";

// mark renders what changed in the next frame (scrolling, sorting, typing);
// soon batches what events changed into at most one render per DATA_MS, so
// a fleet publishing hundreds of events a second costs a few frames a second.
function mark(...what) {
  for (const w of what) if (w) state.dirty.add(w);
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

const DATA_MS = 250;
const soonSet = new Set();
let soonTimer = 0;
function soon(...what) {
  for (const w of what) if (w) soonSet.add(w);
  if (!soonTimer) {
    soonTimer = setTimeout(() => {
      soonTimer = 0;
      mark(...soonSet);
      soonSet.clear();
    }, DATA_MS);
  }
}

// --- connection -------------------------------------------------------------

function tokenFromPage() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("fleet-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem("fleet-token") || "";
}

function connect() {
  state.token = tokenFromPage();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const q = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const ws = new WebSocket(`${proto}://${location.host}/ws${q}`);
  state.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    state.backoff = 1000;
    $("login").hidden = true;
  };
  ws.onmessage = (m) => {
    const t0 = performance.now();
    let f;
    try { f = JSON.parse(m.data); } catch { return; }
    onFrame(f);
    state.perf.msgMs += performance.now() - t0;
    state.perf.msgs++;
  };
  ws.onclose = (ev) => {
    state.connected = false;
    setConn(false, ev.code === 4008 ? "too slow, reconnecting…" : "reconnecting…");
    if (!opened) {
      // The relay answers 401 before the upgrade when the token is missing or
      // invalid; the browser only reports a failed handshake.
      showLogin(state.token ? "The relay refused this token (expired or invalid?)." : "");
    }
    const wait = state.backoff * (0.75 + Math.random() / 2);
    state.backoff = Math.min(state.backoff * 2, 30000);
    setTimeout(connect, wait);
  };
}

function showLogin(msg) {
  $("login").hidden = false;
  $("login-error").textContent = msg;
}

function setConn(up, text) {
  const c = $("conn");
  c.className = "conn " + (up ? "conn-up" : "conn-down");
  c.textContent = text;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function subscribe(room) {
  if (!state.rooms.has(room)) state.rooms.set(room, 0);
  const since = state.rooms.get(room);
  const op = { op: "subscribe", room };
  if (since > 0 && room !== "fleet") op.since_seq = since;
  send(op);
}

function unsubscribe(room) {
  if (!state.rooms.has(room)) return;
  state.rooms.delete(room);
  send({ op: "unsubscribe", room });
}

function command(robot, name, args, done) {
  const ref = String(state.nextRef++);
  state.pending.set(ref, done);
  send({ op: "command", robot, name, args, ref });
}

function onFrame(f) {
  switch (f.type) {
    case "connected":
      state.connected = true;
      state.role = f.role || "";
      setText($("who"), f.role ? `${f.role}${f.robots && f.robots.join(",") !== "*" ? " · " + f.robots.join(", ") : ""}` : "");
      document.body.classList.toggle("viewer", !canCommand());
      setConn(true, "live");
      for (const room of state.rooms.keys()) subscribe(room);
      if (!state.rooms.has("fleet")) subscribe("fleet");
      pollFleet();
      break;
    case "subscribed":
    case "snapshot":
      for (const env of f.snapshot || []) onEvent(f.room, env);
      break;
    case "event":
      onEvent(f.room, f.event);
      break;
    case "dropped":
      setConn(true, `live (${f.count} dropped)`);
      break;
    case "command_reply": {
      const cb = state.pending.get(f.ref);
      state.pending.delete(f.ref);
      if (cb) cb(f.ok ? null : (f.error || { code: "error" }), f.result);
      break;
    }
    case "error": {
      const cb = f.ref && state.pending.get(f.ref);
      if (cb) { state.pending.delete(f.ref); cb({ code: f.code, message: f.message }); }
      else console.warn("relay error", f.code, f.message);
      break;
    }
  }
}

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

// --- state ------------------------------------------------------------------

function robot(id) {
  let r = state.robots.get(id);
  if (!r) {
    r = { id, status: null, since: "", metrics: null, latest: null, alerts: 0, run: null, search: id.toLowerCase() };
    state.robots.set(id, r);
    state.orderDirty = true;
  }
  return r;
}

const MAX_SESSIONS = 5000;

function session(robotId, sid) {
  const k = `${robotId}/${sid}`;
  let s = state.sessions.get(k);
  if (!s) {
    s = { key: k, id: sid, robot: robotId, state: null, events: [], progress: null, progressAt: 0 };
    state.sessions.set(k, s);
    if (state.sessions.size > MAX_SESSIONS) forgetSessions();
  }
  return s;
}

// forgetSessions drops the oldest finished sessions (a Map iterates in
// insertion order) down to 90 % of MAX_SESSIONS; running ones are kept.
function forgetSessions() {
  for (const [k, s] of state.sessions) {
    if (state.sessions.size <= MAX_SESSIONS * 0.9) break;
    const st = s.state && s.state.status;
    if (st === "running" || st === "queued" || k === state.selectedSession) continue;
    state.sessions.delete(k);
  }
}

function onEvent(room, env) {
  if (!env || !env.type) return;
  if (env.seq && state.rooms.has(room) && env.seq > state.rooms.get(room)) state.rooms.set(room, env.seq);
  // One event reaches the page once per room it is in (fleet, robot,
  // session); event ids are unique, so keep the first.
  const key = env.id;
  if (state.seen.has(key)) return;
  state.seen.add(key);
  state.seenOrder.push(key);
  if (state.seenOrder.length > 20000) state.seen.delete(state.seenOrder.shift());

  const d = env.data || {};
  const mine = env.robot === state.selectedRobot;
  switch (env.type) {
    case "robot.status": {
      const r = robot(env.robot);
      if (!statusReplaces(r.status, d)) return; // status.js: ordered by data.epoch
      if (!r.status || r.status.state !== d.state || !r.since) r.since = env.ts;
      r.status = d;
      r.search = [env.robot, d.hostname, d.os, d.arch].join(" ").toLowerCase();
      state.orderDirty = true;
      soon("fleet", "summary", mine ? "robot" : "");
      break;
    }
    case "robot.metrics": {
      const r = robot(env.robot);
      if (r.metricsTs && Date.parse(env.ts) <= Date.parse(r.metricsTs)) return;
      r.metrics = d;
      r.metricsTs = env.ts;
      r.latest = latestOf(d, env.ts, r.latest);
      if (mine) { chartsAppend(env); soon("robot", "charts"); }
      soon("fleet");
      break;
    }
    case "robot.alert": {
      const k = `${env.robot}/${d.alert}`;
      if (d.state === "firing") state.alerts.set(k, env); else state.alerts.delete(k);
      countAlerts(env.robot);
      soon("alerts", "fleet", "summary");
      break;
    }
    case "robot.notification": {
      let list = state.notifs.get(env.robot);
      if (!list) state.notifs.set(env.robot, list = []);
      list.push(env);
      if (list.length > MAX_NOTIFS) list.shift();
      if (mine) soon("robot");
      break;
    }
    case "system.status":
      state.system = d;
      soon("summary");
      break;
    default:
      if (env.type.startsWith("session.")) onSession(env, d);
  }
}

function countAlerts(robotId) {
  let n = 0;
  for (const a of state.alerts.values()) if (a.robot === robotId) n++;
  const r = robot(robotId);
  if (r.alerts !== n) { r.alerts = n; state.orderDirty = true; }
}

function onSession(env, d) {
  const s = session(env.robot, env.session);
  if (env.type === "session.state") {
    s.state = Object.assign({}, d);
  } else {
    s.events.push(env);
    if (s.events.length > 300) s.events.shift();
    if (env.type === "session.progress") { s.progress = d; s.progressAt = Date.now(); }
    s.state = Object.assign({ pipeline: d.pipeline, model: d.model, percent: 0 }, s.state || {}, derive(env));
  }
  // The fleet table shows each robot's running (or queued) session.
  const r = robot(env.robot);
  const st = s.state.status;
  if (st === "running" || st === "queued") {
    if (!r.run || r.run === s || (r.run.state && r.run.state.status !== "running")) r.run = s;
  } else if (r.run === s) {
    r.run = null;
    for (const o of state.sessions.values()) {
      if (o.robot === env.robot && o.state && (o.state.status === "running" || o.state.status === "queued")) { r.run = o; break; }
    }
  }
  state.orderDirty = true;
  soon("fleet", "summary", env.robot === state.selectedRobot ? "robot" : "");
}

// derive maps a session event onto session.state fields.
function derive(env) {
  const d = env.data;
  switch (env.type) {
    case "session.queued": return { status: "queued", pipeline: d.pipeline, model: d.model, created_at: env.ts };
    case "session.started": return { status: "running", pipeline: d.pipeline, model: d.model, started_at: env.ts };
    case "session.progress": return { status: "running", percent: d.percent, stage: d.stage, message: d.message, eta_s: d.eta_s };
    case "session.completed": return { status: "completed", percent: 100, result: d.result, finished_at: env.ts };
    case "session.failed": return { status: "failed", error: d.error, finished_at: env.ts };
    case "session.cancelled": return { status: "cancelled", message: d.reason, finished_at: env.ts };
  }
  return {};
}

// latestOf reduces a robot.metrics to the fleet table's numbers (the same
// shape /api/v1/fleet/metrics returns).
function latestOf(m, ts, prev) {
  let temp = null, sensor = "";
  for (const t of m.temperatures || []) if (temp == null || t.celsius > temp) { temp = t.celsius; sensor = t.sensor; }
  const gpus = (m.gpus || []).map((g) => ({ index: g.index, util: g.util_percent, mem: g.mem_total ? 100 * g.mem_used / g.mem_total : 0, temp: g.temp_c }));
  return Object.assign({}, prev, { metrics_at: ts, cpu: m.cpu.percent, mem: m.memory.percent, mem_used: m.memory.used, mem_total: m.memory.total,
    temp, temp_sensor: sensor, gpus, rx_bps: m.net.rx_bps, tx_bps: m.net.tx_bps, spool_depth: m.agent.spool_depth });
}

// pollFleet reads every robot's latest numbers: room fleet carries states,
// alerts and sessions, but robot.metrics only reach robot rooms.
let pollTimer = 0;
async function pollFleet() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(pollFleet, POLL_MS);
  if (state.view !== "fleet" || document.hidden) return;
  let res;
  try {
    res = await fetch("/api/v1/fleet/metrics", { headers: authHeaders(), cache: "no-store" });
  } catch { return; }
  if (res.status === 401) { showLogin("The relay refused this token (expired or invalid?)."); return; }
  if (!res.ok) return;
  const text = await res.text();
  const t0 = performance.now();
  const body = JSON.parse(text);
  for (const l of body.robots || []) {
    const r = robot(l.id);
    if (r.latest && Date.parse(r.latest.metrics_at) >= Date.parse(l.metrics_at || 0)) continue; // a live sample is as new
    r.latest = l;
    if (!r.status && l.state) { r.status = { state: l.state }; r.since = l.since; } // until room fleet's snapshot
  }
  state.orderDirty = true;
  soon("fleet", "summary");
  state.perf.polls.push(performance.now() - t0);
  if (state.perf.polls.length > 100) state.perf.polls.shift();
}

// --- fleet table ------------------------------------------------------------

function hottest(r) { return r.latest && r.latest.temp != null && r.latest.temp_sensor ? r.latest.temp : null; }
function gpuUtil(r) {
  if (!r.latest || !r.latest.gpus || !r.latest.gpus.length) return null;
  return Math.max(...r.latest.gpus.map((g) => g.util));
}
const online = (r) => !!(r.status && r.status.state === "online");

const sortKeys = {
  id: (r) => r.id,
  state: (r) => (online(r) ? 0 : r.status ? 1 : 2),
  cpu: (r) => (r.latest ? r.latest.cpu : -1),
  mem: (r) => (r.latest ? r.latest.mem : -1),
  temp: (r) => { const t = hottest(r); return t == null ? -1e9 : t; },
  gpu: (r) => { const g = gpuUtil(r); return g == null ? -1 : g; },
  alerts: (r) => r.alerts,
  session: (r) => (r.run && r.run.state ? 1000 - (r.run.state.percent || 0) : 1e9),
};

function computeOrder() {
  const f = $("filter").value.trim().toLowerCase();
  const sf = $("state-filter").value;
  const ids = [];
  for (const r of state.robots.values()) {
    if (sf === "online" && !online(r)) continue;
    if (sf === "offline" && online(r)) continue;
    if (sf === "alerting" && !r.alerts) continue;
    if (sf === "running" && !r.run) continue;
    if (f && !r.search.includes(f) && !(r.run && r.run.state && String(r.run.state.pipeline).includes(f)) &&
        !(r.latest && r.latest.temp_sensor && r.latest.temp_sensor.toLowerCase().includes(f))) continue;
    ids.push(r);
  }
  const key = sortKeys[state.sort.key] || sortKeys.id;
  const dir = state.sort.dir;
  const dec = ids.map((r) => [key(r), r.id]); // each key computed once
  dec.sort((a, b) => {
    if (a[0] < b[0]) return -dir;
    if (a[0] > b[0]) return dir;
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  });
  state.order = dec.map((d) => d[1]);
  state.orderDirty = false;
}

// Row pool: one element per visible row, reused as the view scrolls.
const pool = [];
function makeRow() {
  const c = {};
  const row = el("div", { class: "frow", role: "row" });
  c.id = el("button", { class: "link rid" });
  c.dot = el("span", { class: "dot" });
  c.state = el("span", {});
  c.cpuBar = el("div", {}); c.cpuTxt = el("span", { class: "num" });
  c.memBar = el("div", {}); c.memTxt = el("span", { class: "num" });
  c.temp = el("span", { class: "num" });
  c.gpu = el("span", { class: "num" });
  c.alerts = el("span", { class: "count" });
  c.sessTxt = el("span", { class: "sess-txt" }); c.sessBar = el("div", {}); c.sessPct = el("span", { class: "num" });
  c.cancel = el("button", { class: "cancel" }, "Cancel");
  row.append(
    el("div", { role: "cell" }, c.id),
    el("div", { role: "cell", class: "st" }, c.dot, c.state),
    el("div", { role: "cell", class: "meter" }, el("div", { class: "bar" }, c.cpuBar), c.cpuTxt),
    el("div", { role: "cell", class: "meter" }, el("div", { class: "bar" }, c.memBar), c.memTxt),
    el("div", { role: "cell" }, c.temp),
    el("div", { role: "cell" }, c.gpu),
    el("div", { role: "cell" }, c.alerts),
    el("div", { role: "cell", class: "meter sess" }, c.sessTxt, el("div", { class: "bar" }, c.sessBar), c.sessPct),
    el("div", { role: "cell" }, c.cancel));
  row.addEventListener("click", () => { if (row.dataset.robot) go(`#/robot/${encodeURIComponent(row.dataset.robot)}`); });
  c.cancel.addEventListener("click", (e) => {
    e.stopPropagation();
    const r = state.robots.get(row.dataset.robot);
    if (r && r.run) cancel(r.id, r.run.id);
  });
  c.row = row;
  c.index = -1;
  return c;
}

function fillRow(c, r) {
  if (c.row.dataset.robot !== r.id) c.row.dataset.robot = r.id;
  setText(c.id, r.id);
  const on = online(r);
  const dotCls = "dot " + (r.status ? (on ? "online" : "offline") : "unknown");
  if (c.dot.className !== dotCls) c.dot.className = dotCls;
  setText(c.state, r.status ? `${r.status.state}${r.status.reason ? " (" + r.status.reason + ")" : ""} · ${ago(r.since)}` : "–");
  const l = r.latest;
  setWidth(c.cpuBar, l ? l.cpu : 0); setText(c.cpuTxt, l ? pct(l.cpu) : "–");
  setWidth(c.memBar, l ? l.mem : 0); setText(c.memTxt, l ? pct(l.mem) : "–");
  const t = hottest(r);
  setText(c.temp, t == null ? "–" : `${t.toFixed(1)} °C`);
  const hot = t != null && t >= 80 ? "num hot" : "num";
  if (c.temp.className !== hot) c.temp.className = hot;
  const g = gpuUtil(r);
  setText(c.gpu, g == null ? "–" : `${g.toFixed(0)} %${l.gpus.length > 1 ? ` ×${l.gpus.length}` : ""} · ${Math.max(...l.gpus.map((x) => x.temp)).toFixed(0)} °C`);
  setText(c.alerts, r.alerts ? String(r.alerts) : "");
  const ac = r.alerts ? "count firing" : "count";
  if (c.alerts.className !== ac) c.alerts.className = ac;
  const ss = r.run && r.run.state;
  setText(c.sessTxt, ss ? `${ss.pipeline || ""} ${ss.stage ? "· " + ss.stage : ss.status}` : "");
  setWidth(c.sessBar, ss ? ss.percent : 0);
  setText(c.sessPct, ss ? `${(ss.percent || 0).toFixed(0)} %` : "");
  // visibility, not display: rebinding a row to another robot must not
  // rebuild the layout tree.
  c.sessBar.parentNode.classList.toggle("off", !ss);
  c.cancel.classList.toggle("off", !(ss && canCommand()));
  if (c.cancel.dataset.session !== (ss ? r.run.id : "")) c.cancel.dataset.session = ss ? r.run.id : "";
}

// Rows are pooled and keyed by position: logical row i is always drawn by
// pool[i % pool.length] at translateY(i * ROW_H), so scrolling rebinds only
// the rows that enter the view; the others keep their content and move.
let spacerH = -1;
function renderFleet() {
  // Layout is read first, before anything is written, so that a frame never
  // forces a synchronous layout.
  const scroll = $("fleet-scroll");
  const top = scroll.scrollTop;
  const h = scroll.clientHeight || 600;
  if (state.orderDirty) computeOrder();
  const n = state.order.length;
  if (spacerH !== n * ROW_H) { spacerH = n * ROW_H; $("fleet-spacer").style.height = `${spacerH}px`; }
  $("fleet-empty").hidden = n > 0;
  setText($("fleet-count"), `${n} of ${state.robots.size} robots`);
  const size = Math.ceil(h / ROW_H) + 2 * OVERSCAN;
  const rows = $("fleet-rows");
  while (pool.length < size) { const c = makeRow(); pool.push(c); rows.append(c.row); }
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const end = Math.min(n, first + pool.length);
  const used = new Set();
  for (let i = first; i < end; i++) {
    const c = pool[i % pool.length];
    used.add(c);
    if (c.row.hidden) c.row.hidden = false;
    if (c.index !== i) {
      c.index = i;
      c.row.style.transform = `translateY(${i * ROW_H}px)`;
    }
    fillRow(c, state.robots.get(state.order[i]));
  }
  for (const c of pool) {
    if (!used.has(c) && !c.row.hidden) { c.row.hidden = true; c.index = -1; delete c.row.dataset.robot; }
  }
}

function setSort(key) {
  if (state.sort.key === key) state.sort.dir = -state.sort.dir;
  else state.sort = { key, dir: key === "id" || key === "state" ? 1 : -1 };
  sortHeaders();
  state.orderDirty = true;
  mark("fleet");
}

function sortHeaders() {
  const key = state.sort.key;
  for (const h of document.querySelectorAll("#fleet-head [data-sort]")) {
    h.className = h.dataset.sort === key ? (state.sort.dir > 0 ? "sorted asc" : "sorted desc") : "";
  }
}

// --- summary, alerts ----------------------------------------------------------

function renderSummary() {
  let on = 0, running = 0;
  for (const r of state.robots.values()) {
    if (online(r)) on++;
    if (r.run && r.run.state && r.run.state.status === "running") running++;
  }
  const d = state.system;
  setText($("sum-online"), String(d ? d.robots_online : on));
  setText($("sum-known"), String(d ? d.robots_known : state.robots.size));
  setText($("sum-running"), String(d ? d.sessions_running : running));
  setText($("sum-alerts"), String(state.alerts.size));
}

function renderAlerts() {
  setText($("alert-count"), String(state.alerts.size));
  const items = [...state.alerts.values()].slice(0, 200).map((env) =>
    el("li", { class: "alert " + env.data.severity },
      el("button", { class: "link", onclick: () => go(`#/robot/${encodeURIComponent(env.robot)}`) }, env.robot), " ",
      env.data.alert, ": ", env.data.message));
  $("alert-list").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "none firing")]));
}

// --- robot view ---------------------------------------------------------------

function setOptions(select, values) {
  const cur = select.value;
  const same = select.options.length === values.length && values.every((v, i) => select.options[i].value === v);
  if (!same) select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
  if (values.includes(cur)) select.value = cur;
}

function kv(list, rows) {
  list.replaceChildren(...(rows.length ? rows.map(([k, v]) => el("li", {}, el("span", {}, k), el("b", {}, v))) : [el("li", { class: "muted" }, "none")]));
}

function renderRobot() {
  const id = state.selectedRobot;
  if (!id) return;
  const r = robot(id);
  const st = r.status;
  setText($("rv-name"), id);
  setText($("crumb-robot"), id);
  const on = online(r);
  setText($("rv-state"), st ? st.state : "unknown");
  $("rv-state").className = "badge " + (on ? "online" : "offline");
  setText($("rv-since"), st && r.since ? `since ${fmtTime(r.since)} (${ago(r.since)})` : "");
  setText($("rv-info"), st && st.hostname !== undefined ? `${st.hostname} · ${st.os}/${st.arch} · agent ${st.agent_version}` : "");
  setOptions($("sf-pipeline"), (st && st.pipelines) || []);
  setOptions($("sf-model"), (st && st.models) || []);
  $("sf-submit").disabled = !on;
  $("start-box").hidden = !canCommand();

  const m = r.metrics;
  if (m) {
    setText($("m-cpu"), pct(m.cpu.percent));
    setWidth($("m-cpu-bar"), m.cpu.percent);
    setText($("m-load"), `load ${m.cpu.load1.toFixed(2)} ${m.cpu.load5.toFixed(2)} ${m.cpu.load15.toFixed(2)} · ${m.cpu.per_core.length} cores`);
    setText($("m-mem"), pct(m.memory.percent));
    setWidth($("m-mem-bar"), m.memory.percent);
    setText($("m-mem-detail"), `${fmtBytes(m.memory.used)} of ${fmtBytes(m.memory.total)} · swap ${pct(m.swap.percent)}`);
    kv($("m-temps"), m.temperatures.map((t) => [t.sensor, `${t.celsius.toFixed(1)} °C`]));
    kv($("m-gpus"), m.gpus.map((g) => [`${g.index} ${g.name}`, `${pct(g.util_percent)} · ${g.temp_c.toFixed(0)} °C · ${fmtBytes(g.mem_used)}`]));
    kv($("m-disks"), m.disks.map((d) => [d.mount, `${pct(d.percent)} of ${fmtBytes(d.total)}`]));
    kv($("m-net"), [["rx", `${fmtBytes(m.net.rx_bps)}/s`], ["tx", `${fmtBytes(m.net.tx_bps)}/s`],
      ["agent RSS", fmtBytes(m.agent.rss_bytes)], ["agent CPU", pct(m.agent.cpu_percent)], ["outbox", String(m.agent.spool_depth)]]);
  }
  renderSessions(id);
  const notifs = state.notifs.get(id) || [];
  $("notif-list").replaceChildren(...(notifs.length ? notifs.slice().reverse().map((e) =>
    el("li", { class: "notif " + (e.data.level || "info") }, el("time", {}, fmtTime(e.ts)), " ", el("b", {}, e.data.title || ""), " ", e.data.message || ""))
    : [el("li", { class: "muted" }, "none")]));
}

function elapsedOf(s) {
  const ss = s.state || {};
  if (ss.started_at && ss.finished_at) return (Date.parse(ss.finished_at) - Date.parse(ss.started_at)) / 1000;
  if (ss.status !== "running") return null;
  if (s.progress && s.progress.elapsed_s != null) return s.progress.elapsed_s + (Date.now() - s.progressAt) / 1000;
  return ss.started_at ? (Date.now() - Date.parse(ss.started_at)) / 1000 : null;
}

const preferredMetrics = ["compression_ratio", "size_before", "size_after", "max_abs_error"];

function resultSummary(ss) {
  if (ss.error) return `${ss.error.code}: ${ss.error.message || ""}`;
  const m = ss.result && ss.result.metrics;
  if (!m) return "";
  const rank = (k) => { const i = preferredMetrics.indexOf(k); return i < 0 ? 99 : i; };
  return Object.entries(m).sort((a, b) => rank(a[0]) - rank(b[0])).slice(0, 3).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toPrecision(4) : v}`).join(" · ");
}

function renderSessions(id) {
  const rows = [...state.sessions.values()].filter((s) => s.robot === id)
    .sort((a, b) => String((b.state && (b.state.created_at || b.state.started_at)) || "").localeCompare(String((a.state && (a.state.created_at || a.state.started_at)) || "")));
  $("session-rows").replaceChildren(...rows.map((s) => {
    const ss = s.state || {};
    const active = ss.status === "queued" || ss.status === "running";
    const eta = ss.status === "running" && ss.eta_s != null ? fmtDur(ss.eta_s) : "";
    return el("tr", { class: s.key === state.selectedSession ? "selected" : "", "data-session": s.id, onclick: () => selectSession(s.key) },
      el("td", { class: "mono" }, s.id), el("td", {}, `${ss.pipeline || ""} · ${ss.model || ""}`),
      el("td", {}, fmtTime(ss.started_at || ss.created_at)), el("td", {}, fmtDur(elapsedOf(s))),
      el("td", {}, el("span", { class: "badge " + (ss.status || "") }, ss.status || "?")),
      el("td", {}, progressBar(ss.percent), el("span", { class: "num" }, ` ${(ss.percent || 0).toFixed(0)} %`)),
      el("td", { class: "msg" }, [ss.stage, ss.message].filter(Boolean).join(" · ")),
      el("td", {}, eta), el("td", { class: "msg" }, resultSummary(ss)),
      el("td", {}, active && canCommand() ? el("button", { class: "cancel", onclick: (e) => { e.stopPropagation(); cancel(id, s.id); } }, "Cancel") : ""));
  }));
  if (!rows.length) $("session-rows").replaceChildren(el("tr", {}, el("td", { class: "muted", colspan: "10" }, "no sessions yet")));

  const key = state.selectedSession;
  $("session-detail").hidden = !key;
  if (!key) return;
  const s = state.sessions.get(key);
  if (!s) return;
  const ss = s.state || {};
  setText($("sd-id"), s.id);
  setWidth($("sd-bar"), ss.percent);
  const el2 = elapsedOf(s);
  const eta = ss.eta_s != null && ss.status === "running" ? ` · ETA ${fmtDur(ss.eta_s)}` : "";
  setText($("sd-status"), `${ss.status || "?"} · ${(ss.percent || 0).toFixed(1)} % · ${ss.stage || ""} ${ss.message || ""} · ${ss.status === "running" ? "elapsed" : "took"} ${fmtDur(el2)}${eta}`);
  $("sd-error").hidden = !ss.error;
  if (ss.error) {
    setText($("sd-error-code"), ss.error.code || "error");
    setText($("sd-error-message"), ss.error.message || "");
    setText($("sd-stderr"), ss.error.detail || "(no stderr)");
  }
  const metrics = (ss.result && ss.result.metrics) || {};
  kv($("sd-metrics"), Object.entries(metrics).map(([k, v]) => [k, typeof v === "number" ? String(+v.toPrecision(6)) : String(v)]));
  $("sd-metrics").hidden = !ss.result;
  setText($("sd-result"), ss.result ? JSON.stringify(ss.result, null, 2) : ss.error ? JSON.stringify(ss.error, null, 2) : "");
  $("sd-events").replaceChildren(...s.events.slice(-50).reverse().map((e) =>
    el("li", {}, el("time", {}, e.ts.slice(11, 23)), " ", e.type, " ", e.type === "session.progress" ? `${e.data.percent.toFixed(1)} % ${e.data.stage}` : "")));
}

function progressBar(p) {
  const inner = el("div", {});
  setWidth(inner, p);
  return el("div", { class: "bar" }, inner);
}

function selectSession(key) {
  const prev = state.sessions.get(state.selectedSession);
  if (prev && state.selectedSession !== key) unsubscribe(`session:${prev.id}`);
  state.selectedSession = key;
  const s = state.sessions.get(key);
  if (s) subscribe(`session:${s.id}`);
  mark("robot");
}

function cancel(robotId, sid) {
  command(robotId, "cancel_session", { session_id: sid, reason: "cancelled from the dashboard" }, (err) => {
    if (err) alert(`cancel failed: ${err.code} ${err.message || ""}`);
  });
}

function startSession(ev) {
  ev.preventDefault();
  const out = $("sf-result");
  let params;
  try { params = JSON.parse($("sf-params").value || "{}"); } catch (e) { out.textContent = `params: not JSON (${e.message})`; return; }
  const robotId = state.selectedRobot;
  out.textContent = "sending…";
  command(robotId, "start_session", { pipeline: $("sf-pipeline").value, model: $("sf-model").value, params }, (err, result) => {
    if (err) { out.textContent = `refused: ${err.code}${err.message ? " — " + err.message : ""}`; return; }
    out.textContent = `session ${result.session_id} ${result.status}`;
    const s = session(robotId, result.session_id);
    if (!s.state) s.state = { status: result.status, created_at: new Date().toISOString() };
    selectSession(s.key);
  });
}

// --- charts -------------------------------------------------------------------

// Each chart draws some of the history's series; groups choose them by name.
const chartDefs = [
  { el: "chart-cpu", test: (n) => n === "cpu" || n === "mem", label: (n) => (n === "cpu" ? "CPU" : "memory"), range: [0, 100] },
  { el: "chart-temp", test: (n) => n.startsWith("temp:") || /^gpu\d+_temp$/.test(n), label: (n) => n.replace(/^temp:/, "").replace(/_temp$/, "") },
  { el: "chart-gpu", test: (n) => /^gpu\d+_(util|mem)$/.test(n), label: (n) => n.replace("_util", " util").replace("_mem", " memory"), range: [0, 100] },
  { el: "chart-net", test: (n) => n === "net_rx" || n === "net_tx", label: (n) => (n === "net_rx" ? "rx" : "tx"), bytes: true },
];
const palette = ["#3fa7ff", "#f6ad55", "#38c172", "#f56565", "#b794f4", "#4fd1c5", "#f687b3", "#ecc94b", "#a0aec0"];

// charts.hist: {t: [...], series: {name: [...]}} for the open robot.
const charts = { robot: "", hist: null, plots: [], names: "", loading: 0 };

// historyRetry is how soon a robot the relay has no history of yet (it
// just came online) is asked again.
const historyRetry = 2000;

async function loadHistory(id) {
  charts.robot = id;
  charts.hist = { t: [], series: {} };
  destroyCharts();
  const my = ++charts.loading;
  setText($("charts-note"), "loading…");
  fetchHistory(id, my);
}

async function fetchHistory(id, my) {
  let body = null, none = false;
  try {
    const res = await fetch(`/api/v1/robots/${encodeURIComponent(id)}/metrics`, { headers: authHeaders(), cache: "no-store" });
    if (res.ok) body = await res.json();
    else if (res.status === 404) none = true;
    else setText($("charts-note"), `history: HTTP ${res.status}`);
  } catch (e) { setText($("charts-note"), `history: ${e.message}`); }
  if (my !== charts.loading || charts.robot !== id) return;
  if (none) setTimeout(() => { if (my === charts.loading && charts.robot === id) fetchHistory(id, my); }, historyRetry);
  if (body) {
    // Live points that arrived while loading are newer: keep them after the history.
    const live = charts.hist;
    const h = { t: body.t.slice(), series: {} };
    for (const [k, v] of Object.entries(body.series)) h.series[k] = v.slice();
    for (let i = 0; i < live.t.length; i++) {
      if (h.t.length && live.t[i] <= h.t[h.t.length - 1]) continue;
      pushPoint(h, live.t[i], Object.fromEntries(Object.entries(live.series).map(([k, v]) => [k, v[i]])));
    }
    charts.hist = h;
    setText($("charts-note"), `history every ${body.step_s} s, live every sample`);
  } else if (!$("charts-note").textContent.startsWith("history:")) setText($("charts-note"), "no history yet");
  mark("charts");
}

function pushPoint(h, t, values) {
  const n = h.t.length;
  h.t.push(t);
  for (const k of Object.keys(values)) if (!h.series[k]) h.series[k] = new Array(n).fill(null);
  for (const [k, arr] of Object.entries(h.series)) arr.push(values[k] == null ? null : values[k]);
  // Keep the window.
  const cut = t - WINDOW_S;
  let drop = 0;
  while (drop < h.t.length && h.t[drop] < cut) drop++;
  if (drop) { h.t.splice(0, drop); for (const arr of Object.values(h.series)) arr.splice(0, drop); }
}

function chartsAppend(env) {
  if (!charts.hist || charts.robot !== env.robot) return;
  const m = env.data;
  const v = { cpu: m.cpu.percent, mem: m.memory.percent, net_rx: m.net.rx_bps, net_tx: m.net.tx_bps };
  for (const t of (m.temperatures || []).slice(0, 8)) v[`temp:${t.sensor}`] = t.celsius;
  for (const g of (m.gpus || []).slice(0, 4)) {
    v[`gpu${g.index}_util`] = g.util_percent;
    v[`gpu${g.index}_mem`] = g.mem_total ? 100 * g.mem_used / g.mem_total : 0;
    v[`gpu${g.index}_temp`] = g.temp_c;
  }
  const t = Date.parse(env.ts) / 1000;
  const h = charts.hist;
  if (h.t.length && t <= h.t[h.t.length - 1]) return;
  pushPoint(h, t, v);
}

function destroyCharts() {
  for (const p of charts.plots) if (p.plot) p.plot.destroy();
  charts.plots = [];
  charts.names = "";
  for (const d of chartDefs) $(d.el).replaceChildren();
}

function renderCharts() {
  const h = charts.hist;
  if (!h || typeof uPlot === "undefined" || state.view !== "robot") return;
  const names = Object.keys(h.series).sort();
  if (names.join("|") !== charts.names) {
    destroyCharts();
    charts.names = names.join("|");
    for (const d of chartDefs) {
      const mine = names.filter(d.test);
      const box = $(d.el);
      if (!mine.length) { box.replaceChildren(el("p", { class: "muted" }, "no data")); charts.plots.push({ def: d, names: [] }); continue; }
      const opts = {
        width: Math.max(240, box.clientWidth || 400), height: 150,
        legend: { show: true, live: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: d.range ? { range: d.range } : { auto: true } },
        axes: [
          { stroke: "#7d8896", grid: { stroke: "#27303a" }, ticks: { stroke: "#27303a" } },
          { stroke: "#7d8896", grid: { stroke: "#27303a" }, ticks: { stroke: "#27303a" }, size: 56,
            values: d.bytes ? (u, vals) => vals.map((x) => fmtBytes(x)) : undefined },
        ],
        series: [{}].concat(mine.map((n, i) => ({ label: d.label(n), stroke: palette[i % palette.length], width: 1.5, spanGaps: false }))),
      };
      charts.plots.push({ def: d, names: mine, plot: new uPlot(opts, [h.t, ...mine.map((n) => h.series[n])], box) });
    }
    return;
  }
  for (const p of charts.plots) if (p.plot) p.plot.setData([h.t, ...p.names.map((n) => h.series[n])]);
}

function resizeCharts() {
  for (const p of charts.plots) {
    if (!p.plot) continue;
    const w = Math.max(240, $(p.def.el).clientWidth || 400);
    if (Math.abs(p.plot.width - w) > 4) p.plot.setSize({ width: w, height: 150 });
  }
}

// --- views --------------------------------------------------------------------

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function route() {
  const m = location.hash.match(/^#\/robot\/([^/]+)$/);
  const id = m ? decodeURIComponent(m[1]) : "";
  if (id) openRobot(id); else openFleet();
}

function openFleet() {
  if (state.selectedRobot) unsubscribe(`robot:${state.selectedRobot}`);
  const prev = state.sessions.get(state.selectedSession);
  if (prev) unsubscribe(`session:${prev.id}`);
  state.selectedRobot = "";
  state.selectedSession = "";
  state.view = "fleet";
  charts.hist = null;
  destroyCharts();
  $("fleet-view").hidden = false;
  $("robot-view").hidden = true;
  $("crumb").hidden = true;
  pollFleet();
  mark("fleet", "summary", "alerts");
}

function openRobot(id) {
  if (state.selectedRobot === id && state.view === "robot") return;
  if (state.selectedRobot && state.selectedRobot !== id) unsubscribe(`robot:${state.selectedRobot}`);
  const prev = state.sessions.get(state.selectedSession);
  if (prev) unsubscribe(`session:${prev.id}`);
  state.selectedSession = "";
  state.selectedRobot = id;
  state.view = "robot";
  $("fleet-view").hidden = true;
  $("robot-view").hidden = false;
  $("crumb").hidden = false;
  subscribe(`robot:${id}`);
  loadHistory(id);
  mark("robot", "charts");
}

// --- render loop --------------------------------------------------------------

function render() {
  state.frame = 0;
  const t0 = performance.now();
  const d = state.dirty;
  if (d.has("summary")) renderSummary();
  if (d.has("alerts")) renderAlerts();
  if (state.view === "fleet" && d.has("fleet")) renderFleet();
  if (state.view === "robot") {
    if (d.has("robot")) renderRobot();
    if (d.has("charts")) renderCharts();
  }
  d.clear();
  const p = state.perf.renders;
  p.push(performance.now() - t0);
  state.perf.count++;
  if (p.length > state.perf.max) p.shift();
}

// fleetPerf is read by the browser tests: render times (ms) of the page's
// own frames, newest last.
window.fleetPerf = () => ({ renders: state.perf.renders.slice(), count: state.perf.count, msgMs: state.perf.msgMs, msgs: state.perf.msgs,
  polls: state.perf.polls.slice(), chartPoints: charts.hist ? charts.hist.t.length : 0, robots: state.robots.size, rows: pool.filter((c) => !c.row.hidden).length });

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", () => { state.orderDirty = true; mark("fleet"); });
  $("state-filter").addEventListener("change", () => { state.orderDirty = true; mark("fleet"); });
  $("fleet-scroll").addEventListener("scroll", () => mark("fleet"), { passive: true });
  for (const h of document.querySelectorAll("#fleet-head [data-sort]")) h.addEventListener("click", () => setSort(h.dataset.sort));
  $("start-form").addEventListener("submit", startSession);
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("fleet-token", $("login-token").value.trim());
    $("login").hidden = true;
    if (state.ws) state.ws.close();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => { resizeCharts(); mark("fleet"); });
  // "since", elapsed and ETA move with the clock.
  setInterval(() => mark("fleet", state.view === "robot" ? "robot" : ""), 1000);
  state.token = tokenFromPage();
  route();
  sortHeaders();
  connect();
});
