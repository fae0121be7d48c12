// Shared by every workbench page. Text from runs and providers is only ever
// inserted with textContent, never as HTML.
"use strict";

const WB = (() => {
  const $ = (id) => document.getElementById(id);

  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function toLogin() {
    const next = encodeURIComponent(location.pathname + location.search);
    location.assign(`/login/?next=${next}`);
  }

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code || "";
      this.fields = error.fields || {};
    }
  }

  // JSON in, JSON out. A 401 (the session ended) goes to the login page.
  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 || (response.status === 403 && response.redirected)) {
      toLogin();
      throw new ApiError(401, { message: "Your session has ended." });
    }
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || { message: response.statusText || `HTTP ${response.status}` };
      if (response.status === 403 && /credentials were not provided|not authenticated/i.test(error.message || "")) {
        toLogin();
      }
      throw new ApiError(response.status, error);
    }
    return data;
  }

  // Field errors beside their fields (elements with data-field inside scope);
  // the rest of the message in the scope's .form-error.
  function showErrors(scope, error) {
    clearErrors(scope);
    // (path, message) pairs; a path such as settings → baseUrl, or
    // promptPatterns → "0.reasonCode" (dotted paths are split).
    const entries = [];
    const walk = (path, value) => {
      if (Array.isArray(value) && value.every((v) => typeof v !== "object")) entries.push([path, value.join(" ")]);
      else if (value && typeof value === "object") {
        for (const [key, inner] of Object.entries(value)) walk([...path, ...String(key).split(".")], inner);
      } else if (value) entries.push([path, String(value)]);
    };
    walk([], (error && error.fields) || {});
    const slotFor = (name) => scope.querySelector(`.field-error[data-field="${CSS.escape(name)}"]`);
    const unplaced = [];
    for (const [path, text] of entries) {
      // The innermost name that has a place on the page takes the message.
      let index = path.length - 1;
      while (index >= 0 && !slotFor(path[index])) index -= 1;
      if (index < 0) { unplaced.push(`${path.join(".")}: ${text}`); continue; }
      const slot = slotFor(path[index]);
      const rest = path.slice(index + 1).join(".");
      slot.textContent = [slot.textContent, rest ? `${rest}: ${text}` : text].filter(Boolean).join(" ");
      const input = slot.parentElement.querySelector("input, textarea, select");
      if (input) input.setAttribute("aria-invalid", "true");
    }
    const general = scope.querySelector(".form-error");
    if (general) general.textContent = [error && error.message, ...unplaced].filter(Boolean).join(" ");
  }

  function clearErrors(scope) {
    scope.querySelectorAll(".field-error").forEach((slot) => { slot.textContent = ""; });
    scope.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    const general = scope.querySelector(".form-error");
    if (general) general.textContent = "";
  }

  function announce(text) {
    const region = $("announce");
    if (!region) return;
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50);
  }

  function relative(date) {
    let seconds = Math.round((Date.now() - date.getTime()) / 1000);
    const future = seconds < 0;
    seconds = Math.abs(seconds);
    if (seconds < 5) return "just now";
    const units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    for (const [size, unit] of units) {
      if (seconds >= size) {
        const amount = `${Math.floor(seconds / size)} ${unit}`;
        return future ? `in ${amount}` : `${amount} ago`;
      }
    }
    return "just now";
  }

  function exact(date) {
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function timeElement(iso) {
    const node = document.createElement("time");
    if (!iso) { node.textContent = "—"; return node; }
    const date = new Date(iso);
    node.dateTime = iso;
    node.title = exact(date);
    node.textContent = relative(date);
    return node;
  }

  function refreshTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach((node) => {
      const date = new Date(node.dateTime);
      if (!Number.isNaN(date.getTime())) node.textContent = relative(date);
    });
  }
  setInterval(() => refreshTimes(), 15000);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  return { $, api, ApiError, showErrors, clearErrors, announce, relative, exact, timeElement, refreshTimes, el, toLogin };
})();
