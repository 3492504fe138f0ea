/* Slipway dashboard page glue: live overview, run and job pages.
 *
 * Each page puts its settings in <script type="application/json" id="…-config"> (the CSP
 * forbids inline code); this file finds them on DOMContentLoaded:
 *   overview-config  {activitySocket, activeUrl, recentUrl}
 *   run-config       {runId, socket, graphUrl, jobsUrl}
 *   job-config       {jobId, runId, status, logSocket, rawUrl, runSocket}
 * Elements with data-visible-for="job-17" data-visible-statuses="pending running" are shown
 * only while that job (or run-N) has one of those statuses.
 * Requires live.js, time.js; pipeline-graph.js / logviewer.js / charts.js where used.
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  function readJSON(id) {
    var el = document.getElementById(id);
    if (!el) return null;
    try { return JSON.parse(el.textContent || "null"); } catch (e) { return null; }
  }

  function debounce(fn, ms) {
    var t = null;
    return function () {
      clearTimeout(t);
      t = setTimeout(fn, ms);
    };
  }

  function refreshPartial(url, id) {
    if (!window.htmx || !document.getElementById(id)) return;
    window.htmx.ajax("GET", url, { target: "#" + id, swap: "outerHTML" });
  }

  var liveState = null;
  function setLive(on) {
    liveState = on;
    var dots = document.querySelectorAll("[data-live-dot]");
    for (var i = 0; i < dots.length; i++) {
      Slipway.live.setStatusClass(dots[i], on ? "running" : "canceled");
      dots[i].setAttribute("title", on ? "Connected: updates arrive live" : "Reconnecting…");
    }
    var labels = document.querySelectorAll("[data-live-label]");
    for (var j = 0; j < labels.length; j++) labels[j].textContent = on ? "Live" : "Reconnecting…";
  }
  document.addEventListener("htmx:afterSwap", function () {
    if (liveState !== null) setLive(liveState);
  });

  function applyVisibility(key, status) {
    var els = document.querySelectorAll('[data-visible-for="' + key + '"]');
    for (var i = 0; i < els.length; i++) {
      var allowed = (els[i].getAttribute("data-visible-statuses") || "").split(/\s+/);
      els[i].hidden = allowed.indexOf(status) === -1;
    }
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  /* ------------------------------------------------------------ overview */

  function feedItem(ev) {
    var li = el("li", "feed-item sw-feed-enter");
    li.setAttribute("data-run-id", String(ev.id));
    var dot = el("span", "dot status-" + (ev.status || "created"));
    dot.setAttribute("data-status-for", "run-" + ev.id);
    li.appendChild(dot);
    var body = el("div", "feed-body");
    var link = el("a", null, (ev.repository || "") + " #" + (ev.number != null ? ev.number : ev.id));
    if (ev.url) link.setAttribute("href", ev.url);
    body.appendChild(link);
    body.appendChild(document.createTextNode(" "));
    body.appendChild(el("span", "muted", String(ev.status || "").replace(/_/g, " ")));
    if (ev.title) {
      var title = el("div", "truncate small", ev.title);
      title.setAttribute("title", ev.title);
      body.appendChild(title);
    }
    var meta = el("div", "feed-meta");
    if (ev.branch) meta.appendChild(el("span", "pill pill-branch", ev.branch));
    var time = el("time", null, "just now");
    time.setAttribute("data-relative", "");
    time.setAttribute("datetime", ev.at || new Date().toISOString());
    meta.appendChild(time);
    body.appendChild(meta);
    li.appendChild(body);
    return li;
  }

  function initOverview(cfg) {
    var feed = document.getElementById("activity-feed");
    var max = feed ? parseInt(feed.getAttribute("data-max-items") || "15", 10) : 15;
    var refreshActive = debounce(function () { refreshPartial(cfg.activeUrl, "active-runs"); }, 300);
    var refreshRecent = debounce(function () { refreshPartial(cfg.recentUrl, "recent-runs"); }, 700);
    Slipway.live.connect(cfg.activitySocket, {
      onOpen: function (e, attempt) {
        setLive(true);
        if (attempt) { refreshActive(); refreshRecent(); }  // catch up on what we missed
      },
      onClose: function () { setLive(false); },
      onMessage: function (msg) {
        if (!msg || msg.type !== "activity" || !msg.event) return;
        var ev = msg.event;
        if (ev.kind !== "run") return;
        Slipway.live.applyStatus({ kind: "run", id: ev.id, status: ev.status });
        if (feed) {
          var empty = feed.querySelector("[data-feed-empty]");
          if (empty) empty.remove();
          var old = feed.querySelector('[data-run-id="' + String(ev.id).replace(/"/g, "") + '"]');
          if (old) old.remove();
          var li = feedItem(ev);
          feed.insertBefore(li, feed.firstChild);
          while (feed.children.length > max) feed.removeChild(feed.lastChild);
          if (Slipway.time) Slipway.time.refresh(li);
        }
        refreshActive();
        refreshRecent();
      },
    });
  }

  /* ------------------------------------------------------------ run page */

  var FINISHED = ["success", "failed", "canceled", "skipped"];

  function initRun(cfg) {
    var root = document.getElementById("pipeline-graph");
    var graph = null;
    if (root && Slipway.PipelineGraph) {
      graph = root.slipwayGraph || Slipway.PipelineGraph(root);
    }
    var reloadGraph = debounce(function () {
      if (!root || !Slipway.PipelineGraph) return;
      fetch(cfg.graphUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) return;
          if (root.slipwayGraph) root.slipwayGraph.destroy();
          graph = Slipway.PipelineGraph(root, data);
        })
        .catch(function () { /* the next event retries */ });
    }, 400);
    var refreshJobs = debounce(function () { refreshPartial(cfg.jobsUrl, "run-jobs"); }, 500);

    Slipway.live.connect(cfg.socket, {
      onOpen: function (e, attempt) {
        setLive(true);
        if (attempt) { reloadGraph(); refreshJobs(); }
      },
      onClose: function () { setLive(false); },
      onMessage: function (msg) {
        if (!msg || !msg.type) return;
        if (msg.type === "run.status" && msg.run) {
          Slipway.live.applyStatus({ kind: "run", id: msg.run.id, status: msg.run.status, duration: msg.run.duration });
          applyVisibility("run-" + msg.run.id, msg.run.status);
          if (FINISHED.indexOf(msg.run.status) !== -1) { refreshJobs(); reloadGraph(); }
        } else if (msg.type === "stage.status" && msg.stage) {
          Slipway.live.applyStatus({ kind: "stage", id: msg.stage.id, status: msg.stage.status });
        } else if (msg.type === "job.status" && msg.job) {
          var j = msg.job;
          var known = graph ? graph.update({ id: j.id, status: j.status, duration: j.duration, reason: j.reason || "" }) : false;
          if (graph && !known) reloadGraph();  // a retry or a new job
          Slipway.live.applyStatus({ kind: "job", id: j.id, status: j.status, duration: j.duration });
          applyVisibility("job-" + j.id, j.status);
          refreshJobs();
        }
      },
    });
  }

  /* ------------------------------------------------------------ job page */

  function initJob(cfg) {
    var root = document.getElementById("job-log");
    if (root && Slipway.LogViewer) {
      var viewer = new Slipway.LogViewer(root, {
        socketPath: cfg.logSocket,
        rawUrl: cfg.rawUrl,
        initialStatus: cfg.status,
      });
      root.addEventListener("slipway:status", function (ev) {
        var d = ev.detail || {};
        if (!d.status) return;
        Slipway.live.applyStatus({ kind: "job", id: cfg.jobId, status: d.status });
        applyVisibility("job-" + cfg.jobId, d.status);
        if (d.exit_code != null) {
          var codes = document.querySelectorAll("[data-exit-code]");
          for (var i = 0; i < codes.length; i++) codes[i].textContent = String(d.exit_code);
        }
      });
      Slipway.jobLog = viewer;
    }
    if (cfg.runSocket) {
      Slipway.live.connect(cfg.runSocket, {
        onMessage: function (msg) {
          if (!msg) return;
          if (msg.type === "run.status" && msg.run) {
            Slipway.live.applyStatus({ kind: "run", id: msg.run.id, status: msg.run.status });
            return;
          }
          if (msg.type !== "job.status" || !msg.job) return;
          var j = msg.job;
          Slipway.live.applyStatus({ kind: "job", id: j.id, status: j.status, duration: j.duration });
          if (String(j.id) !== String(cfg.jobId)) return;
          applyVisibility("job-" + j.id, j.status);
          var why = document.getElementById("job-why");
          if (why) {
            var waiting = ["created", "pending", "manual", "skipped"].indexOf(j.status) !== -1;
            why.hidden = !(waiting && j.reason);
            var text = why.querySelector("[data-job-reason]");
            if (text) text.textContent = j.reason || "";
          }
          if (j.exit_code != null) {
            var codes = document.querySelectorAll("[data-exit-code]");
            for (var i = 0; i < codes.length; i++) codes[i].textContent = String(j.exit_code);
          }
        },
      });
    }
  }

  function init() {
    var cfg;
    if ((cfg = readJSON("overview-config"))) initOverview(cfg);
    if ((cfg = readJSON("run-config"))) initRun(cfg);
    if ((cfg = readJSON("job-config"))) initJob(cfg);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
