// The celers dashboard: a single page over the JSON API of celers.nginx (GET /api/...).
// Every value from the server is put into the page as text (textContent / attributes set
// through the DOM), never as HTML. Actions are POSTs with the token and the CSRF token.
"use strict";

(function () {
  const API = "api/";
  const STATES = ["pending", "scheduled", "processing", "completed", "failed", "cancelled"];
  const REFRESH_MS = 5000;
  let session = { actions: false, csrf: null };
  let timer = null;
  let renderSeq = 0;

  // ---- DOM helpers: el("tag", {attr: v, onclick: fn}, child, "text", ...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function list(x) { return Array.isArray(x) ? x : []; }
  function fmtTime(t) {
    if (typeof t !== "number" || !isFinite(t)) return "";
    return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function fmtAge(s) {
    if (typeof s !== "number") return "";
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return (s / 60).toFixed(0) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
    const s = u.toString();
    return s ? "?" + s : "";
  }
  function flash(msg, isError) {
    const f = document.getElementById("flash");
    f.textContent = msg;
    f.className = isError ? "error" : "";
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { f.hidden = true; }, 6000);
  }

  // ---- API
  async function get(path, params) {
    const r = await fetch(API + path + qs(params || {}), { headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && (body.error.code + ": " + body.error.message)) || ("HTTP " + r.status));
    return body;
  }
  async function post(path, body) {
    const token = sessionStorage.getItem("celers.token") || "";
    const r = await fetch(API + path, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + token,
        "X-CSRF-Token": session.csrf || "",
      },
      body: JSON.stringify(body || {}),
    });
    const res = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((res.error && (res.error.code + ": " + res.error.message)) || ("HTTP " + r.status));
    return res;
  }
  function canAct() { return session.actions && !!sessionStorage.getItem("celers.token"); }

  // An action button: asks first when `question` is given, then POSTs and re-renders.
  function action(label, path, body, question, danger) {
    return el("button", {
      class: danger ? "danger" : null,
      disabled: !canAct(),
      title: canAct() ? null : "read-only: unlock with a token",
      "data-action": path,
      onclick: async (ev) => {
        ev.preventDefault();
        if (question && !window.confirm(question)) return;
        try {
          const res = await post(path, body);
          flash(label + ": done" + (res.requeued !== undefined ? " (" + res.requeued + " requeued)" : "")
            + (res.purged !== undefined ? " (" + res.purged + " purged)" : ""));
        } catch (e) {
          flash(label + " failed: " + e.message, true);
        }
        render();
      },
    }, label);
  }

  async function loadSession() {
    try { session = await get("session"); } catch (e) { session = { actions: false }; }
    const mode = document.getElementById("mode");
    const unlocked = canAct();
    mode.textContent = !session.actions ? "read-only" : (unlocked ? "actions unlocked" : "locked");
    mode.className = "badge " + (unlocked ? "rw" : "ro");
    document.getElementById("unlock").hidden = !session.actions;
  }

  // ---- views
  function stateCount(counts, s) { return typeof counts[s] === "number" ? counts[s] : 0; }

  async function viewOverview(view) {
    const data = await get("overview");
    const queues = list(data.queues);
    const states = STATES.filter((s) => s !== "scheduled" || queues.some((q) => q.counts && "scheduled" in q.counts));
    const head = el("tr", {}, el("th", {}, "queue"), el("th", {}, "status"),
      states.map((s) => el("th", { class: "num" }, s)), el("th", { class: "num" }, "DLQ"), el("th", {}, ""));
    const rows = queues.map((q) => {
      const c = q.counts || {};
      return el("tr", { "data-queue": q.queue },
        el("td", {}, el("a", { href: "#/queue/" + encodeURIComponent(q.queue) }, q.queue)),
        el("td", {}, el("span", { class: "badge " + (q.paused ? "paused" : "running"), "data-field": "paused" },
          q.paused ? "paused" : "running")),
        states.map((s) => el("td", { class: "num", "data-state": s },
          el("a", { href: "#/queue/" + encodeURIComponent(q.queue) + "/" + s }, stateCount(c, s)))),
        el("td", { class: "num", "data-state": "dlq" },
          el("a", { href: "#/dlq/" + encodeURIComponent(q.queue) }, stateCount(c, "dlq"))),
        el("td", {}, q.paused ? action("Resume", "resume", { queue: q.queue })
          : action("Pause", "pause", { queue: q.queue }, "Pause queue " + q.queue + "? Workers stop claiming from it.")));
    });
    view.replaceChildren(
      el("h2", {}, "Queues"),
      el("table", { id: "queues" }, el("thead", {}, head), el("tbody", {}, rows)),
      el("h3", {}, "Throughput, last hour (per minute)"),
      el("div", { class: "row" }, el("label", {}, "queue ",
        el("select", { id: "tp-queue", onchange: () => drawThroughput(document) },
          queues.map((q) => el("option", { value: q.queue }, q.queue))))),
      el("div", { class: "card chart", id: "chart" }, el("span", { class: "muted" }, "…")));
    await drawThroughput(view);
  }

  // Draws into the #chart of root (the page, or a view not yet shown).
  async function drawThroughput(root) {
    const sel = root.querySelector("#tp-queue");
    const box = root.querySelector("#chart");
    if (!sel || !box) return;
    const data = await get("throughput", { queue: sel.value, minutes: 60 });
    const series = list(data.series);
    const W = 900, H = 180, P = 24;
    const max = Math.max(1, ...series.map((m) => Math.max(m.enqueued, m.completed, m.failed)));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": "tasks per minute" });
    s.append(svg("line", { x1: P, y1: H - P, x2: W, y2: H - P, stroke: "#9ca3af" }));
    const label = svg("text", { x: 2, y: 12, "font-size": 11, fill: "#6b7480" });
    label.textContent = String(max);
    s.append(label);
    const kinds = [["enqueued", "#2563eb"], ["completed", "#15803d"], ["failed", "#b91c1c"]];
    const step = (W - P) / Math.max(1, series.length - 1);
    for (const [k, color] of kinds) {
      const pts = series.map((m, i) => `${(P + i * step).toFixed(1)},${(H - P - (m[k] / max) * (H - 2 * P)).toFixed(1)}`);
      s.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    }
    const tot = (k) => series.reduce((a, m) => a + m[k], 0);
    box.replaceChildren(s, el("div", { class: "legend" },
      el("span", {}, el("i", { class: "enq" }), "enqueued ", el("b", { id: "tp-enqueued" }, tot("enqueued"))),
      el("span", {}, el("i", { class: "done" }), "completed ", el("b", { id: "tp-completed" }, tot("completed"))),
      el("span", {}, el("i", { class: "fail" }), "failed ", el("b", { id: "tp-failed" }, tot("failed"))),
      el("span", { class: "muted" }, "from the rows' created_at / completed_at / failed_at")));
  }

  // Keyset paging: the ids of earlier pages' last rows, so "previous" works too.
  let pageStack = [];
  let pageKey = "";

  async function viewQueue(view, queue, state, after) {
    const key = queue + "/" + (state || "");
    if (key !== pageKey) { pageKey = key; pageStack = []; }
    const data = await get("tasks", { queue, state, after, limit: 25 });
    const tasks = list(data.tasks);
    const filter = (document.getElementById("name-filter") || {}).value || "";
    const shown = filter ? tasks.filter((t) => String(t.name).includes(filter)) : tasks;
    const stateSel = el("select", { id: "state-filter", onchange: (e) => {
      location.hash = "#/queue/" + encodeURIComponent(queue) + (e.target.value ? "/" + e.target.value : "");
    } }, el("option", { value: "" }, "all states"),
    STATES.map((s) => el("option", { value: s, selected: s === state }, s)));
    const nameInput = el("input", { id: "name-filter", placeholder: "task name contains", value: filter,
      onchange: () => render() });
    const base = "#/queue/" + encodeURIComponent(queue) + "/" + (state || "all");
    view.replaceChildren(
      el("h2", {}, "Queue ", el("span", { class: "mono" }, queue), " · tasks"),
      el("div", { class: "row" }, stateSel, nameInput,
        el("a", { href: "#/dlq/" + encodeURIComponent(queue) }, "dead letters →")),
      el("table", { id: "tasks" },
        el("thead", {}, el("tr", {}, ["id", "name", "state", "priority", "attempts", "created", "scheduled", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, shown.map((t) => el("tr", { "data-id": t.id },
          el("td", { class: "mono" }, el("a", { href: "#/task/" + encodeURIComponent(queue) + "/" + encodeURIComponent(t.id) }, t.id)),
          el("td", { class: "task-name" }, t.name),
          el("td", {}, t.state),
          el("td", { class: "num" }, t.priority),
          el("td", { class: "num" }, t.retry_count + "/" + t.max_retries),
          el("td", {}, fmtTime(t.created_at)),
          el("td", {}, fmtTime(t.scheduled_at)),
          el("td", {}, taskActions(queue, t)))))),
      el("div", { class: "row" },
        after ? el("a", { href: pageStack.length > 1 ? base + "/" + encodeURIComponent(pageStack[pageStack.length - 2]) : base,
          onclick: () => { pageStack.pop(); } }, "← previous") : null,
        data.next ? el("a", { id: "next-page", href: base + "/" + encodeURIComponent(data.next),
          onclick: () => { pageStack.push(data.next); } }, "next →") : null,
        el("span", { class: "muted" }, tasks.length + " on this page")));
  }

  function taskActions(queue, t) {
    const out = [];
    if (t.state === "pending" || t.state === "scheduled")
      out.push(action("Cancel", "cancel", { queue, id: t.id }, "Cancel task " + t.id + "?", true));
    if (t.state === "scheduled" || t.state === "failed" || t.state === "cancelled"
        || (t.state === "pending" && t.scheduled_at > Date.now() / 1000))
      out.push(action("Retry now", "retry", { queue, id: t.id }));
    return out;
  }

  function pretty(body, type) {
    if (type === "json") {
      try { return JSON.stringify(JSON.parse(body), null, 2); } catch (e) { /* shown as stored */ }
    }
    return body === undefined || body === null ? "" : String(body);
  }

  function metaList(obj, keys) {
    return el("dl", { class: "meta" }, keys.filter((k) => obj[k] !== undefined && obj[k] !== null).map((k) => [
      el("dt", {}, k), el("dd", { "data-field": k, class: /_at$/.test(k) ? null : "mono" },
        /_at$/.test(k) ? fmtTime(obj[k]) : (typeof obj[k] === "object" ? JSON.stringify(obj[k]) : obj[k]))]));
  }

  async function viewTask(view, queue, id) {
    const d = await get("task", { queue, id });
    const history = list(d.history);
    const historyBlock = [el("h3", {}, "History (archived copies)"),
      history.length === 0 ? el("p", { class: "muted", id: "history" }, "none archived")
        : el("table", { id: "history" },
          el("thead", {}, el("tr", {}, ["state", "worker", "attempts", "started", "completed", "archived", "error"].map((h) => el("th", {}, h)))),
          el("tbody", {}, history.map((h) => el("tr", {},
            el("td", {}, h.state), el("td", { class: "mono" }, h.worker_id || ""), el("td", { class: "num" }, h.retry_count),
            el("td", {}, fmtTime(h.started_at)), el("td", {}, fmtTime(h.completed_at)), el("td", {}, fmtTime(h.archived_at)),
            el("td", { class: "mono" }, h.error || "")))))];
    if (!d.task) {
      view.replaceChildren(el("h2", {}, history.length ? "Task archived" : "Task not found"),
        el("p", { class: "mono" }, id), historyBlock);
      return;
    }
    const t = d.task;
    view.replaceChildren(
      el("h2", {}, "Task ", el("span", { class: "mono" }, t.id)),
      el("div", { class: "row" }, taskActions(queue, t),
        el("a", { href: "#/queue/" + encodeURIComponent(queue) }, "← queue " + queue)),
      el("div", { class: "card" }, metaList(t, ["name", "queue", "state", "priority", "retry_count", "max_retries",
        "worker_id", "created_at", "scheduled_at", "started_at", "completed_at", "payload_type"])),
      el("h3", {}, "Payload"), el("pre", { id: "payload" }, pretty(t.body, t.payload_type)),
      el("h3", {}, "Metadata"), el("pre", { id: "metadata" }, t.metadata ? JSON.stringify(t.metadata, null, 2) : "none"),
      el("h3", {}, "Error"), el("pre", { id: "error" }, t.error_message || t.error || "none"),
      el("h3", {}, "Result"),
      d.result ? el("div", { class: "card" }, metaList(d.result, ["status", "state", "created_at", "completed_at", "expires_at"]),
        el("pre", { id: "result" }, typeof d.result.result === "object" ? JSON.stringify(d.result.result, null, 2)
          : String(d.result.result === undefined ? "" : d.result.result)),
        d.result.error ? el("pre", {}, d.result.error) : null)
        : el("p", { class: "muted", id: "result" }, "no result stored"),
      historyBlock);
  }

  async function viewDlq(view, queue, offset) {
    offset = Number(offset) || 0;
    const data = await get("dlq", { queue, offset, limit: 25 });
    const items = list(data.items);
    const inspected = el("div", { id: "dlq-detail" });
    view.replaceChildren(
      el("h2", {}, "Dead letters of ", el("span", { class: "mono" }, queue)),
      el("div", { class: "row" },
        action("Requeue all", "dlq_requeue_all", { queue }, "Requeue every dead letter of " + queue + "?"),
        action("Purge all", "dlq_purge_all", { queue }, "Delete every dead letter of " + queue + "? This cannot be undone.", true),
        el("a", { href: "#/queue/" + encodeURIComponent(queue) }, "← queue " + queue)),
      el("table", { id: "dlq" },
        el("thead", {}, el("tr", {}, ["id", "task", "name", "attempts", "failed", "error", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, items.map((t) => el("tr", { "data-id": t.id },
          el("td", { class: "mono" }, t.id),
          el("td", { class: "mono" }, t.task_id),
          el("td", { class: "task-name" }, t.name),
          el("td", { class: "num" }, t.retry_count + "/" + t.max_retries),
          el("td", {}, fmtTime(t.failed_at)),
          el("td", { class: "mono" }, t.error || ""),
          el("td", {},
            el("button", { onclick: () => inspected.replaceChildren(
              el("h3", {}, "Dead letter ", el("span", { class: "mono" }, t.id)),
              el("div", { class: "card" }, metaList(t, ["task_id", "name", "queue", "priority", "retry_count", "max_retries", "created_at", "failed_at"])),
              el("pre", {}, pretty(t.body, t.payload_type)), el("pre", {}, t.error || "")) }, "Inspect"),
            action("Requeue", "dlq_requeue", { queue, id: t.id }, "Requeue " + t.name + " (" + t.id + ")?"),
            action("Purge", "dlq_purge", { queue, id: t.id }, "Delete dead letter " + t.id + "?", true)))))),
      el("div", { class: "row" },
        offset > 0 ? el("a", { href: "#/dlq/" + encodeURIComponent(queue) + "/" + Math.max(0, offset - 25) }, "← previous") : null,
        data.next ? el("a", { href: "#/dlq/" + encodeURIComponent(queue) + "/" + data.next }, "next →") : null),
      inspected);
  }

  async function viewWorkers(view) {
    const data = await get("workers", { stale_after: 60 });
    const ws = list(data.workers);
    view.replaceChildren(el("h2", {}, "Workers"),
      el("p", { class: "muted" }, "stale: no heartbeat for more than " + data.stale_after + " s"),
      el("table", { id: "workers" },
        el("thead", {}, el("tr", {}, ["worker", "queue", "host", "pid", "last heartbeat", "age", "processed", "failed", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ws.map((w) => el("tr", { "data-id": w.worker_id },
          el("td", { class: "mono" }, w.worker_id), el("td", {}, w.queue), el("td", {}, w.hostname),
          el("td", { class: "num" }, w.pid), el("td", {}, fmtTime(w.last_seen)), el("td", {}, fmtAge(w.age)),
          el("td", { class: "num" }, w.processed), el("td", { class: "num" }, w.failed),
          el("td", {}, el("span", { class: "badge " + (w.stale ? "stale" : "running") }, w.stale ? "stale" : "alive")))))));
  }

  async function viewRecurring(view) {
    const overview = await get("overview");
    const blocks = [];
    for (const q of list(overview.queues)) {
      const data = await get("recurring", { queue: q.queue });
      for (const r of list(data.schedules)) blocks.push(Object.assign({ queue: q.queue }, r));
    }
    view.replaceChildren(el("h2", {}, "Recurring schedules"),
      el("p", { class: "muted" }, "From celers_recurring_runs: each schedule's latest occurrence. The next run is the latest plus the last interval seen (an estimate: cron expressions live in the scheduler's configuration)."),
      el("table", { id: "recurring" },
        el("thead", {}, el("tr", {}, ["schedule", "queue", "last run", "next run (est.)", "runs", "last task"].map((h) => el("th", {}, h)))),
        el("tbody", {}, blocks.map((r) => el("tr", {},
          el("td", {}, r.schedule), el("td", {}, r.queue), el("td", {}, fmtTime(r.last_run)),
          el("td", {}, r.next_run ? fmtTime(r.next_run) : "unknown"),
          el("td", { class: "num" }, r.runs),
          el("td", { class: "mono" }, el("a", { href: "#/task/" + encodeURIComponent(r.queue) + "/" + encodeURIComponent(r.task_id) }, r.task_id)))))));
  }

  // ---- routing: #/, #/queue/<q>[/<state>[/<after>]], #/task/<q>/<id>, #/dlq/<q>[/<offset>], #/workers, #/recurring
  async function render() {
    const seq = ++renderSeq;
    const view = document.getElementById("view");
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const nav = parts[0] || "overview";
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    const staging = document.createElement("div");
    try {
      await loadSession();
      if (nav === "overview") await viewOverview(staging);
      else if (nav === "queue") await viewQueue(staging, parts[1], parts[2] === "all" ? "" : parts[2], parts[3]);
      else if (nav === "task") await viewTask(staging, parts[1], parts[2]);
      else if (nav === "dlq") await viewDlq(staging, parts[1], parts[2]);
      else if (nav === "workers") await viewWorkers(staging);
      else if (nav === "recurring") await viewRecurring(staging);
      else staging.append(el("h2", {}, "Not found"));
    } catch (e) {
      staging.replaceChildren(el("h2", {}, "Could not load"), el("pre", { class: "error" }, e.message));
    }
    if (seq !== renderSeq) return; // a newer render started meanwhile
    // keep the throughput queue choice and focus across refreshes
    const oldSel = document.getElementById("tp-queue");
    const keep = oldSel && oldSel.value;
    view.replaceChildren(...staging.childNodes);
    const newSel = document.getElementById("tp-queue");
    if (keep && newSel && newSel.value !== keep && [...newSel.options].some((o) => o.value === keep)) {
      newSel.value = keep;
      drawThroughput(document);
    }
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = String(seq);
  }

  function schedule() {
    clearInterval(timer);
    if (document.getElementById("autorefresh").checked) {
      timer = setInterval(() => {
        const a = document.activeElement;
        if (a && (a.tagName === "INPUT" || a.tagName === "SELECT")) return; // not while typing
        render();
      }, REFRESH_MS);
    }
  }

  document.getElementById("unlock").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    if (input.value) sessionStorage.setItem("celers.token", input.value);
    else sessionStorage.removeItem("celers.token");
    input.value = "";
    render();
  });
  document.getElementById("autorefresh").addEventListener("change", schedule);
  window.addEventListener("hashchange", render);
  render();
  schedule();
})();
