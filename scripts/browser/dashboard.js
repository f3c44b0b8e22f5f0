// Drives the fleet dashboard in headless Chromium like an operator would:
// find the robot, open it, see its metrics, start an optimization, watch it
// complete. Prints one JSON line with what it saw; exits 1 on failure.
//
//   node dashboard.js URL ROBOT MODEL SCREENSHOT.png
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, robot, model, shot] = process.argv.slice(2);
  if (!url || !robot || !model) throw new Error("usage: node dashboard.js URL ROBOT MODEL [SCREENSHOT]");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const out = { ok: false, console_errors: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
    page.on("pageerror", (e) => out.console_errors.push(String(e)));
    await page.goto(url);
    await page.waitForSelector("#conn.conn-up", { timeout: 15000 });
    const item = page.locator(`[data-robot="${robot}"]`);
    await item.waitFor({ timeout: 15000 });
    await page.locator(`[data-robot="${robot}"] .dot.online`).waitFor({ timeout: 15000 });
    await item.click();
    await page.waitForFunction(() => document.getElementById("m-cpu").textContent.includes("%"), null, { timeout: 20000 });
    out.cpu = await page.textContent("#m-cpu");
    out.info = await page.textContent("#rv-info");
    await page.waitForFunction((m) => [...document.querySelectorAll("#sf-model option")].some((o) => o.value === m), model, { timeout: 10000 });
    await page.selectOption("#sf-pipeline", "quantize-int8");
    await page.selectOption("#sf-model", model);
    await page.click("#sf-submit");
    await page.waitForFunction(() => /^session \S+ (queued|running)/.test(document.getElementById("sf-result").textContent), null, { timeout: 15000 });
    out.start = await page.textContent("#sf-result");
    out.session = out.start.split(" ")[1];
    await page.locator(`tr[data-session="${out.session}"] .badge.completed`).waitFor({ timeout: 60000 });
    await page.waitForFunction(() => document.getElementById("sd-result").textContent.includes("compression_ratio"), null, { timeout: 10000 });
    out.result = JSON.parse(await page.textContent("#sd-result"));
    out.events = await page.locator("#sd-events li").count();
    out.alerts = await page.textContent("#alert-list");
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.message || e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e) })); process.exit(1); });
