/* The live heatmap of one scale set.
 *
 * Draws from the snapshot embedded in the page, then keeps a WebSocket open: the server
 * sends a snapshot on every (re)connect and deltas (changed cells) after it. Redraws are
 * coalesced to one per animation frame, so a burst of deltas costs one Plotly.react.
 * Rows are update domains per placement group (or fault domains, or zones); one cell per
 * instance, ordered by instance id.
 *
 * Hooks: `options.onMessage(message)` sees every socket message after the heatmap used it
 * (the run panel listens there, so the page keeps one socket); `options.onRowClick(row)` is
 * called when an operator clicks a row.
 */
(function () {
  "use strict";

  const GROUPINGS = {
    update_domain: (c) => [c.placement_group, c.update_domain, `PG ${c.placement_group} · UD ${c.update_domain}`],
    fault_domain: (c) => [c.placement_group, c.fault_domain, `PG ${c.placement_group} · FD ${c.fault_domain}`],
    zone: (c) => [c.zone === "" ? -1 : Number(c.zone), c.update_domain, `Zone ${c.zone || "–"} · UD ${c.update_domain}`],
  };

  function start(options) {
    const element = document.getElementById(options.element);
    const legend = document.getElementById(options.legend);
    const status = document.getElementById(options.status);
    const initial = JSON.parse(document.getElementById(options.snapshot).textContent);

    let states = [];        // [{key, label, color}]
    let stateIndex = {};    // key -> index in states
    let columns = [];
    const cells = new Map(); // instance id -> cell object
    let grouping = "update_domain";
    let layoutCells = [];   // [row][col] -> instance id, as drawn
    let drawnRows = [];     // [{major, minor, label, cells}], as drawn
    let scaleSet = {};      // the snapshot's scale_set: model_version, target_image, …
    let bindRowClick = null; // set when options.onRowClick is given; called once, after the first draw
    let pending = false;

    function toCell(row) {
      const cell = {};
      columns.forEach((name, i) => { cell[name] = row[i]; });
      return cell;
    }

    function applySnapshot(snapshot) {
      states = snapshot.states;
      stateIndex = Object.fromEntries(states.map((s, i) => [s.key, i]));
      columns = snapshot.columns;
      scaleSet = snapshot.scale_set || {};
      cells.clear();
      snapshot.cells.forEach((row) => { const c = toCell(row); cells.set(c.id, c); });
      schedule();
    }

    function applyDelta(rows) {
      rows.forEach((row) => { const c = toCell(row); cells.set(c.id, c); });
      schedule();
    }

    function schedule() {
      if (!pending) {
        pending = true;
        requestAnimationFrame(() => { pending = false; draw(); });
      }
    }

    function hover(c) {
      const state = states[stateIndex[c.state]];
      return [
        `<b>instance ${c.id}</b> — ${state ? state.label : c.state}`,
        `UD ${c.update_domain} · FD ${c.fault_domain}${c.zone ? " · zone " + c.zone : ""} · PG ${c.placement_group}`,
        `image ${c.image}`,
        `health ${c.health} · power ${c.power} · provisioning ${c.provisioning}`,
        `latest model applied: ${c.model_applied ? "yes" : "no"}`,
        c.last_error ? `last error: ${c.last_error}` : "",
      ].filter(Boolean).join("<br>");
    }

    function draw() {
      const key = GROUPINGS[grouping];
      const rows = new Map();
      [...cells.values()].sort((a, b) => a.id - b.id).forEach((c) => {
        const [major, minor, label] = key(c);
        const id = `${major}/${minor}`;
        if (!rows.has(id)) rows.set(id, { major, minor, label, cells: [] });
        rows.get(id).cells.push(c);
      });
      const ordered = [...rows.values()].sort((a, b) => a.major - b.major || a.minor - b.minor);
      drawnRows = ordered;
      const width = Math.max(1, ...ordered.map((r) => r.cells.length));
      const z = [], text = [];
      layoutCells = [];
      ordered.forEach((r) => {
        const zr = new Array(width).fill(null), tr = new Array(width).fill(""), ir = new Array(width).fill(null);
        r.cells.forEach((c, i) => { zr[i] = stateIndex[c.state]; tr[i] = hover(c); ir[i] = c.id; });
        z.push(zr); text.push(tr); layoutCells.push(ir);
      });
      const n = states.length;
      const colorscale = [];
      states.forEach((s, i) => { colorscale.push([i / n, s.color], [(i + 1) / n, s.color]); });
      const trace = {
        type: "heatmap", z, text, hovertemplate: "%{text}<extra></extra>",
        y: ordered.map((r) => r.label), colorscale, zmin: -0.5, zmax: n - 0.5,
        showscale: false, xgap: 2, ygap: 2,
      };
      const height = Math.min(1400, 60 + ordered.length * 26);
      const layout = {
        margin: { l: 110, r: 10, t: 10, b: 30 }, height,
        yaxis: { autorange: "reversed", type: "category", fixedrange: true },
        xaxis: { title: { text: "one cell per instance, in id order" }, showticklabels: false, showgrid: false,
                 zeroline: false, ticks: "", fixedrange: true },
        plot_bgcolor: "#ffffff", paper_bgcolor: "#ffffff",
      };
      Plotly.react(element, [trace], layout, { displayModeBar: false, responsive: true });
      if (bindRowClick && element.on) { bindRowClick(); bindRowClick = null; }
      drawLegend();
    }

    function drawLegend() {
      const counts = Object.fromEntries(states.map((s) => [s.key, 0]));
      cells.forEach((c) => { counts[c.state] = (counts[c.state] || 0) + 1; });
      legend.replaceChildren(...states.map((s) => {
        const li = document.createElement("li");
        li.dataset.state = s.key;
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        li.append(swatch, ` ${s.label} `);
        const count = document.createElement("b");
        count.className = "count";
        count.textContent = counts[s.key];
        li.append(count);
        if (!counts[s.key]) li.classList.add("zero");
        return li;
      }));
    }

    function setStatus(kind, label) {
      status.className = `live ${kind}`;
      status.textContent = label;
    }

    let retry = 500;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}${options.socketPath}`);
      socket.onopen = () => { retry = 500; setStatus("open", "● live"); };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "snapshot") applySnapshot(message);
        else if (message.type === "delta") applyDelta(message.cells);
        if (options.onMessage) options.onMessage(message);
      };
      socket.onclose = (event) => {
        if (event.code === 4401) { setStatus("closed", "signed out: reload to log in"); return; }
        if (event.code === 4404) { setStatus("closed", "this scale set no longer exists"); return; }
        setStatus("connecting", "reconnecting…");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }

    document.querySelectorAll('input[name="group"]').forEach((input) => {
      input.addEventListener("change", () => { grouping = input.value; draw(); });
    });

    if (options.onRowClick) {
      element.classList.add("clickable");
      const countWhere = (field, value) => {
        let n = 0;
        cells.forEach((c) => { if (String(c[field]) === String(value)) n += 1; });
        return n;
      };
      const groupsWhere = (field, value) => {
        const groups = new Set();
        cells.forEach((c) => { if (String(c[field]) === String(value)) groups.add(c.placement_group); });
        return groups.size;
      };
      // Plotly gives the div its event emitter when it first draws: draw() binds this then.
      bindRowClick = () => element.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        const row = point && drawnRows.find((r) => r.label === point.y);
        if (!row) return;
        options.onRowClick({
          grouping, major: row.major, minor: row.minor, label: row.label,
          zone: row.cells.length ? row.cells[0].zone : "",
          count: countWhere, placementGroups: groupsWhere,
          modelVersion: scaleSet.model_version, target: scaleSet.target_image,
        });
      });
    }

    applySnapshot(initial);
    connect();

    // For tests and the curious: what a drawn cell shows right now.
    window.heatmap = {
      stateOf: (id) => (cells.get(id) || {}).state,
      drawnColorOf: (id) => {
        const data = element.data && element.data[0];
        if (!data) return null;
        for (let r = 0; r < layoutCells.length; r++) {
          const col = layoutCells[r].indexOf(id);
          if (col >= 0) {
            const value = data.z[r][col];
            return value === null ? null : states[value].color;
          }
        }
        return null;
      },
      rowLabels: () => (element.data && element.data[0] ? [...element.data[0].y] : []),
    };
  }

  window.Heatmap = { start };
})();
