// Settings panel: provider settings, credentials and health, through the same
// REST endpoints as every client. A secret is sent once and never shown back.
"use strict";

(() => {
  const { $, api, showErrors, clearErrors, el, announce } = WB;
  const root = $("providers");
  const projectId = Number(root.dataset.project);

  function settingsOf(form) {
    const settings = {};
    form.querySelectorAll("input[name^='s:']").forEach((input) => {
      const name = input.name.slice(2);
      if (input.dataset.kind === "boolean") settings[name] = input.checked;
      else if (input.value.trim() === "") return;  // empty: the adapter's default
      else if (input.dataset.kind === "integer") settings[name] = Number(input.value);
      else if (input.dataset.kind === "object") {
        try { settings[name] = JSON.parse(input.value); } catch (error) { settings[name] = input.value; }
      }
      else settings[name] = input.value.trim();
    });
    return settings;
  }

  function showHealth(card, health) {
    const badge = card.querySelector("[data-role=health-badge]");
    badge.textContent = `health: ${health.status}`;
    badge.className = `badge h-${health.status}`;
    const text = card.querySelector("[data-role=health-text]");
    text.replaceChildren(health.message || "");
    if (health.checkedAt) {
      const when = el("span", " checked ", "muted");
      when.append(WB.timeElement(health.checkedAt));
      text.append(when);
    }
  }

  function showSecret(form, masked) {
    const field = (masked.fields || []).find((f) => f.name === form.dataset.field);
    const status = form.querySelector("[data-role=secret-status]");
    status.replaceChildren();
    if (field && field.set) {
      status.append("set ", el("span", field.preview, "mono"));
    } else {
      status.append("not set");
    }
    form.querySelector("input[name=value]").value = "";
    const submit = form.querySelector("button[type=submit]");
    if (submit) submit.textContent = field && field.set ? "Replace" : "Set";
    let clear = form.querySelector("[data-do=clear]");
    if (field && field.set && !clear) {
      clear = el("button", "Clear", "danger");
      clear.type = "button";
      clear.dataset.do = "clear";
      submit.after(clear);
    } else if (!(field && field.set) && clear) {
      clear.remove();
    }
  }

  async function sendSecret(card, form, value) {
    clearErrors(form);
    const provider = card.dataset.provider;
    try {
      const masked = await api("POST", `/api/execution/providers/${provider}/credentials`, {
        projectId, credentials: { [form.dataset.field]: value },
      });
      showSecret(form, masked);
      announce(value ? "Credential saved" : "Credential cleared");
    } catch (error) {
      showErrors(form, error);
    }
  }

  function projectBody(form) {
    const patterns = form.elements.promptPatterns.value.split("\n").map((line) => line.trim()).filter(Boolean)
      .map((line) => {
        const at = line.indexOf(":");
        return at < 0 ? { reasonCode: "", pattern: line }
          : { reasonCode: line.slice(0, at).trim(), pattern: line.slice(at + 1).trim() };
      });
    return {
      defaultProviderId: form.elements.defaultProviderId.value,
      allowFallbackToLocal: form.elements.allowFallbackToLocal.checked,
      allowSelfApproval: form.elements.allowSelfApproval.checked,
      agentRunsRequireApproval: form.elements.agentRunsRequireApproval.checked,
      agentFallbackChain: form.elements.agentFallbackChain.value.split(",").map((id) => id.trim()).filter(Boolean),
      promptPatterns: patterns,
      maxPromptLength: Number(form.elements.maxPromptLength.value),
    };
  }

  root.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (form.dataset.form === "project") {
      clearErrors(form);
      try {
        await api("PATCH", `/api/projects/${projectId}/`, projectBody(form));
        announce("Project settings saved");
        const note = el("span", "Saved.", "ok-text");
        form.querySelector("button[type=submit]").after(note);
        setTimeout(() => note.remove(), 3000);
      } catch (error) {
        showErrors(form, error);
      }
      return;
    }
    const card = form.closest("[data-provider]");
    const provider = card.dataset.provider;
    if (form.dataset.form === "config") {
      clearErrors(form);
      const body = { projectId, settings: settingsOf(form) };
      for (const name of ["enabled", "isDefault", "allowFallbackToLocal"]) {
        const box = form.querySelector(`input[name=${name}]`);
        if (box) body[name] = box.checked;
      }
      try {
        const answer = await api("PUT", `/api/execution/providers/${provider}/config`, body);
        form.querySelector(".form-error").textContent = "";
        announce(`${answer.label} settings saved`);
        const note = el("span", "Saved.", "ok-text");
        form.querySelector("button[type=submit]").after(note);
        setTimeout(() => note.remove(), 3000);
      } catch (error) {
        showErrors(form, error);
      }
    } else if (form.dataset.form === "secret") {
      const value = form.querySelector("input[name=value]").value;
      if (!value) {
        showErrors(form, { message: "", fields: { [form.dataset.field]: ["Enter a value, or use Clear."] } });
        return;
      }
      await sendSecret(card, form, value);
    }
  });

  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-do]");
    if (!button) return;
    const card = button.closest("[data-provider]");
    if (button.dataset.do === "clear") {
      const form = button.closest("form");
      if (window.confirm("Clear this credential? Runs on this provider stop working until it is set again.")) {
        await sendSecret(card, form, "");
      }
    } else if (button.dataset.do === "check") {
      button.disabled = true;
      const text = card.querySelector("[data-role=health-text]");
      text.textContent = "Checking…";
      try {
        showHealth(card, await api("POST", `/api/execution/providers/${card.dataset.provider}/check`, { projectId }));
        announce(`${card.querySelector("h2").firstChild.textContent.trim()} health checked`);
      } catch (error) {
        text.replaceChildren(el("span", error.message, "error-text"));
      } finally {
        button.disabled = false;
      }
    }
  });
})();
