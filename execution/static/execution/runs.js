// Runs page: the launch panel and the run list (refreshed in place).
"use strict";

(() => {
  const { $, api, showErrors, clearErrors, el, announce, refreshTimes } = WB;
  const launch = $("launch");
  const projectId = Number(($("project") || {}).value || 0);
  const CAPABILITIES = {
    supportsStreaming: "streams output",
    supportsCancel: "can cancel",
    supportsArtifacts: "artifacts",
    supportsResume: "can resume",
    supportsFollowUp: "follow-ups",
  };
  const PROMPT_PROVIDERS = new Set(["cursor", "devin"]);
  let providers = [];
  const storageKey = `ccdash:provider:${projectId}`;

  function inputKind(provider) {
    if (!provider) return "command";
    return provider.inputKind || (PROMPT_PROVIDERS.has(provider.id) ? "prompt" : "command");
  }

  function current() {
    return providers.find((p) => p.id === $("provider").value);
  }

  function healthBadge(health) {
    const status = (health && health.status) || "unknown";
    const badge = el("span", `health: ${status}`, `badge h-${status}`);
    badge.dataset.role = "health";
    return badge;
  }

  function showProvider() {
    const provider = current();
    const info = $("provider-info");
    info.replaceChildren();
    if (!provider) return;
    const badges = el("span", null, "badges");
    badges.append(el("span", inputKind(provider) === "prompt" ? "takes a prompt" : "takes a command", "badge kind"));
    for (const [key, label] of Object.entries(CAPABILITIES)) {
      if (provider.capabilities && provider.capabilities[key]) badges.append(el("span", label, "badge cap"));
    }
    // Local runs: in bubblewrap, unsandboxed by the operator's choice, or impossible.
    if (provider.sandbox === "none") badges.append(el("span", "unsandboxed", "badge warn"));
    if (provider.sandbox === "unavailable") badges.append(el("span", "no sandbox: runs fail", "badge h-failing"));
    badges.append(healthBadge(provider.health));
    info.append(badges);
    const health = provider.health || {};
    if (health.message || health.checkedAt) {
      const line = el("span", health.message || "", "health-line");
      if (health.checkedAt) {
        line.append(" · checked ");
        line.append(WB.timeElement(health.checkedAt));
      }
      info.append(line);
    }
    const prompt = inputKind(provider) === "prompt";
    $("prompt-label").hidden = !prompt;
    $("command-label").hidden = prompt;
    showWarning(provider);
    schedulePreview();
  }

  // Would a run on this provider go elsewhere, or fail? (Routing: a disabled,
  // unconfigured or failing provider is skipped; only a provider of the same
  // input kind can take over, and local takes commands only.)
  function showWarning(provider) {
    const box = $("provider-warning");
    if (provider.sandbox === "unavailable") {
      box.textContent = `${provider.label}: bubblewrap, the sandbox of local runs, is missing, so a run would fail `
        + "(sandbox_unavailable). Install it (apt-get install bubblewrap) or set EXECUTION_SANDBOX=none.";
      box.hidden = false;
      return;
    }
    const problem = provider.kind === "local" ? ""
      : !provider.enabled ? "is not enabled"
      : !provider.configured ? "is not configured"
      : provider.health && provider.health.status === "failing"
        ? `is failing${provider.health.message ? `: ${provider.health.message}` : ""}` : "";
    if (!problem) { box.hidden = true; box.textContent = ""; return; }
    let outcome;
    if (inputKind(provider) === "prompt") {
      // The project's agent fallback chain, after this provider, usable ones only.
      const chain = (launch.dataset.agentFallback || "").split(",").filter(Boolean);
      const after = chain.includes(provider.id) ? chain.slice(chain.indexOf(provider.id) + 1) : chain;
      const next = after.map((id) => providers.find((p) => p.id === id))
        .find((p) => p && p.id !== provider.id && p.enabled && p.configured && !(p.health && p.health.status === "failing"));
      outcome = next ? `A run would go to ${next.label} instead (the project's agent fallback).`
        : "A run would fail: a prompt never falls back to the local shell, and no agent fallback is available.";
    } else if (provider.allowFallbackToLocal && launch.dataset.fallback === "1") {
      outcome = "A run would fall back to local.";
    } else {
      outcome = "A run would fail: fallback to local is off.";
    }
    box.textContent = `${provider.label} ${problem}. ${outcome}`;
    box.hidden = false;
  }

  function text() {
    const provider = current();
    return inputKind(provider) === "prompt" ? $("prompt").value : $("command").value;
  }

  function body() {
    const provider = current();
    const data = { projectId, providerId: provider ? provider.id : undefined };
    // The API names the text by kind once providers declare their kind.
    if (provider && provider.inputKind === "prompt") data.prompt = text(); else data.command = text();
    if ($("feature").value) data.featureId = $("feature").value;
    if ($("cwd").value) data.cwd = $("cwd").value;
    return data;
  }

  let previewTimer = null;
  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 300);
  }

  async function preview() {
    const box = $("policy-preview");
    if (!text().trim()) { box.replaceChildren(); return; }
    const data = body();
    delete data.featureId;
    try {
      const verdict = await api("POST", "/api/execution/policy-check", data);
      const line = el("span", null, "policy-line");
      line.append("Policy: ", el("span", verdict.verdict, `badge v-${verdict.verdict}`), ` risk ${verdict.riskLevel}`);
      if (verdict.reasonCodes && verdict.reasonCodes.length) line.append(` · ${verdict.reasonCodes.join(", ")}`);
      box.replaceChildren(line);
      for (const message of verdict.messages || []) box.append(el("div", message, "muted"));
    } catch (error) {
      box.replaceChildren(el("span", `Policy: ${error.message}`, "error-text"));
    }
  }

  async function loadProviders() {
    providers = await api("GET", `/api/execution/providers?projectId=${projectId}`);
    const select = $("provider");
    const remembered = localStorage.getItem(storageKey);
    select.replaceChildren(...providers.map((p) => {
      const usable = p.kind === "local" || (p.enabled && p.configured);
      const option = el("option", `${p.label}${usable ? "" : " (unavailable)"}`);
      option.value = p.id;
      return option;
    }));
    const chosen = providers.find((p) => p.id === remembered) || providers.find((p) => p.isDefault) || providers[0];
    if (chosen) select.value = chosen.id;
    showProvider();
  }

  async function prefill() {
    const rerun = new URLSearchParams(location.search).get("rerun");
    if (!rerun) return;
    try {
      const run = await api("GET", `/api/execution/runs/${Number(rerun)}`);
      if (providers.some((p) => p.id === run.providerId)) $("provider").value = run.providerId;
      showProvider();
      const words = run.prompt || run.command || "";
      if (inputKind(current()) === "prompt") $("prompt").value = words; else $("command").value = words;
      $("feature").value = run.featureId || "";
      $("cwd").value = run.cwd || "";
      schedulePreview();
    } catch (error) { /* a run we cannot read: start empty */ }
  }

  if (launch) {
    $("provider").addEventListener("change", () => {
      localStorage.setItem(storageKey, $("provider").value);
      showProvider();
    });
    $("command").addEventListener("input", schedulePreview);
    $("prompt").addEventListener("input", schedulePreview);
    $("launch-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = $("launch-form");
      clearErrors(form);
      if (!text().trim()) {
        const field = inputKind(current()) === "prompt" ? "prompt" : "command";
        showErrors(form, { message: "", fields: { [field]: ["Enter what to run."] } });
        return;
      }
      $("launch-button").disabled = true;
      try {
        const run = await api("POST", "/api/execution/runs", body());
        localStorage.setItem(storageKey, $("provider").value);
        sessionStorage.setItem("ccdash:selected", String(run.id));
        announce(`Run #${run.id} created: ${run.status}`);
        location.assign(`/runs/${run.id}`);
      } catch (error) {
        if (error.fields && error.fields.command && inputKind(current()) === "prompt") {
          error.fields.prompt = error.fields.command;
          delete error.fields.command;
        }
        showErrors(form, error);
      } finally {
        $("launch-button").disabled = false;
      }
    });
    loadProviders().then(prefill).catch((error) => { $("launch-error").textContent = error.message; });
  }

  // --- the list ---
  const list = $("run-list");
  function markSelected() {
    const selected = sessionStorage.getItem("ccdash:selected");
    if (!list) return;
    list.querySelectorAll("tr[data-run]").forEach((row) => {
      const on = row.dataset.run === selected;
      row.classList.toggle("selected", on);
      if (on) row.setAttribute("aria-current", "true"); else row.removeAttribute("aria-current");
    });
  }

  function updatePending(value) {
    const count = Number(value || 0);
    let badge = $("pending-approvals");
    if (!count) { if (badge) badge.remove(); return; }
    if (!badge) {
      badge = el("a", null, "pending");
      badge.id = "pending-approvals";
      badge.href = `/?awaitingMyApproval=1&projectId=${projectId}`;
      badge.title = "Runs waiting for your approval";
      const who = document.querySelector("header .who");
      if (who) who.before(badge);
    }
    const text = `${count} awaiting approval`;
    if (badge.textContent !== text) { badge.textContent = text; announce(text); }
  }

  async function refreshList() {
    if (!list || document.hidden) return;
    const params = new URLSearchParams(list.dataset.query);
    params.set("page", list.dataset.page);
    params.set("fragment", "rows");
    const response = await fetch(`/?${params}`, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (response.redirected && new URL(response.url).pathname.startsWith("/login")) { WB.toLogin(); return; }
    if (!response.ok) return;
    const html = await response.text();
    updatePending(response.headers.get("X-Pending-Approvals"));
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-run]");
    const focusedRun = focused ? focused.dataset.run : null;
    const template = document.createElement("template");
    template.innerHTML = html;
    list.replaceChildren(template.content);
    markSelected();
    refreshTimes(list);
    if (focusedRun) {
      const link = list.querySelector(`tr[data-run="${focusedRun}"] a`);
      if (link) link.focus();
    }
  }

  if (list) {
    list.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-run]");
      if (!row || event.target.closest("a")) {
        if (row) sessionStorage.setItem("ccdash:selected", row.dataset.run);
        return;
      }
      sessionStorage.setItem("ccdash:selected", row.dataset.run);
      location.assign(`/runs/${row.dataset.run}`);
    });
    list.addEventListener("keydown", (event) => {
      const link = event.target.closest("a.run-link");
      if (link && event.key === "Enter") sessionStorage.setItem("ccdash:selected", link.closest("tr").dataset.run);
    });
    markSelected();
    setInterval(() => { refreshList().catch(() => {}); }, 5000);
  }
  const filters = $("filters");
  if (filters) {
    filters.querySelectorAll("select, input[type=checkbox]").forEach((input) =>
      input.addEventListener("change", () => filters.requestSubmit()));
  }
})();
