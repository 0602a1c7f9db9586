// Placeholder dashboard (the dashboard replaces it): shows the event stream.
"use strict";
(function () {
  var state = document.getElementById("state");
  var pre = document.getElementById("events");
  fetch("/api/auth").then(function (r) { return r.json(); }).then(function (a) {
    state.textContent = a.write ? "Signed in (changes allowed)" : "Read only";
  });
  var es = new EventSource("/api/events/stream");
  es.onmessage = function (m) { pre.textContent += m.data + "\n"; };
  es.addEventListener("error", function () { state.textContent = "Disconnected"; });
})();
