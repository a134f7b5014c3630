/* A job's page (#/jobs/<id>): its layout, the polling round (the job, new events, then the
 * report and checkpoints when something changed) and the rendering of every card.
 * Events are fetched incrementally with order=asc&after=<last event id>.
 */

import { api, forgetAnswer, jobPath } from "./api.js";
import { chartFigures, renderCharts, renderTrainingReport } from "./charts.js";
import { jobControls } from "./controls.js";
import { $, h, replace } from "./dom.js";
import { renderEvaluation, renderGate } from "./evaluation.js";
import { fmtNum, fmtTime, humanize, isNum, num } from "./format.js";
import { renderNotice } from "./notice.js";
import { Poller, startPolling } from "./poll.js";
import { adapterDownload, tryIt } from "./released.js";
import { safetyOf } from "./report.js";
import { renderScan } from "./scan.js";
import { jobStage, resultChip, stageChip, statusChip } from "./status.js";
import { eventStage, noteStage, renderTimeline } from "./timeline.js";
import { STATUS, TERMINAL } from "./vocab.js";

const EVENTS_PAGE = 100;

function newJobState(id) {
  return {
    id,
    job: null,
    events: [], // all events, oldest first
    eventIds: new Set(),
    lastEventId: null,
    metrics: new Map(), // step -> data (latest wins: a resumed job may repeat steps)
    stageTimes: {}, // stage -> unix seconds of its start
    report: null,
    reportMissing: false,
    checkpoints: null,
    finalFetched: false,
  };
}

/** Show job ``id``; ``current()`` is false once the page has moved on to another view. */
export function showJob(id, current) {
  const st = newJobState(id);
  replace(
    $("view"),
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← All jobs")),
    h("section", { class: "card", id: "job-header" }, h("p", { class: "muted" }, "Loading job…")),
    h("section", { id: "job-notice" }),
    h("section", { class: "card" }, h("h2", null, "Stages"), h("ol", { class: "timeline", id: "timeline" })),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", null, "Training"), h("span", { class: "muted", id: "train-summary" })),
      h("div", { class: "charts", id: "charts" }, chartFigures()),
      h("div", { id: "training-report" })),
    h("div", { class: "grid2" },
      h("section", { class: "card", id: "scan" }, h("h2", null, "Dataset scan"), h("p", { class: "muted" }, "Waiting for the scan…")),
      h("section", { class: "card", id: "evaluation" }, h("h2", null, "Evaluation"), h("p", { class: "muted" }, "Runs after training."))),
    h("section", { class: "card", id: "gate" }, h("h2", null, "Release gate"), h("p", { class: "muted" }, "Decides after the evaluation.")),
    h("div", { class: "grid2" },
      h("section", { class: "card", id: "checkpoints" }, h("h2", null, "Checkpoints"), h("p", { class: "muted" }, "None yet.")),
      h("section", { class: "card", id: "event-log" }, h("h2", null, "Messages"), h("ol", { class: "log", id: "log" }))));
  renderCharts(st);

  const poller = new Poller(async () => {
    let result;
    try {
      result = await jobTick(st);
    } catch (err) {
      if (err.status !== 404 || st.job) throw err;
      if (current()) showMissingJob(id, err.message);
      return { done: true, doneText: "" };
    }
    if (!current()) return { done: true };
    return result;
  });
  st.refresh = () => poller.poke(); // after a control's answer: look at once
  startPolling(poller);
}

function showMissingJob(id, message) {
  replace($("view"),
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← All jobs")),
    h("section", { class: "card notice notice-bad", id: "job-notice", role: "alert" },
      h("h2", { class: "notice-title" }, "Job not found"),
      h("p", null, message),
      h("p", null, `There is no job ${id} in the organization of this API key. Check the id, or sign in with a key of the organization that created it.`)));
}

async function jobTick(st) {
  let changed = false;
  const jobRes = await api(jobPath(st.id), { conditional: true });
  const stageBefore = jobStage(st.job);
  if (jobRes.changed || !st.job) {
    st.job = jobRes.body;
    changed = true;
  }
  const terminal = TERMINAL.has(st.job.status);
  // A stage seen to change while watching starts about now (events, read next, may
  // date it more exactly); on the first look its start comes from the events only.
  if (stageBefore !== null && jobStage(st.job) !== stageBefore) {
    noteStage(st, jobStage(st.job), terminal ? st.job.finished_at : null);
  }

  const newEvents = await fetchNewEvents(st);
  if (newEvents.length) changed = true;

  // The report and checkpoints change only when the job or its events do.
  if (changed || st.report === null) {
    try {
      const rep = await api(jobPath(st.id, "/safety_report"), { conditional: true });
      if (rep.changed) {
        st.report = rep.body;
        changed = true;
      }
      st.reportMissing = false;
    } catch (err) {
      if (err.status !== 404) throw err;
      st.reportMissing = true;
      st.report = null;
    }
    try {
      const cps = await api(`${jobPath(st.id, "/checkpoints")}?limit=100`, { conditional: true });
      if (cps.changed) st.checkpoints = cps.body;
    } catch (err) {
      if (err.status !== 404) throw err;
    }
  }

  if (changed) renderJob(st, newEvents);
  else renderTimeline(st); // keeps the running stage's clock moving

  if (terminal) {
    if (st.finalFetched) return { done: true, doneText: doneText(st.job) };
    st.finalFetched = true; // one more full round, then stop
    return { changed: true };
  }
  return { changed };
}

function doneText(job) {
  return `Final: the job ${job.status === STATUS.SUCCEEDED ? "succeeded" : `is ${job.status}`}; polling stopped.`;
}

async function fetchNewEvents(st) {
  const fresh = [];
  for (let page = 0; page < 50; page += 1) {
    let path = `${jobPath(st.id, "/events")}?order=asc&limit=${EVENTS_PAGE}`;
    if (st.lastEventId) path += `&after=${encodeURIComponent(st.lastEventId)}`;
    const res = await api(path, { conditional: true });
    const data = (res.body && res.body.data) || [];
    if (!res.changed || data.length === 0) break;
    for (const ev of data) {
      if (!ev || st.eventIds.has(ev.id)) continue;
      st.eventIds.add(ev.id);
      st.events.push(ev);
      fresh.push(ev);
      ingestEvent(st, ev);
    }
    const last = data[data.length - 1].id;
    if (last === st.lastEventId) break;
    forgetAnswer(path); // that page is done; the next poll asks after its last event
    st.lastEventId = last;
    if (!res.body.has_more) break;
  }
  return fresh;
}

function ingestEvent(st, ev) {
  noteStage(st, eventStage(ev), ev.created_at);
  if (ev.type === "metrics" && ev.data && typeof ev.data === "object") {
    const step = num(ev.data.step);
    if (step !== null) st.metrics.set(step, ev.data);
  }
}

function renderJob(st, newEvents) {
  renderHeader(st);
  renderNotice(st);
  renderTimeline(st);
  renderCharts(st);
  renderTrainingReport(st);
  renderScan(st);
  renderEvaluation(st);
  renderGate(st);
  renderCheckpoints(st);
  if (newEvents.length || !$("log").firstChild) renderLog(st);
}

function kv(label, value) {
  return h("div", { class: "kv" }, h("dt", null, label), h("dd", null, value));
}

function renderHeader(st) {
  const job = st.job;
  const sf = safetyOf(st);
  const hp = job.hyperparameters || {};
  const hpText = ["n_epochs", "batch_size", "learning_rate_multiplier"]
    .filter((k) => hp[k] !== undefined && hp[k] !== null)
    .map((k) => `${humanize(k)} ${hp[k]}`).join(" · ");
  replace($("job-header"),
    h("div", { class: "card-head" },
      h("h1", { class: "job-title" }, job.id),
      h("span", { class: "chips" }, statusChip(job.status), " ", TERMINAL.has(job.status) ? resultChip(job) : stageChip(job))),
    h("dl", { class: "kvs" },
      kv("Base model", job.model || "—"),
      kv("Created", fmtTime(job.created_at)),
      job.finished_at ? kv("Finished", fmtTime(job.finished_at)) : null,
      kv("Training file", job.training_file || "—"),
      job.validation_file ? kv("Validation file", job.validation_file) : null,
      kv("Safety", [sf.mode || "—", sf.estimator ? ` (estimator ${sf.estimator})` : ""].join("")),
      hpText ? kv("Hyperparameters", hpText) : null,
      isNum(job.trained_tokens) ? kv("Trained tokens", String(job.trained_tokens)) : null,
      !TERMINAL.has(job.status) && isNum(job.estimated_finish)
        ? kv("Estimated finish", `${fmtTime(job.estimated_finish)}`) : null,
      job.fine_tuned_model ? kv("Fine-tuned model", h("code", { class: "model-id" }, job.fine_tuned_model)) : null),
    jobControls(st, st.refresh),
    job.fine_tuned_model && job.status === STATUS.SUCCEEDED ? adapterDownload(job) : null,
    job.fine_tuned_model && job.status === STATUS.SUCCEEDED ? tryIt(st, job.fine_tuned_model) : null);
}

function renderCheckpoints(st) {
  const el = $("checkpoints");
  const list = (st.checkpoints && st.checkpoints.data) || [];
  if (!list.length) return;
  const rows = [...list].sort((a, b) => (num(b.step_number) ?? 0) - (num(a.step_number) ?? 0)).map((c) => {
    const mt = c.metrics || {};
    return h("tr", null,
      h("td", { class: "num" }, String(c.step_number ?? mt.step ?? "—")),
      h("td", null, fmtTime(c.created_at)),
      h("td", { class: "num" }, fmtNum(num(mt.train_loss))),
      h("td", { class: "num" }, fmtNum(num(mt.valid_loss ?? mt.full_valid_loss))),
      h("td", null, h("code", { class: "small" }, c.fine_tuned_model_checkpoint || c.id || "")));
  });
  replace(el, h("h2", null, "Checkpoints"),
    h("table", { class: "table" },
      h("thead", null, h("tr", null, h("th", null, "Step"), h("th", null, "Saved"), h("th", null, "Train loss"), h("th", null, "Valid loss"), h("th", null, "Checkpoint"))),
      h("tbody", null, rows)));
}

function renderLog(st) {
  const msgs = st.events.filter((e) => e.type !== "metrics").slice(-40).reverse();
  replace($("log"), msgs.length
    ? msgs.map((e) => h("li", { class: `log-${String(e.level || "info").replace(/[^a-z]/g, "")}` },
      h("span", { class: "muted small" }, fmtTime(e.created_at)), " ", e.message || ""))
    : h("li", { class: "muted" }, "No messages yet."));
}
