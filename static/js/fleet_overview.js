/* The fleet overview: a sortable, filterable table of every scale set and the fleet heatmap
 * (sets × update domains), kept live.
 *
 * The server renders the rows that match the page's GET parameters, so a filtered or sorted
 * view is a link and reads without JavaScript. Here, sorting (header buttons) and filtering
 * (as you type) apply at once to the rows in hand, with the same keys the server sorts by (each
 * cell's data-sort); when a filter is wider than anything loaded so far, the matching rows are
 * fetched (?format=json&…) and merged in. The URL follows, so the view can be shared.
 *
 * Live: the fleet socket says which sets changed ({"type": "changed", "ids": […]}); the page
 * re-fetches just those rows (?format=json&ids=…), at most once a second however many sets
 * change, and redraws the table and the heatmap once per animation frame. When the socket
 * re-opens after a drop, every row in hand is re-fetched, since messages may have been missed.
 */
(function () {
  "use strict";

  const MIN_INTERVAL = 1000; // ms between two live re-fetches
  const FILTER_DELAY = 250; // ms of quiet typing before a widened filter is fetched
  const MAX_IDS = 500; // the server answers at most this many ids per request
  const FILTERS = ["q", "region", "mode", "state"];
  const NUMERIC = new Set(["capacity", "auto", "health", "version", "run"]); // the rest compare as text

  function start(options) {
    const form = document.getElementById("fleet-filters");
    const table = document.getElementById("fleet-table");
    const tbody = document.getElementById("fleet-rows");
    const empty = document.getElementById("fleet-empty");
    const counter = document.getElementById("fleet-count");
    const section = document.querySelector(".fleet-heatmap");
    const element = document.getElementById("fleet-heatmap");
    const legend = document.getElementById("fleet-legend");
    const status = document.getElementById("fleet-live");
    const data = JSON.parse(document.getElementById("fleet-heatmap-data").textContent);
    const states = data.states;
    const heat = new Map(data.rows.map((r) => [r.id, r]));
    const headers = Array.from(table.tHead.rows[0].cells);
    const columnOf = Object.fromEntries(headers.map((th, i) => [th.dataset.key, i]));
    let sortKey = form.elements.sort.value;
    let descending = form.elements.dir.value === "desc";
    let drawnIds = [];
    let drawPending = false;
    let clickBound = false;

    // --- filtering and sorting ------------------------------------------------------------

    function currentFilter() {
      const f = {};
      FILTERS.forEach((name) => { f[name] = form.elements[name].value.trim().toLowerCase(); });
      return f;
    }
    // Filters whose every matching row is in the table (and kept live since).
    const loaded = [currentFilter()];

    function covers(wide, narrow) {
      return (wide.q === "" || narrow.q.includes(wide.q)) &&
        ["region", "mode", "state"].every((k) => wide[k] === "" || wide[k] === narrow[k]);
    }

    function matches(tr, f) {
      const d = tr.dataset;
      if (f.q && !d.name.includes(f.q) && !d.group.includes(f.q)) return false;
      if (f.region && d.region.toLowerCase() !== f.region) return false;
      if (f.mode && d.mode.toLowerCase() !== f.mode) return false;
      if (f.state === "outdated") return d.latest !== "1";
      if (f.state && d.state !== f.state) return false;
      return true;
    }

    function sortValue(tr, key) {
      return tr.cells[columnOf[key]].dataset.sort;
    }

    function compare(a, b) {
      const byKey = (key) => {
        const x = sortValue(a, key), y = sortValue(b, key);
        if (NUMERIC.has(key)) return Number(x) - Number(y);
        return x < y ? -1 : x > y ? 1 : 0;
      };
      const order = byKey(sortKey) || byKey("name");
      return descending ? -order : order;
    }

    function apply() {
      const f = currentFilter();
      const rows = Array.from(tbody.rows).sort(compare);
      let shown = 0;
      rows.forEach((tr) => {
        const ok = matches(tr, f);
        tr.hidden = !ok;
        if (ok) shown += 1;
        tbody.appendChild(tr); // re-appending moves it: the table takes the sorted order
      });
      table.hidden = shown === 0;
      section.hidden = shown === 0;
      empty.hidden = shown !== 0;
      counter.textContent = `${shown} set${shown === 1 ? "" : "s"}`;
      headers.forEach((th) => {
        th.setAttribute("aria-sort", th.dataset.key === sortKey ? (descending ? "descending" : "ascending") : "none");
      });
      scheduleDraw();
    }

    function updateUrl() {
      const url = new URL(window.location.href);
      FILTERS.forEach((name) => {
        const value = form.elements[name].value.trim();
        if (value) url.searchParams.set(name, value); else url.searchParams.delete(name);
      });
      if (sortKey !== "name") url.searchParams.set("sort", sortKey); else url.searchParams.delete("sort");
      if (descending) url.searchParams.set("dir", "desc"); else url.searchParams.delete("dir");
      history.replaceState(null, "", url.toString());
    }

    headers.forEach((th) => {
      th.querySelector("button").addEventListener("click", () => {
        if (sortKey === th.dataset.key) descending = !descending;
        else { sortKey = th.dataset.key; descending = false; }
        form.elements.sort.value = sortKey;
        form.elements.dir.value = descending ? "desc" : "asc";
        apply();
        updateUrl();
      });
    });

    let filterTimer = null;
    function filterChanged() {
      apply();
      updateUrl();
      const f = currentFilter();
      if (loaded.some((wide) => covers(wide, f))) return;
      clearTimeout(filterTimer);
      filterTimer = setTimeout(async () => {
        const url = new URL(window.location.href);
        url.searchParams.set("format", "json");
        const answer = await getJson(url);
        if (!answer) return;
        answer.rows.forEach(merge);
        loaded.push(f);
        apply();
      }, FILTER_DELAY);
    }
    form.elements.q.addEventListener("input", filterChanged);
    ["region", "mode", "state"].forEach((name) => form.elements[name].addEventListener("change", filterChanged));
    form.addEventListener("submit", (event) => { event.preventDefault(); filterChanged(); });

    // --- rows from the server ---------------------------------------------------------------

    async function getJson(url) {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.redirected && new URL(response.url).pathname.startsWith("/login/")) {
          setStatus("closed", "signed out: reload to log in");
          return null;
        }
        return response.ok ? await response.json() : null;
      } catch (error) {
        return null; // unreachable for a moment: the socket reconnects and re-fetches
      }
    }

    function rowOf(id) {
      return tbody.querySelector(`tr[data-id="${id}"]`);
    }

    function merge(row) {
      const template = document.createElement("template");
      template.innerHTML = row.html.trim();
      const fresh = template.content.firstElementChild;
      const old = rowOf(row.id);
      if (old) old.replaceWith(fresh); else tbody.appendChild(fresh);
      heat.set(row.id, row.heatmap);
    }

    function remove(id) {
      const old = rowOf(id);
      if (old) old.remove();
      heat.delete(id);
    }

    // Live re-fetch: ids gathered from messages, fetched at most once a second.
    const changed = new Set();
    let lastFetch = 0;
    let timer = null;
    let inFlight = false;

    function refresh(ids) {
      ids.forEach((id) => changed.add(id));
      if (inFlight || timer !== null) return;
      timer = setTimeout(load, Math.max(0, lastFetch + MIN_INTERVAL - Date.now()));
    }

    async function load() {
      timer = null;
      inFlight = true;
      lastFetch = Date.now();
      try {
        while (changed.size) {
          const ids = Array.from(changed).slice(0, MAX_IDS);
          ids.forEach((id) => changed.delete(id));
          const url = new URL(window.location.pathname, window.location.origin);
          url.searchParams.set("format", "json");
          url.searchParams.set("ids", ids.join(","));
          const answer = await getJson(url);
          if (!answer) { ids.forEach((id) => changed.add(id)); break; }
          answer.rows.forEach(merge);
          answer.missing.forEach(remove);
        }
        apply();
      } finally {
        inFlight = false;
        if (changed.size) refresh([]);
      }
    }

    // --- the fleet heatmap ------------------------------------------------------------------

    function scheduleDraw() {
      if (drawPending) return;
      drawPending = true;
      requestAnimationFrame(() => { drawPending = false; draw(); });
    }

    function hover(row, ud, counts) {
      if (!counts) return `<b>${escapeHtml(row.name)}</b> · UD ${ud}<br>no instance`;
      const worst = states[row.cells[ud]];
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      const parts = states.filter((s) => counts[s.key]).map((s) => `${counts[s.key]} ${s.label.toLowerCase()}`);
      return `<b>${escapeHtml(row.name)}</b> · UD ${ud} — ${worst.label}<br>${parts.join("<br>")}<br>${total} instance${total === 1 ? "" : "s"}`;
    }

    function draw() {
      const visible = Array.from(tbody.rows).filter((tr) => !tr.hidden).map((tr) => Number(tr.dataset.id));
      drawnIds = visible.filter((id) => heat.has(id));
      const rows = drawnIds.map((id) => heat.get(id));
      const width = Math.max(1, ...rows.map((r) => r.cells.length));
      const z = [], text = [];
      rows.forEach((r) => {
        const zr = [], tr = [];
        for (let ud = 0; ud < width; ud++) {
          const value = ud < r.cells.length ? r.cells[ud] : null;
          zr.push(value);
          tr.push(hover(r, ud, ud < r.counts.length ? r.counts[ud] : null));
        }
        z.push(zr); text.push(tr);
      });
      const n = states.length;
      const colorscale = [];
      states.forEach((s, i) => { colorscale.push([i / n, s.color], [(i + 1) / n, s.color]); });
      const trace = {
        type: "heatmap", z, text, hovertemplate: "%{text}<extra></extra>",
        x: Array.from({ length: width }, (_, i) => i), y: rows.map((_, i) => i),
        colorscale, zmin: -0.5, zmax: n - 0.5, showscale: false, xgap: 1, ygap: 1,
      };
      const layout = {
        margin: { l: 150, r: 10, t: 10, b: 40 }, height: 60 + Math.max(1, rows.length) * 14,
        yaxis: { autorange: "reversed", tickvals: rows.map((_, i) => i), ticktext: rows.map((r) => r.name),
                 tickfont: { size: 10 }, fixedrange: true, showgrid: false, zeroline: false },
        xaxis: { title: { text: "update domain" }, dtick: 1, fixedrange: true, showgrid: false, zeroline: false },
        plot_bgcolor: "#f4f6f8", paper_bgcolor: "#ffffff",
      };
      Plotly.react(element, [trace], layout, { displayModeBar: false, responsive: true });
      if (!clickBound && element.on) {
        clickBound = true;
        // Plotly gives the div its event emitter on the first draw.
        element.on("plotly_click", (event) => {
          const point = event.points && event.points[0];
          const id = point ? drawnIds[point.y] : undefined;
          if (id !== undefined) window.location.href = data.detail_url.replace(/\/0\/$/, `/${id}/`);
        });
      }
      drawLegend(rows);
    }

    function drawLegend(rows) {
      const counts = states.map(() => 0);
      rows.forEach((r) => r.cells.forEach((c) => { if (c !== null) counts[c] += 1; }));
      legend.replaceChildren(...states.map((s, i) => {
        const li = document.createElement("li");
        li.dataset.state = s.key;
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        const count = document.createElement("b");
        count.className = "count";
        count.textContent = counts[i];
        li.append(swatch, ` ${s.label} `, count);
        li.title = `${counts[i]} update domain${counts[i] === 1 ? "" : "s"} shown as ${s.label.toLowerCase()}`;
        if (!counts[i]) li.classList.add("zero");
        return li;
      }));
    }

    function escapeHtml(text) {
      return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
    }

    // --- the socket -----------------------------------------------------------------------

    function setStatus(kind, label) {
      status.className = `live ${kind}`;
      status.textContent = label;
    }

    let retry = 500;
    let openedBefore = false;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}${options.socketPath}`);
      socket.onopen = () => {
        retry = 500;
        setStatus("open", "● live");
        // The page itself is the first snapshot; after a drop, what is shown may be stale.
        if (openedBefore) refresh(Array.from(tbody.rows, (tr) => Number(tr.dataset.id)));
        openedBefore = true;
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "changed") refresh(message.ids);
      };
      socket.onclose = (event) => {
        if (event.code === 4401) { setStatus("closed", "signed out: reload to log in"); return; }
        setStatus("connecting", "reconnecting…");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }

    apply();
    connect();

    // For tests and the curious.
    return {
      visibleNames: () => Array.from(tbody.rows).filter((tr) => !tr.hidden).map((tr) => tr.cells[0].textContent.trim()),
      heatmapNames: () => drawnIds.map((id) => heat.get(id).name),
      refresh,
    };
  }

  window.FleetOverview = { start };
})();
