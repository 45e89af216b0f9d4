// Browser half of spec/dashboard_spec.lua: drives Debian's chromium (headless, through
// playwright-core from build/npm, never a downloaded browser) over the dashboard, saves a
// screenshot of each page, clicks pause / requeue / cancel, and prints what the pages showed
// as one JSON line; the Lua spec compares that with the database.
//
// Environment: DASH_URL, DASH_TOKEN, DASH_SHOTS (folder for the PNGs), DASH_PROFILE (a fresh
// user-data-dir), DASH_CANCEL_ID (a task to cancel), DASH_XSS_ID (the XSS attempt), NODE_PATH (build/npm/node_modules).
"use strict";

const { chromium } = require("playwright-core");
const path = require("path");

const url = process.env.DASH_URL;
const shots = process.env.DASH_SHOTS;
const out = { screenshots: [], dialogs: [], pageErrors: [] };

async function main() {
  const context = await chromium.launchPersistentContext(process.env.DASH_PROFILE, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => out.pageErrors.push(String(e.message)));
  // confirmations are accepted; any other dialog (an alert from injected script) is recorded
  page.on("dialog", async (d) => {
    out.dialogs.push({ type: d.type(), message: d.message() });
    if (d.type() === "confirm") await d.accept(); else await d.dismiss();
  });

  // Polls fn(arg) in the page until it is truthy (page.waitForFunction evaluates strings,
  // which the dashboard's Content-Security-Policy forbids, and the policy stays on here).
  async function until(fn, arg, timeout) {
    const deadline = Date.now() + (timeout || 15000);
    for (;;) {
      if (await page.evaluate(fn, arg)) return;
      if (Date.now() > deadline) throw new Error("timed out waiting for " + fn.toString());
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async function open(hash) {
    // a new hash in the same document is a hashchange, not a load: wait for the render it
    // starts (window.__seen survives only in the same document)
    const before = await page.evaluate(() => {
      window.__seen = true;
      return Number((document.body && document.body.dataset.ready) || 0);
    }).catch(() => 0);
    await page.goto(url + "/" + hash);
    await until((b) => (window.__seen ? Number(document.body.dataset.ready || 0) > b
      : !!(document.body && document.body.dataset.ready)), before);
    await until(() => !document.querySelector("#chart") || !!document.querySelector("#chart svg"));
  }
  async function rendered(click) { // click, then wait for the next full render
    const before = await page.evaluate(() => Number(document.body.dataset.ready || 0));
    await click;
    await until((b) => Number(document.body.dataset.ready || 0) > b, before);
  }
  async function shot(name) {
    const file = path.join(shots, name + ".png");
    await page.screenshot({ path: file, fullPage: true });
    out.screenshots.push(file);
  }

  // overview: counts per queue and state, paused or not, and the chart's totals
  await open("#/");
  out.title = await page.title();
  out.overview = await page.$$eval("#queues tbody tr", (rows) => rows.map((r) => {
    const counts = {};
    for (const td of r.querySelectorAll("td[data-state]")) counts[td.dataset.state] = Number(td.textContent);
    return { queue: r.dataset.queue, paused: r.querySelector("[data-field=paused]").textContent === "paused", counts };
  }));
  out.throughput = {
    enqueued: Number(await page.textContent("#tp-enqueued")),
    completed: Number(await page.textContent("#tp-completed")),
    failed: Number(await page.textContent("#tp-failed")),
  };
  out.readOnlyButtonsDisabled = await page.$$eval("button[data-action]", (bs) => bs.length > 0 && bs.every((b) => b.disabled));
  await shot("overview");

  // the task list with its keyset pages
  await open("#/queue/default");
  out.tasks = await page.$$eval("#tasks tbody tr", (rows) => rows.map((r) => ({
    id: r.dataset.id, name: r.querySelector(".task-name").textContent, state: r.children[2].textContent })));
  out.hasNext = !!(await page.$("#next-page"));
  if (out.hasNext) {
    await page.click("#next-page");
    await until((first) => {
      const r = document.querySelector("#tasks tbody tr");
      return r && r.dataset.id !== first;
    }, out.tasks[0].id);
    out.page2 = await page.$$eval("#tasks tbody tr", (rows) => rows.map((r) => r.dataset.id));
  }
  await open("#/queue/default");
  await shot("tasks");

  // the XSS attempt's detail page: name and payload shown as text, nothing executed
  {
    await open("#/task/default/" + encodeURIComponent(process.env.DASH_XSS_ID));
    out.xss = {
      name: await page.textContent("[data-field=name]"),
      payload: await page.textContent("#payload"),
      scriptElements: await page.$$eval("#view script", (s) => s.length),
      injected: await page.evaluate(() => window.__xss === true),
      title: await page.title(),
    };
    await shot("task");
  }

  await open("#/dlq/default");
  out.dlq = await page.$$eval("#dlq tbody tr", (rows) => rows.map((r) => r.dataset.id));
  await shot("dlq");
  await open("#/workers");
  out.workers = await page.$$eval("#workers tbody tr", (rows) => rows.map((r) => ({
    id: r.dataset.id, stale: r.querySelector(".badge").textContent === "stale" })));
  await shot("workers");
  await open("#/recurring");
  out.recurring = await page.$$eval("#recurring tbody tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  await shot("recurring");

  // unlock, then act: pause the default queue, requeue a dead letter, cancel a task
  await open("#/");
  await page.fill("#token", process.env.DASH_TOKEN);
  await rendered(page.click("#unlock button"));
  out.mode = await page.textContent("#mode");
  await rendered(page.click("#queues tr[data-queue=default] button[data-action=pause]"));
  out.pausedShown = (await page.textContent("#queues tr[data-queue=default] [data-field=paused]")) === "paused";

  await open("#/dlq/default");
  if (out.dlq.length > 0) {
    out.requeued = out.dlq[0];
    await rendered(page.click(`#dlq tr[data-id="${out.requeued}"] button[data-action=dlq_requeue]`));
    out.dlqAfter = await page.$$eval("#dlq tbody tr", (rows) => rows.map((r) => r.dataset.id));
  }

  const cancelId = process.env.DASH_CANCEL_ID;
  await open("#/task/default/" + encodeURIComponent(cancelId));
  await rendered(page.click("button[data-action=cancel]"));
  out.cancelledShown = await page.textContent("[data-field=state]");
  await shot("after-actions");

  // auto-refresh: a change made elsewhere shows up without reloading (the Lua side resumes
  // the queue when this file appears, then the page must say "running" by itself)
  await open("#/");
  require("fs").writeFileSync(path.join(shots, "ready-for-refresh"), "1");
  await until(() => {
    const b = document.querySelector("#queues tr[data-queue=default] [data-field=paused]");
    return b && b.textContent === "running";
  }, null, 15000);
  out.autoRefreshed = true;

  await context.close();
}

main().then(() => {
  process.stdout.write("RESULT " + JSON.stringify(out) + "\n");
  process.exit(0);
}, (e) => {
  out.error = String(e && e.stack || e);
  process.stdout.write("RESULT " + JSON.stringify(out) + "\n");
  process.exit(1);
});
