/* Keeps a rollout page (the list, or one rollout's grid) live.
 *
 * The server draws the page; its changing part sits in one element. The rollouts socket
 * sends {"type": "changed"} whenever a rollout (or, on a rollout's page, one of its runs)
 * changes; the page then fetches itself with ?fragment=1, which returns only that part, and
 * swaps it in. A burst of messages becomes at most one fetch a second. Each time the socket
 * opens the page fetches once too, so a change made while it was closed is not missed. The
 * socket reconnects with backoff; a signed-out user is told to reload.
 */
(function () {
  "use strict";

  const MIN_INTERVAL = 1000; // ms between two fetches of the fragment

  // The time left, in the words of upgrades/explain.py span_words ("4 m 12 s").
  function spanWords(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
    if (hours) return minutes ? `${hours} h ${minutes} m` : `${hours} h`;
    if (minutes) return seconds ? `${minutes} m ${seconds} s` : `${minutes} m`;
    return `${seconds} s`;
  }

  // Each countdown carries the server's time when it was drawn (data-now), so a skewed
  // browser clock does not matter: the skew is measured once per drawn element.
  function tick() {
    document.querySelectorAll(".explain-countdown[data-until]").forEach((node) => {
      if (node.dataset.skew === undefined) {
        node.dataset.skew = String(node.dataset.now ? Date.parse(node.dataset.now) - Date.now() : 0);
      }
      node.textContent = spanWords(Date.parse(node.dataset.until) - (Date.now() + Number(node.dataset.skew)));
    });
  }

  function start(options) {
    const element = document.getElementById(options.element);
    const status = options.status ? document.getElementById(options.status) : null;
    let lastFetch = 0;
    let timer = null;
    let inFlight = false;
    let again = false;

    function setStatus(kind, label) {
      if (!status) return;
      status.className = `live ${kind}`;
      status.textContent = label;
    }

    function fragmentUrl() {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      url.hash = "";
      return url.toString();
    }

    // Schedule one fetch: at once if the last was more than a second ago, else when it is.
    function refresh() {
      if (inFlight) { again = true; return; }
      if (timer !== null) return;
      const wait = Math.max(0, lastFetch + MIN_INTERVAL - Date.now());
      timer = setTimeout(load, wait);
    }

    async function load() {
      timer = null;
      inFlight = true;
      lastFetch = Date.now();
      try {
        const response = await fetch(fragmentUrl(), { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (response.redirected && new URL(response.url).pathname.startsWith("/login/")) {
          setStatus("closed", "signed out: reload to log in");
          return;
        }
        if (response.ok) swap(await response.text());
      } catch (error) {
        // The server is unreachable for a moment: the socket reconnects and fetches again.
      } finally {
        inFlight = false;
        if (again) { again = false; refresh(); }
      }
    }

    // Swap the fragment in, keeping which <details> were open and where the grid was scrolled.
    function swap(html) {
      const open = new Set(Array.from(element.querySelectorAll("details[open][data-key]"), (d) => d.dataset.key));
      const scroller = element.querySelector(".rollout-scroll");
      const scroll = scroller ? [scroller.scrollLeft, scroller.scrollTop] : null;
      element.innerHTML = html;
      element.querySelectorAll("details[data-key]").forEach((d) => { if (open.has(d.dataset.key)) d.open = true; });
      const after = element.querySelector(".rollout-scroll");
      if (after && scroll) { after.scrollLeft = scroll[0]; after.scrollTop = scroll[1]; }
    }

    let retry = 500;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}${options.socketPath}`);
      socket.onopen = () => { retry = 500; setStatus("open", "● live"); refresh(); };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "changed") refresh();
      };
      socket.onclose = (event) => {
        if (event.code === 4401) { setStatus("closed", "signed out: reload to log in"); return; }
        if (event.code === 4404) { setStatus("closed", "this rollout no longer exists"); return; }
        setStatus("connecting", "reconnecting…");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }
    connect();
    setInterval(tick, 1000); // redraws the time left of waiting sets and zones; no request
    tick();
    return { refresh };
  }

  window.RolloutLive = { start };
})();
