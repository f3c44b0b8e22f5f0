// Drives the fleet dashboard in headless Chromium like an operator would,
// against a real robot-agent: find the robot in the fleet table, open it,
// see its numbers and charts, start an optimization, watch it complete.
// With MODE=viewer it checks instead that a viewer gets no start or cancel.
// Prints one JSON line with what it saw; exits 1 on failure.
//
//   node dashboard.js URL ROBOT MODEL SCREENSHOT_DIR [operator|viewer]
"use strict";
const path = require("path");
const { launch, watchConsole } = require("./lib");

async function main() {
  const [url, robot, model, shots, mode = "operator"] = process.argv.slice(2);
  if (!url || !robot || !model) throw new Error("usage: node dashboard.js URL ROBOT MODEL [SCREENSHOT_DIR] [operator|viewer]");
  const browser = await launch();
  const out = { ok: false, console_errors: [], mode };
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    watchConsole(page, out.console_errors);
    await page.goto(url);
    await page.waitForSelector("#conn.conn-up", { timeout: 15000 });
    const row = page.locator(`.frow[data-robot="${robot}"]`);
    await page.locator(`.frow[data-robot="${robot}"] .dot.online`).waitFor({ timeout: 15000 });
    // The fleet table's numbers come from the relay's metrics history.
    await page.waitForFunction((r) => {
      const row = document.querySelector(`.frow[data-robot="${r}"]`);
      return row && /\d %/.test(row.textContent);
    }, robot, { timeout: 20000 });
    out.fleet_row = (await row.textContent()).replace(/\s+/g, " ").trim();
    if (shots) await page.screenshot({ path: path.join(shots, `fleet-${mode}.png`) });
    await row.click();
    await page.waitForFunction(() => document.getElementById("m-cpu").textContent.includes("%"), null, { timeout: 20000 });
    out.cpu = await page.textContent("#m-cpu");
    out.info = await page.textContent("#rv-info");
    // The charts: drawn from the history, then extended by live samples.
    await page.locator("#chart-cpu canvas").waitFor({ timeout: 20000 });
    out.charts = await page.locator(".charts canvas").count();
    // A robot that has just come online has no history yet: the page asks
    // again until it has.
    await page.waitForFunction(() => /^history every \d+ s/.test(document.getElementById("charts-note").textContent), null, { timeout: 20000 }).catch(() => {});
    out.charts_note = await page.textContent("#charts-note");
    if (!/^history every \d+ s/.test(out.charts_note)) throw new Error(`the charts did not load the relay's history: ${out.charts_note}`);
    const points = await page.evaluate(() => window.fleetPerf().chartPoints);
    await page.waitForFunction((n) => window.fleetPerf().chartPoints > n, points, { timeout: 20000 });
    out.chart_points = [points, await page.evaluate(() => window.fleetPerf().chartPoints)];

    if (mode === "viewer") {
      out.start_visible = await page.locator("#start-box").isVisible();
      out.cancel_visible = await page.locator("button.cancel:visible").count();
      if (shots) await page.screenshot({ path: path.join(shots, `robot-${mode}.png`), fullPage: true });
      out.ok = true;
      return;
    }

    await page.waitForFunction((m) => [...document.querySelectorAll("#sf-model option")].some((o) => o.value === m), model, { timeout: 10000 });
    await page.selectOption("#sf-pipeline", "quantize-int8");
    await page.selectOption("#sf-model", model);
    await page.click("#sf-submit");
    await page.waitForFunction(() => /^session \S+ (queued|running)/.test(document.getElementById("sf-result").textContent), null, { timeout: 15000 });
    out.start = await page.textContent("#sf-result");
    out.session = out.start.split(" ")[1];
    const srow = page.locator(`tr[data-session="${out.session}"]`);
    await page.locator(`tr[data-session="${out.session}"] .badge.completed`).waitFor({ timeout: 60000 });
    await page.waitForFunction(() => document.getElementById("sd-result").textContent.includes("compression_ratio"), null, { timeout: 10000 });
    out.result = JSON.parse(await page.textContent("#sd-result"));
    out.metrics_shown = (await page.textContent("#sd-metrics")).replace(/\s+/g, " ").trim();
    out.session_row = (await srow.textContent()).replace(/\s+/g, " ").trim();
    out.events = await page.locator("#sd-events li").count();
    if (shots) await page.screenshot({ path: path.join(shots, `robot-${mode}.png`), fullPage: true });
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.message || e);
  } finally {
    await browser.close();
    console.log(JSON.stringify(out));
    process.exit(out.ok ? 0 : 1);
  }
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e) })); process.exit(1); });
