/* Relative times.
 *   <time data-relative datetime="2025-01-02T03:04:05Z">2 Jan 03:04</time>
 * renders "3 min ago" / "in 5 min" / "just now", puts the full local date-time in title,
 * and refreshes every 30 s. New content (htmx swaps) is picked up automatically.
 * API: Slipway.time.relative(date, now?) -> string; Slipway.time.refresh(root?);
 *      Slipway.time.formatDuration(seconds) -> "3.2s" | "1m 05s" | "2h 03m".
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  function relative(date, now) {
    now = now || Date.now();
    var t = date instanceof Date ? date.getTime() : new Date(date).getTime();
    if (isNaN(t)) return "";
    var diff = Math.round((now - t) / 1000);
    var future = diff < 0;
    var s = Math.abs(diff);
    var txt;
    if (s < 10) return "just now";
    if (s < 60) txt = s + " s";
    else if (s < 3600) txt = Math.floor(s / 60) + " min";
    else if (s < 86400) txt = Math.floor(s / 3600) + " h";
    else if (s < 86400 * 30) {
      var d = Math.floor(s / 86400);
      txt = d + (d === 1 ? " day" : " days");
    } else {
      return new Date(t).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
    }
    return future ? "in " + txt : txt + " ago";
  }

  function formatDuration(sec) {
    if (sec == null || sec === "" || isNaN(sec)) return "";
    sec = Number(sec);
    if (sec < 0) sec = 0;
    if (sec < 60) return (sec < 10 ? Math.round(sec * 10) / 10 : Math.round(sec)) + "s";
    var m = Math.floor(sec / 60), s = Math.floor(sec % 60);
    if (m < 60) return m + "m " + (s < 10 ? "0" : "") + s + "s";
    var h = Math.floor(m / 60);
    m = m % 60;
    return h + "h " + (m < 10 ? "0" : "") + m + "m";
  }

  function refresh(root) {
    var els = (root || document).querySelectorAll("time[data-relative]");
    var now = Date.now();
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      var iso = el.getAttribute("datetime");
      if (!iso) continue;
      var d = new Date(iso);
      if (isNaN(d.getTime())) continue;
      var txt = relative(d, now);
      if (el.textContent !== txt) el.textContent = txt;
      if (!el.hasAttribute("title")) el.setAttribute("title", d.toLocaleString());
    }
  }

  Slipway.time = { relative: relative, refresh: refresh, formatDuration: formatDuration };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { refresh(); });
  else refresh();
  setInterval(refresh, 30000);
  document.addEventListener("htmx:load", function (ev) { refresh(ev.target && ev.target.querySelectorAll ? ev.target.parentNode || ev.target : document); });
})();
