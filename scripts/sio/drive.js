#!/usr/bin/env node
// Drives the relay's Socket.IO endpoint with the real socket.io-client, for
// the Go tests of cloud/socketio (and by hand).
//
// Usage: node drive.js
// Commands come on stdin, one JSON object per line; everything the client
// sees goes to stdout, one JSON object per line:
//
//   {"op":"connect","url":"http://127.0.0.1:8080","token":"T","transports":["polling"],"upgrade":true,"reconnection":false}
//       → {"type":"connect","sid":...,"transport":"polling"}, or {"type":"connect_error","message":...,"data":{...}}
//   {"op":"emit","ref":"r1","event":"subscribe_session","arg":{"session_id":"s-1"},"ack":true}
//       → {"type":"ack","ref":"r1","data":...} (or {"type":"ack_timeout","ref":"r1"})
//   {"op":"drop"}        closes the transport under the client (a network drop); the client reconnects
//   {"op":"disconnect"}  socket.disconnect()
//   {"op":"exit"}
//
// Every event from the server: {"type":"event","event":NAME,"data":ARG}.
// Also {"type":"open","transport":...} when the Engine.IO session opens,
// {"type":"upgrade","transport":...}, {"type":"disconnect","reason":...},
// {"type":"reconnect","attempt":N}, {"type":"error","message":...}.
"use strict";

const readline = require("node:readline");
const { io } = require("socket.io-client");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let socket = null;

function connect(c) {
  socket = io(c.url, {
    path: c.path || "/socket.io/",
    auth: c.token === undefined ? {} : { token: c.token },
    transports: c.transports || ["polling", "websocket"],
    upgrade: c.upgrade !== false,
    reconnection: c.reconnection === true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    timeout: 5000,
    forceNew: true,
  });
  socket.io.on("open", () => {
    const engine = socket.io.engine;
    out({ type: "open", transport: engine.transport.name });
    engine.once("upgrade", (t) => out({ type: "upgrade", transport: t.name }));
  });
  socket.on("connect", () => out({ type: "connect", sid: socket.id, transport: socket.io.engine.transport.name }));
  socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, data: err.data === undefined ? null : err.data }));
  socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
  socket.io.on("reconnect", (attempt) => out({ type: "reconnect", attempt }));
  socket.onAny((event, arg) => out({ type: "event", event, data: arg === undefined ? null : arg }));
}

async function emit(c) {
  if (!c.ack) {
    socket.emit(c.event, c.arg);
    return;
  }
  try {
    const data = await socket.timeout(c.timeout || 5000).emitWithAck(c.event, c.arg);
    out({ type: "ack", ref: c.ref, data });
  } catch (err) {
    out({ type: "ack_timeout", ref: c.ref, message: String(err && err.message) });
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let c;
  try {
    c = JSON.parse(line);
  } catch (err) {
    out({ type: "error", message: "bad command: " + err.message });
    return;
  }
  switch (c.op) {
    case "connect":
      connect(c);
      break;
    case "emit":
      emit(c);
      break;
    case "drop":
      socket.io.engine.close();
      break;
    case "disconnect":
      socket.disconnect();
      break;
    case "exit":
      if (socket) socket.disconnect();
      setImmediate(() => process.exit(0));
      break;
    default:
      out({ type: "error", message: "unknown op " + c.op });
  }
});
rl.on("close", () => process.exit(0));
