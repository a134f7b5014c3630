/* A job's status and stage as the page shows them (the timeline's steps, the chips); the ids come from vocab.js. */

import { h } from "./dom.js";
import { humanize } from "./format.js";
import { ERROR, STATUS, STAGE, STAGES as JOB_STAGES, TERMINAL } from "./vocab.js";

// The timeline's pseudo-stage after the pipeline: the job's outcome.
export const RESULT = "result";
// Display labels (ids from vocab.js); an id without one is humanized.
const LABELS = {
  [STATUS.VALIDATING_FILES]: "Validating files",
  [STATUS.QUEUED]: "Queued",
  [STAGE.SCANNING]: "Scanning data",
  [STAGE.TRAINING]: "Training",
  [STAGE.EVALUATING]: "Evaluating",
  [STAGE.GATING]: "Safety gate",
  [RESULT]: "Result",
};
// The timeline: the statuses before a job runs, its stages in pipeline order, its result.
export const STAGES = [STATUS.VALIDATING_FILES, STATUS.QUEUED, ...JOB_STAGES, RESULT].map((id) => ({ id, label: LABELS[id] || humanize(id) }));
export const STAGE_INDEX = Object.fromEntries(STAGES.map((s, i) => [s.id, i]));

// The statuses of a job that sits in a pipeline stage: running it, or paused in it.
const IN_A_STAGE = new Set([STATUS.RUNNING, STATUS.PAUSED]);

export function jobStage(job) {
  if (!job) return null;
  if (TERMINAL.has(job.status)) return RESULT;
  const safety = job.safety || {};
  if (IN_A_STAGE.has(job.status)) return safety.stage || job.stage || STAGE.TRAINING;
  return job.status;
}

export function statusChip(status) {
  return h("span", { class: `chip status status-${String(status || "unknown").replace(/[^a-z_]/g, "")}`, "data-role": "status", "data-status": status || "unknown" }, humanize(status || "unknown"));
}

export function stageChip(job) {
  const safety = job.safety || {};
  const stage = IN_A_STAGE.has(job.status) ? safety.stage || job.stage : null;
  if (!stage) return h("span", { class: "chip stage stage-none", "data-role": "stage" }, "—");
  return h("span", { class: "chip stage", "data-role": "stage", "data-stage": stage }, humanize(stage));
}

export function resultChip(job) {
  const word = resultWord(job);
  const tone = job.status === STATUS.SUCCEEDED ? "pass" : job.status === STATUS.CANCELLED ? "warn" : "fail";
  return h("span", { class: `chip result ${tone}`, "data-role": "result" }, word);
}

export function resultWord(job) {
  if (job.status === STATUS.SUCCEEDED) return job.fine_tuned_model ? "Released" : "Succeeded";
  if (job.status === STATUS.CANCELLED) return "Cancelled";
  if (job.status === STATUS.FAILED) {
    const code = job.error && job.error.code;
    if (code === ERROR.SAFETY_GATE_BLOCKED) return "Blocked by gate";
    if (code === ERROR.UNSAFE_TRAINING_FILE) return "Data refused";
    return "Failed";
  }
  return "Result";
}
