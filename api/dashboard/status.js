/* A job's status and stage: the pipeline's stages as the page shows them, and the chips. */

import { h } from "./dom.js";
import { humanize } from "./format.js";

export const STAGES = [
  { id: "validating_files", label: "Validating files" },
  { id: "queued", label: "Queued" },
  { id: "scanning", label: "Scanning data" },
  { id: "training", label: "Training" },
  { id: "evaluating", label: "Evaluating" },
  { id: "gating", label: "Safety gate" },
  { id: "result", label: "Result" },
];
export const STAGE_INDEX = Object.fromEntries(STAGES.map((s, i) => [s.id, i]));
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function jobStage(job) {
  if (!job) return null;
  if (TERMINAL.has(job.status)) return "result";
  const safety = job.safety || {};
  if (job.status === "running") return safety.stage || job.stage || "training";
  return job.status;
}

export function statusChip(status) {
  return h("span", { class: `chip status status-${String(status || "unknown").replace(/[^a-z_]/g, "")}`, "data-role": "status", "data-status": status || "unknown" }, humanize(status || "unknown"));
}

export function stageChip(job) {
  const safety = job.safety || {};
  const stage = job.status === "running" ? safety.stage || job.stage : null;
  if (!stage) return h("span", { class: "chip stage stage-none", "data-role": "stage" }, "—");
  return h("span", { class: "chip stage", "data-role": "stage", "data-stage": stage }, humanize(stage));
}

export function resultChip(job) {
  const word = resultWord(job);
  const tone = job.status === "succeeded" ? "pass" : job.status === "cancelled" ? "warn" : "fail";
  return h("span", { class: `chip result ${tone}`, "data-role": "result" }, word);
}

export function resultWord(job) {
  if (job.status === "succeeded") return job.fine_tuned_model ? "Released" : "Succeeded";
  if (job.status === "cancelled") return "Cancelled";
  if (job.status === "failed") {
    const code = job.error && job.error.code;
    if (code === "safety_gate_blocked") return "Blocked by gate";
    if (code === "unsafe_training_file") return "Data refused";
    return "Failed";
  }
  return "Result";
}
