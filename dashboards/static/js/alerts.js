// Alerts: open and recent alerts; acknowledge and silence them, and list/end silences, when
// the daemon serves those endpoints (the page checks /api/dashboard/capabilities first).
import { api, badge, confirmButton, fmtAgo, fmtTime, h, livePage, replace, routes, runLink, table } from "./common.js";

const main = document.getElementById("main");
const el = {
  counts: h("span", { class: "muted", dataset: { testid: "alert-counts" } }),
  open: h("div", { class: "table-wrap", dataset: { testid: "open-alerts" } }),
  silences: h("section", { class: "panel", dataset: { testid: "silences" } }),
  recent: h("div", { class: "table-wrap", dataset: { testid: "recent-alerts" } }),
  recentTitle: h("span", { class: "muted" }),
};
replace(
  main,
  h("h1", {}, "Alerts ", el.counts),
  h("section", { class: "panel" }, h("h2", {}, "Open"), el.open),
  el.silences,
  h("section", { class: "panel" }, h("h2", {}, "Recent ", el.recentTitle), el.recent),
);

// Route templates as aiohttp lists them, e.g. "POST /api/v1/alerts/{alert_id}/ack".
function findRoute(all, re) {
  for (const r of all) if (re.test(r)) return r;
  return null;
}

function fill(route, id) {
  return route.replace(/^[A-Z]+ /, "").replace(/\{[^}]+\}/, encodeURIComponent(id));
}

let caps = { ack: null, silence: null, listSilences: null, endSilence: null };

function silenceDuration() {
  return h(
    "select",
    { dataset: { testid: "silence-duration" } },
    [["1h", "1 hour"], ["4h", "4 hours"], ["24h", "1 day"], ["7d", "7 days"]].map(([v, l]) => h("option", { value: v }, l)),
  );
}

// `label="value"` with quotes and backslashes escaped (the alerting API's matcher syntax).
function matcher(label, value) {
  return `${label}="${String(value).replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function actions(a) {
  if (a.state !== "firing") return "";
  const out = h("span", { class: "row" });
  if (caps.ack) {
    out.appendChild(
      h("button", {
        type: "button",
        class: "small",
        dataset: { testid: "ack" },
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await api(fill(caps.ack, a.id), { method: "POST", body: { actor: "dashboard" } });
            reload();
          } catch (err) {
            e.target.disabled = false;
            throw err;
          }
        },
        title: "mark the alert resolved (acknowledged); it fires again if the condition recurs",
      }, "Acknowledge"),
    );
  }
  if (caps.silence) {
    const duration = silenceDuration();
    out.appendChild(
      confirmButton({
        label: "Silence",
        confirmLabel: "Confirm silence",
        cls: "small",
        question: () => `Silence ${a.rule} for agent ${a.agent_name}?`,
        testid: "silence",
        act: async (comment) => {
          const matchers = [matcher("agent", a.agent_name), matcher("rule", a.rule)];
          await api("/api/v1/silences", {
            method: "POST",
            body: { matchers, duration: duration.value, comment, actor: "dashboard" },
          });
          reload();
          return `silenced ${a.rule} on ${a.agent_name} for ${duration.value}`;
        },
      }),
      duration,
    );
  }
  return out;
}

const alertColumns = (withActions) => [
  { label: "Severity", render: (a) => badge(a.severity) },
  { label: "State", render: (a) => badge(a.state) },
  { key: "detector", label: "Detector" },
  { key: "rule", label: "Rule" },
  { key: "agent_name", label: "Agent" },
  { key: "summary", label: "Summary" },
  { label: "Run", render: (a) => (a.trace_id ? runLink(a.trace_id) : h("span", { class: "muted" }, "session")) },
  { label: "Created", render: (a) => h("span", { class: "nowrap", title: fmtTime(a.created_at) }, fmtAgo(a.created_at)) },
  { label: "Updated", render: (a) => h("span", { class: "nowrap", title: fmtTime(a.updated_at) }, fmtAgo(a.updated_at)) },
  ...(withActions ? [{ label: "", render: actions }] : []),
];

async function renderSilences() {
  if (!caps.listSilences) {
    el.silences.hidden = true;
    return;
  }
  el.silences.hidden = false;
  const res = await api("/api/v1/silences");
  const list = res.silences || res.items || [];
  replace(
    el.silences,
    h("h2", {}, "Silences"),
    table(
      [
        { label: "Matchers", render: (s) => h("code", {}, (s.matchers || []).map((m) => (typeof m === "string" ? m : `${m.name}${m.op || "="}${m.value}`)).join(", ")) },
        { label: "State", render: (s) => badge(s.state || (s.active ? "active" : "expired"), s.active || s.state === "active" ? "silenced" : "resolved") },
        { key: "comment", label: "Comment" },
        { key: "created_by", label: "By" },
        { label: "Ends", render: (s) => fmtTime(s.ends_at) },
        {
          label: "",
          render: (s) =>
            caps.endSilence && (s.active || s.state === "active")
              ? h("button", {
                  type: "button",
                  class: "small",
                  onclick: async () => {
                    await api(fill(caps.endSilence, s.id), { method: caps.endSilence.split(" ")[0], body: { actor: "dashboard" } });
                    reload();
                  },
                }, "End")
              : "",
        },
      ],
      list,
      { empty: "No silences.", rowAttrs: (s) => ({ dataset: { testid: "silence-row", silence: s.id } }) },
    ),
  );
}

async function load() {
  const all = [...(await routes())];
  caps = {
    ack: findRoute(all, /^POST \/api\/v1\/alerts\/\{[^}]+\}\/(ack|acknowledge|resolve)$/),
    silence: findRoute(all, /^POST \/api\/v1\/silences$/),
    listSilences: findRoute(all, /^GET \/api\/v1\/silences$/),
    endSilence: findRoute(all, /^(DELETE|POST) \/api\/v1\/silences\/\{[^}]+\}(\/expire)?$/),
  };
  const res = await api("/api/dashboard/alerts");
  const bySev = res.open.by_severity;
  el.counts.textContent = `${res.open.count} open${res.open.count ? ` (${["kill", "pause", "warn", "info"].filter((k) => bySev[k]).map((k) => `${bySev[k]} ${k}`).join(", ")})` : ""}`;
  el.counts.dataset.open = res.open.count;
  replace(
    el.open,
    table(alertColumns(true), res.open.items, { empty: "No open alerts.", rowAttrs: (a) => ({ dataset: { testid: "alert-row", alert: a.id, severity: a.severity } }) }),
  );
  el.recentTitle.textContent = `last ${res.recent_days} days, any state`;
  replace(
    el.recent,
    table(alertColumns(false), res.recent, { empty: "No alerts recently.", rowAttrs: (a) => ({ dataset: { testid: "recent-row", alert: a.id, state: a.state } }) }),
  );
  await renderSilences();
}

const reload = livePage(load, ["alerts", "silences", "verdicts"]);
