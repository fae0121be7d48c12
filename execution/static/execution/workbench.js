// Workbench: talks to /api/ with the session cookie. Provider text is only ever
// inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { projectId: null, runId: null, nextSequence: 0, providers: [] };

function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || { message: response.statusText };
    const fields = error.fields ? " " + JSON.stringify(error.fields) : "";
    throw new Error(`${error.message}${fields}`);
  }
  return data;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function badge(text, prefix) {
  return el("span", text, `badge ${prefix}-${text}`);
}

async function loadProjects() {
  const projects = await api("GET", "/api/projects/");
  const items = projects.results || projects;
  const select = $("project");
  select.replaceChildren(...items.map((p) => {
    const option = el("option", p.name);
    option.value = p.id;
    return option;
  }));
  state.projectId = items.length ? items[0].id : null;
  if (state.projectId) await loadProviders();
}

async function loadProviders() {
  const data = await api("GET", `/api/execution/providers?projectId=${state.projectId}`);
  state.providers = data.results || data.items || data;
  const select = $("provider");
  select.replaceChildren(...state.providers.map((p) => {
    const usable = p.kind === "local" || (p.enabled && p.configured);
    const option = el("option", `${p.label}${usable ? "" : " (not configured)"}`);
    option.value = p.id;
    option.selected = p.isDefault;
    return option;
  }));
  showCapabilities();
  await loadRuns();
}

function showCapabilities() {
  const provider = state.providers.find((p) => p.id === $("provider").value);
  const box = $("capabilities");
  box.replaceChildren();
  if (!provider) return;
  const names = { supportsStreaming: "streams output", supportsCancel: "can cancel",
                  supportsArtifacts: "artifacts", supportsResume: "can resume" };
  for (const [key, label] of Object.entries(names)) {
    if (provider.capabilities[key]) box.append(badge(label, "cap"));
  }
  if (provider.health && provider.health.status !== "unknown") {
    box.append(badge(`health: ${provider.health.status}`, "h"));
  }
}

async function loadRuns() {
  if (!state.projectId) return;
  const page = await api("GET", `/api/execution/runs?projectId=${state.projectId}&limit=50`);
  const runs = page.results || page.items || page;
  $("run-rows").replaceChildren(...runs.map((run) => {
    const row = el("tr");
    row.append(el("td", run.id), el("td", run.providerId + (run.fallbackFromProviderId ? ` (from ${run.fallbackFromProviderId})` : "")),
               el("td", run.command, "cmd"));
    const status = el("td"); status.append(badge(run.status, "s"));
    const sync = el("td"); sync.append(badge(run.syncStatus, "y"));
    if (run.degraded) sync.firstChild.classList.add("degraded");
    row.append(status, sync, el("td", new Date(run.createdAt).toLocaleTimeString()));
    row.addEventListener("click", () => openRun(run.id));
    return row;
  }));
}

async function openRun(runId) {
  state.runId = runId;
  state.nextSequence = 0;
  $("log").replaceChildren();
  $("detail").hidden = false;
  await refreshRun();
}

async function refreshRun() {
  if (!state.runId) return;
  const run = await api("GET", `/api/execution/runs/${state.runId}`);
  $("detail-id").textContent = `#${run.id}`;
  $("detail-status").replaceWith(Object.assign(badge(run.status, "s"), { id: "detail-status" }));
  const sync = Object.assign(badge(run.syncStatus, "y"), { id: "detail-sync" });
  if (run.degraded) { sync.classList.add("degraded"); sync.title = run.lastSyncError || "degraded"; }
  $("detail-sync").replaceWith(sync);
  const fields = [["Provider", run.providerId], ["Provider run", run.providerRunId],
    ["Native status", run.providerStatusRaw], ["Policy", `${run.policyVerdict} (${run.riskLevel}) ${run.reasonCodes.join(", ")}`],
    ["Reason", run.statusReason], ["Exit code", run.exitCode], ["Last sync", run.lastReconciledAt],
    ["Sync error", run.lastSyncError], ["Retry of", run.retryOfRunId]];
  showActions(run);
  const list = $("detail-fields");
  list.replaceChildren();
  for (const [label, value] of fields) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("dt", label), el("dd", value));
  }
  if (run.providerUrl) {
    const link = el("a", run.providerUrl); link.href = run.providerUrl; link.target = "_blank"; link.rel = "noopener";
    const dd = el("dd"); dd.append(link); list.append(el("dt", "Link"), dd);
  }
  const page = await api("GET", `/api/execution/runs/${state.runId}/events?afterSequence=${state.nextSequence}&limit=500`);
  const log = $("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  for (const event of page.items) {
    const text = event.stream === "stdout" || event.stream === "stderr"
      ? event.text : `[${event.eventType}] ${event.text}\n`;
    log.append(el("span", text, event.stream));
  }
  state.nextSequence = page.nextSequence;
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// Which actions the run's state allows (the API answers 409 to the others).
const ACTIONS = {
  approve: ["awaiting_approval"],
  reject: ["awaiting_approval"],
  cancel: ["awaiting_approval", "queued", "running", "waiting"],
  retry: ["failed", "canceled"],
  reconcile: ["queued", "running", "waiting", "canceling"],
};

function showActions(run) {
  document.querySelectorAll("[data-action]").forEach((button) => {
    button.hidden = !ACTIONS[button.dataset.action].includes(run.status);
  });
}

async function act(action) {
  try {
    const run = await api("POST", `/api/execution/runs/${state.runId}/${action}`, {});
    $("action-message").textContent = `${action}: ok`;
    if (action === "retry" && run && run.id) await openRun(run.id); else await refreshRun();
    await loadRuns();
  } catch (error) {
    $("action-message").textContent = `${action}: ${error.message}`;
  }
}

function launchBody() {
  const body = { projectId: state.projectId, command: $("command").value, providerId: $("provider").value };
  if ($("feature").value) body.featureId = $("feature").value;
  if ($("cwd").value) body.cwd = $("cwd").value;
  return body;
}

$("launch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const run = await api("POST", "/api/execution/runs", launchBody());
    $("launch-message").textContent = `Run #${run.id}: ${run.status}`;
    await loadRuns();
    await openRun(run.id);
  } catch (error) {
    $("launch-message").textContent = error.message;
  }
});
$("policy-check").addEventListener("click", async () => {
  try {
    const body = launchBody();
    delete body.providerId; delete body.featureId;
    const verdict = await api("POST", "/api/execution/policy-check", body);
    $("launch-message").textContent = `Policy: ${verdict.verdict} (${verdict.riskLevel}) ${verdict.reasonCodes.join(", ")}`;
  } catch (error) {
    $("launch-message").textContent = error.message;
  }
});
$("project").addEventListener("change", async (event) => { state.projectId = Number(event.target.value); await loadProviders(); });
$("provider").addEventListener("change", showCapabilities);
$("refresh").addEventListener("click", loadRuns);
document.querySelectorAll("[data-action]").forEach((button) =>
  button.addEventListener("click", () => act(button.dataset.action)));

loadProjects().catch((error) => { $("launch-message").textContent = error.message; });
setInterval(() => { refreshRun().catch(() => {}); }, 1000);
setInterval(() => { loadRuns().catch(() => {}); }, 3000);
