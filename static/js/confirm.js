/* Confirmation prompts.
 *   <form method="post" data-confirm="Delete cluster prod?"> … </form>
 *   <button type="submit" name="replicas" value="3" data-confirm="Scale web to 3?">Scale</button>
 *   <a href="…" data-confirm="Leave?">…</a>      (also works with htmx hx-post/hx-delete elements)
 * If the user cancels, the click/submit is stopped before htmx or the browser sees it.
 * A confirmed click on a submit button does not ask again for its form.
 * Hook: Slipway.confirm = function (message) { return window.confirm(message); } (replaceable).
 */
(function () {
  "use strict";
  var Slipway = (window.Slipway = window.Slipway || {});
  if (!Slipway.confirm) Slipway.confirm = function (message) { return window.confirm(message); };
  var confirmedForm = null;

  window.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("[data-confirm]") : null;
    if (!el || el.tagName === "FORM") return;
    if (el.disabled) return;
    if (!Slipway.confirm(el.getAttribute("data-confirm"))) {
      ev.preventDefault();
      ev.stopImmediatePropagation();
      return;
    }
    if (el.form) confirmedForm = el.form;
  }, true);

  window.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-confirm")) return;
    if (confirmedForm === form) { confirmedForm = null; return; }
    if (!Slipway.confirm(form.getAttribute("data-confirm"))) {
      ev.preventDefault();
      ev.stopImmediatePropagation();
    }
  }, true);
})();
