/* Slipway live updates: a tiny reconnecting WebSocket client + status helpers.
 *
 *   var conn = Slipway.live.connect("/ws/runs/42/", {
 *     onMessage: function (data, event) {},   // data = parsed JSON (or the raw string if not JSON)
 *     onOpen: function (event, attempt) {},   // attempt = 0 on first connect, n after n failures
 *     onClose: function (event, willReconnect) {},
 *     params: function () { return {cursor: 12}; },  // optional: query params, re-read on every (re)connect
 *     shouldReconnect: function (event) { return true; }, // optional veto
 *     onRefused: function (event) {},                  // optional; return false to skip the notice
 *     minDelay: 500, maxDelay: 10000                   // backoff bounds (ms), jittered
 *   });
 *   conn.send({type: "ping"});   // JSON-encodes objects; false if not open
 *   conn.close();                // closes and never reconnects
 *   conn.connected               // boolean
 *
 * path: "/ws/..." (ws:// or wss:// chosen from location.protocol, same host), or an absolute
 * ws(s):// URL, or a function returning either.
 *
 * Refusals: every Slipway socket accepts the handshake and then closes with 4401 (not
 * signed in), 4403 (the role does not allow it) or 4404 (no such object, or not visible)
 * when the user may not watch (docs/api.md). Those never reconnect: the connection's
 * .refused is set to the code, onRefused(event) is called, and unless it returns false a
 * warning saying why is shown in the page's flash messages (once per page).
 *
 * Status helper:
 *   Slipway.live.applyStatus({kind: "job", id: 17, status: "success", duration: 3.2})
 * updates every [data-status-for="job-17"]: swaps its status-* class, sets data-status, and
 * sets its text to the status label (on a [data-status-label] descendant if there is one;
 * elements with class "dot" or attribute data-status-no-text keep their text). Every
 * [data-duration-for="job-17"] gets the formatted duration ("3.2s", "1m 05s"; empty if null).
 * Dispatches "slipway:status" (detail = the message) on document.
 * Slipway.live.statusLabel(status) -> text (replaceable; default: status with "_" -> " ").
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  function buildUrl(path, params) {
    var url;
    if (/^wss?:\/\//i.test(path)) url = new URL(path);
    else if (/^https?:\/\//i.test(path)) {
      url = new URL(path);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    } else {
      url = new URL(path, window.location.href);
      url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    }
    if (params) {
      Object.keys(params).forEach(function (k) {
        if (params[k] !== undefined && params[k] !== null) url.searchParams.set(k, String(params[k]));
      });
    }
    return url.toString();
  }

  // Close codes of a refusal (docs/api.md): reconnecting cannot help, so say why.
  var REFUSED = {
    4401: "Live updates stopped: you are signed out. Reload the page to sign in again.",
    4403: "Live updates stopped: your role does not allow you to watch this.",
    4404: "Live updates stopped: this no longer exists, or you cannot see it."
  };

  function showRefusal(code) {
    var main = document.getElementById("main") || document.body;
    if (!main) return;
    var li = main.querySelector("[data-live-refused]");
    if (!li) {
      var list = main.querySelector(".messages");
      if (!list) {
        list = document.createElement("ul");
        list.className = "messages";
        main.insertBefore(list, main.firstChild);
      }
      li = document.createElement("li");
      li.className = "flash warning";
      li.setAttribute("role", "status");
      li.setAttribute("data-live-refused", "");
      list.appendChild(li);
    }
    li.setAttribute("data-code", String(code));
    li.textContent = REFUSED[code];
  }

  function connect(path, handlers) {
    handlers = handlers || {};
    var minDelay = handlers.minDelay || 500;
    var maxDelay = handlers.maxDelay || 10000;
    var ws = null;
    var attempt = 0;
    var timer = null;
    var closedByUser = false;
    var conn = { connected: false, url: null, socket: null };

    function delay() {
      var base = Math.min(maxDelay, minDelay * Math.pow(2, attempt));
      return Math.round(base / 2 + Math.random() * (base / 2)); // jitter in [base/2, base]
    }

    function open() {
      timer = null;
      if (closedByUser) return;
      var p = typeof path === "function" ? path() : path;
      var params = typeof handlers.params === "function" ? handlers.params() : handlers.params;
      var url = buildUrl(p, params);
      conn.url = url;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        schedule(null);
        return;
      }
      conn.socket = ws;
      ws.onopen = function (ev) {
        conn.connected = true;
        var a = attempt;
        attempt = 0;
        if (handlers.onOpen) handlers.onOpen(ev, a);
      };
      ws.onmessage = function (ev) {
        var data = ev.data;
        if (typeof data === "string") {
          try { data = JSON.parse(data); } catch (e) { /* leave raw */ }
        }
        if (handlers.onMessage) handlers.onMessage(data, ev);
      };
      ws.onerror = function () { /* onclose follows */ };
      ws.onclose = function (ev) {
        if (conn.socket !== ws) return;
        conn.connected = false;
        var refused = Object.prototype.hasOwnProperty.call(REFUSED, ev.code);
        if (refused && !closedByUser) {
          conn.refused = ev.code;
          if (!handlers.onRefused || handlers.onRefused(ev) !== false) showRefusal(ev.code);
        }
        var again = !closedByUser && !refused &&
          (!handlers.shouldReconnect || handlers.shouldReconnect(ev) !== false);
        if (handlers.onClose) handlers.onClose(ev, again);
        if (again) schedule(ev);
      };
    }

    function schedule() {
      if (closedByUser || timer) return;
      var d = delay();
      attempt++;
      conn.nextRetryIn = d;
      timer = setTimeout(open, d);
    }

    conn.send = function (obj) {
      if (!ws || ws.readyState !== 1) return false;
      ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
      return true;
    };
    conn.close = function (code, reason) {
      closedByUser = true;
      if (timer) { clearTimeout(timer); timer = null; }
      if (ws && ws.readyState <= 1) {
        try { ws.close(code || 1000, reason || ""); } catch (e) { /* ignore */ }
      }
      conn.connected = false;
    };
    conn.reconnectNow = function () {
      if (closedByUser) return;
      if (timer) { clearTimeout(timer); timer = null; }
      if (ws && ws.readyState <= 1) ws.close();
      else open();
    };
    open();
    return conn;
  }

  var STATUS_RE = /(^|\s)status-[a-z_-]+/g;
  function setStatusClass(el, status) {
    var cls = el.getAttribute("class") || "";
    cls = cls.replace(STATUS_RE, "").replace(/\s+/g, " ").trim();
    el.setAttribute("class", (cls ? cls + " " : "") + "status-" + status);
    el.setAttribute("data-status", status);
  }

  function statusLabel(status) {
    return String(status).replace(/_/g, " ");
  }

  function applyStatus(msg) {
    if (!msg || msg.id === undefined || msg.id === null) return 0;
    var key = (msg.kind || "job") + "-" + msg.id;
    var esc = window.CSS && CSS.escape ? CSS.escape(key) : key;
    var n = 0;
    if (msg.status) {
      var els = document.querySelectorAll('[data-status-for="' + esc + '"]');
      for (var i = 0; i < els.length; i++) {
        var el = els[i];
        setStatusClass(el, msg.status);
        var label = Slipway.live.statusLabel(msg.status);
        var target = el.querySelector("[data-status-label]");
        if (target) target.textContent = label;
        else if (!el.classList.contains("dot") && !el.hasAttribute("data-status-no-text") && el.children.length === 0) {
          el.textContent = label;
        }
        el.setAttribute("title", label);
        n++;
      }
    }
    if ("duration" in msg) {
      var ds = document.querySelectorAll('[data-duration-for="' + esc + '"]');
      for (var j = 0; j < ds.length; j++) {
        ds[j].textContent = Slipway.time && Slipway.time.formatDuration
          ? Slipway.time.formatDuration(msg.duration)
          : (msg.duration == null ? "" : msg.duration + "s");
        n++;
      }
    }
    document.dispatchEvent(new CustomEvent("slipway:status", { detail: msg }));
    return n;
  }

  Slipway.live = {
    connect: connect,
    url: buildUrl,
    applyStatus: applyStatus,
    statusLabel: statusLabel,
    setStatusClass: setStatusClass,
    REFUSED: REFUSED,
  };
})();
