/* The plan preview (dry run) in a dialog, and the what-if chart.
 *
 * Every action that starts a run answers a post without confirm=1 with its plan
 * (upgrades/views.py). Without JavaScript that is a page; here it is the same markup
 * (templates/upgrades/_plan.html, asked for with preview=fragment) in a modal <dialog>:
 * its Confirm button posts the action's fields again with confirm=1, as the page's does.
 * Escape closes the dialog (the browser's own modal behaviour), Enter confirms (the Confirm
 * button has the focus when it opens), focus goes back where it was when it closes.
 *
 * Uses: a click on a heatmap row (Heatmap's onRowClick hook) opens the plan of upgrading
 * that update domain (or fault domain, or zone); the action forms marked data-plan open
 * their plan instead of leaving the page.
 *
 * The what-if chart is drawn from the JSON embedded in the plan (#whatif-data); its small
 * form (failure %, boot seconds) asks the same action for preview=whatif and redraws.
 */
(function () {
  "use strict";

  const COLORS = { upgraded: "#0072B2", unhealthy: "#D55E00", gate: "#1d232b", stop: "#CC79A7" };

  function csrfOf(root) {
    const input = (root || document).querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", body, credentials: "same-origin", headers: { "X-Requested-With": "fetch" },
    });
    return response;
  }

  /* --- the what-if chart ---------------------------------------------------------------- */

  function draw(element, data) {
    const numbers = [];
    for (let n = 1; n <= data.plannedBatches; n += 1) numbers.push(n);
    const ran = data.batches;
    const x = ran.map((b) => b.number);
    const traces = [
      {
        type: "scatter", mode: "lines", name: "upgraded if every batch ran", x: numbers, y: data.plannedUpgraded,
        line: { color: COLORS.upgraded, width: 1, dash: "dot" },
        hovertemplate: "batch %{x}: %{y} upgraded if it ran<extra></extra>",
      },
      {
        type: "bar", name: "upgraded so far", x, y: ran.map((b) => b.upgradedSoFar),
        marker: { color: COLORS.upgraded, opacity: 0.35 },
        hovertemplate: "batch %{x}: %{y} upgraded<extra></extra>",
      },
      {
        type: "scatter", mode: "lines+markers", name: "unhealthy of them", x, y: ran.map((b) => b.unhealthyUpgradedSoFar),
        line: { color: COLORS.unhealthy, width: 2 }, marker: { color: COLORS.unhealthy, size: 8 },
        hovertemplate: "batch %{x}: %{y} unhealthy<extra></extra>",
      },
      {
        // R-GATE-3 as a count: the run stops when the red line rises above this one.
        type: "scatter", mode: "lines", name: "gate: most unhealthy allowed", x: numbers, y: data.plannedTolerated,
        line: { color: COLORS.gate, dash: "dash", width: 1.5, shape: "hv" },
        hovertemplate: "after batch %{x}: stops above %{y}<extra></extra>",
      },
    ];
    const shapes = [];
    const annotations = [];
    if (data.stopBatch) {
      const at = data.stopBefore ? data.stopBatch - 0.5 : data.stopBatch + 0.5;
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: at, x1: at, y0: 0, y1: 1, line: { color: COLORS.stop, width: 3 } });
      annotations.push({
        xref: "x", yref: "paper", x: at, y: 1, yanchor: "bottom", showarrow: false,
        text: `stops ${data.stopBefore ? "before" : "after"} batch ${data.stopBatch}`, font: { color: COLORS.stop },
      });
    }
    const layout = {
      height: 260, margin: { l: 50, r: 20, t: 24, b: 40 }, barmode: "overlay",
      xaxis: { title: { text: "batch" }, range: [0.5, Math.max(1, data.plannedBatches) + 0.5], dtick: numbers.length > 20 ? undefined : 1 },
      yaxis: { title: { text: "instances" }, rangemode: "tozero" },
      legend: { orientation: "h", y: -0.3 }, shapes, annotations,
      plot_bgcolor: "#ffffff", paper_bgcolor: "#ffffff",
    };
    element.dataset.stopBatch = data.stopBatch ? String(data.stopBatch) : "";
    element.dataset.stopCode = data.stopCode || "";
    return Plotly.react(element, traces, layout, { displayModeBar: false, responsive: true });
  }

  function whatIf(root) {
    const box = root && root.querySelector("#whatif");
    if (!box) return;
    const chart = box.querySelector("#whatif-chart");
    const summary = box.querySelector("#whatif-summary");
    const form = box.querySelector("#whatif-form");
    const embedded = box.querySelector("#whatif-data");
    if (embedded && window.Plotly) draw(chart, JSON.parse(embedded.textContent));
    let asked = 0;
    async function redraw(event) {
      if (event) event.preventDefault();
      if (!form.reportValidity()) return;
      const mine = ++asked; // answers can cross: only the latest one is drawn
      const body = new FormData(form);
      body.set("preview", "whatif");
      const response = await post(form.action, body);
      const data = await response.json();
      if (mine !== asked) return;
      if (!response.ok) { summary.textContent = data.error || "The what-if could not be computed."; return; }
      summary.textContent = data.summary;
      if (window.Plotly) await draw(chart, data);
    }
    form.addEventListener("submit", redraw);
    form.querySelectorAll("input[type=number]").forEach((input) => input.addEventListener("change", () => redraw()));
  }

  /* --- the dialog ------------------------------------------------------------------------- */

  function dialog(elementId) {
    const box = document.getElementById(elementId);
    const body = box.querySelector("[data-plan-body]");
    let returnFocus = null;

    box.addEventListener("close", () => {
      body.replaceChildren();
      if (returnFocus && returnFocus.focus) returnFocus.focus();
    });
    box.addEventListener("click", (event) => {
      if (event.target.closest("[data-plan-dismiss]")) box.close();
    });
    box.addEventListener("keydown", (event) => {
      // Enter confirms, unless the operator is typing in the what-if or on another button.
      if (event.key !== "Enter" || event.defaultPrevented) return;
      const target = event.target;
      if (target.closest("input, select, textarea, button, a, summary")) return;
      const confirm = body.querySelector("[data-plan-confirm]");
      if (confirm) { event.preventDefault(); confirm.click(); }
    });

    async function open(url, fields) {
      returnFocus = document.activeElement;
      let form = fields;
      if (!(fields instanceof FormData)) {
        form = new FormData();
        Object.entries(fields).forEach(([name, value]) => form.append(name, value));
      }
      if (!form.has("csrfmiddlewaretoken")) form.set("csrfmiddlewaretoken", csrfOf(box));
      form.set("preview", "fragment");
      body.replaceChildren(Object.assign(document.createElement("p"), { className: "note", textContent: "Planning…" }));
      if (!box.open) box.showModal();
      const response = await post(url, form);
      if (response.redirected) { window.location.assign(response.url); return; } // nothing to preview: it acted
      body.innerHTML = await response.text();
      const root = body.querySelector("#plan");
      whatIf(root);
      const focus = body.querySelector("[data-plan-confirm]") || body.querySelector("[data-plan-dismiss]");
      if (focus) focus.focus();
    }

    return { open, element: box };
  }

  /* A heatmap row: upgrade what the row is (R-MAN-1), after its plan. */
  function rowClick(planDialog, manualUrl) {
    return function onRowClick(row) {
      let scope, value;
      if (row.grouping === "update_domain") { scope = "update_domain"; value = row.minor; }
      else if (row.grouping === "fault_domain") { scope = "fault_domain"; value = row.minor; }
      else { scope = "zone"; value = row.zone; }
      if (value === "" || value === undefined || value === null) return;
      planDialog.open(manualUrl, { "manual-scope": scope, [`manual-${scope}`]: String(value) });
    };
  }

  /* Forms marked data-plan show their plan in the dialog instead of leaving the page. */
  function enhanceForms(planDialog, root) {
    (root || document).querySelectorAll("form[data-plan]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        if (!form.reportValidity()) return;
        event.preventDefault();
        planDialog.open(form.action, new FormData(form));
      });
    });
  }

  window.Plan = { dialog, rowClick, enhanceForms, whatIf, draw };
})();
