// Run page: the live log (Server-Sent Events, resumed by Last-Event-ID),
// live badges, and the run's actions.
"use strict";

(() => {
  const { $, api, showErrors, clearErrors, el, announce, refreshTimes } = WB;
  const details = $("run-details");
  const runId = Number(details.dataset.run);
  const log = $("log");
  let lastSeq = 0;
  let status = ($("status-badge") || {}).textContent;
  let source = null;
  let finished = false;

  function setBadge(id, prefix, value) {
    const badge = $(id);
    if (!badge || !value) return;
    badge.textContent = value;
    badge.className = `badge ${prefix}-${value}`;
  }

  function appendEvent(event) {
    // Exactly once, in order: the server sends each sequence number once per
    // connection and resumes after the last one we got; a duplicate after a
    // reconnect is dropped here all the same.
    if (event.sequenceNo <= lastSeq) return;
    lastSeq = event.sequenceNo;
    const output = event.stream === "stdout" || event.stream === "stderr";
    const line = el("div", null, `ev ${event.stream}`);
    line.dataset.seq = String(event.sequenceNo);
    const time = el("span", new Date(event.occurredAt).toISOString().slice(11, 23), "ts");
    time.title = event.occurredAt;
    let text = output ? event.text : `[${event.eventType}] ${event.text}`;
    if (text.endsWith("\n")) text = text.slice(0, -1);
    line.append(time, el("span", text, "tx"));
    log.append(line);
    if ($("follow").checked) log.scrollTop = log.scrollHeight;
    const query = $("log-search").value;
    if (query) markMatch(line, query.toLowerCase());
  }

  async function reloadDetails() {
    const response = await fetch(`/runs/${runId}?fragment=details`, { credentials: "same-origin" });
    if (response.redirected && new URL(response.url).pathname.startsWith("/login")) { WB.toLogin(); return; }
    if (!response.ok) return;
    const active = document.activeElement && document.activeElement.id;
    const drafts = {};
    details.querySelectorAll("textarea[id]").forEach((area) => { drafts[area.id] = area.value; });
    const template = document.createElement("template");
    template.innerHTML = await response.text();
    details.replaceChildren(template.content);
    for (const [id, value] of Object.entries(drafts)) if ($(id)) $(id).value = value;
    if (active && $(active)) $(active).focus();
    refreshTimes(details);
  }

  function onRun(state) {
    setBadge("status-badge", "s", state.status);
    setBadge("sync-badge", "y", state.syncStatus);
    if (state.status !== status) {
      announce(`Run #${runId} is now ${state.status}`);
      status = state.status;
    }
    reloadDetails().catch(() => {});
  }

  function connect() {
    const url = `/api/execution/runs/${runId}/stream${lastSeq ? `?afterSequence=${lastSeq}` : ""}`;
    source = new EventSource(url);
    source.addEventListener("open", () => { $("stream-state").textContent = "live"; });
    source.addEventListener("log", (message) => appendEvent(JSON.parse(message.data)));
    source.addEventListener("run", (message) => onRun(JSON.parse(message.data)));
    source.addEventListener("end", () => {
      finished = true;
      source.close();
      $("stream-state").textContent = "complete";
    });
    source.addEventListener("error", () => {
      if (finished) return;
      $("stream-state").textContent = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the session ended): ask the API why, then retry.
        api("GET", `/api/execution/runs/${runId}`).then(() => setTimeout(connect, 2000)).catch(() => {});
      }
    });
  }

  // --- log tools ---
  $("show-times").addEventListener("change", (event) => log.classList.toggle("with-times", event.target.checked));
  $("follow").addEventListener("change", (event) => { if (event.target.checked) log.scrollTop = log.scrollHeight; });

  function markMatch(line, query) {
    const hit = query && line.textContent.toLowerCase().includes(query);
    line.classList.toggle("match", Boolean(hit));
    return hit;
  }

  $("log-search").addEventListener("input", (event) => {
    const query = event.target.value.toLowerCase();
    let count = 0;
    let first = null;
    log.querySelectorAll(".ev").forEach((line) => {
      if (markMatch(line, query)) { count += 1; first = first || line; }
    });
    log.classList.toggle("searching", Boolean(query));
    $("search-count").textContent = query ? `${count} matching line${count === 1 ? "" : "s"}` : "";
    if (first) first.scrollIntoView({ block: "nearest" });
  });

  function logText() {
    return Array.from(log.querySelectorAll(".ev")).map((line) => {
      const time = log.classList.contains("with-times") ? `${line.querySelector(".ts").title} ` : "";
      return time + line.querySelector(".tx").textContent;
    }).join("\n") + "\n";
  }

  $("copy-log").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(logText());
      announce("Log copied");
    } catch (error) {
      announce("Copy is not allowed here; use Download");
    }
  });
  $("download-log").addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([logText()], { type: "text/plain" }));
    link.download = `run-${runId}.log`;
    document.body.append(link);
    link.click();
    link.remove();
  });

  // --- actions ---
  details.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const area = $("actions");
    clearErrors(area);
    let body = {};
    if (action === "approve" || action === "reject") body = { comment: ($("decision-comment") || {}).value || "" };
    if (action === "messages") body = { text: $("reply-text").value };
    if (action === "follow-up") body = { prompt: $("follow-up-text").value };
    button.disabled = true;
    try {
      const run = await api("POST", `/api/execution/runs/${runId}/${action}`, body);
      if ((action === "retry" || action === "follow-up") && run && run.id && run.id !== runId) {
        sessionStorage.setItem("ccdash:selected", String(run.id));
        location.assign(`/runs/${run.id}`);
        return;
      }
      if (action === "cancel" && run && run.cancelConfirmed === false) {
        // Never "ok" for a cancel the provider has not accepted.
        announce(`Cancel sent for run #${runId}; the provider has not confirmed it yet${run.cancelError ? `: ${run.cancelError}` : ""}`);
      } else {
        announce(`${button.textContent.trim()}: done. Run #${runId} is ${run ? run.status : status}`);
      }
      if (run && run.status) onRun(run); else await reloadDetails();
      if (finished && run && run.status && !["succeeded", "failed", "canceled", "blocked"].includes(run.status)) {
        finished = false;
        connect();
      }
    } catch (error) {
      showErrors(area, error);
      button.disabled = false;
    }
  });

  sessionStorage.setItem("ccdash:selected", String(runId));
  connect();
})();
