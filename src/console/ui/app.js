// ferromq console: polls the console's JSON API every 2 s and renders the page named by
// <body data-page>. Every value from the API is written with textContent or as a DOM attribute,
// never parsed as HTML: client ids, topics and user names come from the network.
"use strict";

const POLL_MS = 2000;
const CHART_POINTS = 60; // two minutes at one sample per poll
const page = document.body.dataset.page;
let overview = null; // the last /api/overview answer: csrf_token and user.admin for actions
const samples = []; // { t, inRate, outRate, connections } for the chart
let previous = null; // { t, received, sent } of the last overview, for rates

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function field(obj, path) {
  return path.split(".").reduce((v, key) => (v === null || v === undefined ? v : v[key]), obj);
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

// The poll line is not a live region (it changes every 2 s); a failure is announced.
function status(text, isError, id) {
  const node = document.getElementById(id || "status");
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
  if (!id) {
    if (isError) node.setAttribute("role", "alert");
    else node.removeAttribute("role");
  }
}

// The last action's outcome stays until the next action (the status line changes every poll).
function actionResult(text, isError) {
  status(text, isError, "action-result");
}

function when(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function duration(secs) {
  let s = Math.max(0, Math.floor(secs));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size || parts.length) { parts.push(Math.floor(s / size) + unit); s %= size; }
  }
  parts.push(s + "s");
  return parts.join(" ");
}

// In ActiveMQ's units (powers of 1024, spelled as its size attributes take them), whole when
// exact: a limit shown as "64 mb" can be written back as limit="64 mb".
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["b", "kb", "mb", "gb"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (Number.isInteger(n) ? String(n) : n.toFixed(1)) + " " + units[i];
}

// An absolute URL of a console path: a page opened with user:pass@ in its URL resolves a
// relative URL with the credentials in it, which fetch refuses; location.origin has none.
function url(path) {
  return location.origin + path;
}

// An action's URL with a name in its query string. In the path a name "." or ".." is a dot
// segment, which the browser removes before sending even when written %2E; the query string
// is sent as written.
function named(path, key, name) {
  return path + "?" + key + "=" + encodeURIComponent(name);
}

async function getJson(path) {
  const response = await fetch(url(path), { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

// What an action's answer adds to "Done": how many messages a purge removed and, on a
// cluster node, the nodes that did not answer it (copies they took may still be delivered).
function outcome(body) {
  let text = "";
  if (typeof body.purged === "number") {
    text += " (" + body.purged + " message" + (body.purged === 1 ? "" : "s") + " purged";
    const silent = body.nodes && Array.isArray(body.nodes.silent) ? body.nodes.silent : [];
    if (silent.length) {
      text += "; nodes that did not answer: " + silent.join(", ") +
        ": messages they had already taken may still be delivered";
    }
    text += ")";
  }
  return text;
}

// Runs an admin action: POST with the CSRF token of the last overview.
async function act(path, question, button) {
  if (!overview || !window.confirm(question)) return;
  button.disabled = true;
  try {
    const response = await fetch(url(path), {
      method: "POST",
      headers: { "X-CSRF-Token": overview.csrf_token, Accept: "application/json" },
      credentials: "same-origin",
    });
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: the status says enough */ }
    if (!response.ok || !body || body.ok !== true) {
      const reason = body && body.error ? body.error : "HTTP " + response.status;
      throw new Error(reason);
    }
    actionResult("Done: " + question.replace(/\?$/, "") + outcome(body), false);
    await refresh();
  } catch (err) {
    actionResult("Action failed: " + err.message, true);
  } finally {
    button.disabled = false;
  }
}

function actionButton(label, path, question) {
  const button = el("button", label, {
    type: "button",
    "data-action": label.toLowerCase(),
    "aria-label": question.replace(/\?$/, ""),
  });
  button.addEventListener("click", () => act(path, question, button));
  return button;
}

function isAdmin() {
  return Boolean(overview && overview.user && overview.user.admin);
}

// One table page: rows from the API, one <tr data-KEY="..."> per row, cells from `columns`.
// Unchanged data is not rendered again, so a button keeps its focus between polls.
const rendered = {};
function renderRows(tableId, rows, key, columns, action) {
  const table = document.getElementById(tableId);
  const admin = Boolean(isAdmin() && action);
  const signature = JSON.stringify([admin, rows]);
  if (rendered[tableId] === signature) return;
  rendered[tableId] = signature;
  for (const th of table.querySelectorAll("th[data-admin-only]")) th.hidden = !admin;
  const tbody = table.tBodies[0];
  const fresh = document.createDocumentFragment();
  if (!rows.length) {
    fresh.appendChild(el("tr")).appendChild(el("td", "None.", { colspan: String(columns.length + (admin ? 1 : 0)), class: "empty" }));
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const [name, value] of Object.entries(key(row))) tr.setAttribute("data-" + name, String(value));
    for (const [render, numeric] of columns) {
      const value = render(row);
      tr.appendChild(el("td", value === null || value === undefined ? "–" : value, numeric ? { class: "num" } : {}));
    }
    if (admin) {
      const td = tr.appendChild(el("td"));
      const button = action(row);
      if (button) td.appendChild(button);
    }
    fresh.appendChild(tr);
  }
  tbody.replaceChildren(fresh);
}

// Per-row rates: the counter's change since the previous poll, per second (like the chart's).
// `null` (shown as a dash) on the first poll of a row, when its counter is not kept
// (a topic past the broker's bound) or when it went backwards (the broker restarted).
let lastCounts = {};
function rates(kind, rows, name, counters) {
  const now = Date.now();
  const seen = {};
  for (const row of rows) {
    row.rates = {};
    for (const counter of counters) {
      const id = kind + "\u0000" + counter + "\u0000" + name(row);
      const value = row[counter];
      if (typeof value !== "number") { row.rates[counter] = null; continue; }
      const before = lastCounts[id];
      row.rates[counter] = before && value >= before.value && now > before.t
        ? (value - before.value) * 1000 / (now - before.t)
        : null;
      seen[id] = { t: now, value: value };
    }
  }
  lastCounts = seen;
}
function perSecond(rate) {
  return rate === null || rate === undefined ? null : rate.toFixed(1);
}

const tablePages = {
  clients: async () => {
    const { clients } = await getJson("/api/clients");
    renderRows("clients", clients, (c) => ({ "client-id": c.client_id, id: c.id, protocol: c.protocol }), [
      [(c) => c.client_id],
      [(c) => c.protocol.toUpperCase() + " " + (c.protocol_version || "")],
      [(c) => c.user],
      [(c) => c.peer],
      [(c) => c.listener],
      [(c) => when(c.connected_unix_ms)],
      [(c) => c.keep_alive_secs, true],
      [(c) => c.subscriptions, true],
    ],
    // The connection id is the console's own (mqtt-N, stomp-N): never a dot segment.
    (c) => actionButton("Disconnect", "/api/clients/" + encodeURIComponent(c.id) + "/disconnect",
      "Disconnect client " + c.client_id + "?"));
    return clients.length + " connected";
  },
  sessions: async () => {
    const { sessions, cluster } = await getJson("/api/sessions");
    renderRows("sessions", sessions, (s) => ({ "client-id": s.client_id, connected: s.connected, here: s.here !== false }), [
      [(s) => s.client_id],
      [(s) => (s.connected ? "online" : "offline")],
      [(s) => s.pending, true],
      [(s) => s.inflight, true],
      [(s) => s.subscriptions, true],
      [(s) => (s.connected ? "now" : when(s.last_seen_unix_ms))],
      [(s) => s.expiry_secs, true],
      [(s) => s.held_by],
      [(s) => (s.kind === "stomp-durable-subscription" ? "STOMP durable subscription" + (s.destination ? " to " + s.destination : "") : "MQTT")],
    ], (s) => (s.connected ? null : actionButton("Delete", named("/api/sessions/delete", "client_id", s.client_id),
      s.kind === "stomp-durable-subscription"
        ? "Delete STOMP durable subscription " + s.subscription_name + " of client-id " + s.stomp_client_id + " with the messages it kept?"
        : "Delete the offline session of " + s.client_id + "?")));
    let note = "";
    if (cluster && cluster.error) note = " (the cluster's session records could not be read: " + cluster.error + ")";
    else if (cluster && cluster.truncated) note = " (the first " + cluster.records_read + " of the cluster's session records were read; " + cluster.records_unread + " more not listed)";
    return sessions.length + " sessions" + note;
  },
  topics: async () => {
    const { topics, truncated } = await getJson("/api/topics");
    rates("topic", topics, (t) => t.topic, ["messages_in"]);
    renderRows("topics", topics, (t) => ({ topic: t.topic }), [
      [(t) => t.topic],
      [(t) => t.destination],
      [(t) => t.subscribers, true],
      [(t) => t.messages_in, true],
      [(t) => perSecond(t.rates.messages_in), true],
      [(t) => (t.retained ? "yes" : "no")],
    ], null);
    return topics.length + " topics" + (truncated ? " (the broker counts a limited number of topics: some are not counted)" : "");
  },
  queues: async () => {
    const { queues } = await getJson("/api/queues");
    rates("queue", queues, (q) => q.name, ["enqueued", "dequeued"]);
    renderRows("queues", queues, (q) => ({ queue: q.name }), [
      [(q) => q.name],
      [(q) => q.depth, true],
      [(q) => q.consumers, true],
      [(q) => q.in_flight, true],
      [(q) => q.enqueued, true],
      [(q) => perSecond(q.rates.enqueued), true],
      [(q) => q.dequeued, true],
      [(q) => perSecond(q.rates.dequeued), true],
    ], (q) => actionButton("Purge", named("/api/queues/purge", "name", q.name),
      "Purge every message of queue " + q.name + "?"));
    return queues.length + " queues";
  },
};

function renderOverview(o) {
  for (const node of document.querySelectorAll("[data-field]")) {
    const value = field(o, node.dataset.field);
    node.textContent = value === null || value === undefined ? "–"
      : (typeof value === "number" && node.dataset.unit === "%" ? value.toFixed(1) : String(value)) + (node.dataset.unit || "");
  }
  setText("uptime", duration(o.uptime_secs));
  // A limit of null is none (memoryUsage limit="0").
  setText("memory-bytes", !o.memory ? "–" : o.memory.limit_bytes === null ? bytes(o.memory.used_bytes) + " (no limit)"
    : bytes(o.memory.used_bytes) + " of " + bytes(o.memory.limit_bytes));
  setText("store-bytes", !o.store ? "no store"
    : o.store.kind === "cluster" ? "in the cluster (" + o.store.engine + ")"
    : o.store.limit_bytes === null ? bytes(o.store.used_bytes) + " (no storeUsage limit)"
    : bytes(o.store.used_bytes) + " of " + bytes(o.store.limit_bytes));
  const reload = o.last_reload || { result: "none", diagnostics: [] };
  const result = document.getElementById("reload-result");
  result.textContent = { none: "none since start", ok: "ok", error: "failed, the running configuration was kept" }[reload.result] || reload.result;
  result.className = reload.result === "ok" ? "result-ok" : reload.result === "error" ? "result-error" : "";
  setText("reload-at", reload.at_unix_ms ? "at " + when(reload.at_unix_ms) : "");
  document.getElementById("reload-diagnostics").replaceChildren(...(reload.diagnostics || []).map((d) => {
    const where = d.file ? [d.file, d.line, d.column].filter((p) => p !== null && p !== undefined).join(":") + ": " : "";
    return el("li", where + d.severity + ": " + d.message, { class: "severity-" + d.severity });
  }));
  document.getElementById("listeners").tBodies[0].replaceChildren(...(o.listeners || []).map((l) => {
    const tr = el("tr", null, { "data-listener": l.name });
    tr.append(el("td", l.name), el("td", l.scheme + "://" + l.address), el("td", l.protocol.toUpperCase()),
      el("td", [l.tls ? "TLS" : "TCP", l.websocket ? "WebSocket" : ""].filter(Boolean).join(" + ")),
      el("td", l.connections, { class: "num" }));
    return tr;
  }));
  sample(o);
  drawChart();
}

// Rates are deltas of the broker's counters between two polls divided by the time between
// them; a counter that went down (a broker restart) starts over.
function sample(o) {
  const now = performance.now();
  const current = { t: now, received: o.messages.received, sent: o.messages.sent };
  if (previous && current.received >= previous.received && current.sent >= previous.sent && now > previous.t) {
    const secs = (now - previous.t) / 1000;
    samples.push({
      inRate: (current.received - previous.received) / secs,
      outRate: (current.sent - previous.sent) / secs,
      connections: o.connections.current,
    });
    if (samples.length > CHART_POINTS) samples.shift();
    const last = samples[samples.length - 1];
    setText("rate-in", last.inRate.toFixed(1));
    setText("rate-out", last.outRate.toFixed(1));
  }
  setText("rate-connections", String(o.connections.current));
  previous = current;
}

function drawChart() {
  const canvas = document.getElementById("rate-chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const style = getComputedStyle(document.body);
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = style.getPropertyValue("--line") || "#ccc";
  ctx.lineWidth = 1;
  ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
  const pad = 8;
  const step = (width - 2 * pad) / (CHART_POINTS - 1);
  const x0 = width - pad - (samples.length - 1) * step;
  const rateMax = Math.max(1, ...samples.map((s) => Math.max(s.inRate, s.outRate)));
  const connMax = Math.max(1, ...samples.map((s) => s.connections));
  const line = (pick, max, color, dash) => {
    ctx.beginPath();
    ctx.setLineDash(dash);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    samples.forEach((s, i) => {
      const y = height - pad - (pick(s) / max) * (height - 2 * pad);
      if (i) ctx.lineTo(x0 + i * step, y); else ctx.moveTo(x0 + i * step, y);
    });
    ctx.stroke();
  };
  line((s) => s.connections, connMax, "#1a7f37", [2, 3]);
  line((s) => s.outRate, rateMax, "#c2410c", [6, 4]);
  line((s) => s.inRate, rateMax, "#0b5cad", []);
  ctx.setLineDash([]);
  ctx.fillStyle = style.getPropertyValue("--muted") || "#666";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText("max " + rateMax.toFixed(1) + " msg/s, " + connMax + " connections", pad + 2, pad + 12);
  canvas.dataset.points = String(samples.length);
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    overview = await getJson("/api/overview");
    setText("user", overview.user ? "Signed in as " + overview.user.name + (overview.user.admin ? " (admin)" : " (read only)") : "");
    let summary = "";
    if (page === "overview") renderOverview(overview);
    else if (tablePages[page]) summary = await tablePages[page]();
    status("Updated " + new Date().toLocaleTimeString() + (summary ? ": " + summary : ""), false);
    document.body.dataset.loaded = "true";
  } catch (err) {
    status("Could not load: " + err.message + " (retrying)", true);
  } finally {
    refreshing = false;
  }
}

for (const link of document.querySelectorAll("nav a[data-nav]")) {
  if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
}
refresh();
setInterval(refresh, POLL_MS);
