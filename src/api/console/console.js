// The console's only script: confirm dialogs, the blueprint check, live logs. No framework.
"use strict";

document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const question = button && button.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// The blueprint editor's Check: posts the text with the session's CSRF token, lists problems.
for (const form of document.querySelectorAll("form[data-check]")) {
  const button = form.querySelector("[data-check-button]");
  if (!button) continue;
  button.addEventListener("click", async () => {
    const list = form.querySelector("#problems");
    const body = new URLSearchParams(new FormData(form));
    list.className = "problems";
    list.textContent = "checking…";
    try {
      const response = await fetch(form.dataset.check, {
        method: "POST",
        body,
        headers: { "X-CSRF-Token": form.elements.csrf.value },
        credentials: "same-origin",
      });
      const answer = await response.json();
      list.textContent = "";
      if (!response.ok) throw new Error(answer.error || response.statusText);
      if (answer.problems.length === 0) {
        list.className = "problems ok";
        list.textContent = "No problems.";
      }
      for (const problem of answer.problems) {
        const item = document.createElement("li");
        if (problem.line) {
          item.dataset.line = problem.line;
          const line = document.createElement("span");
          line.className = "line";
          line.textContent = "line " + problem.line + " ";
          item.append(line);
        }
        item.append(problem.text);
        list.append(item);
      }
    } catch (err) {
      list.textContent = "The check failed: " + err.message;
    }
  });
}

// A running run's log: the REST API's event stream, relayed under /console.
const log = document.querySelector("pre#log[data-stream]");
if (log) {
  const jobs = JSON.parse(log.dataset.jobs || "{}");
  const source = new EventSource(log.dataset.stream);
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    const label = jobs[line.job] || line.job;
    log.append("[" + label + "] " + line.log + "\n");
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("end", () => {
    source.close();
    window.location.reload();
  });
}
