// Knit dashboard live updates: listen to the server's event stream and, when the cluster
// view's hash changes, fetch the current page again with ?fragment=1 and swap <main>.
(() => {
  "use strict";
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const streamUrl = document.body.dataset.stream;
  followLogs();
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

  // Someone typing in a form of <main> (the replicas field): swapping <main> would lose it;
  // refresh once the field is left.
  const editing = () => {
    const active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  };

  const refresh = async () => {
    if (document.hidden) { stale = true; return; }
    if (editing()) { stale = true; return; }
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
  main.addEventListener("focusout", () => {
    setTimeout(() => { if (stale && !editing()) { stale = false; refresh(); } }, 0);
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

  // A deployment's log panel: read its followed text stream with fetch and append lines,
  // keeping at most MAX_LINES; reconnect (with a fresh tail) when the stream ends.
  function followLogs() {
    const pre = document.getElementById("log-lines");
    const state = document.getElementById("log-state");
    if (!pre || !pre.dataset.src || !window.fetch || !window.TextDecoder) return;
    const MAX_LINES = 1000;
    const say = (text) => { if (state) state.textContent = text; };
    const append = (lines) => {
      if (!lines.length) return;
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      const all = (pre.textContent ? pre.textContent.split("\n") : []).concat(lines);
      pre.textContent = all.slice(-MAX_LINES).join("\n");
      if (stick) pre.scrollTop = pre.scrollHeight;
    };
    const run = async () => {
      try {
        const response = await fetch(pre.dataset.src, { credentials: "same-origin" });
        if (response.status === 401) { window.location.reload(); return; }
        if (!response.ok || !response.body) {
          say("logs unavailable (" + response.status + ")");
          setTimeout(run, 10000);
          return;
        }
        pre.textContent = "";
        say("following");
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let rest = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          rest += decoder.decode(value, { stream: true });
          const lines = rest.split("\n");
          rest = lines.pop();
          append(lines);
        }
        say("ended; reconnecting…");
      } catch (error) {
        say("disconnected; reconnecting…");
      }
      setTimeout(run, 3000);
    };
    run();
  }
})();
