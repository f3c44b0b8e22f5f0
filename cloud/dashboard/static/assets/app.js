// Fleet dashboard: one WebSocket to the relay's /ws, rooms fleet + the chosen
// robot + the chosen session, resume with since_seq after a reconnect.
// All text from robots goes through textContent, never innerHTML.
"use strict";

const state = {
  ws: null,
  connected: false,
  everOpened: false,
  backoff: 1000,
  token: "",
  robots: new Map(),   // id -> {status, metrics}
  alerts: new Map(),   // robot/alert -> envelope
  sessions: new Map(), // id -> {robot, state, events: []}
  rooms: new Map(),    // room -> highest seq seen (resume point)
  seen: new Set(),     // recent event ids (a snapshot and a live event may repeat)
  seenOrder: [],
  system: null,        // latest system.status data
  selectedRobot: "",
  selectedSession: "",
  pending: new Map(),  // ref -> callback
  nextRef: 1,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtBytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${u[i]}`;
}
const pct = (v) => (v == null ? "–" : `${v.toFixed(1)} %`);

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
    state.everOpened = true;
    state.backoff = 1000;
    $("login").hidden = true;
  };
  ws.onmessage = (m) => {
    let f;
    try { f = JSON.parse(m.data); } catch { return; }
    onFrame(f);
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
      setConn(true, "live");
      for (const room of state.rooms.keys()) subscribe(room);
      if (!state.rooms.has("fleet")) subscribe("fleet");
      break;
    case "subscribed":
      for (const env of f.snapshot || []) onEvent(f.room, env);
      render();
      break;
    case "event":
      onEvent(f.room, f.event);
      render();
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

// --- state ------------------------------------------------------------------

function robot(id) {
  if (!state.robots.has(id)) state.robots.set(id, { status: null, metrics: null });
  return state.robots.get(id);
}

function session(id, robotId) {
  if (!state.sessions.has(id)) state.sessions.set(id, { robot: robotId, state: null, events: [] });
  return state.sessions.get(id);
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
  if (state.seenOrder.length > 5000) state.seen.delete(state.seenOrder.shift());

  const d = env.data || {};
  switch (env.type) {
    case "robot.status": robot(env.robot).status = d; break;
    case "robot.metrics": robot(env.robot).metrics = d; break;
    case "robot.alert": {
      const k = `${env.robot}/${d.alert}`;
      if (d.state === "firing") state.alerts.set(k, env); else state.alerts.delete(k);
      break;
    }
    case "system.status":
      state.system = d;
      break;
    case "robot.notification":
      console.info("notification", env.robot, d.title, d.message);
      break;
    default:
      if (env.type.startsWith("session.")) {
        const s = session(env.session, env.robot);
        if (env.type === "session.state") s.state = d;
        else {
          s.events.push(env);
          if (s.events.length > 300) s.events.shift();
          s.state = Object.assign({ pipeline: d.pipeline, model: d.model, percent: 0 }, s.state || {}, derive(env));
        }
      }
  }
}

// derive maps a session event onto session.state fields.
function derive(env) {
  const d = env.data;
  switch (env.type) {
    case "session.queued": return { status: "queued", pipeline: d.pipeline, model: d.model };
    case "session.started": return { status: "running", pipeline: d.pipeline, model: d.model };
    case "session.progress": return { status: "running", percent: d.percent, stage: d.stage, message: d.message, eta_s: d.eta_s };
    case "session.completed": return { status: "completed", percent: 100, result: d.result };
    case "session.failed": return { status: "failed", error: d.error };
    case "session.cancelled": return { status: "cancelled", message: d.reason };
  }
  return {};
}

// --- rendering --------------------------------------------------------------

function render() {
  renderSummary();
  renderRobots();
  renderAlerts();
  renderRobot();
}

// renderSummary shows the relay's system.status, or what the page itself
// knows until the first one arrives (every 10 s).
function renderSummary() {
  let d = state.system;
  if (!d) {
    const robots = [...state.robots.values()];
    d = {
      robots_online: robots.filter((r) => r.status && r.status.state === "online").length,
      robots_known: robots.length,
      sessions_running: [...state.sessions.values()].filter((s) => s.state && s.state.status === "running").length,
    };
  }
  $("sum-online").textContent = d.robots_online;
  $("sum-known").textContent = d.robots_known;
  $("sum-running").textContent = d.sessions_running;
}

function renderRobots() {
  const list = $("robot-list");
  const filter = $("filter").value.trim().toLowerCase();
  const ids = [...state.robots.keys()].filter((id) => id.toLowerCase().includes(filter)).sort();
  list.replaceChildren(...ids.map((id) => {
    const st = state.robots.get(id).status;
    const online = st && st.state === "online";
    const li = el("li", { class: "robot" + (id === state.selectedRobot ? " selected" : ""), "data-robot": id, onclick: () => selectRobot(id) },
      el("span", { class: "dot " + (online ? "online" : "offline") }), id,
      el("span", { class: "muted small" }, st ? (online ? "online" : `offline (${st.reason || "?"})`) : ""));
    return li;
  }));
  if (!ids.length) list.replaceChildren(el("li", { class: "muted" }, "no robots yet"));
}

function renderAlerts() {
  const items = [...state.alerts.values()].map((env) =>
    el("li", { class: "alert " + env.data.severity }, el("b", {}, env.robot), " ", env.data.alert, ": ", env.data.message));
  $("alert-list").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "none firing")]));
}

function selectRobot(id) {
  if (state.selectedRobot && state.selectedRobot !== id) unsubscribe(`robot:${state.selectedRobot}`);
  if (state.selectedSession) { unsubscribe(`session:${state.selectedSession}`); state.selectedSession = ""; }
  state.selectedRobot = id;
  subscribe(`robot:${id}`);
  render();
}

function selectSession(id) {
  if (state.selectedSession && state.selectedSession !== id) unsubscribe(`session:${state.selectedSession}`);
  state.selectedSession = id;
  subscribe(`session:${id}`);
  render();
}

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
  $("robot-empty").hidden = !!id;
  $("robot-detail").hidden = !id;
  if (!id) return;
  const r = robot(id);
  const st = r.status;
  $("rv-name").textContent = id;
  const online = st && st.state === "online";
  $("rv-state").textContent = st ? st.state : "unknown";
  $("rv-state").className = "badge " + (online ? "online" : "offline");
  $("rv-info").textContent = st ? `${st.hostname} · ${st.os}/${st.arch} · agent ${st.agent_version}` : "";
  setOptions($("sf-pipeline"), (st && st.pipelines) || []);
  setOptions($("sf-model"), (st && st.models) || []);
  $("sf-submit").disabled = !online;

  const m = r.metrics;
  if (m) {
    $("m-cpu").textContent = pct(m.cpu.percent);
    $("m-cpu-bar").style.width = `${m.cpu.percent}%`;
    $("m-load").textContent = `load ${m.cpu.load1.toFixed(2)} ${m.cpu.load5.toFixed(2)} ${m.cpu.load15.toFixed(2)} · ${m.cpu.per_core.length} cores`;
    $("m-mem").textContent = pct(m.memory.percent);
    $("m-mem-bar").style.width = `${m.memory.percent}%`;
    $("m-mem-detail").textContent = `${fmtBytes(m.memory.used)} of ${fmtBytes(m.memory.total)} · swap ${pct(m.swap.percent)}`;
    kv($("m-temps"), m.temperatures.map((t) => [t.sensor, `${t.celsius.toFixed(1)} °C`]));
    kv($("m-gpus"), m.gpus.map((g) => [`${g.index} ${g.name}`, `${pct(g.util_percent)} · ${g.temp_c.toFixed(0)} °C · ${fmtBytes(g.mem_used)}`]));
    kv($("m-disks"), m.disks.map((d) => [d.mount, `${pct(d.percent)} of ${fmtBytes(d.total)}`]));
    kv($("m-net"), [["rx", `${fmtBytes(m.net.rx_bps)}/s`], ["tx", `${fmtBytes(m.net.tx_bps)}/s`],
      ["agent RSS", fmtBytes(m.agent.rss_bytes)], ["agent CPU", pct(m.agent.cpu_percent)], ["outbox", String(m.agent.spool_depth)]]);
  }

  const rows = [...state.sessions.entries()].filter(([, s]) => s.robot === id)
    .sort((a, b) => String(b[1].state && b[1].state.created_at).localeCompare(String(a[1].state && a[1].state.created_at)));
  $("session-rows").replaceChildren(...rows.map(([sid, s]) => {
    const ss = s.state || {};
    const active = ss.status === "queued" || ss.status === "running";
    return el("tr", { class: sid === state.selectedSession ? "selected" : "", "data-session": sid, onclick: () => selectSession(sid) },
      el("td", {}, sid), el("td", {}, ss.pipeline || ""), el("td", {}, ss.model || ""),
      el("td", {}, el("span", { class: "badge " + (ss.status || "") }, ss.status || "?")),
      el("td", {}, el("div", { class: "bar" }, el("div", { style: `width:${ss.percent || 0}%` }))),
      el("td", {}, active ? el("button", { class: "cancel", onclick: (e) => { e.stopPropagation(); cancel(id, sid); } }, "Cancel") : ""));
  }));

  const sid = state.selectedSession;
  $("session-detail").hidden = !sid;
  if (sid) {
    const s = session(sid, id);
    const ss = s.state || {};
    $("sd-id").textContent = sid;
    $("sd-bar").style.width = `${ss.percent || 0}%`;
    const eta = ss.eta_s != null && ss.status === "running" ? ` · ETA ${Math.round(ss.eta_s)} s` : "";
    $("sd-status").textContent = `${ss.status || "?"} · ${(ss.percent || 0).toFixed(1)} % · ${ss.stage || ""} ${ss.message || ""}${eta}`;
    $("sd-result").textContent = ss.result ? JSON.stringify(ss.result, null, 2) : ss.error ? JSON.stringify(ss.error, null, 2) : "";
    $("sd-events").replaceChildren(...s.events.slice(-50).reverse().map((e) =>
      el("li", {}, el("time", {}, e.ts.slice(11, 23)), " ", e.type, " ", e.type === "session.progress" ? `${e.data.percent.toFixed(1)} % ${e.data.stage}` : "")));
  }
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
    session(result.session_id, robotId);
    selectSession(result.session_id);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", renderRobots);
  $("start-form").addEventListener("submit", startSession);
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("fleet-token", $("login-token").value.trim());
    $("login").hidden = true;
    if (state.ws) state.ws.close();
  });
  render();
  connect();
});
