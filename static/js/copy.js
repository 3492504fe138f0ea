/* Copy to clipboard.
 *   <button class="copy" data-copy="git checkout 1a2b3c">Copy</button>
 *   <button class="copy" data-copy-target="#token">Copy</button>   (value of inputs, else textContent)
 * On success the button gets class "copied" and its label becomes "Copied" for 1.5 s
 * (an empty .copy button stays icon-only and only gets the class + title).
 * Works for content inserted later (event delegation). API: Slipway.copy(text) -> Promise.
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});

  function fallbackCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.style.position = "fixed";
    ta.style.top = "-1000px";
    document.body.appendChild(ta);
    ta.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }
  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }
  Slipway.copy = copy;

  function textFor(btn) {
    if (btn.hasAttribute("data-copy")) return btn.getAttribute("data-copy");
    var sel = btn.getAttribute("data-copy-target");
    var el = sel ? document.querySelector(sel) : null;
    if (!el) return null;
    if ("value" in el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT")) return el.value;
    return el.textContent;
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest ? ev.target.closest("[data-copy],[data-copy-target]") : null;
    if (!btn) return;
    ev.preventDefault();
    var text = textFor(btn);
    if (text == null) return;
    copy(text).then(function () {
      var iconOnly = btn.textContent.trim() === "";
      if (!btn.hasAttribute("data-copy-label")) btn.setAttribute("data-copy-label", btn.innerHTML);
      btn.classList.add("copied");
      if (!iconOnly) btn.textContent = btn.getAttribute("data-copied-text") || "Copied";
      btn.setAttribute("title", "Copied");
      clearTimeout(btn._slipwayCopyTimer);
      btn._slipwayCopyTimer = setTimeout(function () {
        btn.classList.remove("copied");
        btn.innerHTML = btn.getAttribute("data-copy-label");
        btn.removeAttribute("data-copy-label");
        btn.setAttribute("title", "Copy");
      }, 1500);
      btn.dispatchEvent(new CustomEvent("slipway:copied", { bubbles: true, detail: { text: text } }));
    }, function () {
      btn.setAttribute("title", "Copy failed");
    });
  });
})();
