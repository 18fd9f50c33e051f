// Live updates: a change event from the server refreshes the page's #live region
// at once (htmx, hx-trigger "programma-changed from:body"). Without EventSource, or
// while the stream is down, the region's own polling ("every N s") still runs.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var status = document.getElementById("live-status");
  var source = new EventSource(document.body.dataset.events);
  source.onopen = function () { if (status) status.hidden = false; };
  source.onerror = function () { if (status) status.hidden = true; };
  source.addEventListener("changed", function () {
    htmx.trigger(document.body, "programma-changed");
  });
})();
