/* Slipway charts: tiny dependency-free SVG sparkline + bar chart.
 *
 *   <div class="chart chart-sparkline" data-chart="sparkline" data-values="[3,5,2,8,6]"></div>
 *   <div class="chart chart-bar" data-chart="bar"
 *        data-values='[{"label":"Mon","value":12,"status":"success"},{"label":"Tue","value":3,"status":"failed"}]'></div>
 *   (bar values may also be plain numbers; data-unit="s" appends a unit in tooltips;
 *    a colour modifier class on the element: chart-success / chart-failed / chart-muted)
 *
 * API: Slipway.charts.sparkline(el, values), Slipway.charts.bar(el, items), Slipway.charts.init(root?)
 * Charts redraw when data-values changes (call init again after htmx swaps; done automatically on htmx:load).
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function num(v) { var n = Number(v); return isFinite(n) ? n : 0; }
  function fmt(n) { return Math.abs(n) >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10); }

  function sparkline(el, values) {
    values = (values || []).map(num);
    var w = 100, h = 30, n = values.length;
    if (!n) { el.innerHTML = ""; return; }
    var min = Math.min.apply(null, values), max = Math.max.apply(null, values);
    if (max === min) { max += 1; min -= 1; }
    var pts = values.map(function (v, i) {
      var x = n === 1 ? w : (i / (n - 1)) * w;
      var y = h - 2 - ((v - min) / (max - min)) * (h - 4);
      return [x, y];
    });
    var line = pts.map(function (p, i) { return (i ? "L" : "M") + p[0].toFixed(2) + "," + p[1].toFixed(2); }).join("");
    var area = line + "L" + w + "," + h + "L0," + h + "Z";
    var last = pts[pts.length - 1];
    var unit = el.getAttribute("data-unit") || "";
    el.innerHTML =
      '<svg viewBox="0 0 ' + w + " " + h + '" preserveAspectRatio="none" role="img" aria-label="trend, latest ' + esc(fmt(values[n - 1]) + unit) + '">' +
      "<title>" + esc("min " + fmt(Math.min.apply(null, values)) + unit + " · max " + fmt(Math.max.apply(null, values)) + unit + " · latest " + fmt(values[n - 1]) + unit) + "</title>" +
      '<path class="chart-area" d="' + area + '"></path>' +
      '<path class="chart-line" d="' + line + '"></path>' +
      "</svg>" +
      '<span class="chart-last" style="position:absolute;width:5px;height:5px;border-radius:50%;background:currentColor;' +
      "left:calc(" + last[0] + "% - 2.5px);top:calc(" + ((last[1] / h) * 100).toFixed(2) + '% - 2.5px)"></span>';
    el.style.position = el.style.position || "relative";
  }

  function bar(el, items) {
    items = (items || []).map(function (it, i) {
      return typeof it === "object" && it !== null ? { label: it.label != null ? it.label : String(i + 1), value: num(it.value), status: it.status || "" }
        : { label: String(i + 1), value: num(it), status: "" };
    });
    var n = items.length;
    if (!n) { el.innerHTML = ""; return; }
    var rect = el.getBoundingClientRect();
    var W = Math.max(120, Math.round(rect.width) || 300), H = Math.max(60, Math.round(rect.height) || 160);
    var padL = 28, padB = 18, padT = 6, padR = 4;
    var max = Math.max.apply(null, items.map(function (d) { return d.value; }));
    if (max <= 0) max = 1;
    var mag = Math.pow(10, Math.floor(Math.log10(max)));
    var nice = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).filter(function (v) { return v >= max; })[0] || max;
    var plotW = W - padL - padR, plotH = H - padT - padB;
    var slot = plotW / n, bw = Math.max(2, Math.min(36, slot * 0.68));
    var unit = el.getAttribute("data-unit") || "";
    var svg = '<svg viewBox="0 0 ' + W + " " + H + '" width="' + W + '" height="' + H + '" role="img">';
    for (var g = 0; g <= 2; g++) {
      var gv = (nice / 2) * g, gy = padT + plotH - (gv / nice) * plotH;
      svg += '<line class="chart-grid" x1="' + padL + '" x2="' + (W - padR) + '" y1="' + gy.toFixed(1) + '" y2="' + gy.toFixed(1) + '"></line>' +
        '<text class="chart-axis" x="' + (padL - 6) + '" y="' + (gy + 3).toFixed(1) + '" text-anchor="end">' + esc(fmt(gv)) + "</text>";
    }
    var every = Math.ceil(n / Math.max(1, Math.floor(plotW / 44)));
    items.forEach(function (d, i) {
      var h = (d.value / nice) * plotH, x = padL + slot * i + (slot - bw) / 2, y = padT + plotH - h;
      svg += '<rect class="chart-bar-rect' + (d.status ? " status-" + esc(d.status) : "") + '" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) +
        '" width="' + bw.toFixed(1) + '" height="' + Math.max(h, d.value > 0 ? 1 : 0).toFixed(1) + '" rx="2"><title>' +
        esc(d.label + ": " + fmt(d.value) + unit + (d.status ? " (" + d.status + ")" : "")) + "</title></rect>";
      if (i % every === 0) {
        svg += '<text class="chart-axis" x="' + (x + bw / 2).toFixed(1) + '" y="' + (H - 4) + '" text-anchor="middle">' + esc(d.label) + "</text>";
      }
    });
    el.innerHTML = svg + "</svg>";
  }

  function init(root) {
    var els = (root || document).querySelectorAll("[data-chart]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], raw = el.getAttribute("data-values") || "[]";
      if (el._slipwayChart === raw + "|" + el.clientWidth) continue;
      var values;
      try { values = JSON.parse(raw); } catch (e) { values = []; }
      if (el.getAttribute("data-chart") === "bar") bar(el, values); else sparkline(el, values);
      el._slipwayChart = raw + "|" + el.clientWidth;
    }
  }

  Slipway.charts = { sparkline: sparkline, bar: bar, init: init };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
  var t;
  window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(function () { init(); }, 150); });
  document.addEventListener("htmx:load", function () { init(); });
})();
