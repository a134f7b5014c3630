/* The list of the organization's jobs (#/), polled slowly while nothing is in flight. */

import { API, api } from "./api.js";
import { $, h, replace } from "./dom.js";
import { fmtDuration, fmtTime, isNum, nowUnix } from "./format.js";
import { POLL_MAX_MS, Poller, startPolling } from "./poll.js";
import { resultChip, resultWord, stageChip, statusChip } from "./status.js";
import { STATUS, TERMINAL } from "./vocab.js";

const LIST_POLL_MAX_MS = 15000;

/** Show the list; ``current()`` is false once the page has moved on to another view. */
export function showList(current) {
  const tbody = h("tbody", { id: "jobs-body" });
  const note = h("p", { id: "jobs-note", class: "muted" }, "Loading jobs…");
  replace(
    $("view"),
    h("section", { class: "card" },
      h("div", { class: "card-head" },
        h("h1", null, "Fine-tuning jobs"),
        h("span", { class: "muted", id: "jobs-count" }),
        h("span", { class: "spacer" }),
        h("a", { class: "btn", id: "new-job-link", href: "#/new" }, "New job")),
      h("table", { class: "table jobs", id: "jobs-table" },
        h("thead", null, h("tr", null,
          h("th", null, "Job"), h("th", null, "Model"), h("th", null, "Created"),
          h("th", null, "Status"), h("th", null, "Stage"), h("th", null, "Outcome"))),
        tbody),
      note));
  const path = `${API}/fine_tuning/jobs?limit=50`;
  const listPoller = new Poller(async () => {
    const res = await api(path, { conditional: true });
    if (!current()) return { done: true };
    if (res.changed) renderJobRows(res.body);
    const jobs = (res.body && res.body.data) || [];
    // Keep polling (new jobs can appear) but slowly when nothing is in flight.
    listPoller.max = jobs.some((j) => !TERMINAL.has(j.status)) ? POLL_MAX_MS : LIST_POLL_MAX_MS;
    return { changed: res.changed };
  });
  startPolling(listPoller);
}

function outcomeCell(job) {
  if (job.status === STATUS.SUCCEEDED && job.fine_tuned_model) return h("code", { class: "model-id" }, job.fine_tuned_model);
  if (job.error && (job.error.message || job.error.code)) {
    return h("span", { class: "outcome-bad" }, h("strong", null, resultWord(job)), job.error.message ? ` — ${job.error.message}` : "");
  }
  if (job.status === STATUS.CANCELLED) return h("span", { class: "muted" }, "cancelled");
  if (isNum(job.estimated_finish) && !TERMINAL.has(job.status)) {
    return h("span", { class: "muted" }, `about ${fmtDuration(job.estimated_finish - nowUnix()) || "a moment"} left`);
  }
  return h("span", { class: "muted" }, "");
}

function renderJobRows(body) {
  const jobs = (body && body.data) || [];
  const rows = jobs.map((job) => {
    const href = `#/jobs/${encodeURIComponent(job.id)}`;
    return h("tr", { "data-job-id": job.id, class: "job-row" },
      h("td", null, h("a", { href, class: "job-link" }, job.id),
        job.user_provided_suffix ? h("span", { class: "muted small" }, ` ${job.user_provided_suffix}`) : null),
      h("td", null, job.model || ""),
      h("td", null, fmtTime(job.created_at)),
      h("td", null, statusChip(job.status)),
      h("td", null, TERMINAL.has(job.status) ? resultChip(job) : stageChip(job)),
      h("td", null, outcomeCell(job)));
  });
  replace($("jobs-body"), rows);
  $("jobs-count").textContent = jobs.length ? `${jobs.length}${body.has_more ? "+" : ""} jobs, newest first` : "";
  const note = $("jobs-note");
  if (jobs.length === 0) {
    replace(note, "No jobs yet. Start one with New job, or with the OpenAI SDK pointed at this server: ",
      h("code", null, `OpenAI(base_url="${location.origin}/v1", api_key=...).fine_tuning.jobs.create(...)`));
  } else {
    note.textContent = body.has_more ? "Showing the newest 50 jobs." : "";
  }
}
