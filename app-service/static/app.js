// Progressive enhancement: post the form in the background and show the answer in place,
// without reloading the page. The answer is the server's own rendering of the result
// (templates/index.html, the same as without JavaScript): the page is fetched, parsed as
// an inert document (DOMParser runs no scripts) and its result section moved in. Nothing
// the user typed is ever turned into HTML here; the server escapes every value.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Marks the page as enhanced (tests tell the JavaScript and form paths apart by it).
  document.documentElement.dataset.enhanced = "true";
  const form = document.getElementById("classify-form");
  const button = document.getElementById("classify");
  const result = document.getElementById("result");
  const sms = form.elements.sms;
  const counter = document.getElementById("sms-count");
  const maxChars = Number(sms.dataset.maxChars);

  // Characters as the server counts them: code points after trimming and collapsing
  // whitespace (an emoji is one, a run of spaces is one).
  const length = (text) => [...text.trim().replace(/\s+/gu, " ")].length;
  const count = () => {
    const n = length(sms.value);
    counter.textContent = `${n} / ${maxChars} characters${n > maxChars ? ": too long" : ""}`;
    return n;
  };
  sms.addEventListener("input", count);
  count();

  const showError = (message) => {
    const p = document.createElement("p");
    Object.assign(p, { id: "error", className: "error", textContent: message });
    p.setAttribute("role", "alert");
    result.replaceChildren(p);
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!sms.value.trim()) {
      showError("Please type or paste a message first.");
      sms.focus();
      return;
    }
    if (count() > maxChars) {
      showError(`The message is ${count()} characters long; the limit is ${maxChars}.`);
      sms.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Classifying…";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10000);
    try {
      const response = await fetch("/sms/", {
        method: "POST",
        headers: { Accept: "text/html" },
        body: new URLSearchParams(new FormData(form)),
        signal: abort.signal,
      });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const answer = page.getElementById("result");
      if (answer) result.replaceChildren(...Array.from(answer.childNodes, (n) => document.importNode(n, true)));
      else showError(`The server answered ${response.status}.`);
    } catch (e) {
      showError("The server could not be reached. Check your connection and try again.");
    } finally {
      clearTimeout(timer);
      button.disabled = false;
      button.textContent = "Classify";
    }
  });
});
