"""The HTML report's style sheet and script, inlined into every report (it opens offline: nothing is fetched).

The script sorts the table of checks (a click on a header; again for the other direction), filters it (by text
and by status), opens a check's panel when its name is clicked, and draws the sweep's grid for the two
hyperparameters chosen (a click on a cell shows only its checks in the table). It reads the checks' values
from the page's JSON data block and writes only with ``textContent`` (never ``innerHTML``), so no user text
ever becomes markup. System fonts only.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

STYLE = """
:root { --pass: #15803d; --fail: #b91c1c; --error: #7c3aed; --skipped: #a16207; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 1400px; padding: 16px 24px 48px; color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
code, pre, .mono, td.num, .heatmap text { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.verdict { font-size: 18px; font-weight: 600; margin: 8px 0; }
.verdict.pass { color: var(--pass); } .verdict.fail, .verdict.interrupted { color: var(--fail); }
.counts { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0; padding: 0; list-style: none; }
.counts li { border: 1px solid var(--line); border-radius: 6px; padding: 4px 12px; }
.counts strong { font-size: 18px; margin-right: 4px; }
.sweep { border-left: 4px solid var(--fail); background: #fff5f5; padding: 6px 12px; font-weight: 600; }
.meta { color: #57606a; }
.controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0; }
.controls input[type=search] { min-width: 260px; padding: 4px 8px; }
table { border-collapse: collapse; }
#checks { width: 100%; }
#checks th, #checks td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left;
  vertical-align: top; }
#checks td.num, #checks td.layer { white-space: nowrap; }
#checks td.name { min-width: 12em; overflow-wrap: break-word; }
#checks td.path { overflow-wrap: anywhere; min-width: 10em; } #checks td.why { min-width: 9em; }
.scroll { overflow-x: auto; }
#checks td.num { text-align: right; }
#checks thead th { position: sticky; top: 0; background: #f6f8fa; }
#checks th button { font: inherit; font-weight: 600; border: 0; background: none; cursor: pointer; padding: 0; }
#checks th[aria-sort=ascending] button::after { content: " ▲"; }
#checks th[aria-sort=descending] button::after { content: " ▼"; }
.status { font-weight: 600; white-space: nowrap; }
.status.pass { color: var(--pass); } .status.fail { color: var(--fail); }
.status.error { color: var(--error); } .status.skipped, .status.not-run { color: var(--skipped); }
td.over { color: var(--fail); font-weight: 600; }
details.panel { border: 1px solid var(--line); border-left: 5px solid var(--fail); border-radius: 6px;
  margin: 8px 0; padding: 0 12px; }
details.panel.error { border-left-color: var(--error); }
details.panel > summary { cursor: pointer; padding: 8px 0; font-weight: 600; }
details.panel > summary .meta { font-weight: 400; }
details.panel[open] > summary { border-bottom: 1px solid var(--line); margin-bottom: 8px; }
.panel .line { margin: 4px 0; } .panel .bad { color: var(--fail); font-weight: 600; }
.panel .hint { color: #9a6700; } .panel .note, .panel .tolerance { color: #57606a; }
.panel pre { white-space: pre-wrap; background: #f6f8fa; padding: 8px; border-radius: 4px; }
table.entries th, table.entries td { padding: 2px 10px 2px 0; text-align: right; }
table.entries th:first-child, table.entries td:first-child { text-align: left; }
table.entries tr.over td { color: var(--fail); }
figure { margin: 12px 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
.heatmap text { font-size: 10px; fill: #57606a; }
.channels { display: flex; flex-wrap: wrap; gap: 16px; }
.channel { display: block; color: #57606a; font-size: 12px; }
.legend { font-size: 12px; color: #57606a; display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.swatch i { display: inline-block; width: 12px; height: 12px; border: 1px solid #bbb; margin-right: 4px;
  vertical-align: -2px; }
#grid-table th, #grid-table td { border: 1px solid var(--line); padding: 6px 10px; text-align: center;
  min-width: 56px; }
#grid-table th { background: #f6f8fa; }
#grid-table td.pass { background: #dcfce7; color: var(--pass); }
#grid-table td.fail { background: #fee2e2; color: var(--fail); }
#grid-table td.mixed { background: #ffedd5; color: #9a3412; }
#grid-table td.error { background: #ede9fe; color: var(--error); }
#grid-table td.skipped { background: #fef9c3; color: var(--skipped); }
#grid-table td.empty { background: #fff; color: #aaa; }
#grid-table td[tabindex] { cursor: pointer; }
#cell-filter { background: #fff8c5; padding: 2px 8px; border-radius: 4px; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  const table = document.getElementById("checks");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const filter = document.getElementById("filter");
  const statusFilter = document.getElementById("status-filter");
  const shown = document.getElementById("shown");

  function number(text) {
    const value = text === "" ? NaN : Number(text);
    return Number.isNaN(value) ? null : value;
  }
  function compare(a, b) {
    const x = number(a), y = number(b);
    if (x !== null && y !== null) return (x > y) - (x < y);
    if ((x === null) !== (y === null)) return x === null ? 1 : -1;
    return a.localeCompare(b);
  }
  function sortKey(row, column) {
    const cell = row.cells[column];
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }
  table.tHead.querySelectorAll("th button").forEach(function (button) {
    button.addEventListener("click", function () {
      const th = button.parentElement;
      const column = th.cellIndex;
      const direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
      table.tHead.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", direction);
      const sign = direction === "ascending" ? 1 : -1;
      const sorted = rows.slice().sort(function (r1, r2) {
        return sign * compare(sortKey(r1, column), sortKey(r2, column));
      });
      sorted.forEach(function (row) { body.appendChild(row); });
    });
  });

  const cellNote = document.getElementById("cell-filter");
  let only = null;  // the names of the checks of the grid cell clicked, or null
  function applyFilter() {
    const words = filter.value.trim().toLowerCase();
    const status = statusFilter.value;
    let count = 0;
    rows.forEach(function (row) {
      const statusOk = status === "" || row.dataset.status === status ||
        (status === "not-ok" && ["fail", "error", "not-run"].indexOf(row.dataset.status) >= 0);
      const cellOk = only === null || only.has(row.dataset.name);
      const visible = statusOk && cellOk && (words === "" || row.textContent.toLowerCase().indexOf(words) >= 0);
      row.hidden = !visible;
      if (visible) count += 1;
    });
    shown.textContent = count + " of " + rows.length + " checks shown";
    cellNote.hidden = only === null;
  }
  function showOnly(names, label) {
    only = names === null ? null : new Set(names);
    cellNote.firstChild.textContent = label === null ? "" : "only the checks with " + label + " ";
    applyFilter();
  }
  document.getElementById("clear-cell").addEventListener("click", function () { showOnly(null, null); });
  filter.addEventListener("input", applyFilter);
  statusFilter.addEventListener("change", applyFilter);
  applyFilter();

  function openPanel() {
    const target = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }
  window.addEventListener("hashchange", openPanel);
  openPanel();
  function setAll(open) {
    document.querySelectorAll("details.panel").forEach(function (d) { d.open = open; });
  }
  const openAll = document.getElementById("open-all");
  const closeAll = document.getElementById("close-all");
  if (openAll) openAll.addEventListener("click", function () { setAll(true); });
  if (closeAll) closeAll.addEventListener("click", function () { setAll(false); });

  const data = JSON.parse(document.getElementById("convcheck-data").textContent);
  const gridRows = document.getElementById("grid-rows");
  const gridCols = document.getElementById("grid-cols");
  const grid = document.getElementById("grid-table");
  if (!grid) return;

  function valueOf(check, key) {
    return key === "" ? "all" : (key in check.values ? String(check.values[key]) : "—");
  }
  function distinct(key) {
    const seen = Array.from(new Set(data.checks.map(function (c) { return valueOf(c, key); })));
    return seen.sort(function (a, b) { return a === "—" ? 1 : b === "—" ? -1 : compare(a, b); });
  }
  function cellClass(n) {
    if (n.total === 0) return "empty";
    if (n.fail + n.error === 0) return n.pass > 0 ? "pass" : "skipped";
    if (n.pass + n.error === 0) return "fail";
    if (n.pass + n.fail === 0) return "error";
    return "mixed";
  }
  function cellText(n) {
    const parts = [];
    if (n.fail) parts.push("✗ " + n.fail);
    if (n.error) parts.push("! " + n.error);
    if (n.pass) parts.push("✓ " + n.pass);
    if (n.skipped) parts.push("– " + n.skipped);
    return parts.join("  ") || "·";
  }
  function cellOf(checks, label) {
    const n = { total: checks.length, pass: 0, fail: 0, error: 0, skipped: 0 };
    checks.forEach(function (c) { n[c.status] += 1; });
    const td = document.createElement("td");
    td.className = cellClass(n);
    td.textContent = cellText(n);
    td.title = checks.map(function (c) { return c.status + ": " + c.name; }).join("\n");
    if (checks.length) {
      td.tabIndex = 0;
      td.addEventListener("click", function () {
        showOnly(checks.map(function (c) { return c.name; }), label);
        table.scrollIntoView();
      });
    }
    return td;
  }
  function header(text) {
    const th = document.createElement("th");
    th.textContent = text;
    return th;
  }
  function drawGrid() {
    const rowKey = gridRows.value, colKey = gridCols.value;
    const rowValues = distinct(rowKey), colValues = distinct(colKey);
    grid.textContent = "";
    const head = grid.createTHead().insertRow();
    head.appendChild(header((rowKey || "all") + " \\ " + (colKey || "all")));
    colValues.forEach(function (value) { head.appendChild(header(colKey ? colKey + " = " + value : "all")); });
    const tbody = grid.createTBody();
    rowValues.forEach(function (rowValue) {
      const tr = tbody.insertRow();
      tr.appendChild(header(rowKey ? rowKey + " = " + rowValue : "all"));
      colValues.forEach(function (colValue) {
        const label = [rowKey ? rowKey + " = " + rowValue : "", colKey ? colKey + " = " + colValue : ""]
          .filter(Boolean).join(", ");
        tr.appendChild(cellOf(data.checks.filter(function (c) {
          return valueOf(c, rowKey) === rowValue && valueOf(c, colKey) === colValue;
        }), label));
      });
    });
  }
  gridRows.addEventListener("change", drawGrid);
  gridCols.addEventListener("change", drawGrid);
  drawGrid();
})();
"""
