/* Timestamps in the operator's time zone, UTC on hover.
 *
 * Pages print every moment as <time datetime="ISO" data-local>… UTC</time> (the `when` tag),
 * which reads right without JavaScript. This rewrites each one in the browser's own time zone
 * and keeps the UTC text in its title; it also does so for <time data-local> elements that live
 * pages add later (a MutationObserver), so a redrawn panel speaks the same time as the page.
 */
(function () {
  "use strict";

  const pad = (n) => String(n).padStart(2, "0");
  const zone = (() => {
    try {
      const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
        .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
      return part ? part.value : "";
    } catch (error) { return ""; }
  })();

  function utcText(d) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  function localText(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${zone ? " " + zone : ""}`;
  }

  function localize(node) {
    if (node.dataset.localized === "1") return;
    const d = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(d.getTime())) return;
    node.title = utcText(d);
    node.textContent = localText(d);
    node.dataset.localized = "1";
  }

  function scan(root) {
    if (root.matches && root.matches("time[data-local]")) localize(root);
    if (root.querySelectorAll) root.querySelectorAll("time[data-local]").forEach(localize);
  }

  document.addEventListener("DOMContentLoaded", () => {
    scan(document);
    new MutationObserver((changes) => changes.forEach((change) => change.addedNodes.forEach(scan)))
      .observe(document.body, { childList: true, subtree: true });
  });

  window.ConsoleTime = { localText, utcText, localize };
})();
