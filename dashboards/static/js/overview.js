// Overview: spend today and over time by agent and model, active runs, open alerts,
// killed/paused scopes. Refreshes itself on every change the daemon reports.
import {
  api, badge, barsH, fmtAgo, fmtInt, fmtUsd, h, has, livePage, PALETTE, replace, runLink,
  stackedBars, table, verdictBadge, confirmButton, fmtTime,
} from "./common.js";

const state = {
  range: localStorage.getItem("watchdog.overview.range") || "24h",
  split: localStorage.getItem("watchdog.overview.split") || "agent",
};

const main = document.getElementById("main");
const el = {
  cards: h("section", { class: "grid cards", dataset: { testid: "cards" } }),
  byAgent: h("div", { dataset: { testid: "by-agent" } }),
  byModel: h("div", { dataset: { testid: "by-model" } }),
  timeline: h("div", { dataset: { testid: "timeline" } }),
  controls: h("div", { class: "row" }),
  active: h("div", { class: "table-wrap", dataset: { testid: "active-runs" } }),
  alerts: h("div", { class: "table-wrap", dataset: { testid: "open-alerts" } }),
  verdicts: h("div", { class: "table-wrap", dataset: { testid: "verdicts" } }),
  activeTitle: h("span", { class: "muted" }),
};

replace(
  main,
  h("h1", {}, "Overview"),
  el.cards,
  h(
    "section",
    { class: "grid two" },
    h("div", { class: "panel" }, h("h2", {}, "Spend today by agent ", h("span", { class: "muted" }, "UTC day")), el.byAgent),
    h("div", { class: "panel" }, h("h2", {}, "Spend today by model"), el.byModel),
  ),
  h("section", { class: "panel" }, h("h2", {}, "Spend over time", el.controls), el.timeline),
  h("section", { class: "panel" }, h("h2", {}, "Active runs ", el.activeTitle), el.active),
  h(
    "section",
    { class: "grid two" },
    h("div", { class: "panel" }, h("h2", {}, "Open alerts ", h("a", { href: "/alerts", class: "muted" }, "all alerts →")), el.alerts),
    h("div", { class: "panel" }, h("h2", {}, "Killed, paused and other verdicts"), el.verdicts),
  ),
);

function card(label, value, sub, testid, raw, extraCls = "") {
  return h(
    "div",
    { class: `panel card ${extraCls}`, dataset: { testid } },
    h("div", { class: "label" }, label),
    h("div", { class: "value", dataset: { testid: `${testid}-value`, value: raw } }, value),
    h("div", { class: "sub" }, sub),
  );
}

function segmented(options, current, onPick, testid) {
  return h(
    "span",
    { class: "seg", dataset: { testid } },
    options.map(([value, label]) =>
      h("button", { type: "button", class: value === current ? "on" : "", dataset: { value }, onclick: () => onPick(value) }, label),
    ),
  );
}

let last = null;
let canResume = false;

function render(o) {
  const t = o.today;
  const pausedOrKilled = o.verdicts.filter((v) => v.state === "kill" || v.state === "pause");
  replace(
    el.cards,
    card("Spend today", fmtUsd(t.usd), t.unpriced_calls ? `${fmtInt(t.unpriced_calls)} unpriced calls` : `UTC ${t.day}`, "spend-today", t.usd),
    card("Model calls today", fmtInt(t.calls), `${fmtInt(t.input_tokens)} in · ${fmtInt(t.output_tokens)} out tokens`, "calls-today", t.calls),
    card("Runs today", fmtInt(o.runs_today), `${fmtInt(o.active_runs.length)} active now`, "runs-today", o.runs_today),
    card(
      "Open alerts",
      fmtInt(o.alerts.count),
      ["kill", "pause", "warn", "info"].filter((k) => o.alerts.by_severity[k]).map((k) => `${o.alerts.by_severity[k]} ${k}`).join(" · ") || "none",
      "open-alerts-count",
      o.alerts.count,
      o.alerts.count ? "alerting" : "",
    ),
    card("Killed / paused", fmtInt(pausedOrKilled.length), "scopes under a verdict", "verdict-count", pausedOrKilled.length, pausedOrKilled.length ? "alerting" : ""),
  );

  replace(
    el.byAgent,
    barsH(t.by_agent.map((a, i) => ({ label: a.agent, value: a.usd, color: PALETTE[i % PALETTE.length], attrs: { "data-testid": "agent-spend", "data-agent": a.agent, "data-value": a.usd } }))),
    table(
      [
        { key: "agent", label: "Agent" },
        { label: "Spend", num: true, render: (a) => (a.unpriced_calls === a.calls ? h("span", { class: "muted" }, "unpriced") : fmtUsd(a.usd)) },
        { label: "Calls", num: true, render: (a) => fmtInt(a.calls) },
        { label: "Tokens in / out", num: true, render: (a) => `${fmtInt(a.input_tokens)} / ${fmtInt(a.output_tokens)}` },
      ],
      t.by_agent,
      { empty: "No model calls today.", rowAttrs: (a) => ({ dataset: { testid: "agent-row", agent: a.agent, value: a.usd, calls: a.calls } }) },
    ),
  );
  replace(
    el.byModel,
    barsH(t.by_model.filter((m) => m.unpriced_calls < m.calls).map((m, i) => ({ label: m.model, value: m.usd, color: PALETTE[i % PALETTE.length], attrs: { "data-testid": "model-spend", "data-model": m.model, "data-value": m.usd } }))),
    table(
      [
        { key: "model", label: "Model" },
        { label: "Spend", num: true, render: (m) => (m.unpriced_calls === m.calls ? h("span", { class: "muted", title: "no known price: add it to the prices override file" }, "unpriced") : fmtUsd(m.usd)) },
        { label: "Calls", num: true, render: (m) => fmtInt(m.calls) },
        { label: "Unpriced", num: true, render: (m) => fmtInt(m.unpriced_calls) },
      ],
      t.by_model,
      { empty: "No model calls today.", rowAttrs: (m) => ({ dataset: { testid: "model-row", model: m.model, value: m.usd, calls: m.calls } }) },
    ),
  );

  replace(
    el.controls,
    segmented([["24h", "24 h"], ["7d", "7 days"], ["30d", "30 days"]], state.range, (v) => {
      state.range = v;
      localStorage.setItem("watchdog.overview.range", v);
      reload();
    }, "range"),
    segmented([["agent", "by agent"], ["model", "by model"]], state.split, (v) => {
      state.split = v;
      localStorage.setItem("watchdog.overview.split", v);
      render(last);
    }, "split"),
  );
  const tl = o.timeline;
  replace(el.timeline, stackedBars(tl.buckets, state.split === "agent" ? tl.by_agent : tl.by_model, { bucketS: tl.bucket_s }));

  el.activeTitle.textContent = `last step within ${Math.round(o.active_window_s / 60)} min`;
  replace(
    el.active,
    table(
      [
        { label: "Run", render: (r) => runLink(r.trace_id) },
        { key: "agent", label: "Agent" },
        { label: "Session", render: (r) => h("span", { class: "mono", title: r.session_id }, r.session_id.slice(0, 16)) },
        { label: "Steps", num: true, render: (r) => fmtInt(r.steps) },
        { label: "Cost", num: true, render: (r) => fmtUsd(r.cost_usd) },
        { label: "Alerts", num: true, render: (r) => (r.open_alerts ? badge(`${r.open_alerts} open`, r.max_severity) : fmtInt(r.alerts)) },
        { label: "Verdict", render: (r) => verdictBadge(r.verdict) },
        { label: "Last step", render: (r) => h("span", { title: fmtTime(r.last_seen) }, fmtAgo(r.last_seen)) },
      ],
      o.active_runs,
      { empty: "No active runs.", rowAttrs: (r) => ({ dataset: { testid: "active-run", trace: r.trace_id, cost: r.cost_usd ?? "", steps: r.steps } }) },
    ),
  );

  replace(
    el.alerts,
    table(
      [
        { label: "Severity", render: (a) => badge(a.severity) },
        { key: "detector", label: "Detector" },
        { key: "agent_name", label: "Agent" },
        { key: "summary", label: "Summary" },
        { label: "Run", render: (a) => (a.trace_id ? runLink(a.trace_id) : "—") },
        { label: "Updated", render: (a) => h("span", { title: fmtTime(a.updated_at) }, fmtAgo(a.updated_at)) },
      ],
      o.alerts.items,
      { empty: "No open alerts.", rowAttrs: (a) => ({ dataset: { testid: "open-alert", alert: a.id } }) },
    ),
  );

  replace(
    el.verdicts,
    table(
      [
        { label: "State", render: (v) => badge(v.state) },
        { label: "Scope", render: (v) => `${v.scope_type} ` },
        { label: "Value", render: (v) => (v.scope_type === "trace" ? runLink(v.scope_value) : h("span", { class: "mono" }, v.scope_value)) },
        { key: "reason", label: "Reason" },
        { key: "set_by", label: "By" },
        { label: "Since", render: (v) => h("span", { title: fmtTime(v.set_at) }, fmtAgo(v.set_at)) },
        {
          label: "",
          render: (v) =>
            confirmButton({
              label: "Resume",
              confirmLabel: "Confirm resume",
              cls: "small",
              question: `Resume ${v.scope_type} ${v.scope_value}?`,
              enabled: canResume,
              why: "POST /api/v1/resume is not served by this daemon",
              testid: "resume",
              act: async (reason) => {
                await api("/api/v1/resume", { method: "POST", body: { [v.scope_type]: v.scope_value, reason } });
                reload();
                return `resumed ${v.scope_type} ${v.scope_value}`;
              },
            }),
        },
      ],
      o.verdicts,
      { empty: "Nothing is killed or paused.", rowAttrs: (v) => ({ dataset: { testid: "verdict", scope: `${v.scope_type}:${v.scope_value}`, state: v.state } }) },
    ),
  );
}

async function load() {
  const [resume, overview] = await Promise.all([
    has("POST /api/v1/resume"),
    api(`/api/dashboard/overview?range=${encodeURIComponent(state.range)}`),
  ]);
  canResume = resume;
  last = overview;
  render(last);
}

const reload = livePage(load);
