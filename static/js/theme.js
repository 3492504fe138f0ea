/* Slipway theme + app chrome.
 * Load in <head> (not deferred) to avoid a flash of the wrong theme:
 *   <script src="{% static 'js/theme.js' %}"></script>
 * - <html data-theme="light|dark"> from localStorage "slipway.theme"; absent = follow the OS.
 * - Any [data-theme-toggle] button cycles auto -> dark -> light -> auto
 *   (or sets a value with data-theme-toggle="dark").
 * - [data-menu-toggle] toggles class "nav-open" on <body> (phone drawer);
 *   clicking .app-backdrop or pressing Escape closes it.
 * API: Slipway.theme.get() -> "auto"|"dark"|"light"; Slipway.theme.set(value)
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});
  var KEY = "slipway.theme";
  var root = document.documentElement;

  function read() {
    try { return localStorage.getItem(KEY) || "auto"; } catch (e) { return "auto"; }
  }
  function apply(value) {
    if (value === "dark" || value === "light") root.setAttribute("data-theme", value);
    else root.removeAttribute("data-theme");
    var btns = document.querySelectorAll("[data-theme-toggle]");
    for (var i = 0; i < btns.length; i++) {
      btns[i].setAttribute("data-theme-current", value);
      btns[i].setAttribute("title", "Theme: " + value);
      btns[i].setAttribute("aria-label", "Theme: " + value + " (click to change)");
    }
  }
  function set(value) {
    if (value !== "dark" && value !== "light") value = "auto";
    try {
      if (value === "auto") localStorage.removeItem(KEY);
      else localStorage.setItem(KEY, value);
    } catch (e) { /* private mode */ }
    apply(value);
    document.dispatchEvent(new CustomEvent("slipway:theme", { detail: { theme: value } }));
  }
  var ORDER = ["auto", "dark", "light"];
  Slipway.theme = {
    get: read,
    set: set,
    effective: function () {
      var v = read();
      if (v !== "auto") return v;
      return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
    },
  };
  apply(read());

  document.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest("[data-theme-toggle]") : null;
    if (t) {
      var want = t.getAttribute("data-theme-toggle");
      if (!want) want = ORDER[(ORDER.indexOf(read()) + 1) % ORDER.length];
      set(want);
      return;
    }
    var m = ev.target.closest ? ev.target.closest("[data-menu-toggle]") : null;
    if (m) {
      var open = document.body.classList.toggle("nav-open");
      m.setAttribute("aria-expanded", open ? "true" : "false");
      return;
    }
    if (ev.target.closest && (ev.target.closest(".app-backdrop") || ev.target.closest(".sidebar .nav a"))) {
      document.body.classList.remove("nav-open");
    }
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && document.body && document.body.classList.contains("nav-open")) {
      document.body.classList.remove("nav-open");
    }
  });
  document.addEventListener("DOMContentLoaded", function () { apply(read()); });
})();
