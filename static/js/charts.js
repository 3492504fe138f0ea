/* Slipway charts: tiny dependency-free SVG sparkline + bar chart.
 *
 *   <div class="chart chart-sparkline" data-chart="sparkline" data-values="[3,5,2,8,6]"></div>
 *   <div class="chart chart-bar" data-chart="bar"
 *        data-values='[{"label":"Mon","value":12,"status":"success"},{"label":"Tue","value":3,"status":"failed"}]'></div>
 *   (bar values may also be plain numbers; data-unit="s" appends a unit in tooltips;
 *    a colour modifier class on the element: chart-success / chart-failed / chart-muted)
 *
 * API: Slipway.charts.sparkline(el, values), Slipway.charts.bar(el, items), Slipway.charts.init(root?),
 *      Slipway.charts.series(el, opts) (a time series against reference lines, drawn by callers: see below)
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

  /* Nice tick step for a range: 1-2-2.5-5 x 10^n, or 1-2-4-8… x 1024^n with base 1024. */
  function niceStep(raw, base) {
    if (!(raw > 0)) return 1;
    if (base === 1024) {
      var scale = Math.pow(1024, Math.floor(Math.log(raw) / Math.log(1024)));
      var m = raw / scale, k = 1;
      while (k < m) k *= 2;
      return k * scale;
    }
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 2.5, 5, 10].map(function (x) { return x * mag; }).filter(function (v) { return v >= raw; })[0];
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /* A time series against horizontal reference lines (usage vs capacity):
   *   Slipway.charts.series(el, {
   *     points: [[t, v], ...],            t in seconds, oldest first
   *     refs: [{value, label, cls, align}], e.g. allocatable and requested (label at the
 *                                       right end, or the left with align "left")
   *     format: function (v) {},          axis and tooltip text of a value
   *     base: 10 | 1024,                  tick steps (1024: bytes)
   *     span: 300,                        the x axis shows at least this many seconds
   *     empty: "No samples yet." })
   * The y axis starts at 0, so how close the line runs to a reference line is how close
   * usage is to it. The element gets data-points (how many points are plotted).
   */
  function series(el, opts) {
    var pts = (opts.points || []).filter(function (p) { return isFinite(p[0]) && isFinite(p[1]); });
    var refs = (opts.refs || []).filter(function (r) { return r.value > 0; });
    var format = opts.format || fmt;
    el.setAttribute("data-points", String(pts.length));
    el._series = null;
    if (!pts.length) {
      el.innerHTML = '<div class="chart-empty">' + esc(opts.empty || "No samples yet.") + "</div>";
      return;
    }
    var rect = el.getBoundingClientRect();
    var W = Math.max(200, Math.round(rect.width) || 480), H = Math.max(100, Math.round(rect.height) || 170);
    var padL = 54, padR = 10, padT = 12, padB = 22;
    var plotW = W - padL - padR, plotH = H - padT - padB;
    var top = Math.max.apply(null, pts.map(function (p) { return p[1]; }).concat(refs.map(function (r) { return r.value; })));
    if (!(top > 0)) top = 1;
    // Of 3 to 6 gridlines, take the step whose top wastes the least height.
    var want = top * 1.06, step = 0, yMax = Infinity;
    for (var parts = 3; parts <= 6; parts++) {
      var st = niceStep(want / parts, opts.base), mx = Math.ceil(want / st) * st;
      if (mx < yMax - 1e-9) { step = st; yMax = mx; }
    }
    var t1 = pts[pts.length - 1][0], t0 = Math.min(pts[0][0], t1 - (opts.span || 300));
    function x(t) { return padL + ((t - t0) / Math.max(1, t1 - t0)) * plotW; }
    function y(v) { return padT + plotH - (v / yMax) * plotH; }

    var svg = '<svg viewBox="0 0 ' + W + " " + H + '" width="' + W + '" height="' + H + '" role="img" aria-label="' +
      esc((opts.label || "usage") + ", latest " + format(pts[pts.length - 1][1])) + '">';
    for (var v = 0; v <= yMax + step / 2; v += step) {
      var gy = y(v).toFixed(1);
      svg += '<line class="chart-grid" x1="' + padL + '" x2="' + (W - padR) + '" y1="' + gy + '" y2="' + gy + '"></line>' +
        '<text class="chart-axis" x="' + (padL - 6) + '" y="' + (+gy + 3.5).toFixed(1) + '" text-anchor="end">' + esc(format(v)) + "</text>";
    }
    var ticks = [t0, (t0 + t1) / 2, t1];
    ticks.forEach(function (t, i) {
      svg += '<text class="chart-axis" x="' + x(t).toFixed(1) + '" y="' + (H - 5) + '" text-anchor="' +
        (i === 0 ? "start" : i === 2 ? "end" : "middle") + '">' + esc(clock(t)) + "</text>";
    });
    var line = pts.map(function (p, i) { return (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join("");
    var base = y(0).toFixed(1);
    svg += '<path class="chart-area" d="' + line + "L" + x(t1).toFixed(1) + "," + base + "L" + x(pts[0][0]).toFixed(1) + "," + base + 'Z"></path>';
    refs.forEach(function (r) {
      var ry = y(r.value).toFixed(1);
      svg += '<line class="chart-ref ' + esc(r.cls || "") + '" x1="' + padL + '" x2="' + (W - padR) + '" y1="' + ry + '" y2="' + ry + '"></line>' +
        '<text class="chart-ref-label ' + esc(r.cls || "") + '" x="' + (r.align === "left" ? padL + 4 : W - padR - 2) + '" y="' + (+ry - 4).toFixed(1) +
        '" text-anchor="' + (r.align === "left" ? "start" : "end") + '">' +
        esc(r.label + " " + format(r.value)) + "</text>";
    });
    var last = pts[pts.length - 1];
    svg += '<path class="chart-line" d="' + line + '"></path>' +
      '<circle class="chart-dot" cx="' + x(last[0]).toFixed(1) + '" cy="' + y(last[1]).toFixed(1) + '" r="3"></circle>' +
      '<line class="chart-guide" y1="' + padT + '" y2="' + (padT + plotH) + '" x1="0" x2="0" hidden></line>';
    el.innerHTML = svg + '</svg><div class="chart-tip" hidden></div>';
    el._series = { pts: pts, x: x, y: y, format: format, W: W, H: H };
    if (!el._seriesHover) {
      el._seriesHover = true;
      el.addEventListener("mousemove", function (ev) { hover(el, ev); });
      el.addEventListener("mouseleave", function () { hover(el, null); });
    }
  }

  function hover(el, ev) {
    var s = el._series, guide = el.querySelector(".chart-guide"), tip = el.querySelector(".chart-tip");
    if (!s || !guide || !tip) return;
    if (!ev) { guide.setAttribute("hidden", ""); tip.hidden = true; return; }
    var svgEl = el.querySelector("svg"), box = svgEl.getBoundingClientRect();
    var px = ((ev.clientX - box.left) / box.width) * s.W, best = 0;
    for (var i = 1; i < s.pts.length; i++) {
      if (Math.abs(s.x(s.pts[i][0]) - px) < Math.abs(s.x(s.pts[best][0]) - px)) best = i;
    }
    var p = s.pts[best], gx = s.x(p[0]).toFixed(1);
    guide.setAttribute("x1", gx); guide.setAttribute("x2", gx); guide.removeAttribute("hidden");
    tip.textContent = clock(p[0]) + " · " + s.format(p[1]);
    tip.hidden = false;
    var left = (gx / s.W) * box.width;
    tip.style.left = Math.min(Math.max(0, left - tip.offsetWidth / 2), box.width - tip.offsetWidth) + "px";
    tip.style.top = Math.max(0, (s.y(p[1]) / s.H) * box.height - 34) + "px";
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

  Slipway.charts = { sparkline: sparkline, bar: bar, series: series, init: init };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
  var t;
  window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(function () { init(); }, 150); });
  document.addEventListener("htmx:load", function () { init(); });
})();
