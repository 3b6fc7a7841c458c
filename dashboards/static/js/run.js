// Run detail: one trace as a waterfall of its steps (model, tokens, cost, tool arguments
// and results), the alerts attached to the steps their evidence names, and the verdict
// controls (Kill / Pause / Resume) that call the guard API.
import {
  api, badge, confirmButton, fmtInt, fmtMs, fmtTime, fmtUsd, h, has, livePage, replace, verdictBadge,
} from "./common.js";

const traceId = decodeURIComponent(location.pathname.split("/").pop() || "").toLowerCase();
const main = document.getElementById("main");
const open = new Set(); // span ids whose detail is expanded (kept across live refreshes)
let scopeChoice = "trace";

const el = {
  title: h("h1", {}, "Run ", h("code", {}, traceId)),
  summary: h("section", { class: "grid cards", dataset: { testid: "run-summary" } }),
  controls: h("section", { class: "panel", dataset: { testid: "controls" } }),
  runAlerts: h("section", { class: "panel", dataset: { testid: "run-alerts" } }),
  waterfall: h("section", { class: "panel", dataset: { testid: "waterfall" } }),
};
replace(main, el.title, el.summary, el.controls, el.runAlerts, el.waterfall);

function card(label, value, testid, raw, sub = "") {
  return h(
    "div",
    { class: "panel card", dataset: { testid } },
    h("div", { class: "label" }, label),
    h("div", { class: "value", dataset: { testid: `${testid}-value`, value: raw ?? "" } }, value),
    h("div", { class: "sub" }, sub),
  );
}

function pretty(text) {
  if (text === null || text === undefined) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return String(text);
  }
}

function alertBox(a) {
  return h(
    "div",
    { class: `alert-box ${a.severity}`, dataset: { testid: "step-alert", alert: a.id } },
    badge(a.severity),
    " ",
    h("strong", {}, `${a.detector} · ${a.rule}`),
    " ",
    a.summary,
    " ",
    badge(a.state),
  );
}

// --- controls -----------------------------------------------------------------------------

async function verdictControls(run) {
  const [canKill, canResume, canPause] = await Promise.all([
    has("POST /api/v1/kill"),
    has("POST /api/v1/resume"),
    has("POST /api/v1/pause"),
  ]);
  const scopes = [["trace", run.trace_id, "this run"]];
  if (run.session_id && run.session_id !== run.trace_id) scopes.push(["session", run.session_id, "its session"]);
  for (const a of run.agents) scopes.push(["agent", a, "agent"]);
  const optionValue = (t, v) => (t === "agent" ? `agent:${v}` : t);
  // Keep the operator's choice across live re-renders (it survives while it still exists).
  if (!scopes.some(([t, v]) => optionValue(t, v) === scopeChoice)) scopeChoice = "trace";
  const select = h(
    "select",
    { dataset: { testid: "scope" }, onchange: (e) => (scopeChoice = e.target.value) },
    scopes.map(([t, v, label]) => h("option", { value: optionValue(t, v) }, `${label}: ${v.length > 40 ? `${v.slice(0, 39)}…` : v}`)),
  );
  select.value = scopeChoice;
  const target = () => {
    const v = select.value;
    if (v.startsWith("agent:")) return ["agent", v.slice(6)];
    return v === "session" ? ["session", run.session_id] : ["trace", run.trace_id];
  };
  const describe = () => {
    const [t, v] = target();
    return `${t} ${v}`;
  };
  const missing = (route) => `${route} is not served by this daemon`;
  const act = (kind) => async (reason) => {
    const [t, v] = target();
    const body = { [t]: v, reason, actor: "dashboard" };
    if (kind === "kill") await api("/api/v1/kill", { method: "POST", body });
    else if (kind === "pause") await api("/api/v1/pause", { method: "POST", body });
    else await api("/api/v1/resume", { method: "POST", body });
    refresh();
    return `${kind} ${t} ${v}: done`;
  };
  const verdict = run.verdict;
  replace(
    el.controls,
    h("h2", {}, "Verdict ", verdictBadge(verdict), verdict ? h("span", { class: "muted" }, `${verdict.scope ? `${verdict.scope.type} ${verdict.scope.value} · ` : ""}${verdict.reason || ""}${verdict.set_by ? ` · by ${verdict.set_by}` : ""}`) : h("span", { class: "muted" }, "no kill, pause or deny applies to this run")),
    h(
      "div",
      { class: "controls" },
      h("label", {}, "Scope ", select),
      confirmButton({ label: "Kill", confirmLabel: "Confirm kill", cls: "danger", question: () => `Kill ${describe()}?`, enabled: canKill, why: missing("POST /api/v1/kill"), act: act("kill"), testid: "kill" }),
      confirmButton({ label: "Pause", confirmLabel: "Confirm pause", cls: "caution", question: () => `Pause ${describe()}?`, enabled: canPause, why: missing("POST /api/v1/pause"), act: act("pause"), testid: "pause" }),
      confirmButton({ label: "Resume", confirmLabel: "Confirm resume", cls: "primary", question: () => `Resume ${describe()}?`, enabled: canResume, why: missing("POST /api/v1/resume"), act: act("resume"), testid: "resume" }),
    ),
  );
}

// --- waterfall ----------------------------------------------------------------------------

function depthOf(items) {
  const parent = new Map(items.map((it) => [it.span_id, it.parent_span_id]));
  const depth = new Map();
  const walk = (id, guard = 0) => {
    if (depth.has(id)) return depth.get(id);
    const p = parent.get(id);
    const d = p && parent.has(p) && guard < 64 ? walk(p, guard + 1) + 1 : 0;
    depth.set(id, d);
    return d;
  };
  items.forEach((it) => walk(it.span_id));
  return depth;
}

function stepLabel(it) {
  if (it.kind === "llm") return `${it.operation || "chat"} ${it.model || ""}`.trim();
  if (it.kind === "tool") return it.tool_name || it.span_name || "tool";
  if (it.kind === "agent") return `agent ${it.agent_name || it.span_name || ""}`;
  return it.span_name || it.kind;
}

function stepMeta(it) {
  if (it.kind === "llm") return `${fmtInt((it.input_tokens || 0) + (it.output_tokens || 0))} tok · ${fmtUsd(it.cost_usd)}`;
  return fmtMs(it.duration_ms);
}

function detail(it, alertsById) {
  const kv = [];
  const add = (k, v) => v !== null && v !== undefined && v !== "" && kv.push(h("dt", {}, k), h("dd", {}, v));
  add("Span", h("code", {}, it.span_id));
  add("Kind", `${it.kind}${it.operation ? ` (${it.operation})` : ""}`);
  add("Agent", it.agent_name);
  add("Started", `${fmtTime(it.start)} · ${fmtMs(it.duration_ms)}`);
  if (it.kind === "llm") {
    add("Model", [it.provider, it.model].filter(Boolean).join(" / "));
    add("Tokens", `${fmtInt(it.input_tokens)} in (${fmtInt(it.cache_read_tokens || 0)} cached) · ${fmtInt(it.output_tokens)} out${it.reasoning_tokens ? ` (${fmtInt(it.reasoning_tokens)} reasoning)` : ""}`);
    add("Cost", h("span", { dataset: { testid: "step-cost", value: it.cost_usd ?? "" } }, `${fmtUsd(it.cost_usd)} (${it.price_source})`));
  }
  if (it.is_error) add("Error", h("span", { class: "badge kill" }, it.error_type || "error"));
  const blocks = [];
  const pre = (label, text, testid) => text && blocks.push(h("div", {}, h("strong", {}, label), h("pre", { dataset: { testid } }, pretty(text))));
  if (it.kind === "tool") {
    pre("Arguments", it.tool_args, "tool-args");
    pre("Result", it.tool_result, "tool-result");
  }
  pre("Task", it.task, "task");
  pre("User message", it.user_message, "user-message");
  pre("Output", it.output_text, "output-text");
  const attached = (it.alert_ids || []).map((id) => alertsById.get(id)).filter(Boolean);
  return h("div", { class: "wf-detail", dataset: { testid: "step-detail", span: it.span_id } }, attached.map(alertBox), h("dl", { class: "kv" }, kv), blocks);
}

function waterfall(run) {
  const items = run.items;
  const t0 = Math.min(...items.map((it) => Date.parse(it.start)));
  const t1 = Math.max(...items.map((it) => Date.parse(it.end)));
  const span = Math.max(t1 - t0, 1);
  const depth = depthOf(items);
  const alertsById = new Map(run.alerts.map((a) => [a.id, a]));
  const rows = [];
  for (const it of items) {
    const bar = h("div", { class: `wf-bar ${it.is_error ? "error" : it.kind}` });
    bar.style.left = `${((Date.parse(it.start) - t0) / span) * 100}%`;
    bar.style.width = `${Math.max((it.duration_ms / span) * 100, 0.3)}%`;
    bar.title = `${stepLabel(it)} · ${fmtMs(it.duration_ms)}`;
    const name = h("div", { class: "wf-name" }, h("span", { class: "badge kind" }, it.kind), h("span", { class: "label" }, stepLabel(it)));
    name.style.paddingLeft = `${(depth.get(it.span_id) || 0) * 14}px`;
    const nAlerts = (it.alert_ids || []).length;
    if (nAlerts) name.appendChild(badge(`${nAlerts} alert${nAlerts > 1 ? "s" : ""}`, (alertsById.get(it.alert_ids[0]) || {}).severity || "warn"));
    const row = h(
      "div",
      {
        class: `wf-row${open.has(it.span_id) ? " open" : ""}${nAlerts ? " has-alert" : ""}`,
        dataset: { testid: "step", span: it.span_id, kind: it.kind, cost: it.cost_usd ?? "", alerts: nAlerts },
        tabindex: "0",
      },
      name,
      h("div", { class: "wf-track" }, bar),
      h("div", { class: "wf-meta" }, stepMeta(it)),
    );
    const toggle = () => {
      if (open.has(it.span_id)) open.delete(it.span_id);
      else open.add(it.span_id);
      renderWaterfall(run);
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (e) => e.key === "Enter" && toggle());
    rows.push(row);
    if (open.has(it.span_id)) rows.push(detail(it, alertsById));
  }
  return h("div", { class: "waterfall" }, rows);
}

function renderWaterfall(run) {
  replace(
    el.waterfall,
    h("h2", {}, "Timeline ", h("span", { class: "muted" }, `${run.spans} spans · ${fmtMs(Date.parse(run.last_seen) - Date.parse(run.started))} · click a step for details`)),
    waterfall(run),
  );
}

async function load() {
  let run;
  try {
    run = await api(`/api/dashboard/runs/${encodeURIComponent(traceId)}`);
  } catch (err) {
    if (err.status === 404) {
      replace(el.summary, h("p", { class: "muted" }, "No spans of this run have arrived (yet)."));
      return;
    }
    throw err;
  }
  document.title = `Run ${traceId.slice(0, 8)} · watchdog`;
  replace(
    el.title,
    "Run ",
    h("code", {}, traceId),
    h("span", { class: "muted" }, ` ${run.agents.join(", ")} · session `, h("code", {}, run.session_id || "—")),
  );
  replace(
    el.summary,
    card("Cost", fmtUsd(run.cost_usd), "run-cost", run.cost_usd, run.unpriced_calls ? `${run.unpriced_calls} unpriced calls` : ""),
    card("Steps", fmtInt(run.steps), "run-steps", run.steps, `${run.llm_calls} model · ${run.tool_calls} tool`),
    card("Tokens", fmtInt(run.input_tokens + run.output_tokens), "run-tokens", run.input_tokens + run.output_tokens, `${fmtInt(run.input_tokens)} in · ${fmtInt(run.output_tokens)} out`),
    card("Errors", fmtInt(run.errors), "run-errors", run.errors),
    card("Alerts", fmtInt(run.alerts.length), "run-alert-count", run.alerts.length, `${run.alerts.filter((a) => a.state === "firing").length} firing`),
    card("Started", fmtTime(run.started).slice(11), "run-started", run.started, `${fmtTime(run.started).slice(0, 10)} UTC · last step ${fmtTime(run.last_seen).slice(11)}`),
  );
  await verdictControls(run);
  const attached = new Set(run.items.flatMap((it) => it.alert_ids || []));
  const loose = run.alerts.filter((a) => !attached.has(a.id));
  replace(
    el.runAlerts,
    h("h2", {}, "Alerts ", h("span", { class: "muted" }, loose.length ? "not tied to one step" : "every alert is shown on its steps below")),
    run.alerts.length ? loose.map(alertBox) : h("p", { class: "muted" }, "No alerts on this run."),
  );
  renderWaterfall(run);
}

const refresh = livePage(load);
