/* TDS console: the little JavaScript the pages use. Every page works without it.
 *
 * Live updates (server-sent events): an element with data-live="URL" opens an EventSource on URL. Each
 * message's data is JSON {"id": ELEMENT_ID, "fields": {NAME: TEXT}, "progress": [DONE, TOTAL], "final": BOOL};
 * the element #ELEMENT_ID's descendants with data-field=NAME get TEXT (as text, never as markup), its
 * <progress> gets DONE/TOTAL. A "final" message closes the stream; with data-live-reload on the element the
 * page is then loaded again (it shows what only a final state has: an agreement, no more buttons).
 * Confirmations: a form with data-confirm="QUESTION" asks before it is sent.
 */
(function () {
  "use strict";
  function apply(msg) {
    var box = document.getElementById(msg.id);
    if (!box) { return; }
    var fields = msg.fields || {};
    Object.keys(fields).forEach(function (name) {
      box.querySelectorAll('[data-field="' + name.replace(/[^a-zA-Z0-9_-]/g, "") + '"]').forEach(function (el) {
        el.textContent = String(fields[name]);
      });
    });
    if (msg.progress) {
      box.querySelectorAll("progress").forEach(function (bar) {
        if (msg.progress[1]) { bar.max = msg.progress[1]; }
        bar.value = msg.progress[0];
      });
    }
  }
  function live(el) {
    if (!window.EventSource || el.dataset.liveOpen) { return; }
    el.dataset.liveOpen = "1";
    var source = new EventSource(el.dataset.live);
    source.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      apply(msg);
      if (msg.final) {
        source.close();
        el.dataset.liveDone = "1";
        if (el.dataset.liveReload) { window.location.reload(); }
      }
    };
    source.onerror = function () { if (el.dataset.liveDone) { source.close(); } };
  }
  function start(root) {
    root.querySelectorAll("[data-live]").forEach(live);
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }, true);
  document.addEventListener("DOMContentLoaded", function () { start(document); });
  document.addEventListener("htmx:load", function (event) { start(event.target); });
})();
