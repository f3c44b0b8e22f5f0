// Shared by the browser scripts: Debian's Chromium through playwright-core
// (which never downloads a browser), and a console watcher.
"use strict";
const { chromium } = require("playwright-core");

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// watchConsole collects the page's console errors and uncaught exceptions
// (a CSP violation is a console error too).
function watchConsole(page, into) {
  page.on("console", (m) => { if (m.type() === "error") into.push(m.text()); });
  page.on("pageerror", (e) => into.push(String(e)));
}

module.exports = { launch, watchConsole };
