/* agent-platform inspector: live refresh of the server-rendered pages (no framework).
 *
 * The server renders every region (elements with data-region and data-version); this script
 * fetches the page again with ?partial=1 and swaps a region only when its version changed,
 * keeping the folds a reader opened. A run page follows GET /workflows/<id>/events (the
 * API's Server-Sent Events): each checkpointed step triggers a refresh, and the model's
 * token events show its text as it is written (a retry event clears it, the step that
 * records the reply replaces it); after a lost connection EventSource reconnects with
 * Last-Event-ID, and when it gives up a new one resumes with ?last_event_id= (after the
 * last step: the text since then comes again). Nothing here builds HTML from data: the
 * text is set as textContent.
 */
(function () {
  "use strict";
  var main = document.querySelector("main[data-page]");
  if (!main || !window.fetch || !window.DOMParser) return;
  var badge = document.querySelector("[data-live]");
  var busy = false, again = false, timer = null;

  function setLive(state, text) {
    if (!badge) return;
    badge.hidden = false;
    badge.className = "live" + (state === "on" ? "" : " " + state);
    badge.textContent = text || (state === "on" ? "live" : state === "ended" ? "ended" : "reconnecting…");
  }

  function partialUrl() {
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.delete("done");
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-region]").forEach(function (next) {
      var current = document.querySelector('[data-region="' + next.dataset.region + '"]');
      if (!current || current.dataset.version === next.dataset.version) return;
      var open = [];
      current.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
      var node = document.importNode(next, true);
      current.replaceWith(node);
      open.forEach(function (id) {
        var d = document.getElementById(id);
        if (d) d.open = true;
      });
    });
    return fresh;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(partialUrl(), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (response.status === 404 && main.dataset.page === "run") { finish("not found"); return null; }
        return response.ok ? response.text() : Promise.reject(new Error("HTTP " + response.status));
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = swap(html);
        if (main.dataset.page !== "run") setLive("on");
        var status = fresh.querySelector("[data-region=head] [data-status]");
        if (status && /^(COMPLETED|FAILED|TERMINATED)$/.test(status.dataset.status)) finish();
      })
      .catch(function () { if (main.dataset.page !== "run") setLive("off"); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function soon() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 120);
  }

  var poll = parseInt(main.dataset.poll || "0", 10);
  var poller = poll > 0 ? setInterval(function () {
    if (document.visibilityState !== "hidden") refresh();
  }, poll) : null;

  // -- a run page: follow its event stream --------------------------------------------
  var source = null, lastId = main.dataset.lastSeq || "-1", ended = main.hasAttribute("data-ended");

  function finish(why) {
    ended = true;
    if (source) { source.close(); source = null; }
    if (poller) { clearInterval(poller); poller = null; }
    setLive("ended", why);
  }

  // The model's text as it is written, until the step that records the reply.
  var writing = document.querySelector("[data-writing]"), written = "", calls = {};

  function showWriting(data) {
    if (!writing) return;
    writing.hidden = !written;
    writing.querySelector("[data-writing-text]").textContent = written;
    if (data) writing.querySelector("[data-writing-step]").textContent = "step " + data.seq + ", attempt " + data.attempt;
  }

  function clearWriting() {
    written = "";
    calls = {};
    showWriting(null);
  }

  function follow() {
    if (ended || !main.dataset.events) return;
    clearWriting();  // the stream resumes after the last step: its text comes again
    var url = main.dataset.events + "?last_event_id=" + encodeURIComponent(lastId);
    source = new EventSource(url, { withCredentials: true });
    source.onopen = function () { setLive("on"); soon(); };
    source.addEventListener("step", function (event) {
      if (event.lastEventId) lastId = event.lastEventId;
      clearWriting();
      soon();
    });
    source.addEventListener("token", function (event) {
      var data = JSON.parse(event.data);
      written += data.text || "";
      (data.tool_calls || []).forEach(function (call) {
        var key = data.seq + ":" + call.index;
        if (call.name && !calls[key]) { calls[key] = true; written += (written ? "\n" : "") + call.name + " "; }
        written += call.arguments || "";
      });
      showWriting(data);
    });
    source.addEventListener("retry", clearWriting);
    source.addEventListener("status", function () { clearWriting(); soon(); finish(); });
    source.addEventListener("stream_error", function (event) {
      source.close();
      source = null;
      var gone = /workflow_not_found/.test(event.data || "");
      if (gone) finish("purged"); else retry();  // else Redis was away: follow again
    });
    source.onerror = function () {
      setLive("off");
      // EventSource retries by itself with Last-Event-ID; once it gives up, start again.
      if (source && source.readyState === EventSource.CLOSED) { source = null; retry(); }
    };
  }

  function retry() {
    setLive("off");
    setTimeout(function () { if (!ended && !source) follow(); }, 2000);
  }

  if (main.dataset.page === "run") {
    if (ended) setLive("ended"); else follow();
  } else if (poller) {
    setLive("on");
  }
})();
