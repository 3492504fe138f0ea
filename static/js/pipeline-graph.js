/* Slipway pipeline graph (stages as columns, jobs as nodes, SVG edges for `needs`).
 *
 *   var graph = Slipway.PipelineGraph(rootElement, data);   // `new` optional
 *   var graph = Slipway.PipelineGraph(rootElement);          // reads <script type="application/json"
 *                                                            //   id="pipeline-data"> (or the id in
 *                                                            //   rootElement's data-source attribute)
 *   graph.update({id: 1, status: "running", duration: null, reason: "…"});  // live recolour
 *   graph.update([{…}, {…}]);  graph.redraw();  graph.destroy();
 *
 * data = {"stages": [{"name": "build", "jobs": [{"id": 1, "name": "compile", "status": "success",
 *          "url": "/jobs/1/", "duration": 3.2, "needs": ["lint"], "allow_failure": false,
 *          "when": "on_success", "reason": "waiting for stage build"}]}]}
 * `needs` refers to job names. Nodes: a.pg-job.status-<status>[data-job-id] (div if no url).
 * Auto-init: any [data-pipeline-graph] element on DOMContentLoaded (root.slipwayGraph = graph).
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});
  var SVGNS = "http://www.w3.org/2000/svg";
  var STATUS_RE = /(^|\s)status-[a-z_-]+/g;

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }
  function fmtDur(sec) {
    if (sec == null || sec === "") return "";
    if (Slipway.time && Slipway.time.formatDuration) return Slipway.time.formatDuration(sec);
    return Math.round(sec) + "s";
  }
  function tipFor(job) {
    var st = job.status || "created";
    if (st === "running") return "";
    var parts = [job.name + " — " + String(st).replace(/_/g, " ")];
    if (job.reason) parts.push(job.reason);
    if (job.allow_failure && st === "failed") parts.push("allowed to fail");
    if (job.when === "manual" && st === "manual") parts.push("manual action");
    return parts.join(" · ");
  }
  function stageStatus(jobs) {
    var order = ["failed", "running", "pending", "manual", "canceled", "created", "skipped", "success"];
    var seen = {};
    for (var i = 0; i < jobs.length; i++) {
      var st = jobs[i].status || "created";
      if (st === "failed" && jobs[i].allow_failure) st = "success";
      seen[st] = true;
    }
    for (var k = 0; k < order.length; k++) if (seen[order[k]]) return order[k];
    return "created";
  }

  function PipelineGraph(root, data) {
    if (!(this instanceof PipelineGraph)) return new PipelineGraph(root, data);
    if (typeof root === "string") root = document.querySelector(root);
    if (!data) {
      var src = document.getElementById(root.getAttribute("data-source") || "pipeline-data");
      data = src ? JSON.parse(src.textContent || "{}") : { stages: [] };
    }
    this.root = root;
    this.data = data;
    this.jobs = {};      // id -> job
    this.nodes = {};     // id -> element
    root.slipwayGraph = this;
    this.render();
    var self = this;
    if (window.ResizeObserver) {
      this._ro = new ResizeObserver(function () { self.redraw(); });
      this._ro.observe(this.inner);
    } else {
      this._onResize = function () { self.redraw(); };
      window.addEventListener("resize", this._onResize);
    }
  }
  var P = PipelineGraph.prototype;

  P.render = function () {
    var root = this.root, stages = this.data.stages || [];
    root.classList.add("pg");
    var html = '<div class="pg-inner"><svg class="pg-edges" aria-hidden="true"></svg>';
    for (var s = 0; s < stages.length; s++) {
      var stage = stages[s], jobs = stage.jobs || [];
      html += '<section class="pg-stage" data-stage="' + esc(stage.name) + '">' +
        '<h3 class="pg-stage-title"><span class="dot status-' + esc(stageStatus(jobs)) + '"></span>' + esc(stage.name) + "</h3>" +
        '<div class="pg-jobs">';
      for (var j = 0; j < jobs.length; j++) html += this._nodeHtml(jobs[j]);
      html += "</div></section>";
    }
    html += "</div>";
    root.innerHTML = html;
    this.inner = root.querySelector(".pg-inner");
    this.svg = root.querySelector(".pg-edges");
    this.jobs = {};
    this.nodes = {};
    this.byName = {};
    for (s = 0; s < stages.length; s++) {
      for (j = 0; j < (stages[s].jobs || []).length; j++) {
        var job = stages[s].jobs[j];
        this.jobs[job.id] = job;
        this.byName[job.name] = job;
        this.nodes[job.id] = root.querySelector('[data-job-id="' + (window.CSS && CSS.escape ? CSS.escape(String(job.id)) : job.id) + '"]');
      }
    }
    this._bindHover();
    this.redraw();
  };

  P._nodeHtml = function (job) {
    var st = job.status || "created";
    var tag = job.url ? "a" : "div";
    var tip = tipFor(job);
    var cls = "pg-job status-" + esc(st) + (job.allow_failure ? " pg-allow-failure" : "");
    return "<" + tag + ' class="' + cls + '" data-job-id="' + esc(job.id) + '" data-job-name="' + esc(job.name) + '"' +
      (job.url ? ' href="' + esc(job.url) + '"' : ' tabindex="0"') +
      ' aria-label="' + esc(job.name + ": " + st) + '">' +
      '<span class="pg-icon" aria-hidden="true"></span>' +
      '<span class="pg-name">' + esc(job.name) + "</span>" +
      (job.allow_failure && st === "failed" ? '<span class="pg-flag" title="allowed to fail">!</span>' : "") +
      '<span class="pg-dur">' + esc(fmtDur(job.duration)) + "</span>" +
      '<span class="pg-tip" role="tooltip"' + (tip ? "" : " hidden") + ">" + esc(tip) + "</span>" +
      "</" + tag + ">";
  };

  P._bindHover = function () {
    var self = this;
    var set = function (node, on) {
      var id = node.getAttribute("data-job-id");
      var edges = self.svg.querySelectorAll('[data-from="' + id + '"],[data-to="' + id + '"]');
      for (var i = 0; i < edges.length; i++) {
        edges[i].classList.toggle("pg-hl", on);
        var other = edges[i].getAttribute(edges[i].getAttribute("data-from") === id ? "data-to" : "data-from");
        if (self.nodes[other]) self.nodes[other].classList.toggle("pg-hl", on);
      }
    };
    this.inner.addEventListener("mouseover", function (ev) {
      var n = ev.target.closest(".pg-job");
      if (n && !n.contains(ev.relatedTarget)) set(n, true);
    });
    this.inner.addEventListener("mouseout", function (ev) {
      var n = ev.target.closest(".pg-job");
      if (n && !n.contains(ev.relatedTarget)) set(n, false);
    });
  };

  /* Recompute edge geometry (called on resize and after updates). */
  P.redraw = function () {
    var inner = this.inner, svg = this.svg;
    if (!inner) return;
    var box = inner.getBoundingClientRect();
    svg.setAttribute("width", inner.scrollWidth);
    svg.setAttribute("height", inner.scrollHeight);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var rectOf = function (el) {
      var r = el.getBoundingClientRect();
      return { l: r.left - box.left, r: r.right - box.left, t: r.top - box.top, b: r.bottom - box.top, cy: r.top - box.top + r.height / 2 };
    };
    for (var id in this.jobs) {
      var job = this.jobs[id], needs = job.needs || [];
      var to = this.nodes[id];
      if (!to) continue;
      for (var k = 0; k < needs.length; k++) {
        var dep = this.byName[needs[k]];
        var from = dep && this.nodes[dep.id];
        if (!from) continue;
        var a = rectOf(from), b = rectOf(to), d;
        if (a.r < b.l - 4) {
          var x1 = a.r, x2 = b.l, mid = (x2 - x1) / 2;
          d = "M" + x1 + "," + a.cy + " C" + (x1 + mid) + "," + a.cy + " " + (x2 - mid) + "," + b.cy + " " + x2 + "," + b.cy;
        } else {
          // same column (or backwards): loop around the left side
          var lx = Math.min(a.l, b.l), bend = lx - 18;
          d = "M" + (a.l) + "," + a.cy + " C" + bend + "," + a.cy + " " + bend + "," + b.cy + " " + (b.l) + "," + b.cy;
        }
        var path = document.createElementNS(SVGNS, "path");
        path.setAttribute("d", d);
        path.setAttribute("class", "pg-edge");
        path.setAttribute("data-from", String(dep.id));
        path.setAttribute("data-to", String(id));
        svg.appendChild(path);
      }
    }
  };

  /* Live update of one job (or an array): {id, status?, duration?, reason?, url?} */
  P.update = function (msg) {
    if (Array.isArray(msg)) { for (var i = 0; i < msg.length; i++) this.update(msg[i]); return; }
    if (!msg || msg.id == null) return false;
    var job = this.jobs[msg.id], node = this.nodes[msg.id];
    if (!job || !node) return false;
    ["status", "duration", "reason", "allow_failure", "when"].forEach(function (k) { if (k in msg) job[k] = msg[k]; });
    var st = job.status || "created";
    var cls = (node.getAttribute("class") || "").replace(STATUS_RE, "").replace(/\s+/g, " ").trim();
    node.setAttribute("class", cls + " status-" + st);
    node.setAttribute("aria-label", job.name + ": " + st);
    node.querySelector(".pg-dur").textContent = fmtDur(job.duration);
    var tip = node.querySelector(".pg-tip"), t = tipFor(job);
    tip.textContent = t;
    tip.hidden = !t;
    var flag = node.querySelector(".pg-flag");
    if (job.allow_failure && st === "failed" && !flag) {
      flag = document.createElement("span");
      flag.className = "pg-flag"; flag.title = "allowed to fail"; flag.textContent = "!";
      node.insertBefore(flag, node.querySelector(".pg-dur"));
    } else if (flag && !(job.allow_failure && st === "failed")) flag.remove();
    // stage dot
    var stageEl = node.closest(".pg-stage");
    if (stageEl) {
      var stage = null, stages = this.data.stages || [];
      for (var s = 0; s < stages.length; s++) if (stages[s].name === stageEl.getAttribute("data-stage")) stage = stages[s];
      var dot = stageEl.querySelector(".pg-stage-title .dot");
      if (stage && dot) dot.className = "dot status-" + stageStatus(stage.jobs || []);
    }
    this.redraw();
    return true;
  };

  P.destroy = function () {
    if (this._ro) this._ro.disconnect();
    if (this._onResize) window.removeEventListener("resize", this._onResize);
    this.root.innerHTML = "";
    delete this.root.slipwayGraph;
  };

  Slipway.PipelineGraph = PipelineGraph;

  function autoInit() {
    var els = document.querySelectorAll("[data-pipeline-graph]");
    for (var i = 0; i < els.length; i++) if (!els[i].slipwayGraph) new PipelineGraph(els[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autoInit);
  else autoInit();
})();
