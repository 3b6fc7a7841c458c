// Shared helpers of every dashboard page: API calls with the bearer token, DOM building,
// number formatting, SVG charts, live updates and the verdict/alert action buttons.
// Data is only ever put into the page as text nodes (never innerHTML).

const TOKEN_KEY = "watchdog.apiToken";

// --- token ------------------------------------------------------------------------------

function takeTokenFromFragment() {
  // `/#token=…` stores the token once and removes it from the address bar (the fragment is
  // never sent to the server, so it does not reach access logs).
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return;
  localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

let tokenPrompt = null;

export function askToken() {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  input.value = "";
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        tokenPrompt = null;
        if (dialog.returnValue === "save" && input.value.trim()) {
          localStorage.setItem(TOKEN_KEY, input.value.trim());
        }
        resolve(token());
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return tokenPrompt;
}

function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// GET or POST JSON under /api/; asks for the token on 401 and retries once.
export async function api(path, { method = "GET", body, retry = true } = {}) {
  const opts = { method, headers: authHeaders({ Accept: "application/json" }), cache: "no-store" };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, opts);
  let payload = null;
  const text = await resp.text();
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = { ok: false, error: text.slice(0, 300) };
  }
  if (resp.status === 401 && retry) {
    await askToken();
    return api(path, { method, body, retry: false });
  }
  if (!resp.ok || (payload && payload.ok === false)) {
    const msg = (payload && (payload.error || payload.message)) || `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg, payload);
  }
  return payload;
}

// --- DOM --------------------------------------------------------------------------------

// h("a", {href: "/x", class: "y", dataset: {k: "v"}, onclick: fn}, "text", child, [more])
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function flash(message, kind = "info") {
  const el = document.getElementById("flash");
  el.textContent = message;
  el.className = `flash ${kind}`;
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => (el.hidden = true), kind === "error" ? 12000 : 5000);
}

export function clearFlash() {
  document.getElementById("flash").hidden = true;
}

// --- formatting -------------------------------------------------------------------------

// Formatter objects are costly to build; toLocaleString would build one per call.
const USD4 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 4, maximumFractionDigits: 4 });
const USD2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const INT = new Intl.NumberFormat("en-US");

export function fmtUsd(v) {
  if (v === null || v === undefined) return "—";
  return (v < 0 ? "-$" : "$") + (Math.abs(v) < 1 ? USD4 : USD2).format(Math.abs(v));
}

export function fmtInt(v) {
  if (v === null || v === undefined) return "—";
  return INT.format(Number(v));
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
  return `${Math.floor(ms / 3600000)} h ${Math.round((ms % 3600000) / 60000)} m`;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function shortId(id, n = 8) {
  return id ? String(id).slice(0, n) : "—";
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind || ""}` }, text);
}

export function verdictBadge(verdict) {
  if (!verdict) {
    const el = badge("allow", "allow");
    el.dataset.verdict = "allow";
    return el;
  }
  const scope = verdict.scope ? `${verdict.scope.type} ${verdict.scope.value}` : "";
  const el = badge(verdict.state, verdict.state);
  el.title = [scope && `scope: ${scope}`, verdict.reason && `reason: ${verdict.reason}`, verdict.set_by && `by: ${verdict.set_by}`]
    .filter(Boolean)
    .join("\n");
  el.dataset.verdict = verdict.state;
  return el;
}

export function runLink(traceId) {
  return h("a", { href: `/runs/${traceId}`, class: "mono", title: traceId }, shortId(traceId, 12));
}

// --- tables -----------------------------------------------------------------------------

// columns: [{key, label, num, render(row) → node|string, sortKey}]
export function table(columns, rows, { empty = "Nothing here.", rowAttrs, sort, onSort } = {}) {
  const head = h(
    "tr",
    {},
    columns.map((c) => {
      const sortable = Boolean(onSort && c.sortKey);
      const cls = [c.num ? "num" : "", sortable ? "sortable" : "", sort && sort.key === c.sortKey ? `sorted ${sort.dir}` : ""]
        .filter(Boolean)
        .join(" ");
      return h(
        "th",
        { class: cls, dataset: c.sortKey ? { sort: c.sortKey } : undefined, onclick: sortable ? () => onSort(c.sortKey) : undefined },
        c.label,
      );
    }),
  );
  const body = rows.length
    ? rows.map((r) =>
        h(
          "tr",
          rowAttrs ? rowAttrs(r) : {},
          columns.map((c) => {
            const v = c.render ? c.render(r) : r[c.key];
            return h("td", { class: c.num ? "num" : c.cls || "" }, v === null || v === undefined ? "—" : v);
          }),
        ),
      )
    : [h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

// --- charts (plain SVG) -----------------------------------------------------------------

export const PALETTE = ["#1f6feb", "#8250df", "#1a7f37", "#bc4c00", "#bf3989", "#0a7d8c", "#9a6700", "#cf222e", "#6e7781"];

// Horizontal bars: items [{label, value, attrs}] → an SVG with one labelled bar per item.
export function barsH(items, { format = fmtUsd, color = PALETTE[0] } = {}) {
  const rowH = 26;
  const width = 560;
  const labelW = 170;
  const valueW = 90;
  const max = Math.max(...items.map((i) => i.value), 0) || 1;
  const svg = s("svg", { viewBox: `0 0 ${width} ${Math.max(items.length, 1) * rowH + 4}`, role: "img" });
  if (!items.length) {
    svg.appendChild(s("text", { x: 4, y: 18 }, "no spend"));
  }
  items.forEach((it, i) => {
    const y = i * rowH + 4;
    const w = ((width - labelW - valueW) * it.value) / max;
    const g = s("g", it.attrs || {});
    const label = it.label.length > 26 ? `${it.label.slice(0, 25)}…` : it.label;
    g.appendChild(s("text", { x: 0, y: y + 15 }, label));
    g.appendChild(s("rect", { x: labelW, y: y + 3, width: Math.max(w, 1), height: rowH - 10, rx: 2, fill: it.color || color }, s("title", {}, `${it.label}: ${format(it.value)}`)));
    g.appendChild(s("text", { x: width - 4, y: y + 15, "text-anchor": "end", class: "value" }, format(it.value)));
    svg.appendChild(g);
  });
  return h("div", { class: "chart" }, svg);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Stacked columns: buckets (ISO strings) × series [{name, values}] → SVG with axes and legend.
export function stackedBars(buckets, series, { bucketS = 3600, format = fmtUsd } = {}) {
  const width = 900;
  const height = 240;
  const left = 64;
  const bottom = 24;
  const top = 8;
  const plotW = width - left - 8;
  const plotH = height - top - bottom;
  const totals = buckets.map((_, i) => series.reduce((acc, se) => acc + se.values[i], 0));
  const max = niceMax(Math.max(...totals, 0));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let k = 0; k <= 4; k++) {
    const y = top + plotH - (plotH * k) / 4;
    svg.appendChild(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "axis" }));
    svg.appendChild(s("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, format((max * k) / 4)));
  }
  const slot = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(slot * 0.72, 1);
  const labelEvery = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    let y = top + plotH;
    const x = left + i * slot + (slot - barW) / 2;
    series.forEach((se, j) => {
      const v = se.values[i];
      if (v <= 0) return;
      const hgt = (plotH * v) / max;
      y -= hgt;
      svg.appendChild(
        s("rect", { x, y, width: barW, height: Math.max(hgt, 0.5), fill: PALETTE[j % PALETTE.length] }, s("title", {}, `${fmtTime(b)} · ${se.name}: ${format(v)}`)),
      );
    });
    if (i % labelEvery === 0) {
      const d = new Date(b);
      const label = bucketS < 86400 ? `${String(d.getUTCHours()).padStart(2, "0")}:00` : `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
      svg.appendChild(s("text", { x: x + barW / 2, y: height - 6, "text-anchor": "middle" }, label));
    }
  });
  const legend = h(
    "div",
    { class: "legend" },
    series.map((se, j) => {
      const sw = h("span", { class: "swatch" });
      sw.style.background = PALETTE[j % PALETTE.length];
      return h("span", { dataset: { series: se.name } }, sw, `${se.name} `, h("span", { class: "muted" }, format(se.total_usd)));
    }),
  );
  return h("div", { class: "chart" }, svg, series.length ? legend : h("p", { class: "muted" }, "No priced model calls in this range."));
}

// --- live updates -----------------------------------------------------------------------

function setLive(on, title) {
  const el = document.getElementById("live");
  el.className = `live ${on ? "on" : "off"}`;
  el.title = title;
}

// Read /api/dashboard/events (server-sent events) with fetch so the bearer token goes along.
async function streamEvents(onChange) {
  for (;;) {
    try {
      const resp = await fetch("/api/dashboard/events", { headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store" });
      if (resp.status === 401) {
        setLive(false, "live updates: waiting for the API token");
        await askToken();
        continue;
      }
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      setLive(true, "live updates: connected");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (event === "change" && data) onChange(JSON.parse(data));
        }
      }
    } catch (err) {
      // fall through to reconnect
    }
    setLive(false, "live updates: reconnecting");
    await new Promise((r) => setTimeout(r, 3000));
  }
}

// Run `load()` now and again whenever the daemon reports a change in one of `topics`;
// never two loads at once (a change during a load schedules exactly one more).
export function livePage(load, topics = null) {
  let running = false;
  let again = false;
  async function run() {
    if (document.querySelector(".confirm")) {
      // An open "are you sure" strip would vanish under a re-render: wait until it closes.
      clearTimeout(run.deferred);
      run.deferred = setTimeout(run, 700);
      return;
    }
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await load();
      // Milliseconds from navigation start to the first render with data (benchmarks read it).
      if (!document.body.dataset.loaded) document.body.dataset.renderedMs = String(Math.round(performance.now()));
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    } catch (err) {
      flash(err.message || String(err), "error");
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  }
  run();
  streamEvents((change) => {
    if (!topics || change.topics.some((t) => topics.includes(t))) run();
  });
  return run;
}

// --- capabilities and actions -----------------------------------------------------------

let capabilities = null;

export async function routes() {
  if (!capabilities) {
    capabilities = api("/api/dashboard/capabilities").then((r) => new Set(r.routes));
  }
  return capabilities;
}

export async function has(route) {
  return (await routes()).has(route);
}

// A button that, when clicked, shows an inline "are you sure" strip with a reason field;
// `act(reason)` runs on confirm and its message (or error) is flashed.
export function confirmButton({ label, confirmLabel, cls, question, enabled = true, why = "", act, testid }) {
  const holder = h("span", { class: "confirm-holder" });
  const btn = h("button", { type: "button", class: cls, disabled: !enabled, title: enabled ? "" : why, dataset: { testid } }, label);
  btn.addEventListener("click", () => {
    const reason = h("input", { type: "text", placeholder: "reason", value: "from the dashboard", size: 30, dataset: { testid: `${testid}-reason` } });
    const go = h("button", { type: "button", class: cls, dataset: { testid: `${testid}-confirm` } }, confirmLabel);
    const cancel = h("button", { type: "button", class: "ghost" }, "Cancel");
    const strip = h("div", { class: "confirm row" }, h("strong", {}, typeof question === "function" ? question() : question), reason, go, cancel);
    cancel.addEventListener("click", () => strip.remove());
    go.addEventListener("click", async () => {
      go.disabled = true;
      try {
        const msg = await act(reason.value.trim() || "from the dashboard");
        flash(msg || "done");
        strip.remove();
      } catch (err) {
        flash(err.message || String(err), "error");
        go.disabled = false;
      }
    });
    holder.querySelector(".confirm")?.remove();
    holder.appendChild(strip);
  });
  holder.prepend(btn);
  return holder;
}

export function init() {
  takeTokenFromFragment();
  document.getElementById("token-button").addEventListener("click", () => askToken());
  document.getElementById("token-clear").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-dialog").close("clear");
    flash("token forgotten");
  });
}

init();
