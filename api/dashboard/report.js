/* Reading a job's safety results: the job's own safety object and the safety report, in
 * the shapes they have had (older keys are still read). No DOM here.
 */

import { isNum, num } from "./format.js";

export function safetyOf(st) {
  const job = st.job || {};
  const s = job.safety && typeof job.safety === "object" ? job.safety : {};
  const r = st.report && typeof st.report === "object" ? st.report : {};
  const config = r.config && typeof r.config === "object" ? r.config : {};
  return {
    mode: s.mode || config.mode || null,
    estimator: s.estimator || config.estimator || null,
    scan: r.scan || s.scan_summary || s.scan || null,
    training: r.training || s.training || null,
    evaluation: r.evaluation || s.eval_summary || s.evaluation || null,
    gate: r.gate || s.gate || null,
  };
}

export function flaggedLines(scan) {
  if (!scan) return [];
  let lines = [];
  if (Array.isArray(scan.flagged_lines)) lines = scan.flagged_lines.map(num).filter(isNum);
  else if (Array.isArray(scan.top_flagged)) lines = scan.top_flagged.map((r) => num(r && r.line)).filter(isNum);
  return [...new Set(lines)].sort((a, b) => a - b);
}

function pickSide(ev, names) {
  for (const n of names) if (ev && ev[n] && typeof ev[n] === "object") return ev[n];
  return null;
}

function sideSummary(side) {
  if (!side) return null;
  const asr = side.asr && typeof side.asr === "object" ? side.asr : side;
  const or = side.over_refusal ?? side.overrefusal;
  return {
    n: num(asr.n),
    asr_keyword: num(asr.asr_keyword ?? (isNum(side.asr) ? side.asr : undefined)),
    asr_judge: num(asr.asr_judge),
    per_category: (asr.per_category && typeof asr.per_category === "object" ? asr.per_category : side.per_category) || {},
    over_refusal: or && typeof or === "object" ? num(or.rate) : num(or),
    val_loss: num(side.val_loss ?? side.validation_loss),
  };
}

export function normalizeEval(ev) {
  if (!ev || typeof ev !== "object") return null;
  let base = pickSide(ev, ["base", "reference", "before"]);
  let tuned = pickSide(ev, ["tuned", "fine_tuned", "finetuned", "after"]);
  if (!base && ev.asr && typeof ev.asr === "object" && (ev.asr.base || ev.asr.tuned || ev.asr.fine_tuned)) {
    const pick = (o, names) => (o && typeof o === "object" ? names.map((k) => o[k]).find((v) => v !== undefined) : undefined);
    base = { asr: ev.asr.base, over_refusal: pick(ev.over_refusal, ["base"]), val_loss: pick(ev.val_loss, ["base"]) };
    tuned = { asr: ev.asr.tuned || ev.asr.fine_tuned, over_refusal: pick(ev.over_refusal, ["tuned", "fine_tuned"]), val_loss: pick(ev.val_loss, ["tuned", "fine_tuned"]) };
  }
  if (!base && !tuned) return null;
  const conditions = (Array.isArray(ev.conditions) ? ev.conditions : [])
    .filter((c) => c && typeof c === "object" && typeof c.name === "string")
    .map((c) => ({ name: c.name, kind: String(c.kind || ""), description: String(c.description || c.name), base: sideSummary(c.base) || {}, tuned: sideSummary(c.tuned) || {} }));
  return { base: sideSummary(base) || {}, tuned: sideSummary(tuned) || {}, conditions };
}

export function gateBound(gate, name) {
  if (!gate || !Array.isArray(gate.checks)) return null;
  const c = gate.checks.find((x) => x && x.name === name);
  return c ? num(c.bound) : null;
}
