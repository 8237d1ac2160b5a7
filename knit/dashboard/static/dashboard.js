// Knit dashboard live updates: listen to the server's event stream and, when the cluster
// view's hash changes, fetch the current page again with ?fragment=1 and swap <main>.
(() => {
  "use strict";
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const streamUrl = document.body.dataset.stream;
  if (!main || !streamUrl || !window.EventSource) return;

  let lastHash = null;
  let busy = false;
  let again = false;
  let stale = false;

  const show = (state, text) => {
    if (!live) return;
    live.className = "live " + state;
    live.textContent = text;
  };

  const refresh = async () => {
    if (document.hidden) { stale = true; return; }
    if (busy) { again = true; return; }
    busy = true;
    try {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      const response = await fetch(url, { credentials: "same-origin" });
      // 401: the session ended (signed out elsewhere, token revoked): reloading the page
      // leads to the sign-in page.
      if (response.status === 401) { window.location.reload(); return; }
      // 404: what this page shows was deleted; the fragment says so.
      if (response.ok || response.status === 404) main.innerHTML = await response.text();
    } catch (error) {
      // Offline for a moment: the next change tries again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && stale) { stale = false; refresh(); }
  });

  const connect = () => {
    const source = new EventSource(streamUrl);
    source.onopen = () => show("on", "live");
    source.onmessage = (event) => {
      let summary;
      try { summary = JSON.parse(event.data); } catch (error) { return; }
      if (lastHash !== null && summary.hash !== lastHash) refresh();
      lastHash = summary.hash;
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. 503, too many streams; 401 once the session ended): the browser
        // gives up; we try again later, and a refresh finds out about a 401.
        show("off", "paused");
        refresh();
        setTimeout(connect, 30000);
      } else {
        show("off", "reconnecting…");
      }
    };
  };
  connect();
})();
