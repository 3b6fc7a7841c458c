// Runs: every run (trace) with its cost, steps, alerts and verdict; sortable by column and
// filterable by agent, cost, steps, alerts and time. The filters live in the address bar.
import { api, badge, fmtInt, fmtMs, fmtTime, fmtUsd, h, livePage, replace, runLink, table, verdictBadge } from "./common.js";

const params = new URLSearchParams(location.search);
const state = {
  agent: params.get("agent") || "",
  min_cost: params.get("min_cost") || "",
  min_steps: params.get("min_steps") || "",
  min_alerts: params.get("min_alerts") || "",
  since: params.get("since") || "all",
  q: params.get("q") || "",
  sort: params.get("sort") || "started",
  dir: params.get("dir") || "desc",
};

const main = document.getElementById("main");
const agentSelect = h("select", { name: "agent", dataset: { testid: "filter-agent" } }, h("option", { value: "" }, "all agents"));
const sinceSelect = h(
  "select",
  { name: "since", dataset: { testid: "filter-since" } },
  [["all", "any time"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"], ["30d", "last 30 days"]].map(([v, l]) => h("option", { value: v }, l)),
);
const minCost = h("input", { type: "number", name: "min_cost", min: "0", step: "any", placeholder: "0", size: 8, dataset: { testid: "filter-min-cost" } });
const minSteps = h("input", { type: "number", name: "min_steps", min: "0", step: "1", placeholder: "0", size: 6, dataset: { testid: "filter-min-steps" } });
const hasAlerts = h("input", { type: "checkbox", name: "min_alerts", dataset: { testid: "filter-alerts" } });
const search = h("input", { type: "search", name: "q", placeholder: "trace id prefix", size: 18, dataset: { testid: "filter-q" } });
const summary = h("span", { class: "muted", dataset: { testid: "runs-summary" } });
const results = h("div", { class: "table-wrap", dataset: { testid: "runs-table" } });

replace(
  main,
  h("h1", {}, "Runs ", summary),
  h(
    "form",
    { class: "filters panel", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "Agent ", agentSelect),
    h("label", {}, "Seen ", sinceSelect),
    h("label", {}, "Cost ≥ $", minCost),
    h("label", {}, "Steps ≥ ", minSteps),
    h("label", {}, hasAlerts, " with alerts"),
    h("label", {}, search),
  ),
  h("section", { class: "panel" }, results),
);

sinceSelect.value = state.since;
minCost.value = state.min_cost;
minSteps.value = state.min_steps;
hasAlerts.checked = state.min_alerts !== "";
search.value = state.q;

function query() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== "" && v !== null) p.set(k, v);
  return p.toString();
}

function onFilter() {
  state.agent = agentSelect.value;
  state.since = sinceSelect.value;
  state.min_cost = minCost.value;
  state.min_steps = minSteps.value;
  state.min_alerts = hasAlerts.checked ? "1" : "";
  state.q = search.value.trim();
  history.replaceState(null, "", `/runs?${query()}`);
  reload();
}

for (const input of [agentSelect, sinceSelect, hasAlerts]) input.addEventListener("change", onFilter);
for (const input of [minCost, minSteps, search]) {
  input.addEventListener("change", onFilter);
  input.addEventListener("keydown", (e) => e.key === "Enter" && onFilter());
}

function onSort(key) {
  if (state.sort === key) state.dir = state.dir === "desc" ? "asc" : "desc";
  else {
    state.sort = key;
    state.dir = key === "agent" ? "asc" : "desc";
  }
  history.replaceState(null, "", `/runs?${query()}`);
  reload();
}

const columns = [
  { label: "Started", sortKey: "started", render: (r) => h("span", { class: "nowrap" }, fmtTime(r.started)) },
  { label: "Run", render: (r) => runLink(r.trace_id) },
  { key: "agent", label: "Agent", sortKey: "agent" },
  { label: "Session", render: (r) => h("span", { class: "mono", title: r.session_id }, r.session_id.slice(0, 14)) },
  { label: "Steps", num: true, sortKey: "steps", render: (r) => fmtInt(r.steps) },
  { label: "Model calls", num: true, sortKey: "llm_calls", render: (r) => fmtInt(r.llm_calls) },
  { label: "Tokens", num: true, sortKey: "tokens", render: (r) => fmtInt(r.tokens) },
  { label: "Cost", num: true, sortKey: "cost", render: (r) => fmtUsd(r.cost_usd) },
  { label: "Errors", num: true, sortKey: "errors", render: (r) => fmtInt(r.errors) },
  { label: "Alerts", num: true, sortKey: "alerts", render: (r) => (r.alerts ? badge(String(r.alerts), r.open_alerts ? r.max_severity : "resolved") : "0") },
  { label: "Duration", num: true, sortKey: "duration", render: (r) => fmtMs(r.duration_ms) },
  { label: "Verdict", render: (r) => verdictBadge(r.verdict) },
];

async function load() {
  const res = await api(`/api/dashboard/runs?${query()}`);
  const current = agentSelect.value || state.agent;
  replace(agentSelect, h("option", { value: "" }, "all agents"), res.agents.map((a) => h("option", { value: a }, a)));
  agentSelect.value = current;
  summary.textContent = `${fmtInt(res.total)} run${res.total === 1 ? "" : "s"}${res.truncated ? `, first ${res.runs.length} shown` : ""}`;
  summary.dataset.total = res.total;
  replace(
    results,
    table(columns, res.runs, {
      empty: "No runs match.",
      sort: { key: state.sort, dir: state.dir },
      onSort,
      rowAttrs: (r) => ({
        dataset: { testid: "run-row", trace: r.trace_id, agent: r.agent, cost: r.cost_usd ?? "", steps: r.steps, alerts: r.alerts },
      }),
    }),
  );
}

const reload = livePage(load, ["steps", "alerts", "verdicts"]);
