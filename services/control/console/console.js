// mend's console: the live parts of a page (elements with data-live="URL")
// are fetched again each time the server says the read model changed
// (server-sent events on /console/events). Without this script every page
// still works; it only stops updating by itself.
(function () {
  "use strict";
  var parts = document.querySelectorAll("[data-live]");
  if (parts.length === 0 || !window.EventSource) {
    return;
  }
  var running = false;
  var again = false;

  async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      for (var i = 0; i < parts.length; i++) {
        var response = await fetch(parts[i].getAttribute("data-live"), {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        // A redirect is to the sign-in page: keep what is shown.
        if (response.ok && !response.redirected) {
          parts[i].innerHTML = await response.text();
        }
      }
      document.body.setAttribute("data-updated", String(Date.now()));
    } catch (error) {
      // The server is away (a restart): the next event fetches again.
    } finally {
      running = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  var opened = false;
  var source = new EventSource("/console/events");
  source.addEventListener("change", refresh);
  source.addEventListener("open", function () {
    // Back after a lost connection: changes may have been missed.
    if (opened) {
      refresh();
    }
    opened = true;
    document.body.setAttribute("data-live", "connected");
  });

  // A decision is sent once: its button says so while the server records it.
  document.addEventListener("submit", function (event) {
    var button = event.target.querySelector("button[type=submit]");
    if (button) {
      button.disabled = true;
      button.textContent = button.textContent + "…";
    }
  });
})();
