// Ordering rules shared by the page and its unit test (node --test
// scripts/dashboard/). Loaded before app.js; defines globals in the page and
// exports them under node.
"use strict";

// statusReplaces reports whether a robot.status with data next may replace
// the one the page holds (cur: its data, or null). Agents number their MQTT
// connections (data.epoch): a status of an older connection — a Last Will
// that fired late — never replaces a newer one. Without an epoch on either
// side the last status received wins, as the broker orders them.
function statusReplaces(cur, next) {
  if (!cur) return true;
  if (typeof next.epoch === "number" && typeof cur.epoch === "number") return next.epoch >= cur.epoch;
  return true;
}

if (typeof module === "object" && module.exports) module.exports = { statusReplaces };
