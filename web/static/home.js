// Home page: start a playground session and open its viewer.
"use strict";

(function () {
  const form = document.getElementById("start-form");
  if (!form) return;
  const err = document.getElementById("start-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = document.getElementById("start");
    button.disabled = true;
    button.textContent = "Starting…";
    err.hidden = true;
    try {
      const resp = await fetch("/playground/start", {
        method: "POST", headers: {"Content-Type": "application/json"}, credentials: "same-origin",
        body: JSON.stringify({knowledge: document.getElementById("knowledge").value}),
      });
      const data = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        const e = new Error(data.error || "The avatar could not start. Try again in a moment.");
        e.url = data.url;  // a refusal may point to the visitor's running session
        throw e;
      }
      location.assign(data.url);
    } catch (e) {
      err.textContent = e.message;
      if (e.url) {
        const link = document.createElement("a");
        link.href = e.url;
        link.id = "resume";
        link.textContent = "Go back to your session";
        err.append(" ", link);
      }
      err.hidden = false;
      button.disabled = false;
      button.textContent = "Start the avatar";
    }
  });
})();
