/* The run panel of a scale set (and of a run's own page), kept live from the socket.
 *
 * The server draws the panel once (templates/upgrades/_run_body.html); after that every
 * socket message carrying a run summary redraws it here with the same markup: the
 * "snapshot" sent on (re)connect has `run`, and each "run" message is the summary the engine
 * published on commit. Nothing polls. The countdowns of the health wait and of the pause
 * between batches tick in the browser, from the summary's deadline and the server's `now`
 * (so a skewed browser clock does not matter). The summary's `explain` (upgrades/explain.py)
 * says in words which gate or wait holds the run and what would end it; only its time left
 * is redrawn here each second.
 *
 * Also here: the heatmap row confirm panel ("upgrade update domain N") and the run page's
 * batch timeline (Plotly).
 */
(function () {
  "use strict";

  const PROGRESS_PARTS = [
    ["successful", "succeeded"], ["failed", "failed"], ["in_progress", "in progress"], ["pending", "pending"],
  ];
  const STATUS_COLORS = {
    Succeeded: "#009E73", Failed: "#D55E00", InProgress: "#0072B2", Pending: "#BBBBBB", NotStarted: "#DDDDDD",
  };

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (value === null || value === undefined || value === false) return;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    children.flat().forEach((child) => {
      if (child === null || child === undefined || child === false) return;
      node.append(child instanceof Node ? child : String(child));
    });
    return node;
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  // Timestamps as the server writes them in pages (UTC, the console's TIME_ZONE).
  function clockTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function dateTime(iso) {
    const d = new Date(iso);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${clockTime(iso)}`;
  }
  function plural(n, word, many) { return `${n} ${n === 1 ? word : (many || word + "s")}`; }

  function remaining(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
    return hours ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`;
  }

  // The explainer's time left, in the words of upgrades/explain.py span_words: "45 s",
  // "4 m 12 s", "12 m", "2 h 5 m" (rounded up to the second).
  function spanWords(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
    if (hours) return minutes ? `${hours} h ${minutes} m` : `${hours} h`;
    if (minutes) return seconds ? `${minutes} m ${seconds} s` : `${minutes} m`;
    return `${seconds} s`;
  }

  function start(options) {
    const root = document.getElementById(options.element);
    const body = root.querySelector("#run-panel-body") || root;
    const title = root.querySelector("#run-panel-title");
    const cancelForm = document.getElementById("cancel-form");
    let shown = options.initial || null;
    let skew = 0; // server now - browser now, in ms

    function runUrl(id) { return options.runUrl.replace(/0\/$/, `${id}/`); }

    function countdown(summary) {
      const active = summary.status === "RollingForward";
      if (!active) return null;
      if ((summary.phase === "health_wait" || summary.phase === "rolling_back") && summary.phase_deadline) {
        return { until: summary.phase_deadline, words: (left) => `${left} left of the health wait` };
      }
      if (summary.phase === "pause" && summary.next_action_at) {
        return { until: summary.next_action_at, words: (left) => `next batch in ${left}` };
      }
      return null;
    }

    function render(summary) {
      if (!summary) return [h("p", { className: "empty" }, "No upgrade has run on this scale set yet.")];
      const active = summary.status === "RollingForward";
      const nodes = []; // the left column: what the run is and where it is
      nodes.push(h("p", { className: "run-title" },
        h("a", { href: runUrl(summary.id) }, `${summary.kind_label} #${summary.id}`), " ",
        h("span", { className: `status s-${summary.status}` }, summary.status),
        active && summary.cancel_requested ? [" ", h("span", { className: "status s-Cancelled" }, "cancel requested")] : null));
      nodes.push(h("p", { className: "facts" },
        `started by ${summary.started_by}${summary.actor ? ` (${summary.actor})` : ""} at `,
        h("time", { datetime: summary.started_at }, dateTime(summary.started_at)),
        summary.ended_at ? [" · ended ", h("time", { datetime: summary.ended_at }, dateTime(summary.ended_at))] : null,
        " · target image ", h("code", {}, summary.target_image || "—"), `, model v${summary.target_model_version}`));
      if (active) {
        const where = summary.current_batch >= 0
          ? `Batch ${summary.current_batch + 1} of ${summary.batch_count}: `
          : `${plural(summary.batch_count, "batch", "batches")} planned: `;
        const timer = countdown(summary);
        nodes.push(h("p", { className: "phase", dataset: { phase: summary.phase } },
          where, summary.phase_label, " ",
          timer ? h("span", { className: "countdown", dataset: { until: timer.until } }) : null,
          summary.cancel_requested ? [" ", h("span", { className: "note" }, "Cancel requested: no new batch will start.")] : null));
      }
      if (active && summary.explain) nodes.push(explainBlock(summary.explain));
      const progress = summary.progress;
      const whole = PROGRESS_PARTS.reduce((sum, [key]) => sum + (progress[key] || 0), 0) || 1;
      nodes.push(h("div", { className: "progress", role: "img", "aria-label": "progress" },
        PROGRESS_PARTS.map(([key, label]) => h("span", {
          className: `p-${key}`, style: `width: ${(100 * (progress[key] || 0) / whole).toFixed(2)}%`,
          title: `${progress[key] || 0} ${label}`,
        }))));
      const rollback = summary.rollback;
      nodes.push(h("p", { className: "progress-legend" },
        PROGRESS_PARTS.map(([key, label]) => h("span", {}, h("i", { className: `swatch p-${key}` }), `${progress[key] || 0} ${label}`)),
        h("span", {}, `${progress.skipped} skipped`),
        rollback.rolled_back || rollback.rollback_failed
          ? h("span", {}, `${rollback.rolled_back} rolled back, ${rollback.rollback_failed} failed to roll back`) : null));
      if (summary.error) nodes.push(h("p", { className: "run-error" }, h("code", {}, summary.error.code), " ", summary.error.message));
      if (rollback.error) nodes.push(h("p", { className: "run-error" }, `Rollback: ${rollback.error}`));
      const grid = h("div", { className: "run-grid" }, h("div", { className: "run-main" }, nodes));
      if (summary.batches && summary.batches.length) grid.append(batchTable(summary, active));
      return [grid];
    }

    // "Why is it waiting?": the server's words (upgrades/explain.py); only the time left
    // inside the headline is redrawn here, every second, by tick().
    function explainBlock(why) {
      const headline = why.countdown_until
        ? [why.before, h("span", { className: "explain-countdown", dataset: { until: why.countdown_until } }, why.left), why.after]
        : [why.headline];
      return h("div", { className: "explain", dataset: { kind: why.kind }, "aria-live": "polite" },
        h("p", { className: "explain-headline" }, headline),
        why.detail ? h("p", { className: "explain-detail" }, why.detail) : null,
        why.unblock ? h("p", { className: "explain-unblock" }, why.unblock) : null);
    }

    function batchTable(summary, active) {
      const batches = summary.batches;
      const partial = batches.length < summary.batch_count;
      const caption = partial
        ? `Batches ${summary.batches_from + 1}–${summary.batches_from + batches.length} of ${summary.batch_count}`
        : `Batches (${summary.batch_count})`;
      const wasOpen = body.querySelector("details.batches");
      const open = wasOpen ? wasOpen.open : active;
      return h("details", { className: "batches", open: open },
        h("summary", {}, caption),
        h("div", { className: "batch-scroll" }, h("table", { className: "grid compact" },
          h("thead", {}, h("tr", {}, ["#", "Update domain", "Zone", "Size", "Status", "Started", "Upgraded", "Ended"]
            .map((name) => h("th", name === "Size" ? { className: "num" } : {}, name)))),
          h("tbody", {}, batches.map((b) => h("tr", { className: active && b.index === summary.current_batch ? "current" : null },
            h("td", {}, b.index + 1),
            h("td", {}, b.update_domain >= 0 ? b.update_domain : "all"),
            h("td", {}, b.zone || "—"),
            h("td", { className: "num" }, b.size),
            h("td", {}, h("span", { className: `status s-${b.status}` }, b.status_label)),
            h("td", {}, clockTime(b.started_at)), h("td", {}, clockTime(b.upgraded_at)), h("td", {}, clockTime(b.ended_at))))))));
    }

    // Keep the batch in flight in view inside the scrolling table.
    function showCurrentBatch() {
      const box = body.querySelector(".batch-scroll");
      const row = box && box.querySelector("tr.current");
      if (row) box.scrollTop = Math.max(0, row.offsetTop - row.offsetHeight * 2);
    }

    function tick() {
      body.querySelectorAll(".countdown").forEach((node) => {
        const left = Date.parse(node.dataset.until) - (Date.now() + skew);
        const timer = shown && countdown(shown);
        node.textContent = timer ? `— ${timer.words(remaining(left))}` : "";
      });
      body.querySelectorAll(".explain-countdown").forEach((node) => {
        node.textContent = spanWords(Date.parse(node.dataset.until) - (Date.now() + skew));
      });
      // The page's rollout notices ("scheduled: starts at … (in 12 m)", drawn by the server
      // with templates/upgrades/_rollout_waiting.html) tick too, from their own server time.
      document.querySelectorAll(".rollout-notice .explain-countdown[data-until]").forEach((node) => {
        if (node.dataset.skew === undefined) {
          node.dataset.skew = String(node.dataset.now ? Date.parse(node.dataset.now) - Date.now() : 0);
        }
        node.textContent = spanWords(Date.parse(node.dataset.until) - (Date.now() + Number(node.dataset.skew)));
      });
    }

    function update(summary) {
      if (options.onlyRun && (!summary || summary.id !== options.onlyRun)) return;
      // Messages can cross: never let an older run's summary replace a newer one.
      if (summary && shown && summary.id < shown.id) return;
      shown = summary;
      if (summary && summary.now) skew = Date.parse(summary.now) - Date.now();
      const active = summary && summary.status === "RollingForward";
      root.classList.toggle("active", Boolean(active));
      if (title) title.textContent = active ? "Upgrade in progress" : summary ? "Last upgrade" : "Upgrades";
      if (cancelForm) cancelForm.hidden = !active;
      body.replaceChildren(...render(summary));
      showCurrentBatch();
      tick();
    }

    function onMessage(message) {
      if (message.type === "run") update(message.run);
      else if (message.type === "snapshot" && "run" in message) update(message.run);
    }

    update(shown);
    setInterval(tick, 1000); // redraws the countdown text only; no request is made

    window.runPanel = { shown: () => shown, onMessage };
    return { update, onMessage };
  }

  /* A page that has no heatmap (a run's page) opens the scale-set socket for run messages. */
  function connect(socketPath, onMessage, statusElement) {
    const status = statusElement ? document.getElementById(statusElement) : null;
    let retry = 500;
    function open() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}${socketPath}`);
      socket.onopen = () => { retry = 500; if (status) { status.className = "live open"; status.textContent = "● live"; } };
      socket.onmessage = (event) => onMessage(JSON.parse(event.data));
      socket.onclose = (event) => {
        if (event.code === 4401 || event.code === 4404) {
          if (status) { status.className = "live closed"; status.textContent = "not live: reload the page"; }
          return;
        }
        if (status) { status.className = "live connecting"; status.textContent = "reconnecting…"; }
        setTimeout(open, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }
    open();
  }

  /* The run page's timeline: one horizontal bar per batch, start to end, coloured by status. */
  function timeline(elementId, rows) {
    const element = document.getElementById(elementId);
    const byStatus = new Map();
    rows.forEach((row) => {
      if (!row.start) return;
      if (!byStatus.has(row.status)) byStatus.set(row.status, []);
      byStatus.get(row.status).push(row);
    });
    const traces = [...byStatus.entries()].map(([status, list]) => ({
      type: "bar", orientation: "h", name: list[0].status_label,
      y: list.map((r) => r.label),
      base: list.map((r) => r.start),
      x: list.map((r) => Math.max(1000, Date.parse(r.end) - Date.parse(r.start))),
      marker: { color: STATUS_COLORS[status] || "#999999" },
      text: list.map((r) => `${r.size} instance${r.size === 1 ? "" : "s"}${r.ongoing ? " · in flight" : ""}`),
      textposition: "inside", insidetextanchor: "start",
      customdata: list.map((r) => [clockTime(r.start), r.upgraded ? clockTime(r.upgraded) : "—", clockTime(r.end), r.status_label]),
      hovertemplate: "%{y}<br>%{customdata[3]}: %{text}<br>started %{customdata[0]} · upgraded %{customdata[1]} · ended %{customdata[2]}<extra></extra>",
    }));
    const started = rows.filter((r) => r.start && r.upgraded);
    if (started.length) {
      traces.push({
        type: "scatter", mode: "markers", name: "health wait began", showlegend: true,
        y: started.map((r) => r.label), x: started.map((r) => r.upgraded),
        marker: { symbol: "line-ns-open", size: 22, color: "#1d232b", line: { width: 2 } },
        hovertemplate: "%{y}: health wait began %{x|%H:%M:%S}<extra></extra>",
      });
    }
    const layout = {
      barmode: "overlay", height: Math.max(160, 70 + rows.length * 28),
      margin: { l: 180, r: 20, t: 10, b: 40 },
      xaxis: { type: "date", title: { text: "time (UTC)" } },
      yaxis: { type: "category", autorange: "reversed", categoryorder: "array", categoryarray: rows.map((r) => r.label) },
      legend: { orientation: "h", y: -0.25 },
      plot_bgcolor: "#ffffff", paper_bgcolor: "#ffffff",
    };
    Plotly.react(element, traces, layout, { displayModeBar: false, responsive: true });
  }

  window.RunPanel = { start, connect, timeline };
})();
