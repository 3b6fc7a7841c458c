// SQL: an editor over the guarded read-only POST /api/sql, the canned queries of
// dashboards/queries/*.sql, a results table and CSV export of what was returned.
import { api, fmtInt, h, replace } from "./common.js";

const main = document.getElementById("main");
const editor = h("textarea", { id: "sql-editor", spellcheck: "false", dataset: { testid: "sql-editor" } });
const runButton = h("button", { type: "button", class: "primary", dataset: { testid: "sql-run" } }, "Run (Ctrl+Enter)");
const csvButton = h("button", { type: "button", disabled: true, dataset: { testid: "sql-csv" } }, "Export CSV");
const meta = h("span", { class: "muted", dataset: { testid: "sql-meta" } });
const output = h("div", { class: "table-wrap", dataset: { testid: "sql-result" } });
const canned = h("ul", { class: "canned", dataset: { testid: "canned" } });
let last = null;
let lastName = "query";
document.getElementById("live").hidden = true; // this page does not follow live updates

replace(
  main,
  h("h1", {}, "SQL ", h("span", { class: "muted" }, "read-only, one SELECT; tables spans, steps, alerts, verdicts, verdict_audit")),
  h(
    "div",
    { class: "sql-layout" },
    h("aside", { class: "panel" }, h("h2", {}, "Saved queries"), canned),
    h(
      "section",
      { class: "stack" },
      h("div", { class: "panel" }, editor, h("div", { class: "row" }, runButton, csvButton, meta)),
      h("div", { class: "panel" }, output),
    ),
  ),
);

editor.value = localStorage.getItem("watchdog.sql.last") || "SELECT agent_name, count(*) AS steps, round(sum(cost_usd), 6) AS spend_usd\nFROM steps\nGROUP BY agent_name\nORDER BY spend_usd DESC NULLS LAST";

function cellText(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function renderResult(res) {
  const head = h("tr", {}, res.columns.map((c) => h("th", {}, c)));
  const body = res.rows.length
    ? res.rows.map((r) => h("tr", { dataset: { testid: "sql-row" } }, r.map((v) => h("td", { class: v === null ? "cell null" : "cell" }, cellText(v)))))
    : [h("tr", {}, h("td", { class: "empty", colspan: Math.max(res.columns.length, 1) }, "No rows."))];
  replace(output, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
  meta.textContent = `${fmtInt(res.rows.length)} row${res.rows.length === 1 ? "" : "s"}${res.truncated ? " (truncated at the row cap)" : ""} · ${res.elapsed_ms ?? "?"} ms`;
  meta.dataset.rows = res.rows.length;
}

async function run() {
  const sql = editor.value.trim();
  if (!sql) return;
  localStorage.setItem("watchdog.sql.last", editor.value);
  runButton.disabled = true;
  meta.textContent = "running…";
  try {
    const res = await api("/api/sql", { method: "POST", body: { sql } });
    last = res;
    csvButton.disabled = false;
    renderResult(res);
  } catch (err) {
    last = null;
    csvButton.disabled = true;
    meta.textContent = "";
    replace(output, h("div", { class: "error-box", dataset: { testid: "sql-error" } }, err.message || String(err)));
  } finally {
    runButton.disabled = false;
  }
}

// RFC 4180: quote every field holding a comma, quote or line break; double the quotes.
function toCsv(res) {
  const field = (v) => {
    const t = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\r\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
  };
  return [res.columns, ...res.rows].map((r) => r.map(field).join(",")).join("\r\n") + "\r\n";
}

function exportCsv() {
  if (!last) return;
  const url = URL.createObjectURL(new Blob([toCsv(last)], { type: "text/csv;charset=utf-8" }));
  const a = h("a", { href: url, download: `watchdog-${lastName}.csv` });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

runButton.addEventListener("click", run);
csvButton.addEventListener("click", exportCsv);
editor.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    run();
  }
});
editor.addEventListener("input", () => (lastName = "query"));

async function loadCanned() {
  const res = await api("/api/dashboard/queries");
  replace(
    canned,
    res.queries.map((q) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            dataset: { testid: "canned-query", query: q.id },
            title: q.sql,
            onclick: () => {
              editor.value = q.sql;
              lastName = q.id;
              run();
            },
          },
          h("strong", {}, q.name),
          h("span", { class: "desc" }, q.description),
        ),
      ),
    ),
  );
  const wanted = new URLSearchParams(location.search).get("query");
  const match = res.queries.find((q) => q.id === wanted);
  if (match) {
    editor.value = match.sql;
    lastName = match.id;
    await run();
  }
  document.body.dataset.loaded = "1";
}

loadCanned().catch((err) => replace(canned, h("li", { class: "error-box" }, err.message || String(err))));
