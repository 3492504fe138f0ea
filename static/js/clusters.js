/* Slipway cluster pages: one socket per tab to /ws/clusters/<id>/, tables patched live.
 *
 * A page opts in with <div id="cluster-page" data-cluster-id="7" data-live-kinds="pods,nodes">.
 * Each live table is <table data-live-table="pods"> whose <th data-field="phase"
 * data-format="badge"> cells describe how to render a projection; rows carry
 * data-key="namespace/name". A <template data-actions-template [data-for=kind]> gives the
 * action cell, with __ns__, __name__, __desired__, __min__, __max__ placeholders; an
 * empty <td class="actions"> rendered by the server is filled from it too (the pods page
 * sends 100 rows without a form and token each). The pods page swaps #pod-table (htmx) to
 * page and filter; a form in it goes back to the page shown now, not the one first loaded.
 * The [data-stale-ribbon] shows while the monitor's watch is down or the socket is closed;
 * #cluster-page gets data-live-ready once the socket follows the cluster's changes.
 * Pod logs: <pre id="pod-log" data-log-url> polls every 2 s while [data-log-follow] is on.
 * Overview: #cluster-usage (json_script) feeds the CPU and memory charts
 * ([data-usage-chart], drawn by Slipway.charts.series); metrics messages extend them live.
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  var STATUS = {
    Running: "running", Succeeded: "success", Ready: "success", Bound: "success", Normal: "success",
    Available: "success", Pending: "pending", ContainerCreating: "pending", Failed: "failed",
    NotReady: "failed", Warning: "warning", Terminating: "canceled", Unknown: "created",
    Released: "skipped", Lost: "failed", CrashLoopBackOff: "failed", ImagePullBackOff: "failed",
    ErrImagePull: "failed", OOMKilled: "failed", Error: "failed"
  };
  function statusClass(word) { return STATUS[word] || "created"; }

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function cpu(m) { if (m == null || m === "") return "—"; m = +m; return m < 1000 ? m + "m" : (m / 1000).toPrecision(3).replace(/\.?0+$/, ""); }
  function mem(b) {
    if (b == null || b === "") return "—";
    var n = +b, units = ["", "Ki", "Mi", "Gi", "Ti"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i < 2 ? Math.round(n) : +n.toPrecision(3)) + units[i]; // 8Gi, 7.81Gi: as the server's filter
  }
  function badge(word) { return '<span class="badge status-' + statusClass(word) + '">' + esc(word) + "</span>"; }

  var page = null;
  var yamlBase = "";

  function renderCell(format, field, obj, kind) {
    var v = obj[field];
    switch (format) {
      case "yaml":
        return '<a href="' + esc(yamlBase + kind + "/" + (obj.namespace || "-") + "/" + obj.name + "/") + '">' + esc(v) + "</a>";
      case "list": return esc((v || []).join(", "));
      case "node-name":
        return renderCell("yaml", field, obj, kind) +
          ((obj.roles || []).length ? '<div class="small muted">' + esc(obj.roles.join(", ")) + "</div>" : "");
      case "cpu": return esc(cpu(v));
      case "mem": return esc(mem(v));
      case "bool": return v ? "yes" : "";
      case "age": return v ? '<time data-relative datetime="' + esc(v) + '">' + esc(v) + "</time>" : "";
      case "badge": return v ? badge(v) : "";
      case "pod-phase": return badge(obj.reason || obj.phase);
      case "node-status": return badge(v) + (obj.unschedulable ? ' <span class="badge status-warning node-cordoned">cordoned</span>' : "");
      case "cpu-pair": return esc(cpu(obj.cpu_alloc)) + ' <span class="muted">/ ' + esc(cpu(obj.cpu_capacity)) + "</span>";
      case "mem-pair": return esc(mem(obj.mem_alloc)) + ' <span class="muted">/ ' + esc(mem(obj.mem_capacity)) + "</span>";
      case "conditions":
        return (v || []).length ? v.map(function (p) { return '<span class="badge status-failed">' + esc(p) + "</span>"; }).join(" ")
          : '<span class="muted">healthy</span>';
      default: return esc(v);
    }
  }

  function actionsHtml(table, kind, obj) {
    var tpl = document.querySelector('template[data-actions-template][data-for="' + kind + '"]') ||
      (table.closest("#cluster-page") || document).querySelector("template[data-actions-template]:not([data-for])");
    if (!tpl) return "";
    return tpl.innerHTML
      .replace(/__ns__/g, esc(obj.namespace || ""))
      .replace(/__name__/g, esc(obj.name))
      .replace(/__desired__/g, esc(obj.desired))
      .replace(/__min__/g, esc(obj.min))
      .replace(/__max__/g, esc(obj.max));
  }

  function buildRow(table, kind, key, obj, old) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-key", key);
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) {
      var th = ths[i];
      var format = th.getAttribute("data-format") || "";
      var td;
      if ((format === "usage" || format === "node-pods" || th.hasAttribute("data-actions")) && old && old.cells[i]) {
        // Usage comes from metrics and a node's pod count from the pods: not from
        // this object. Actions keep their state.
        td = old.cells[i].cloneNode(true);
      } else if (format === "node-pods") {
        td = document.createElement("td");
        td.className = "num";
        td.innerHTML = '<a href="' + esc((table.getAttribute("data-pods-base") || "") + "?node=" + encodeURIComponent(obj.name)) + '">pods</a>';
      } else {
        td = document.createElement("td");
        if (th.classList.contains("num")) td.className = "num";
        if (th.hasAttribute("data-actions")) { td.className = "actions"; td.innerHTML = actionsHtml(table, kind, obj); }
        else if (format === "usage") { td.className = "num"; td.setAttribute("data-usage-for", key); td.innerHTML = '<span class="muted">—</span>'; }
        else td.innerHTML = renderCell(format, th.getAttribute("data-field"), obj, kind);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function matchesFilters(table, obj, key) {
    var ns = table.getAttribute("data-filter-namespace"), phase = table.getAttribute("data-filter-phase");
    var node = table.getAttribute("data-filter-node"), q = (table.getAttribute("data-filter-q") || "").toLowerCase();
    if (ns && obj.namespace !== ns) return false;
    if (phase && obj.phase !== phase && obj.reason !== phase) return false;
    if (node && obj.node !== node) return false;
    if (q && key.toLowerCase().indexOf(q) < 0 && (obj.owner || "").toLowerCase().indexOf(q) < 0) return false;
    return true;
  }

  function bumpCount(delta) {
    var el = document.querySelector("[data-matching]");
    if (el) el.textContent = String(Math.max(0, (parseInt(el.textContent, 10) || 0) + delta));
  }

  function upsert(table, kind, key, obj) {
    var body = table.tBodies[0];
    var old = body.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
    if (old) {
      if (!matchesFilters(table, obj, key)) { old.remove(); bumpCount(-1); return; }
      var tr = buildRow(table, kind, key, obj, old);
      body.replaceChild(tr, old);
      if (Slipway.time) Slipway.time.refresh(tr);
      return;
    }
    if (!matchesFilters(table, obj, key)) return;
    var rows = body.querySelectorAll("tr[data-key]");
    var size = parseInt(table.getAttribute("data-page-size") || "0", 10);
    var isLast = table.getAttribute("data-page-last") !== "0";
    var row = buildRow(table, kind, key, obj, null);
    var empty = body.querySelector("tr.empty-row");
    if (table.getAttribute("data-insert") === "top") {
      body.insertBefore(row, body.firstChild);
    } else {
      var before = null;
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].getAttribute("data-key") > key) { before = rows[i]; break; }
      }
      if (!before && size && !isLast) return; // Belongs to a later page.
      body.insertBefore(row, before);
      if (size && body.querySelectorAll("tr[data-key]").length > size) body.querySelector("tr[data-key]:last-child").remove();
    }
    if (empty) empty.remove();
    bumpCount(1);
    if (Slipway.time) Slipway.time.refresh(row);
  }

  function remove(table, key) {
    var old = table.tBodies[0].querySelector('tr[data-key="' + CSS.escape(key) + '"]');
    if (old) { old.remove(); bumpCount(-1); }
  }

  function fillActions(root) {
    var cells = (root || document).querySelectorAll("table[data-live-table] tr[data-key] > td.actions:empty");
    for (var i = 0; i < cells.length; i++) {
      var tr = cells[i].parentNode, table = tr.closest("table"), key = tr.getAttribute("data-key");
      var cut = key.indexOf("/");
      var obj = cut < 0 ? { name: key } : { namespace: key.slice(0, cut), name: key.slice(cut + 1) };
      cells[i].innerHTML = actionsHtml(table, table.getAttribute("data-live-table"), obj);
    }
  }

  function tablesFor(kind) { return document.querySelectorAll('table[data-live-table="' + kind + '"]'); }

  function applyChange(c) {
    var tables = tablesFor(c.kind);
    for (var i = 0; i < tables.length; i++) {
      if (c.op === "delete") remove(tables[i], c.key);
      else upsert(tables[i], c.kind, c.key, c.obj);
    }
  }

  function applySnapshot(kind, objects) {
    var tables = tablesFor(kind);
    for (var i = 0; i < tables.length; i++) {
      var rows = tables[i].tBodies[0].querySelectorAll("tr[data-key]");
      for (var j = 0; j < rows.length; j++) {
        if (!(rows[j].getAttribute("data-key") in objects)) { rows[j].remove(); bumpCount(-1); }
      }
    }
    Object.keys(objects).sort().forEach(function (key) { applyChange({ kind: kind, op: "upsert", key: key, obj: objects[key] }); });
  }

  var socketOpen = false, monitorStale = false, staleReason = "";
  function showStale() {
    var ribbon = document.querySelector("[data-stale-ribbon]");
    if (!ribbon) return;
    var stale = !socketOpen || monitorStale;
    ribbon.hidden = !stale;
    var reason = ribbon.querySelector("[data-stale-reason]");
    if (reason && stale) reason.textContent = !socketOpen ? "the live connection is down, reconnecting" : (staleReason || "the cluster watch is reconnecting");
    document.body.toggleAttribute("data-cluster-stale", stale);
  }

  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    // The consumer sends "state" once it has joined the cluster's group: from here
    // on no change is missed (tests wait for this mark).
    if (msg.type === "state" && page) page.setAttribute("data-live-ready", "");
    if ("stale" in msg) { monitorStale = !!msg.stale; }
    if (msg.status) staleReason = msg.status.error || (msg.status.reachable ? "" : "the cluster is unreachable");
    if (msg.type === "snapshot") applySnapshot(msg.kind, msg.objects || {});
    else if (msg.type === "change") (msg.changes || []).forEach(applyChange);
    else if (msg.type === "metrics") {
      Object.keys(msg.nodes || {}).forEach(function (key) {
        var cells = document.querySelectorAll('[data-usage-for="' + CSS.escape(key) + '"]');
        for (var i = 0; i < cells.length; i++) cells[i].textContent = cpu(msg.nodes[key].cpu) + " / " + mem(msg.nodes[key].mem);
      });
      addSample(msg.totals);
    }
    if (msg.status && (msg.status.metrics === "none" || msg.status.metrics === "forbidden")) noMetrics(msg.status.metrics);
    showStale();
  }

  /* Overview usage charts: #cluster-usage (json_script) holds {samples: [[at, cpu, mem]],
   * keep, cpu_alloc, mem_alloc, cpu_req, mem_req}; every metrics message from the monitor
   * appends its totals, so the charts move without a reload. */
  var usage = null;
  function cpuShort(m) { m = +m || 0; return m === 0 ? "0" : m < 1000 ? Math.round(m) + "m" : String(+(m / 1000).toFixed(2)); }
  function memShort(b) {
    var n = +b || 0, units = ["", "Ki", "Mi", "Gi", "Ti"], i = 0;
    if (n === 0) return "0";
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (n >= 100 ? String(Math.round(n)) : String(+n.toFixed(1))) + units[i];
  }
  var USAGE = [
    { kind: "cpu", col: 1, format: cpuShort, base: 10, unit: " cores" },
    { kind: "mem", col: 2, format: memShort, base: 1024, unit: "" }
  ];

  function percent(part, whole) { return whole > 0 ? Math.round((part / whole) * 100) : 0; }

  function drawUsage() {
    if (!usage || !Slipway.charts || !Slipway.charts.series) return;
    var last = usage.samples[usage.samples.length - 1];
    USAGE.forEach(function (u) {
      var alloc = usage[u.kind + "_alloc"], req = usage[u.kind + "_req"];
      var el = document.querySelector('[data-usage-chart="' + u.kind + '"]');
      if (el) {
        Slipway.charts.series(el, {
          points: usage.samples.map(function (s) { return [s[0], s[u.col]]; }),
          refs: [
            { value: alloc, label: "allocatable", cls: "ref-alloc" },
            { value: req, label: "requested", cls: "ref-req", align: "left" }
          ],
          format: u.format, base: u.base, span: 300, label: u.kind === "cpu" ? "CPU used" : "memory used",
          empty: "No samples yet: the monitor reads metrics.k8s.io every few seconds."
        });
      }
      var now = document.querySelector('[data-usage-now="' + u.kind + '"]');
      if (now && last) now.textContent = u.format(last[u.col]) + " of " + u.format(alloc) + u.unit + " · " + percent(last[u.col], alloc) + "%";
      var cell = document.querySelector('[data-usage-total="' + u.kind + '"]');
      if (cell && last) cell.textContent = (u.kind === "cpu" ? cpu(last[u.col]) : mem(last[u.col])) + " (" + percent(last[u.col], alloc) + "%)";
    });
  }

  function addSample(totals) {
    if (!usage || !totals || !isFinite(totals.at)) return;
    var last = usage.samples[usage.samples.length - 1];
    if (last && totals.at <= last[0]) return; // A repeat (or an older one, after a reconnect).
    usage.samples.push([totals.at, +totals.cpu || 0, +totals.mem || 0]);
    if (usage.samples.length > (usage.keep || 120)) usage.samples.splice(0, usage.samples.length - (usage.keep || 120));
    drawUsage();
  }

  // STATE is the monitor's metrics state: "none" (no metrics-server) or
  // "forbidden" (the cluster refuses this identity metrics.k8s.io).
  function noMetrics(state) {
    var charts = document.querySelector("[data-usage-charts]");
    if (!charts) return;
    var p = document.createElement("p");
    p.className = "muted";
    p.setAttribute("data-usage-charts-off", "");
    p.textContent = state === "forbidden"
      ? "Metrics are not permitted for this identity, so there is no CPU or memory usage to chart."
      : "metrics-server is not installed on this cluster, so there is no CPU or memory usage to chart.";
    var card = document.createElement("div");
    card.className = "card";
    card.appendChild(p);
    charts.replaceWith(card);
    usage = null;
  }

  function startUsage() {
    var data = document.getElementById("cluster-usage");
    if (!data) return;
    try { usage = JSON.parse(data.textContent); } catch (e) { return; }
    if (!usage || !Array.isArray(usage.samples)) { usage = null; return; }
    drawUsage();
    var t;
    window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(drawUsage, 150); });
  }

  function startLive() {
    page = document.getElementById("cluster-page");
    if (!page || !Slipway.live) return;
    yamlBase = page.getAttribute("data-yaml-base") || "";
    var kinds = (page.getAttribute("data-live-kinds") || "").split(",").filter(Boolean);
    if (!kinds.length) return;
    var path = "/ws/clusters/" + page.getAttribute("data-cluster-id") + "/";
    Slipway.clusters.conn = Slipway.live.connect(path, {
      params: { kinds: kinds.join(","), snapshot: "0" },
      onOpen: function (ev, attempt) {
        socketOpen = true;
        // After a reconnect the page may have missed changes: ask for the snapshot.
        if (attempt > 0) Slipway.clusters.conn.send({ subscribe: kinds, snapshot: true });
        showStale();
      },
      onClose: function (ev) { socketOpen = false; showStale(); },
      onMessage: onMessage
    });
  }

  function startLogs() {
    var pre = document.getElementById("pod-log");
    if (!pre) return;
    var follow = document.querySelector("[data-log-follow]");
    var busy = false;
    function load() {
      if (busy) return;
      busy = true;
      fetch(pre.getAttribute("data-log-url"), { credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (text) {
          var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
          pre.textContent = text || "(no output)";
          if (atBottom) pre.scrollTop = pre.scrollHeight;
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    load();
    setInterval(function () { if (!follow || follow.checked) load(); }, 2000);
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.closest || !form.closest("#pod-table")) return;
    var next = form.querySelector('input[name="next"]');
    if (next) next.value = location.pathname + location.search;
  }, true);
  document.addEventListener("htmx:load", function (ev) { fillActions(ev.target); });

  Slipway.clusters = { applyChange: applyChange, onMessage: onMessage, addSample: addSample, conn: null };
  document.addEventListener("DOMContentLoaded", function () { fillActions(); startUsage(); startLive(); startLogs(); });
})();
