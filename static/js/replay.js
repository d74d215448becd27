/* The run page's replay: any moment of a run, rebuilt from its event log.
 *
 * replay.json gives each instance's state at the run's start and the ordered changes after
 * it (milliseconds after the start); the page applies the changes up to the chosen moment.
 * Moving forward applies only the changes in between; moving back starts again from the
 * start (linear in events, and a run has a few per instance).
 *
 * Draws: the heatmap of the run's instances (rows = update domains per placement group,
 * cells = instances in id order, the live heatmap's colours), a counts-over-time chart, and
 * a vertical line at the moment on both the chart and the batch timeline (RunPanel.timeline).
 *
 * Keyboard: the scrubber is a range input (arrows step, Page Up/Down jump a tenth, Home/End);
 * Space on the scrubber toggles play, as it does on the play button.
 */
(function () {
  "use strict";

  const TICKS = 1000; // scrubber positions over the run: fine enough to hit a batch, few enough to step
  // Named, so redrawing it leaves any other shape of a chart (the timeline's own) alone.
  const MOMENT_LINE = {
    name: "replay-moment", type: "line", xref: "x", yref: "paper", y0: 0, y1: 1,
    line: { color: "#1d232b", width: 2, dash: "dot" },
  };
  const PHASE_WORDS = {
    RollingForward: () => "Run started",
    batch_started: (batch) => `Batch ${batch + 1} started`,
    health_wait: (batch) => `Batch ${batch + 1} upgraded; waiting for health`,
    rolling_back: (batch) => `Batch ${batch + 1}: rolling back failed instances`,
    cancel_requested: () => "Cancel requested",
  };

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }

  /* Plotly reads date strings as wall time and ignores offsets: give it UTC wall time, as the
   * batch timeline's ISO strings are. */
  function plotlyUtc(ms) {
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
  }

  /* "1:02:03.4", "2:03.4": tenths, because a compressed demo run can last a few seconds. */
  function elapsed(ms) {
    const tenths = Math.floor(ms / 100) % 10, total = Math.floor(ms / 1000);
    const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
    return (hours ? `${hours}:${pad(minutes)}` : `${minutes}`) + `:${pad(seconds)}.${tenths}`;
  }

  function rows(data) {
    const columns = data.instance_columns;
    return data.instances.map((row) => Object.fromEntries(columns.map((name, i) => [name, row[i]])));
  }

  /* One row per update domain per placement group, as the live heatmap's default grouping. */
  function layoutRows(instances) {
    const byRow = new Map();
    [...instances].sort((a, b) => a.id - b.id).forEach((c) => {
      const id = `${c.placement_group}/${c.update_domain}`;
      if (!byRow.has(id)) {
        byRow.set(id, { major: c.placement_group, minor: c.update_domain, label: `PG ${c.placement_group} · UD ${c.update_domain}`, cells: [] });
      }
      byRow.get(id).cells.push(c);
    });
    return [...byRow.values()].sort((a, b) => a.major - b.major || a.minor - b.minor);
  }

  /* The instance states at a moment, kept by applying changes forward. */
  function Player(data) {
    const initial = new Map(rows(data).map((c) => [c.id, c.state]));
    const changes = data.changes;
    let states = new Map(initial);
    let applied = 0;
    let at = -1;

    function seek(ms) {
      if (ms < at) { states = new Map(initial); applied = 0; }
      while (applied < changes.length && changes[applied][0] <= ms) {
        states.set(changes[applied][1], changes[applied][2]);
        applied += 1;
      }
      at = ms;
    }
    return { seek, stateOf: (id) => states.get(id), states: () => Object.fromEntries(states) };
  }

  function start(options) {
    const $ = (id) => document.getElementById(id);
    const status = $(options.status);
    fetch(options.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error(`the replay could not be loaded (HTTP ${response.status})`);
        return response.json();
      })
      .then((data) => { status.textContent = ""; run(data, options, $); })
      .catch((error) => { status.textContent = `${error.message}; reload the page to try again.`; });
  }

  function run(data, options, $) {
    const heatmap = $(options.heatmap), legend = $(options.legend), chart = $(options.counts);
    const scrubber = $(options.scrubber), play = $(options.play), speed = $(options.speed);
    const time = $(options.time), phase = $(options.phase), timeline = $(options.timeline);
    const startMs = Date.parse(data.start);
    const duration = data.duration_ms;
    const states = data.states;
    const stateIndex = Object.fromEntries(states.map((s, i) => [s.key, i]));
    const instances = rows(data);
    const drawnRows = layoutRows(instances);
    const player = Player(data);
    const moments = [...new Set(data.changes.map((c) => c[0]).concat(data.marks.map((m) => m[0])))].sort((a, b) => a - b);
    let moment = duration; // open on the run as it ended (or is now)
    let playing = false, lastFrame = 0, pending = false;

    function label(key) { const s = states[stateIndex[key]]; return s ? s.label : key; }

    function hover(c, state) {
      return [
        `<b>instance ${c.id}</b> — ${label(state)}`,
        `UD ${c.update_domain} · FD ${c.fault_domain}${c.zone ? " · zone " + c.zone : ""} · PG ${c.placement_group}`,
        c.batch === null ? "not in a batch" : `batch ${c.batch + 1}`,
      ].join("<br>");
    }

    function drawHeatmap() {
      const width = Math.max(1, ...drawnRows.map((r) => r.cells.length));
      const z = [], text = [];
      drawnRows.forEach((r) => {
        const zr = new Array(width).fill(null), tr = new Array(width).fill("");
        r.cells.forEach((c, i) => { const s = player.stateOf(c.id); zr[i] = stateIndex[s]; tr[i] = hover(c, s); });
        z.push(zr); text.push(tr);
      });
      const n = states.length;
      const colorscale = [];
      states.forEach((s, i) => { colorscale.push([i / n, s.color], [(i + 1) / n, s.color]); });
      const trace = {
        type: "heatmap", z, text, hovertemplate: "%{text}<extra></extra>",
        y: drawnRows.map((r) => r.label), colorscale, zmin: -0.5, zmax: n - 0.5,
        showscale: false, xgap: 2, ygap: 2,
      };
      const layout = {
        margin: { l: 110, r: 10, t: 10, b: 30 }, height: Math.min(1400, 60 + drawnRows.length * 26),
        yaxis: { autorange: "reversed", type: "category", fixedrange: true },
        xaxis: { title: { text: "one cell per instance, in id order" }, showticklabels: false, showgrid: false,
                 zeroline: false, ticks: "", fixedrange: true },
        plot_bgcolor: "#ffffff", paper_bgcolor: "#ffffff",
      };
      Plotly.react(heatmap, [trace], layout, { displayModeBar: false, responsive: true });
    }

    function drawLegend() {
      const counts = Object.fromEntries(states.map((s) => [s.key, 0]));
      instances.forEach((c) => { counts[player.stateOf(c.id)] += 1; });
      legend.replaceChildren(...states.map((s) => {
        const li = document.createElement("li");
        li.dataset.state = s.key;
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        const count = document.createElement("b");
        count.className = "count";
        count.textContent = counts[s.key];
        li.append(swatch, ` ${s.label} `, count);
        if (!counts[s.key]) li.classList.add("zero");
        return li;
      }));
    }

    function drawCounts() {
      const columns = data.count_columns;
      const x = data.counts.map((p) => plotlyUtc(startMs + p[0]));
      const traces = states.map((s) => {
        const column = columns.indexOf(s.key);
        return {
          type: "scatter", mode: "lines", name: s.label, x, y: data.counts.map((p) => p[column]),
          line: { shape: "hv", color: s.color, width: 2, dash: s.key === "RollbackFailed" ? "dash" : "solid" },
          hovertemplate: `${s.label}: %{y}<extra>%{x|%H:%M:%S}</extra>`,
        };
      }).filter((t) => t.y.some((v) => v > 0));
      const layout = {
        height: 260, margin: { l: 50, r: 20, t: 10, b: 40 },
        xaxis: { type: "date", title: { text: "time (UTC)" } },
        yaxis: { title: { text: "instances" }, rangemode: "tozero", fixedrange: true },
        legend: { orientation: "h", y: -0.3 },
        shapes: [momentLine()],
        plot_bgcolor: "#ffffff", paper_bgcolor: "#ffffff",
      };
      Plotly.react(chart, traces, layout, { displayModeBar: false, responsive: true });
    }

    function momentLine() {
      const x = plotlyUtc(startMs + moment);
      return { ...MOMENT_LINE, x0: x, x1: x };
    }

    function phaseText() {
      let last = null;
      data.marks.forEach((m) => { if (m[0] <= moment) last = m; });
      if (!last) return "Before the run started";
      const [, batch, what, message] = last;
      const words = PHASE_WORDS[what];
      if (words) return words(batch);
      return `Run ended: ${what}${message ? ` — ${message}` : ""}`;
    }

    function showTime() {
      const at = new Date(startMs + moment);
      const local = at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
      time.textContent = `${local} (+${elapsed(moment)} of ${elapsed(duration)})`;
      time.title = `${at.toISOString()} (UTC)`;
      time.dataset.moment = String(moment);
      scrubber.setAttribute("aria-valuetext", `${local}, ${elapsed(moment)} after the start`);
      phase.textContent = phaseText();
    }

    function draw() {
      player.seek(moment);
      drawHeatmap();
      drawLegend();
      showTime();
      [chart, timeline].forEach((plot) => {
        if (!plot || !plot.data) return; // not drawn (a run without batches has no timeline)
        const others = ((plot.layout && plot.layout.shapes) || []).filter((s) => s.name !== MOMENT_LINE.name);
        Plotly.relayout(plot, { shapes: [...others, momentLine()] });
      });
    }

    function schedule() {
      if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
    }

    function toTick(ms) { return duration ? Math.round((ms / duration) * TICKS) : TICKS; }

    function seek(ms) {
      moment = Math.max(0, Math.min(duration, Math.round(ms)));
      scrubber.value = String(toTick(moment));
      schedule();
    }

    // --- playing ---

    function rate() {
      const [unit, value] = speed.value.split(":");
      if (unit === "fit") return Math.max(duration, 1) / (Number(value) * 1000);
      return Number(value);
    }

    function frame(now) {
      if (!playing) return;
      moment = Math.min(duration, moment + (now - lastFrame) * rate());
      lastFrame = now;
      scrubber.value = String(toTick(moment));
      draw();
      if (moment >= duration) setPlaying(false);
      else requestAnimationFrame(frame);
    }

    function setPlaying(on) {
      playing = on;
      play.textContent = on ? "❚❚ Pause" : "▶ Play";
      play.setAttribute("aria-pressed", String(on));
      if (on) {
        if (moment >= duration) moment = 0; // play again from the start
        lastFrame = performance.now();
        requestAnimationFrame(frame);
      }
    }

    function step(direction) {
      setPlaying(false);
      const next = direction > 0 ? moments.find((m) => m > moment) : [...moments].reverse().find((m) => m < moment);
      seek(next === undefined ? (direction > 0 ? duration : 0) : next);
    }

    scrubber.max = String(TICKS);
    scrubber.disabled = false;
    scrubber.addEventListener("input", () => {
      setPlaying(false);
      moment = Math.round((Number(scrubber.value) / TICKS) * duration);
      schedule();
    });
    scrubber.addEventListener("keydown", (event) => {
      if (event.key === " ") { event.preventDefault(); setPlaying(!playing); }
    });
    play.disabled = false;
    play.addEventListener("click", () => setPlaying(!playing));
    options.stepButtons.forEach(([id, direction]) => {
      const button = $(id);
      button.disabled = false;
      button.addEventListener("click", () => step(direction));
    });

    seek(moment);
    drawCounts();

    // For tests and the curious: the replayed moment and what each cell shows.
    Object.assign(window.Replay, {
      ready: true,
      moment: () => moment,
      momentIso: () => new Date(startMs + moment).toISOString(),
      duration: () => duration,
      playing: () => playing,
      seek,
      stateAt: (id) => player.stateOf(id),
      states: () => player.states(),
      drawnStateOf: (id) => {
        const trace = heatmap.data && heatmap.data[0];
        if (!trace) return null;
        for (let r = 0; r < drawnRows.length; r++) {
          const col = drawnRows[r].cells.findIndex((c) => c.id === id);
          if (col >= 0) { const value = trace.z[r][col]; return value === null ? null : states[value].key; }
        }
        return null;
      },
      drawnMoment: () => Number(time.dataset.moment),
    });
  }

  window.Replay = { start, ready: false };
})();
