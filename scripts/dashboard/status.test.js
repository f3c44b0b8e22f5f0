// Unit tests of the dashboard's ordering rules (cloud/dashboard/static/assets/status.js).
// Run: node --test scripts/dashboard/   (go test ./cloud/dashboard/ runs it too)
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const { statusReplaces } = require("../../cloud/dashboard/static/assets/status.js");

test("a status of an older connection never replaces a newer one", () => {
  const online = { state: "online", epoch: 7 };
  assert.strictEqual(statusReplaces(online, { state: "offline", reason: "lost", epoch: 6 }), false);
  assert.strictEqual(statusReplaces(online, { state: "offline", reason: "lost", epoch: 7 }), true, "same connection's Will");
  assert.strictEqual(statusReplaces(online, { state: "online", epoch: 8 }), true);
});

test("without epochs the last status received wins", () => {
  assert.strictEqual(statusReplaces(null, { state: "online" }), true);
  assert.strictEqual(statusReplaces({ state: "online" }, { state: "offline" }), true);
  assert.strictEqual(statusReplaces({ state: "online", epoch: 3 }, { state: "offline" }), true, "an agent without epochs");
  assert.strictEqual(statusReplaces({ state: "online" }, { state: "offline", epoch: 1 }), true);
});
