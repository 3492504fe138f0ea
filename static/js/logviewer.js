/* Slipway log viewer — virtualised, live, ANSI-aware, with collapsible sections.
 *
 * Requires static/js/live.js (loaded before this file).
 *
 *   var viewer = new Slipway.LogViewer(rootElement, {
 *     socketPath: "/ws/jobs/17/log/",   // or absolute ws(s):// URL; omit for a static viewer
 *     rawUrl: "/jobs/17/log.txt",       // "Raw" link in the toolbar
 *     initialStatus: "running",         // status before the first "status" message
 *     height: "70vh",                   // optional: CSS height of the scroll area (else --lv-height)
 *     lineHeight: 20,                   // px, fixed row height (virtualisation)
 *   });
 *
 * Auto-init: <div class="logviewer" data-log-viewer data-socket-path="…" data-raw-url="…"
 *   data-initial-status="running"></div> is turned into a viewer on DOMContentLoaded.
 *
 * Protocol (server -> client JSON over the socket; the client connects with ?cursor=N, N = number
 * of the last line it holds, 0 at first):
 *   {"type":"lines","lines":[[number, ts_seconds, "text"], ...]}   numbers strictly increasing from 1
 *   {"type":"status","status":"running","exit_code":null,"finished":false}
 *   {"type":"end"}          everything delivered; the client stops reconnecting
 *   {"type":"error","message":"..."}
 * Lines with number <= cursor are ignored (no duplicates after a reconnect).
 *
 * Public: viewer.lineCount, viewer.cursor, viewer.status, viewer.exitCode, viewer.finished,
 *   viewer.ended, viewer.follow; methods appendLines(lines), setStatus(msg), search(q), next(),
 *   prev(), scrollToLine(n), toggleSection(id, collapsed?), collapseAll(bool), setFollow(bool),
 *   setTimestamps(bool), destroy(). rootElement.slipwayLogViewer === viewer.
 * Events on rootElement: "slipway:status" (detail {status, exit_code, finished}) when the status
 *   changes; "slipway:log-end" when the end message was processed.
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  var HEADER = 1;  // line starts a section
  var MARKER = 2;  // line is only a section_end marker: never shown as a row
  var MAX_PX = 8000000;      // keep the spacer below browser element-height limits
  var MAX_RENDER_CHARS = 4000;
  var TS_KEY = "slipway.log.timestamps";

  /* ------------------------------------------------------------ ANSI */
  // CSI (params 0x30-0x3f, intermediates 0x20-0x2f, final 0x40-0x7e), OSC, other 2-byte escapes
  var ESC_RE = /\x1b(?:\[([0-?]*)[ -\/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])/g;
  var CTRL_RE = /[\x00-\x08\x0b-\x1f\x7f]/g;
  var SECTION_RE = /(?:\x1b\[0?K)?section_(start|end):(\d+(?:\.\d+)?):([^\r\n\[\s\x1b]+)(?:\[([^\]]*)\])?\r?(?:\x1b\[0?K)?/g;
  var ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
  function esc(s) { return s.replace(/[&<>"]/g, function (c) { return ESCAPES[c]; }); }

  function lastSegment(text) {
    // carriage returns: show what a terminal would show last (progress bars)
    if (text.indexOf("\r") === -1) return text;
    var parts = text.split("\r");
    for (var i = parts.length - 1; i >= 0; i--) {
      if (parts[i].replace(ESC_RE, "").replace(CTRL_RE, "") !== "") return parts[i];
    }
    return "";
  }

  function plainOf(text) {
    text = lastSegment(text);
    if (text.indexOf("\x1b") !== -1) text = text.replace(ESC_RE, "");
    return text.replace(CTRL_RE, "");
  }

  function color256(n) {
    if (n < 16) return null;
    if (n < 232) {
      n -= 16;
      var lv = [0, 95, 135, 175, 215, 255];
      return "rgb(" + lv[Math.floor(n / 36)] + "," + lv[Math.floor(n / 6) % 6] + "," + lv[n % 6] + ")";
    }
    var g = 8 + (n - 232) * 10;
    return "rgb(" + g + "," + g + "," + g + ")";
  }

  function newState() { return { fg: -1, bg: -1, fgc: null, bgc: null, b: false, d: false, i: false, u: false }; }

  function applySgr(st, params) {
    var p = params === "" ? [0] : params.split(/[;:]/);
    for (var k = 0; k < p.length; k++) {
      var c = p[k] === "" ? 0 : parseInt(p[k], 10);
      if (isNaN(c)) continue;
      if (c === 0) { var n = newState(); for (var key in n) st[key] = n[key]; }
      else if (c === 1) st.b = true;
      else if (c === 2) st.d = true;
      else if (c === 3) st.i = true;
      else if (c === 4) st.u = true;
      else if (c === 22) { st.b = false; st.d = false; }
      else if (c === 23) st.i = false;
      else if (c === 24) st.u = false;
      else if (c >= 30 && c <= 37) { st.fg = c - 30; st.fgc = null; }
      else if (c >= 90 && c <= 97) { st.fg = c - 90 + 8; st.fgc = null; }
      else if (c === 39) { st.fg = -1; st.fgc = null; }
      else if (c >= 40 && c <= 47) { st.bg = c - 40; st.bgc = null; }
      else if (c >= 100 && c <= 107) { st.bg = c - 100 + 8; st.bgc = null; }
      else if (c === 49) { st.bg = -1; st.bgc = null; }
      else if (c === 38 || c === 48) {
        var mode = parseInt(p[k + 1], 10), idx = -1, css = null;
        if (mode === 5) {
          var v = parseInt(p[k + 2], 10);
          k += 2;
          if (isNaN(v) || v < 0 || v > 255) continue;
          if (v < 16) idx = v; else css = color256(v);
        } else if (mode === 2) {
          // 38;2;r;g;b (also tolerates the 38:2::r:g:b colon form with an empty colour-space id)
          var off = p.length - k >= 6 && p[k + 2] === "" ? 1 : 0;
          var r = parseInt(p[k + 2 + off], 10), g = parseInt(p[k + 3 + off], 10), b = parseInt(p[k + 4 + off], 10);
          k += 4 + off;
          if (isNaN(r) || isNaN(g) || isNaN(b)) continue;
          css = "rgb(" + (r & 255) + "," + (g & 255) + "," + (b & 255) + ")";
        } else continue;
        if (c === 38) { st.fg = idx; st.fgc = css; } else { st.bg = idx; st.bgc = css; }
      }
    }
  }

  function stateAttrs(st) {
    var cls = "", style = "";
    if (st.fg >= 0) cls += " ansi-fg-" + st.fg;
    if (st.bg >= 0) cls += " ansi-bg-" + st.bg;
    if (st.b) cls += " ansi-bold";
    if (st.d) cls += " ansi-dim";
    if (st.i) cls += " ansi-italic";
    if (st.u) cls += " ansi-underline";
    if (st.fgc) style += "color:" + st.fgc + ";";
    if (st.bgc) style += "background-color:" + st.bgc + ";";
    if (!cls && !style) return "";
    return (cls ? ' class="' + cls.slice(1) + '"' : "") + (style ? ' style="' + style + '"' : "");
  }

  /* Split a raw line into [text, attrs] segments (attrs = "" or ' class=".." style=".."'). */
  function segments(text) {
    text = lastSegment(text);
    if (text.indexOf("\x1b") === -1) return [text.replace(CTRL_RE, ""), ""];
    var out = [], st = newState(), attrs = "", last = 0, m;
    ESC_RE.lastIndex = 0;
    while ((m = ESC_RE.exec(text)) !== null) {
      if (m.index > last) out.push(text.slice(last, m.index).replace(CTRL_RE, ""), attrs);
      last = ESC_RE.lastIndex;
      if (m[2] === "m") { applySgr(st, m[1] || ""); attrs = stateAttrs(st); }
    }
    if (last < text.length) out.push(text.slice(last).replace(CTRL_RE, ""), attrs);
    return out;
  }

  /* HTML for one line: escaped, coloured, with search matches marked. */
  function renderLine(text, qLower, currentOrdinal) {
    var segs = segments(text);
    var plain = "";
    for (var s = 0; s < segs.length; s += 2) plain += segs[s];
    var ranges = [];
    if (qLower) {
      var low = plain.toLowerCase(), from = 0, at, ord = 0;
      while ((at = low.indexOf(qLower, from)) !== -1 && ranges.length < 3000) {
        ranges.push(at, at + qLower.length, ord === currentOrdinal);
        from = at + qLower.length;
        ord++;
      }
    }
    var html = "", pos = 0, ri = 0, budget = MAX_RENDER_CHARS;
    for (var k = 0; k < segs.length && budget > 0; k += 2) {
      var t = segs[k], a = segs[k + 1];
      if (!t) continue;
      if (t.length > budget) t = t.slice(0, budget);
      budget -= t.length;
      var start = pos, end = pos + t.length, inner = "", cur = start;
      while (ri < ranges.length && ranges[ri] < end) {
        var ms = Math.max(ranges[ri], cur), me = Math.min(ranges[ri + 1], end);
        if (ms > cur) inner += esc(t.slice(cur - start, ms - start));
        if (me > ms) {
          inner += '<mark class="lv-match' + (ranges[ri + 2] ? " lv-match-current" : "") + '">' +
            esc(t.slice(ms - start, me - start)) + "</mark>";
        }
        cur = Math.max(cur, me);
        if (ranges[ri + 1] <= end) ri += 3; else break;
      }
      if (cur < end) inner += esc(t.slice(cur - start));
      html += a ? "<span" + a + ">" + inner + "</span>" : inner;
      pos = end;
    }
    if (plain.length > MAX_RENDER_CHARS) {
      html += '<span class="lv-truncated"> … ' + (plain.length - MAX_RENDER_CHARS) + " more characters (see raw log)</span>";
    }
    return html;
  }

  function pad(n, w) { n = String(n); while (n.length < w) n = "0" + n; return n; }
  function fmtTs(sec) {
    if (!sec && sec !== 0) return "";
    var d = new Date(sec * 1000);
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3);
  }
  function fmtDur(sec) {
    if (Slipway.time && Slipway.time.formatDuration) return Slipway.time.formatDuration(sec);
    sec = Math.max(0, sec);
    if (sec < 60) return Math.round(sec) + "s";
    return Math.floor(sec / 60) + "m " + pad(Math.floor(sec % 60), 2) + "s";
  }
  var FINISHED = { success: 1, failed: 1, canceled: 1, cancelled: 1, skipped: 1, error: 1 };

  /* ------------------------------------------------------------ text store */
  /* Line texts, CHUNK_LINES to a string. One JS string per line costs ~150 bytes of
     heap for a short line (a million-line log: ~150 MB); a sealed chunk is one
     string joined with "\n" plus a start offset per line in a typed array, about the
     text's own size. get() slices (cheap, and only for rendered or searched lines). */
  var CHUNK_SHIFT = 12, CHUNK_LINES = 1 << CHUNK_SHIFT;

  function TextStore(cap) {
    this._chunks = [];  // sealed chunks: one string each
    this._open = [];    // texts of the chunk being filled
    this._starts = new Int32Array(cap);  // offset of each line in its chunk
  }

  TextStore.prototype.grow = function (cap) {
    var a = new Int32Array(cap);
    a.set(this._starts);
    this._starts = a;
  };

  TextStore.prototype.push = function (text) {
    var open = this._open;
    open.push(text);
    if (open.length < CHUNK_LINES) return;
    var base = this._chunks.length << CHUNK_SHIFT, starts = this._starts, at = 0;
    for (var k = 0; k < open.length; k++) {
      starts[base + k] = at;
      at += open[k].length + 1;
    }
    this._chunks.push(open.join("\n"));
    this._open = [];
  };

  TextStore.prototype.get = function (idx) {
    var c = idx >> CHUNK_SHIFT;
    if (c >= this._chunks.length) return this._open[idx - (c << CHUNK_SHIFT)];
    var s = this._chunks[c], start = this._starts[idx];
    var end = (idx + 1) & (CHUNK_LINES - 1) ? this._starts[idx + 1] - 1 : s.length;
    return s.slice(start, end);
  };

  /* ------------------------------------------------------------ viewer */
  function LogViewer(root, options) {
    if (!(this instanceof LogViewer)) return new LogViewer(root, options);
    if (typeof root === "string") root = document.querySelector(root);
    options = options || {};
    this.root = root;
    this.options = options;
    this.lineHeight = options.lineHeight || 20;
    this.overscan = options.overscan || 40;

    var cap = 4096;
    this._cap = cap;
    this._nums = new Int32Array(cap);
    this._ts = new Float64Array(cap);
    this._sec = new Int32Array(cap);
    this._flags = new Uint8Array(cap);
    this._texts = new TextStore(cap);
    this._rows = new Int32Array(cap);
    this.rowCount = 0;
    this.lineCount = 0;
    this.cursor = 0;
    this._recvCursor = 0;
    this.sections = [];
    this._open = [];

    this.status = options.initialStatus || null;
    this.exitCode = null;
    this.finished = !!(this.status && FINISHED[this.status]);
    this.ended = false;
    this.follow = true;
    var tsPref = null;
    try { tsPref = localStorage.getItem(TS_KEY); } catch (e) { /* ignore */ }
    this.showTimestamps = options.timestamps != null ? !!options.timestamps : tsPref === "1";

    this._queue = [];
    this._qLine = 0;
    this._flushScheduled = false;
    this._renderScheduled = false;
    this._version = 0;
    this._renderKey = "";
    this._target = null;
    this._pendingAnchor = null;
    this._gutterDigits = 0;
    this._progTop = -1e9;

    this._q = "";
    this._mLine = new Int32Array(1024);
    this._mOrd = new Int32Array(1024);
    this.matchCount = 0;
    this.currentMatch = -1;
    this._scanPos = 0;
    this._scanTimer = null;

    this._build();
    this._bind();
    root.slipwayLogViewer = this;

    var anchor = /^#L(\d+)$/.exec(window.location.hash || "");
    if (anchor) { this._pendingAnchor = parseInt(anchor[1], 10); this.follow = false; }
    this._syncToolbar();
    this._updateSpacer();
    this._scheduleRender();
    if (options.socketPath) this._connect();
  }

  var P = LogViewer.prototype;

  P._build = function () {
    var root = this.root;
    root.classList.add("logviewer");
    if (this.options.height) root.style.setProperty("--lv-height", this.options.height);
    root.style.setProperty("--lv-lh", this.lineHeight + "px");
    var raw = this.options.rawUrl
      ? '<a class="btn lv-raw" href="' + esc(this.options.rawUrl) + '" download title="Download the raw log">Raw</a>'
      : "";
    root.innerHTML =
      '<div class="lv-toolbar" role="toolbar" aria-label="Log tools">' +
        '<div class="lv-search"><input type="search" class="lv-search-input" placeholder="Search" aria-label="Search log" autocomplete="off" spellcheck="false">' +
        '<span class="lv-count" aria-live="polite"></span>' +
        '<button type="button" class="btn btn-icon lv-prev" title="Previous match (Shift+Enter)" aria-label="Previous match">↑</button>' +
        '<button type="button" class="btn btn-icon lv-next" title="Next match (Enter)" aria-label="Next match">↓</button></div>' +
        '<button type="button" class="btn lv-ts-toggle" aria-pressed="false" title="Show timestamps">Timestamps</button>' +
        '<button type="button" class="btn lv-follow" aria-pressed="true" title="Keep the newest line in view">Follow</button>' +
        '<button type="button" class="btn lv-collapse-all" title="Collapse all sections">Collapse all</button>' +
        '<span class="spacer"></span>' +
        '<span class="lv-conn"><span class="dot"></span><span class="lv-conn-text"></span></span>' +
        '<span class="badge lv-status" hidden></span>' +
        raw +
        '<button type="button" class="btn btn-icon lv-top" title="Jump to top" aria-label="Jump to top">⤒</button>' +
        '<button type="button" class="btn btn-icon lv-bottom" title="Jump to bottom" aria-label="Jump to bottom">⤓</button>' +
      "</div>" +
      '<div class="lv-error" role="alert" hidden></div>' +
      '<div class="lv-scroll" tabindex="0" role="log" aria-label="Job log">' +
        '<div class="lv-spacer"><div class="lv-rows"></div></div>' +
        '<div class="lv-empty">Waiting for log output…</div>' +
      "</div>" +
      '<div class="lv-footer"><span class="lv-lines">0 lines</span><span class="spacer"></span><span class="lv-hint">Click a line number to link to it</span></div>';
    var q = function (sel) { return root.querySelector(sel); };
    this.el = {
      search: q(".lv-search-input"), count: q(".lv-count"), prev: q(".lv-prev"), next: q(".lv-next"),
      ts: q(".lv-ts-toggle"), follow: q(".lv-follow"), collapse: q(".lv-collapse-all"),
      conn: q(".lv-conn"), connDot: q(".lv-conn .dot"), connText: q(".lv-conn-text"), status: q(".lv-status"),
      top: q(".lv-top"), bottom: q(".lv-bottom"), error: q(".lv-error"), scroll: q(".lv-scroll"),
      spacer: q(".lv-spacer"), rows: q(".lv-rows"), empty: q(".lv-empty"), lines: q(".lv-lines"),
    };
  };

  P._bind = function () {
    var self = this, el = this.el;
    this._onScroll = function () {
      var s = el.scroll;
      // only a user's scroll changes follow mode; our own scrollTop writes are remembered
      if (Math.abs(s.scrollTop - self._progTop) >= 2) {
        self._progTop = -1e9;
        var atBottom = s.scrollTop + s.clientHeight >= s.scrollHeight - self.lineHeight * 1.5;
        if (atBottom !== self.follow) { self.follow = atBottom; self._syncToolbar(); }
      }
      self._scheduleRender();
    };
    el.scroll.addEventListener("scroll", this._onScroll, { passive: true });
    el.rows.addEventListener("click", function (ev) {
      var num = ev.target.closest(".lv-num");
      if (num) {
        ev.preventDefault();
        var n = parseInt(num.textContent, 10);
        self._setTarget(n);
        if (window.history && history.replaceState) history.replaceState(null, "", "#L" + n);
        return;
      }
      var header = ev.target.closest(".lv-header");
      if (header) {
        var sel = window.getSelection && window.getSelection();
        if (sel && String(sel).length) return; // user is selecting text
        self.toggleSection(parseInt(header.getAttribute("data-section"), 10));
      }
    });
    el.search.addEventListener("input", function () {
      clearTimeout(self._searchDebounce);
      self._searchDebounce = setTimeout(function () { self.search(el.search.value); }, 120);
    });
    el.search.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") {
        ev.preventDefault();
        if (self._q !== el.search.value) { clearTimeout(self._searchDebounce); self.search(el.search.value); }
        if (ev.shiftKey) self.prev(); else self.next();
      } else if (ev.key === "Escape") {
        el.search.value = "";
        self.search("");
      }
    });
    el.prev.addEventListener("click", function () { self.prev(); });
    el.next.addEventListener("click", function () { self.next(); });
    el.ts.addEventListener("click", function () { self.setTimestamps(!self.showTimestamps); });
    el.follow.addEventListener("click", function () { self.setFollow(!self.follow); });
    el.collapse.addEventListener("click", function () { self.collapseAll(!self._allCollapsed()); });
    el.top.addEventListener("click", function () { self.setFollow(false); el.scroll.scrollTop = 0; });
    el.bottom.addEventListener("click", function () { self.setFollow(true); });
    this._onHash = function () {
      var m = /^#L(\d+)$/.exec(window.location.hash || "");
      if (m) self.scrollToLine(parseInt(m[1], 10));
    };
    window.addEventListener("hashchange", this._onHash);
    if (window.ResizeObserver) {
      this._ro = new ResizeObserver(function () {
        self._updateSpacer();
        if (self.follow) self._scrollToBottom();
        self._scheduleRender();
      });
      this._ro.observe(el.scroll);
    }
  };

  /* ---------------- connection */
  P._connect = function () {
    var self = this;
    if (!Slipway.live) throw new Error("Slipway.LogViewer needs static/js/live.js");
    this._setConn("connecting");
    this.connection = Slipway.live.connect(this.options.socketPath, {
      params: function () { return { cursor: Math.max(self._recvCursor, self.cursor) }; },
      shouldReconnect: function () { return !self.ended; },
      onOpen: function () { self._setConn("live"); },
      onClose: function (ev, again) { if (!self.ended) self._setConn(again ? "reconnecting" : "closed"); },
      onMessage: function (msg) { self._receive(msg); },
    });
  };

  P._receive = function (msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "lines" && msg.lines && msg.lines.length) {
      var last = msg.lines[msg.lines.length - 1];
      if (last && last[0] > this._recvCursor) this._recvCursor = last[0];
    } else if (msg.type === "end") {
      this.ended = true; // decided now so a close that follows never reconnects
      if (this.connection) this.connection.close();
      this._setConn("ended");
    }
    this._queue.push(msg);
    this._scheduleFlush();
  };

  P._setConn = function (state) {
    this.connState = state;
    var label = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected", ended: "" }[state];
    var dot = { connecting: "status-pending", live: "status-running", reconnecting: "status-pending", closed: "status-failed", ended: "" }[state];
    this.el.connText.textContent = label || "";
    this.el.connDot.className = "dot " + (dot || "");
    this.el.conn.hidden = !label;
  };

  /* ---------------- ingest (batched per animation frame) */
  P._scheduleFlush = function () {
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    var self = this, done = false;
    var run = function () {
      if (done) return;
      done = true;
      self._flushScheduled = false;
      self._flush(12);
    };
    requestAnimationFrame(run);
    setTimeout(run, 200); // background tabs do not run animation frames
  };

  P._flush = function (budgetMs) {
    var t0 = performance.now(), more = false, changed = false, q = this._queue;
    while (q.length) {
      var msg = q[0];
      if (msg.type === "lines") {
        var lines = msg.lines || [];
        var i = this._qLine;
        for (; i < lines.length; i++) {
          var ln = lines[i];
          this._append(ln[0], ln[1], ln[2]);
          if ((i & 2047) === 2047 && performance.now() - t0 > budgetMs) { i++; more = i < lines.length; break; }
        }
        changed = true;
        if (more) { this._qLine = i; break; }
        this._qLine = 0;
        q.shift();
      } else {
        q.shift();
        if (changed) { this._afterAppend(); changed = false; } // e.g. resolve #L anchors before "end"
        this._handleControl(msg);
      }
      if (performance.now() - t0 > budgetMs && q.length) { more = true; break; }
    }
    if (changed) this._afterAppend();
    if (more || q.length) this._scheduleFlush();
  };

  P._handleControl = function (msg) {
    if (msg.type === "status") this.setStatus(msg);
    else if (msg.type === "error") {
      this.el.error.textContent = msg.message || "Error";
      this.el.error.hidden = false;
    } else if (msg.type === "end") {
      this.ended = true;
      this._setConn("ended");
      if (!this.finished) { this.finished = true; }
      this._pendingAnchor = null;
      this._updateEmpty();
      this.root.dispatchEvent(new CustomEvent("slipway:log-end", { detail: { lineCount: this.lineCount } }));
    }
  };

  /* Append lines directly (same shape as the protocol's "lines"). */
  P.appendLines = function (lines) {
    for (var i = 0; i < lines.length; i++) this._append(lines[i][0], lines[i][1], lines[i][2]);
    if (lines.length) {
      var last = lines[lines.length - 1][0];
      if (last > this._recvCursor) this._recvCursor = last;
      this._afterAppend();
    }
  };

  P._grow = function () {
    var cap = this._cap * 2;
    var grow = function (a, T) { var b = new T(cap); b.set(a); return b; };
    this._nums = grow(this._nums, Int32Array);
    this._ts = grow(this._ts, Float64Array);
    this._sec = grow(this._sec, Int32Array);
    this._flags = grow(this._flags, Uint8Array);
    this._rows = grow(this._rows, Int32Array);
    this._texts.grow(cap);
    this._cap = cap;
  };

  P._append = function (num, ts, text) {
    num = +num;
    if (!(num > this.cursor)) return; // duplicate or out of order: ignore
    if (this.lineCount >= this._cap) this._grow();
    if (typeof text !== "string") text = text == null ? "" : String(text);
    var idx = this.lineCount;
    var open = this._open;
    var sec = open.length ? open[open.length - 1] : -1, flags = 0;
    if (text.indexOf("section_") !== -1) {
      var r = this._parseSections(text, idx, +ts || 0);
      if (r) { text = r.text; flags = r.flags; if (r.sec !== -2) sec = r.sec; }
    }
    this._nums[idx] = num;
    this._ts[idx] = +ts || 0;
    this._sec[idx] = sec;
    this._flags[idx] = flags;
    this._texts.push(text);
    this.lineCount = idx + 1;
    this.cursor = num;
    if (this._isVisible(idx)) this._rows[this.rowCount++] = idx;
  };

  P._parseSections = function (text, idx, ts) {
    SECTION_RE.lastIndex = 0;
    var m, found = false, started = -1, ended = -1, out = "", last = 0;
    while ((m = SECTION_RE.exec(text)) !== null) {
      found = true;
      out += text.slice(last, m.index);
      last = SECTION_RE.lastIndex;
      var kind = m[1], mts = parseFloat(m[2]), name = m[3], opts = m[4] || "";
      if (kind === "start") {
        var parent = this._open.length ? this._open[this._open.length - 1] : -1;
        var ps = parent >= 0 ? this.sections[parent] : null;
        var collapsed = /(^|,)\s*collapsed\s*=\s*true/.test(opts);
        var s = {
          id: this.sections.length, name: name, parent: parent, depth: ps ? ps.depth + 1 : 0,
          headerLine: idx, endLine: -1, start: mts, end: null, collapsed: collapsed,
          parentHidden: ps ? ps.hidden : false, hidden: false,
        };
        s.hidden = s.parentHidden || collapsed;
        this.sections.push(s);
        this._open.push(s.id);
        started = s.id;
      } else {
        for (var k = this._open.length - 1; k >= 0; k--) {
          var os = this.sections[this._open[k]];
          if (os.name === name) {
            os.end = mts;
            os.endLine = idx;
            ended = os.id;
            this._open.length = k; // also closes unterminated children
            break;
          }
        }
      }
    }
    if (!found) return null;
    out += text.slice(last);
    var visible = out.replace(ESC_RE, "").replace(CTRL_RE, "").trim();
    var flags = 0, sec = -2;
    if (started >= 0) {
      flags = HEADER;
      sec = started;
      if (!visible) out = this.sections[started].name;
    } else if (ended >= 0) {
      sec = ended;
      if (!visible) flags = MARKER;
    }
    if (ended >= 0) this._version++; // a header's duration changed
    return { text: out, flags: flags, sec: sec };
  };

  P._isVisible = function (idx) {
    var f = this._flags[idx];
    if (f & MARKER) return false;
    var s = this._sec[idx];
    if (s < 0) return true;
    var sec = this.sections[s];
    return (f & HEADER) ? !sec.parentHidden : !sec.hidden;
  };

  P._rebuildRows = function () {
    var secs = this.sections;
    for (var k = 0; k < secs.length; k++) {
      var s = secs[k];
      s.parentHidden = s.parent >= 0 ? secs[s.parent].hidden : false;
      s.hidden = s.parentHidden || s.collapsed;
    }
    var n = 0, rows = this._rows, count = this.lineCount;
    for (var i = 0; i < count; i++) if (this._isVisible(i)) rows[n++] = i;
    this.rowCount = n;
    this._version++;
  };

  P._afterAppend = function () {
    var digits = String(Math.max(this.cursor, 999)).length;
    if (digits !== this._gutterDigits) {
      this._gutterDigits = digits;
      this.root.style.setProperty("--lv-gutter", digits + "ch");
    }
    this._updateSpacer();
    if (this._pendingAnchor != null && this.cursor >= this._pendingAnchor) {
      var a = this._pendingAnchor;
      this._pendingAnchor = null;
      this.scrollToLine(a);
    } else if (this.follow) {
      this._scrollToBottom();
    }
    if (this._q && this._scanPos < this.lineCount) this._scheduleScan();
    this.el.lines.textContent = this.lineCount.toLocaleString() + (this.lineCount === 1 ? " line" : " lines");
    this._updateEmpty();
    this._scheduleRender();
  };

  P._updateEmpty = function () {
    var e = this.el.empty;
    if (this.lineCount) { e.hidden = true; return; }
    e.hidden = false;
    e.textContent = this.ended ? "This job produced no output." : "Waiting for log output…";
  };

  /* ---------------- geometry */
  P._geometry = function () {
    var total = this.rowCount * this.lineHeight;
    var h = Math.min(total, MAX_PX);
    var vh = this.el.scroll.clientHeight || 1;
    var ratio = total > MAX_PX && h > vh ? (total - vh) / (h - vh) : 1;
    return { total: total, height: h, vh: vh, ratio: ratio };
  };

  P._updateSpacer = function () {
    var g = this._geometry();
    var s = this.el.scroll;
    var prevRatio = this._ratio || 1;
    if (this._spacerH !== g.height) {
      var vTop = s.scrollTop * prevRatio;
      this.el.spacer.style.height = g.height + "px";
      this._spacerH = g.height;
      if (g.ratio !== prevRatio && !this.follow) this._setScrollTop(vTop / g.ratio);
    }
    this._ratio = g.ratio;
  };

  P._scrollToBottom = function () {
    this._setScrollTop(this.el.scroll.scrollHeight);
    this._scheduleRender();
  };

  P._scrollToRow = function (row, center) {
    var g = this._geometry();
    var v = row * this.lineHeight - (center ? g.vh / 2 - this.lineHeight / 2 : 0);
    v = Math.max(0, Math.min(v, g.total - g.vh));
    this._setScrollTop(v / g.ratio);
    this._scheduleRender();
  };

  P._rowOf = function (idx) {
    // first row whose line index >= idx
    var lo = 0, hi = this.rowCount, rows = this._rows;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (rows[mid] < idx) lo = mid + 1; else hi = mid; }
    return Math.min(lo, Math.max(0, this.rowCount - 1));
  };

  P._indexOfNumber = function (n) {
    var lo = 0, hi = this.lineCount, nums = this._nums;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (nums[mid] < n) lo = mid + 1; else hi = mid; }
    return lo < this.lineCount ? lo : -1;
  };

  /* ---------------- rendering */
  P._scheduleRender = function () {
    if (this._renderScheduled) return;
    this._renderScheduled = true;
    var self = this;
    requestAnimationFrame(function () { self._renderScheduled = false; self._render(); });
  };

  P._render = function () {
    var lh = this.lineHeight, s = this.el.scroll;
    var g = this._geometry();
    var st = s.scrollTop;
    var vTop = Math.min(st * g.ratio, Math.max(0, g.total - g.vh));
    var firstExact = Math.floor(vTop / lh);
    var first = Math.max(0, firstExact - this.overscan);
    var last = Math.min(this.rowCount, firstExact + Math.ceil(g.vh / lh) + 1 + this.overscan);
    var key = first + ":" + last + ":" + this._version + ":" + (g.ratio === 1 ? 0 : st);
    if (key === this._renderKey) return;
    this._renderKey = key;
    var html = "", rows = this._rows, texts = this._texts, flags = this._flags, nums = this._nums;
    var secIdx = this._sec, target = this._target, showTs = this.showTimestamps, q = this._q ? this._q.toLowerCase() : "";
    var curLine = this.currentMatch >= 0 ? this._mLine[this.currentMatch] : -1;
    var curOrd = this.currentMatch >= 0 ? this._mOrd[this.currentMatch] : -1;
    for (var r = first; r < last; r++) {
      var i = rows[r], n = nums[i], f = flags[i];
      var header = (f & HEADER) !== 0, sec = header ? this.sections[secIdx[i]] : null;
      var cls = "lv-line";
      if (header) cls += sec.collapsed ? " lv-header lv-collapsed" : " lv-header";
      if (n === target) cls += " lv-target";
      html += '<div class="' + cls + '" data-line="' + n + '"' +
        (header ? ' data-section="' + sec.id + '" aria-expanded="' + !sec.collapsed + '"' : "") + ">" +
        '<a class="lv-num" href="#L' + n + '">' + n + "</a>" +
        (showTs ? '<span class="lv-ts">' + fmtTs(this._ts[i]) + "</span>" : "") +
        (header ? '<span class="lv-caret"></span>' : "") +
        '<span class="lv-text">' + renderLine(texts.get(i), q, i === curLine ? curOrd : -1) + "</span>" +
        (header && sec.end != null ? '<span class="lv-dur" title="Section duration">' + fmtDur(sec.end - sec.start) + "</span>" : "") +
        "</div>";
    }
    this.el.rows.innerHTML = html;
    this.el.rows.style.transform = "translateY(" + (st + first * lh - vTop) + "px)";
  };

  /* ---------------- status */
  P.setStatus = function (msg) {
    if (typeof msg === "string") msg = { status: msg };
    var prev = this.status;
    if (msg.status) this.status = msg.status;
    if ("exit_code" in msg) this.exitCode = msg.exit_code;
    if ("finished" in msg) this.finished = !!msg.finished;
    else if (this.status && FINISHED[this.status]) this.finished = true;
    this._syncStatus();
    if (this.status !== prev) {
      this.root.dispatchEvent(new CustomEvent("slipway:status", {
        detail: { status: this.status, exit_code: this.exitCode, finished: this.finished },
      }));
    }
  };

  P._syncStatus = function () {
    var b = this.el.status;
    if (!this.status) { b.hidden = true; return; }
    b.hidden = false;
    b.className = "badge lv-status status-" + this.status;
    b.textContent = this.status + (this.exitCode != null && this.finished ? " (exit " + this.exitCode + ")" : "");
  };

  P._syncToolbar = function () {
    this.el.follow.setAttribute("aria-pressed", String(this.follow));
    this.el.ts.setAttribute("aria-pressed", String(this.showTimestamps));
    this.root.classList.toggle("lv-show-ts", this.showTimestamps);
    this.el.collapse.textContent = this._allCollapsed() ? "Expand all" : "Collapse all";
    this.el.collapse.hidden = this.sections.length === 0 && !this._collapseShown;
    if (this.sections.length) this._collapseShown = true;
    this._syncStatus();
  };

  /* ---------------- user actions */
  P.setFollow = function (on) {
    this.follow = !!on;
    this._syncToolbar();
    if (this.follow) this._scrollToBottom();
  };

  P.setTimestamps = function (on) {
    this.showTimestamps = !!on;
    try { localStorage.setItem(TS_KEY, on ? "1" : "0"); } catch (e) { /* ignore */ }
    this._version++;
    this._syncToolbar();
    this._scheduleRender();
  };

  P._allCollapsed = function () {
    if (!this.sections.length) return false;
    for (var i = 0; i < this.sections.length; i++) if (!this.sections[i].collapsed) return false;
    return true;
  };

  P._keepRowInPlace = function (idx, fn) {
    var g = this._geometry(), s = this.el.scroll;
    var before = this._rowOf(idx) * this.lineHeight - s.scrollTop * g.ratio;
    fn();
    this._updateSpacer();
    var g2 = this._geometry();
    var v = this._rowOf(idx) * this.lineHeight - before;
    v = Math.max(0, Math.min(v, g2.total - g2.vh));
    this._setScrollTop(v / g2.ratio);
  };

  P._setScrollTop = function (v) {
    var s = this.el.scroll;
    s.scrollTop = v;
    this._progTop = s.scrollTop;
  };

  P.toggleSection = function (id, collapsed) {
    var sec = this.sections[id];
    if (!sec) return;
    var want = collapsed == null ? !sec.collapsed : !!collapsed;
    if (want === sec.collapsed) return;
    var self = this;
    this._keepRowInPlace(sec.headerLine, function () { sec.collapsed = want; self._rebuildRows(); });
    if (want) { this.follow = false; }
    this._syncToolbar();
    this._scheduleRender();
  };

  P.collapseAll = function (collapse) {
    if (collapse == null) collapse = true;
    for (var i = 0; i < this.sections.length; i++) this.sections[i].collapsed = !!collapse;
    this._rebuildRows();
    this._updateSpacer();
    if (collapse) { this.follow = false; this._setScrollTop(0); }
    this._syncToolbar();
    this._scheduleRender();
  };

  P._expandFor = function (idx) {
    var s = this._sec[idx], changed = false;
    if (s >= 0 && (this._flags[idx] & HEADER)) s = this.sections[s].parent;
    while (s >= 0) {
      if (this.sections[s].collapsed) { this.sections[s].collapsed = false; changed = true; }
      s = this.sections[s].parent;
    }
    if (changed) { this._rebuildRows(); this._updateSpacer(); this._syncToolbar(); }
  };

  P._setTarget = function (n) {
    this._target = n;
    this.follow = false;
    this._version++;
    this._syncToolbar();
    this._scheduleRender();
  };

  /* Scroll to line number n (waits for it if it has not arrived yet). */
  P.scrollToLine = function (n) {
    n = parseInt(n, 10);
    if (!(n > 0)) return false;
    if (n > this.cursor) { this._pendingAnchor = n; this.follow = false; this._syncToolbar(); return false; }
    var idx = this._indexOfNumber(n);
    if (idx < 0) return false;
    this._expandFor(idx);
    this._setTarget(this._nums[idx]);
    this._scrollToRow(this._rowOf(idx), true);
    return true;
  };

  /* ---------------- search (chunked, never blocks a frame for long) */
  P.search = function (query) {
    query = query || "";
    this._q = query;
    this.matchCount = 0;
    this.currentMatch = -1;
    this._scanPos = 0;
    this._version++;
    clearTimeout(this._scanTimer);
    this._scanTimer = null;
    if (query) this._scheduleScan();
    this._syncCount();
    this._scheduleRender();
  };

  P._scheduleScan = function () {
    if (this._scanTimer) return;
    var self = this;
    this._scanTimer = setTimeout(function () { self._scanTimer = null; self._scan(); }, 0);
  };

  P._scan = function () {
    var q = this._q.toLowerCase();
    if (!q) return;
    var t0 = performance.now(), texts = this._texts, end = Math.min(this.lineCount, this._scanPos + 50000);
    var i = this._scanPos, before = this.matchCount, qlen = q.length;
    for (; i < end; i++) {
      var t = texts.get(i);
      if (t.length < qlen) continue;
      var low = (t.indexOf("\x1b") === -1 && t.indexOf("\r") === -1 ? t : plainOf(t)).toLowerCase();
      var at = low.indexOf(q), ord = 0;
      while (at !== -1) {
        if (this.matchCount >= this._mLine.length) {
          var a = new Int32Array(this._mLine.length * 2); a.set(this._mLine); this._mLine = a;
          var b = new Int32Array(this._mOrd.length * 2); b.set(this._mOrd); this._mOrd = b;
        }
        this._mLine[this.matchCount] = i;
        this._mOrd[this.matchCount] = ord++;
        this.matchCount++;
        at = low.indexOf(q, at + qlen);
      }
      if ((i & 4095) === 4095 && performance.now() - t0 > 12) { i++; break; }
    }
    this._scanPos = i;
    if (before === 0 && this.matchCount > 0 && this.currentMatch < 0) {
      this.currentMatch = 0;
      this._reveal();
    } else if (this.matchCount !== before) {
      this._version++;
      this._scheduleRender();
    }
    this._syncCount();
    if (this._scanPos < this.lineCount) this._scheduleScan();
  };

  P._syncCount = function () {
    var c = this.el.count, scanning = this._scanPos < this.lineCount;
    if (!this._q) c.textContent = "";
    else if (!this.matchCount) c.textContent = scanning ? "Searching…" : "No results";
    else c.textContent = (this.currentMatch + 1) + " / " + this.matchCount + (scanning ? "+" : "");
  };

  P._reveal = function () {
    if (this.currentMatch < 0) return;
    var idx = this._mLine[this.currentMatch];
    this._expandFor(idx);
    this.follow = false;
    this._syncToolbar();
    this._version++;
    this._scrollToRow(this._rowOf(idx), true);
    this._syncCount();
  };

  P.next = function () {
    if (!this.matchCount) return;
    this.currentMatch = (this.currentMatch + 1) % this.matchCount;
    this._reveal();
  };

  P.prev = function () {
    if (!this.matchCount) return;
    this.currentMatch = (this.currentMatch - 1 + this.matchCount) % this.matchCount;
    this._reveal();
  };

  /* Plain text of line number n (ANSI stripped), for tests and copy helpers. */
  P.lineText = function (n) {
    var idx = this._indexOfNumber(n);
    return idx >= 0 && this._nums[idx] === n ? plainOf(this._texts.get(idx)) : null;
  };

  P.destroy = function () {
    if (this.connection) this.connection.close();
    if (this._ro) this._ro.disconnect();
    window.removeEventListener("hashchange", this._onHash);
    clearTimeout(this._scanTimer);
    this.root.innerHTML = "";
    delete this.root.slipwayLogViewer;
  };

  LogViewer.renderLine = renderLine;
  LogViewer.plainText = plainOf;
  Slipway.LogViewer = LogViewer;

  function autoInit() {
    var els = document.querySelectorAll("[data-log-viewer]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      if (el.slipwayLogViewer) continue;
      new LogViewer(el, {
        socketPath: el.getAttribute("data-socket-path") || null,
        rawUrl: el.getAttribute("data-raw-url") || null,
        initialStatus: el.getAttribute("data-initial-status") || null,
        height: el.getAttribute("data-height") || null,
      });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autoInit);
  else autoInit();
})();
