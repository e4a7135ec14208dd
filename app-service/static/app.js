// Progressive enhancement: post JSON to /sms/ and show the answer in place. Without
// JavaScript the form posts and the server renders the same result. Every value from
// the server or the user is inserted as text (textContent), never as HTML.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Marks the page as enhanced (tests tell the JavaScript and form paths apart by it).
  document.documentElement.dataset.enhanced = "true";
  const form = document.getElementById("classify-form");
  const button = document.getElementById("classify");
  const result = document.getElementById("result");
  const appVersion = document.getElementById("app-version").textContent;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  };

  const showError = (message) => {
    result.replaceChildren(el("p", { id: "error", class: "error", role: "alert" }, message));
  };

  const showResult = (r) => {
    const pct = (r.spam_probability * 100).toFixed(1) + "%";
    const bar = el("meter", { id: "probability-bar", min: "0", max: "1", low: "0.5", high: "0.5", optimum: "0",
                              value: String(r.spam_probability) }, pct);
    const parts = [
      el("p", { class: "label-line" }, "This message is ", el("strong", { id: "label" }, r.result)),
      el("p", {}, "Spam probability: ", el("span", { id: "probability" }, pct)),
      bar,
    ];
    if (r.agrees !== null && r.agrees !== undefined) {
      parts.push(el("p", { id: "agreement" }, `The classifier ${r.agrees ? "agrees" : "disagrees"} with your guess.`));
    }
    parts.push(el("p", { class: "versions" }, "Answered by model ", el("span", { id: "model-version" }, r.model_version),
      ` (${r.model_name}) through app `, el("span", { id: "result-app-version" }, r.app_version || appVersion),
      r.cached ? ", from the cache." : "."));
    result.replaceChildren(el("div", { id: "verdict", class: `verdict ${r.result === "spam" ? "spam" : "ham"}` }, ...parts));
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const sms = form.elements.sms.value;
    const guess = form.elements.guess.value || null;
    if (!sms.trim()) {
      showError("Please type or paste a message first.");
      form.elements.sms.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Classifying…";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10000);
    try {
      const response = await fetch("/sms/", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ sms, guess }),
        signal: abort.signal,
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) showResult(body);
      else showError(body.error || `The server answered ${response.status}.`);
    } catch (e) {
      showError("The server could not be reached. Check your connection and try again.");
    } finally {
      clearTimeout(timer);
      button.disabled = false;
      button.textContent = "Classify";
    }
  });
});
