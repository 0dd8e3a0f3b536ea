// What the browser pages (/crew, /status) share: the API call with the page's stored token, its errors, the
// message line, DOM building (values go in through textContent, never HTML) and how times are written.
// Loaded before the page's own script; no framework or build step.
"use strict";

window.chargeopsUI = (() => {
  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status;
      this.code = code;
    }
  }

  // `offline`: what to tell the user when the server cannot be reached (status 0).
  async function request(tokenKey, offline, method, path, body) {
    const headers = { Authorization: `Bearer ${localStorage.getItem(tokenKey) || ""}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", offline);
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ApiError(response.status, data.error || "http_error", data.detail || response.statusText);
    }
    return data;
  }

  function say(text, kind = "info") {
    const node = document.getElementById("message");
    node.textContent = text;
    node.className = `message ${kind}`;
    node.hidden = !text;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function span(ms) {
    const minutes = Math.round(Math.abs(ms) / 60000);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
    return `${Math.floor(hours / 24)} days`;
  }

  function when(iso) {
    return new Date(iso).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" });
  }

  return { ApiError, request, say, el, span, when };
})();
