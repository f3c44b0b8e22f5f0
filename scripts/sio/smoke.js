#!/usr/bin/env node
// A quick manual check of a running relay:
//   node scripts/sio/smoke.js http://127.0.0.1:8080 [token] [session-id]
// connects, pings, subscribes to the fleet (or the session) and prints what
// arrives for 10 seconds.
"use strict";

const { io } = require("socket.io-client");

const [url = "http://127.0.0.1:8080", token = "", session = ""] = process.argv.slice(2);
const socket = io(url, { auth: { token }, reconnection: false });
const log = (o) => console.log(JSON.stringify(o));

socket.on("connect_error", (err) => {
  log({ connect_error: err.message, data: err.data });
  process.exit(1);
});
socket.onAny((event, arg) => log({ event, data: arg }));
socket.on("connect", async () => {
  log({ connected: socket.id, transport: socket.io.engine.transport.name });
  log({ ping_ack: await socket.emitWithAck("ping", { timestamp: Date.now() }) });
  const ack = session
    ? await socket.emitWithAck("subscribe_session", { session_id: session })
    : await socket.emitWithAck("subscribe_fleet", {});
  log({ subscribe_ack: ack });
  setTimeout(() => process.exit(0), 10000);
});
