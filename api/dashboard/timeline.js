/* The stages timeline: when each stage started, from the job's events and from changes seen
 * while polling, and which stages were done, skipped or are running.
 */

import { $, h, replace } from "./dom.js";
import { fmtDuration, fmtTime, isNum, nowUnix, num } from "./format.js";
import { RESULT, STAGES, STAGE_INDEX, jobStage, resultWord } from "./status.js";
import { STAGE, STATUS, TERMINAL } from "./vocab.js";

// When an event carries no data.stage, its message names the stage it announces.
// Checked in this order (the first match wins): the pipeline's own wording first.
const STAGE_WORDS = [
  [RESULT, /^(released as|job (failed|blocked)|(fine-tuning )?job cancelled|job succeeded)\b/i],
  [STATUS.QUEUED, /^validated\b|\bjob queued\b|^queued\b/i],
  [STATUS.VALIDATING_FILES, /^validat/i],
  [STAGE.SCANNING, /^scan/i],
  [STAGE.TRAINING, /^(fine-tuning started|training (started|resumed)|resumed training)\b/i],
  [STAGE.EVALUATING, /^evaluat/i],
  [STAGE.GATING, /^(applying the release gate|gate:|gating)/i],
];

/** The stage an event announces: data.stage / data.status first, else its words. */
export function eventStage(ev) {
  const d = ev.data && typeof ev.data === "object" ? ev.data : {};
  if (typeof d.stage === "string" && d.stage in STAGE_INDEX) return d.stage;
  if (typeof d.status === "string") {
    if (TERMINAL.has(d.status)) return RESULT;
    if (d.status in STAGE_INDEX) return d.status;
  }
  if (ev.type === "metrics") return num(d.step) !== null ? STAGE.TRAINING : null;
  const message = String(ev.message || "").trim();
  for (const [stage, re] of STAGE_WORDS) if (re.test(message)) return stage;
  return null;
}

export function noteStage(st, stage, when) {
  if (!stage || !(stage in STAGE_INDEX)) return;
  const t = isNum(when) ? when : nowUnix();
  if (!(stage in st.stageTimes) || st.stageTimes[stage] > t) st.stageTimes[stage] = t;
}

export function renderTimeline(st) {
  const job = st.job;
  const el = $("timeline");
  if (!job || !el) return;
  if (isNum(job.created_at)) noteStage(st, STATUS.VALIDATING_FILES, job.created_at);
  const current = STAGE_INDEX[jobStage(job)] ?? 0;
  const terminal = TERMINAL.has(job.status);
  if (terminal && isNum(job.finished_at)) noteStage(st, RESULT, job.finished_at);
  // The last stage the job really reached before its result (for "skipped").
  let reached = current;
  if (terminal) {
    reached = 0;
    STAGES.forEach((s, i) => { if (s.id !== RESULT && s.id in st.stageTimes) reached = i; });
  }
  const starts = STAGES.map((s) => st.stageTimes[s.id]);
  const items = STAGES.map((s, i) => {
    let state;
    if (i < current) state = terminal && i > reached ? "skipped" : "done";
    else if (i === current) state = terminal ? (job.status === STATUS.SUCCEEDED ? "ok" : job.status === STATUS.CANCELLED ? "cancelled" : "bad") : "current";
    else state = "pending";
    if (state === "done" && !(s.id in st.stageTimes) && i > reached) state = "skipped";
    const start = starts[i];
    let end = null;
    for (let j = i + 1; j < STAGES.length; j += 1) if (isNum(starts[j])) { end = starts[j]; break; }
    let when = "";
    if (state === "current" && isNum(start)) when = `${fmtDuration(nowUnix() - start)} so far`;
    else if (state === "done" && isNum(start) && isNum(end)) when = fmtDuration(end - start);
    const label = s.id === RESULT ? (terminal ? resultWord(job) : "Result") : s.label;
    return h("li", { class: `step step-${state}`, "data-stage": s.id, "data-state": state },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "step-label" }, label),
      h("span", { class: "step-time muted small" }, isNum(start) && state !== "pending" && state !== "skipped" ? fmtTime(start) : state === "skipped" ? "skipped" : ""),
      h("span", { class: "step-duration small" }, when));
  });
  replace(el, items);
}
