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
// Push-to-talk (对讲): hold the button, speak, release; the recording goes to the console, which
// signs it as a `talk` for the box. MediaRecorder gives WebM/Opus in Chromium, Ogg/Opus in Firefox.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var btn = document.querySelector("[data-talk]");
    if (!btn) { return; }
    var form = btn.form, state = document.getElementById("talk-state");
    var rec = null, chunks = [], stream = null, startedAt = 0;
    function say(text) { if (state) { state.textContent = text; } }
    function start(ev) {
      ev.preventDefault();
      if (rec || !navigator.mediaDevices || !window.MediaRecorder) { say("no microphone / MediaRecorder"); return; }
      navigator.mediaDevices.getUserMedia({ audio: true }).then(function (s) {
        stream = s; chunks = []; startedAt = Date.now();
        rec = new MediaRecorder(s);
        rec.ondataavailable = function (e) { if (e.data && e.data.size) { chunks.push(e.data); } };
        rec.onstop = send;
        rec.start();
        btn.classList.add("recording");
        document.body.setAttribute("data-talk", "recording");
        say("● REC");
      }).catch(function (e) { say(String(e)); });
    }
    function stop(ev) {
      if (ev) { ev.preventDefault(); }
      if (rec && rec.state === "recording") { rec.stop(); }
    }
    function send() {
      btn.classList.remove("recording");
      if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
      var blob = new Blob(chunks, { type: rec.mimeType || "audio/webm" });
      rec = null;
      var data = new FormData();
      data.append("csrf", form.querySelector("[name=csrf]").value);
      data.append("audio", blob, "talk");
      say(((Date.now() - startedAt) / 1000).toFixed(1) + " s …");
      document.body.setAttribute("data-talk", "sending");
      fetch(form.action, { method: "POST", body: data, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (j) {
          if (j.id) {
            document.body.setAttribute("data-talk", "sent");
            window.location = window.location.pathname + "?cmd=" + encodeURIComponent(j.id) + "#commands";
          } else { document.body.setAttribute("data-talk", "error"); say(j.error || "error"); }
        })
        .catch(function (e) { document.body.setAttribute("data-talk", "error"); say(String(e)); });
    }
    btn.addEventListener("mousedown", start);
    btn.addEventListener("touchstart", start);
    ["mouseup", "mouseleave", "touchend"].forEach(function (n) { btn.addEventListener(n, stop); });
  });
})();
