// edge-bureau console: live updates over Server-Sent Events. The server renders every fragment;
// this script only swaps them in, so nothing from a message is ever put into the page as HTML.
(function () {
  "use strict";
  function sizeBars(root) {
    root.querySelectorAll("[data-pct]").forEach(function (el) {
      var pct = parseFloat(el.getAttribute("data-pct")) || 0;
      if (el.classList.contains("bar-limit")) { el.style.left = pct + "%"; } else { el.style.width = pct + "%"; }
    });
  }
  var timers = {};
  function refresh(box) {
    var url = box.getAttribute("data-fragment");
    if (timers[url]) { return; }
    timers[url] = setTimeout(function () {
      delete timers[url];
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          box.replaceChildren.apply(box, Array.prototype.slice.call(doc.body.childNodes));
          sizeBars(box);
          box.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
        });
    }, 250);
  }
  document.addEventListener("DOMContentLoaded", function () {
    sizeBars(document);
    var boxes = document.querySelectorAll("[data-fragment]");
    if (!boxes.length || !window.EventSource) { return; }
    var es = new EventSource("/stream");
    var dot = document.getElementById("live-dot");
    es.onopen = function () {
      // Whatever happened between rendering the page and this connection: fetch it once.
      boxes.forEach(refresh);
      if (dot) { dot.classList.add("on"); }
      document.body.setAttribute("data-stream", "open");
    };
    es.onerror = function () { if (dot) { dot.classList.remove("on"); } };
    ["event", "ack", "status", "evidence"].forEach(function (type) {
      es.addEventListener(type, function () {
        boxes.forEach(function (box) {
          var on = (box.getAttribute("data-on") || "").split(" ");
          if (on.indexOf(type) >= 0) { refresh(box); }
        });
      });
    });
  });
})();
