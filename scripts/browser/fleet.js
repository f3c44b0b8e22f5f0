// Drives the fleet dashboard in headless Chromium against a large simulated
// fleet (e2e TestDashboardFleet1000): the fleet table lists, sorts and
// filters every robot; a session is cancelled from its row; a failed
// session shows its error and stderr tail; notifications are listed; a
// viewer gets no cancel; without a token the page asks for one. It measures
// the page's frame intervals and its own render work per frame while the
// fleet publishes and the table scrolls. Prints one JSON line; exits 1 on
// failure.
//
//   node fleet.js BASE_URL OPERATOR_TOKEN VIEWER_TOKEN SCREENSHOT_DIR SPEC_JSON
"use strict";
const path = require("path");
const { launch, watchConsole } = require("./lib");

function stats(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null);
  const r = (v) => (v == null ? null : Math.round(v * 100) / 100);
  return { n: s.length, p50: r(q(0.5)), p95: r(q(0.95)), p99: r(q(0.99)), max: r(s[s.length - 1]) };
}

const cellNum = (text) => parseFloat(text.replace(/[^\d.]/g, ""));

async function main() {
  const [base, opToken, viewerToken, shots, specJSON] = process.argv.slice(2);
  const spec = JSON.parse(specJSON);
  const browser = await launch();
  const out = { ok: false, console_errors: [], step: "" };
  const step = (s) => { out.step = s; };
  try {
    // --- operator ---------------------------------------------------------
    const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await ctx.newPage();
    watchConsole(page, out.console_errors);
    step("load");
    await page.goto(`${base}#token=${opToken}`);
    await page.waitForSelector("#conn.conn-up", { timeout: 20000 });
    await page.waitForFunction((n) => document.getElementById("fleet-count").textContent.startsWith(`${n} of ${n}`), spec.robots, { timeout: 30000 });
    step("fleet numbers");
    await page.waitForFunction(() => [...document.querySelectorAll(".frow[data-robot]")].filter((r) => !r.hidden && /\d %/.test(r.textContent)).length >= 10, null, { timeout: 20000 });
    out.rows_in_dom = await page.locator(".frows .frow").count();

    step("measure");
    // Two phases of measure_ms each, while the fleet keeps publishing: the
    // page left alone (live updates only), then an operator scrolling the
    // table and re-sorting it now and then.
    const measure = (scrolling) => page.evaluate(async ([ms, scrolling]) => {
      const gaps = [];
      let long = 0;
      const obs = new PerformanceObserver((l) => { long += l.getEntries().length; });
      try { obs.observe({ entryTypes: ["longtask"] }); } catch { /* not supported */ }
      let last = 0, run = true;
      const tick = (t) => { if (last) gaps.push(t - last); last = t; if (run) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      const p0 = window.fleetPerf();
      const before = p0.count, msgs0 = p0.msgs, msgMs0 = p0.msgMs;
      const sc = document.getElementById("fleet-scroll");
      const heads = [...document.querySelectorAll("#fleet-head [data-sort]")];
      const start = performance.now();
      // Scroll like a wheel would, without reading layout back (the page's
      // own frames are measured, not the test's forced layouts).
      const maxTop = sc.scrollHeight - sc.clientHeight;
      let dir = 1, i = 0, y = 0;
      while (performance.now() - start < ms) {
        if (scrolling) {
          y = Math.max(0, Math.min(maxTop, y + dir * 173));
          if (y >= maxTop) dir = -1;
          if (y <= 0) dir = 1;
          sc.scrollTop = y;
          if (++i % 40 === 0) heads[(i / 40) % heads.length].click(); // re-sort now and then
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      run = false;
      obs.disconnect();
      const p = window.fleetPerf();
      return { gaps, renders: p.renders.slice(-Math.min(p.renders.length, p.count - before)), rows: p.rows, long,
        msg: { n: p.msgs - msgs0, ms: p.msgMs - msgMs0 }, polls: p.polls };
    }, [Number(spec.measure_ms || 8000), scrolling]);
    if (process.env.TRACE) await browser.startTracing(page, { path: process.env.TRACE, categories: ["devtools.timeline", "v8", "blink", "cc", "disabled-by-default-devtools.timeline"] });
    const idle = await measure(false);
    const m = await measure(true);
    if (process.env.TRACE) await browser.stopTracing();
    out.live = { frame: stats(idle.gaps), render: stats(idle.renders), longtasks: idle.long,
      messages: { n: idle.msg.n, ms_total: Math.round(idle.msg.ms) } };
    out.frame = stats(m.gaps);
    out.render = stats(m.renders);
    out.longtasks = m.long;
    out.rows_rendered = m.rows;
    out.messages = { n: m.msg.n, ms_total: Math.round(m.msg.ms) };
    out.poll_ms = stats(m.polls);

    // The peer in the same run: an empty page's frame intervals for as long,
    // on the same loaded machine, while the fleet keeps publishing.
    step("peer");
    const blank = await ctx.newPage();
    await blank.goto("about:blank");
    out.peer_frame = stats(await blank.evaluate(async (ms) => {
      const gaps = [];
      let last = 0, run = true;
      const tick = (t) => { if (last) gaps.push(t - last); last = t; if (run) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      await new Promise((r) => setTimeout(r, ms));
      run = false;
      return gaps;
    }, Number(spec.measure_ms || 8000)));
    // A second peer: a static page with the same 1,000 rows as plain DOM
    // (no script, no updates), scrolled the same way: what scrolling alone
    // costs this browser on this machine.
    const rowsHTML = Array.from({ length: spec.robots }, (_, i) =>
      `<div class="r"><b>r-${String(i).padStart(4, "0")}</b><span>online · 14 s</span><span>${i % 100}.5 %</span><span>${i % 90}.1 %</span>` +
      `<span>${40 + i % 50}.0 °C</span><span>–</span><span></span><span>quantize-int8 · quantize 13 %</span><span></span></div>`).join("");
    await blank.setContent(`<style>body{margin:0;background:#0f1419;color:#d8dee6;font:14px system-ui}#s{height:700px;overflow-y:auto}
      .r{display:grid;grid-template-columns:150px 180px 130px 130px 90px 130px 56px 1fr 76px;height:34px;align-items:center;padding:0 10px;gap:10px;border-bottom:1px solid #27303a}</style>
      <div id="s">${rowsHTML}</div>`);
    out.peer_static_scroll = stats(await blank.evaluate(async (ms) => {
      const gaps = [];
      let last = 0, run = true;
      const tick = (t) => { if (last) gaps.push(t - last); last = t; if (run) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      const sc = document.getElementById("s");
      const maxTop = sc.scrollHeight - sc.clientHeight;
      const start = performance.now();
      let dir = 1, y = 0;
      while (performance.now() - start < ms) {
        y = Math.max(0, Math.min(maxTop, y + dir * 173));
        if (y >= maxTop) dir = -1;
        if (y <= 0) dir = 1;
        sc.scrollTop = y;
        await new Promise((r) => setTimeout(r, 50));
      }
      run = false;
      return gaps;
    }, Number(spec.measure_ms || 8000)));
    await blank.close();
    await page.bringToFront();

    step("sort");
    await page.evaluate(() => { document.getElementById("fleet-scroll").scrollTop = 0; });
    const sortBy = async (key, want) => {
      for (let k = 0; k < 3; k++) {
        const cls = await page.getAttribute(`#fleet-head [data-sort="${key}"]`, "class");
        if (cls && cls.includes(want)) return;
        await page.click(`#fleet-head [data-sort="${key}"]`);
      }
      throw new Error(`could not sort by ${key} ${want}`);
    };
    await sortBy("cpu", "desc");
    await page.waitForTimeout(300);
    // Rows are positioned by transform; read them in screen order.
    const visibleRows = (sel) => page.$$eval(".frows .frow:not([hidden])", (rs, sel) => rs
      .map((r) => [r.getBoundingClientRect().top, r]).sort((a, b) => a[0] - b[0])
      .map(([, r]) => (sel ? r.querySelector(sel).textContent : r.dataset.robot)), sel);
    const cpus = (await visibleRows("[role=cell]:nth-child(3) .num")).slice(0, 10);
    const nums = cpus.map(cellNum);
    out.top_cpu = nums.slice(0, 3);
    if (!(nums[0] >= nums[5] && nums[0] >= 90)) throw new Error(`sorted by CPU descending, the first rows show ${cpus.join(", ")}`);
    await sortBy("id", "asc");
    await page.waitForFunction(() => {
      const ids = [...document.querySelectorAll(".frows .frow:not([hidden])")]
        .map((r) => [r.getBoundingClientRect().top, r.dataset.robot]).sort((a, b) => a[0] - b[0]).map((x) => x[1]);
      return ids[0] === "r-0000" && ids[1] === "r-0001";
    }, null, { timeout: 15000 });

    step("filter");
    await page.fill("#filter", "r-0999");
    await page.waitForFunction((n) => document.getElementById("fleet-count").textContent.startsWith(`1 of ${n}`), spec.robots, { timeout: 15000 });
    await page.fill("#filter", "");
    await page.selectOption("#state-filter", "running");
    await page.waitForFunction((n) => parseInt(document.getElementById("fleet-count").textContent, 10) === n, spec.sessions, { timeout: 30000 });
    out.running_rows = spec.sessions;
    const runRow = page.locator(".frows .frow:not([hidden])").first();
    out.running_row = (await runRow.textContent()).replace(/\s+/g, " ").trim();
    if (!/quantize-int8.*\d+ %/.test(out.running_row)) throw new Error(`a running session's row shows no progress: ${out.running_row}`);
    await page.selectOption("#state-filter", "alerting");
    await page.waitForFunction((n) => parseInt(document.getElementById("fleet-count").textContent, 10) === n, spec.alerting, { timeout: 30000 });
    out.alerting_row = (await page.locator(".frows .frow:not([hidden])").first().textContent()).replace(/\s+/g, " ").trim();
    if (!(await page.locator(".frows .frow:not([hidden]) .count.firing").count())) throw new Error("alerting robots show no firing-alert count");
    out.alerts_header = await page.textContent("#sum-alerts");
    await page.selectOption("#state-filter", "");
    await page.waitForFunction((n) => document.getElementById("fleet-count").textContent.startsWith(`${n} of`), spec.robots, { timeout: 15000 });
    if (shots) {
      await page.evaluate(() => { document.getElementById("fleet-scroll").scrollTop = 0; });
      await page.waitForTimeout(300);
      await page.screenshot({ path: path.join(shots, "dashboard-fleet.png") });
    }

    step("cancel from the table");
    await page.fill("#filter", spec.cancel_robot);
    await page.waitForFunction(() => document.getElementById("fleet-count").textContent.startsWith("1 of"), null, { timeout: 15000 });
    const cancelRow = page.locator(`.frow[data-robot="${spec.cancel_robot}"]`);
    const cancelButton = cancelRow.locator("button.cancel");
    await cancelButton.waitFor({ state: "visible", timeout: 30000 });
    // The row is re-rendered 4 times a second while the fleet publishes;
    // skip Playwright's wait for a still element, the effect is checked below.
    await cancelButton.click({ force: true, timeout: 30000 });
    await page.waitForFunction((r) => {
      const row = document.querySelector(`.frow[data-robot="${r}"]`);
      return row && !/quantize-int8/.test(row.textContent);
    }, spec.cancel_robot, { timeout: 20000 });
    await page.fill("#filter", "");

    step("failed session");
    await page.evaluate((r) => { location.hash = `#/robot/${r}`; }, spec.failed_robot);
    await page.locator("#chart-cpu canvas").waitFor({ timeout: 20000 });
    out.charts = await page.locator(".charts canvas").count();
    await page.locator(`tr[data-session="${spec.failed_session}"]`).click({ timeout: 30000 });
    await page.waitForFunction((s) => document.getElementById("sd-stderr").textContent.includes(s), spec.stderr, { timeout: 30000 });
    out.failed_row = (await page.locator(`tr[data-session="${spec.failed_session}"]`).textContent()).replace(/\s+/g, " ").trim();
    out.error_code = await page.textContent("#sd-error-code");
    await page.waitForFunction((n) => document.getElementById("notif-list").textContent.includes(n), spec.notification, { timeout: 30000 });
    if (shots) await page.screenshot({ path: path.join(shots, "dashboard-robot.png"), fullPage: true });

    step("running session");
    await page.evaluate((r) => { location.hash = `#/robot/${r}`; }, spec.running_robot);
    const running = page.locator(`tr[data-session="${spec.running_session}"]`);
    await page.locator(`tr[data-session="${spec.running_session}"] .badge.running`).waitFor({ timeout: 30000 });
    await page.waitForFunction((s) => {
      const row = document.querySelector(`tr[data-session="${s}"]`);
      return row && /layer \d+\/100/.test(row.textContent) && /\d+ (s|m)/.test(row.cells[7].textContent);
    }, spec.running_session, { timeout: 30000 });
    out.running_session_row = (await running.textContent()).replace(/\s+/g, " ").trim();
    await running.click();
    await page.waitForFunction(() => /running · [\d.]+ % · quantize layer \d+\/100 · elapsed [\d.]+ (s|m).* · ETA [\d.]+ (s|m)/.test(document.getElementById("sd-status").textContent), null, { timeout: 30000 });
    out.running_session_status = await page.textContent("#sd-status");
    await ctx.close();

    // --- viewer -------------------------------------------------------------
    step("viewer");
    const vctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const vpage = await vctx.newPage();
    watchConsole(vpage, out.console_errors);
    await vpage.goto(`${base}#token=${viewerToken}`);
    await vpage.waitForSelector("#conn.conn-up", { timeout: 20000 });
    await vpage.selectOption("#state-filter", "running");
    await vpage.waitForFunction(() => /quantize-int8/.test(document.getElementById("fleet-rows").textContent), null, { timeout: 20000 });
    out.viewer_cancel_buttons = await vpage.locator("button.cancel:visible").count();
    if (out.viewer_cancel_buttons !== 0) throw new Error(`a viewer sees ${out.viewer_cancel_buttons} cancel buttons`);
    await vpage.locator(".frows .frow:not([hidden])").first().click();
    await vpage.waitForSelector("#robot-view:not([hidden])");
    out.viewer_start_visible = await vpage.locator("#start-box").isVisible();
    if (out.viewer_start_visible) throw new Error("a viewer sees the start form");
    await vctx.close();

    // --- no token -----------------------------------------------------------
    step("no token");
    const actx = await browser.newContext();
    const apage = await actx.newPage();
    await apage.goto(base);
    await apage.waitForSelector("#login:not([hidden])", { timeout: 20000 });
    await actx.close();
    out.ok = true;
  } catch (e) {
    out.error = `${out.step}: ${String(e && e.message || e)}`;
  } finally {
    await browser.close();
    console.log(JSON.stringify(out));
    process.exit(out.ok ? 0 : 1);
  }
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e) })); process.exit(1); });
