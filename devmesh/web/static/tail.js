// Live tail for the Logs page: an EventSource on /ui/logs/stream whose "rows" events carry
// rows rendered (and escaped) by the server, newest first. New rows go on top; a row
// already shown (a reconnect re-sends a few) is skipped. No framework, no build step.
(function () {
  "use strict";
  function start() {
    var state = document.getElementById("tail-state");
    var rows = document.getElementById("log-rows");
    if (!state || !rows || !window.EventSource) { return; }
    var source = new EventSource(state.getAttribute("data-src"));
    var received = 0;
    function say(text) { state.textContent = text; }
    source.addEventListener("open", function () { say("Live tail: on" + (received ? " · " + received + " new" : "")); });
    source.addEventListener("error", function () { say("Live tail: reconnecting…"); });
    source.addEventListener("rows", function (msg) {
      var box = document.createElement("template");
      box.innerHTML = msg.data;
      var fresh = Array.prototype.filter.call(box.content.querySelectorAll(".ev"), function (row) {
        return !document.getElementById(row.id);
      });
      if (!fresh.length) { return; }
      var empty = rows.querySelector(".empty");
      if (empty) { empty.remove(); }
      var frag = document.createDocumentFragment();
      fresh.forEach(function (row) { row.classList.add("new"); frag.appendChild(row); });
      rows.insertBefore(frag, rows.firstChild);
      received += fresh.length;
      say("Live tail: on · " + received + " new");
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
