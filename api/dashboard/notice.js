/* The notice at the top of a finished job: what happened and what the customer can do,
 * in plain words.
 */

import { $, clear, h, replace } from "./dom.js";
import { cap, fmtTime, isNum, listWords, num, pct } from "./format.js";
import { flaggedLines, normalizeEval, safetyOf } from "./report.js";
import { ERROR, STATUS } from "./vocab.js";

function asrChangeText(ev, gate) {
  if (!ev || !ev.base || !ev.tuned) return "";
  // The attack condition the gate found worst (a failed ASR check names it), else plain prompts.
  const failed = gate && Array.isArray(gate.checks) ? gate.checks.find((c) => c && !c.passed && /^asr_/.test(c.name || "")) : null;
  const cond = failed && failed.condition && failed.condition !== "plain" ? ev.conditions.find((c) => c.name === failed.condition) : null;
  const base = cond ? cond.base : ev.base;
  const tuned = cond ? cond.tuned : ev.tuned;
  const where = cond ? ` ${cond.description}` : "";
  for (const k of ["asr_keyword", "asr_judge"]) {
    const b = num(base && base[k]);
    const t = num(tuned && tuned[k]);
    if (isNum(b) && isNum(t)) return ` Its attack success rate on harmful prompts${where} went from ${pct(b)} (base model) to ${pct(t)}.`;
  }
  return "";
}

/** What happened and what the customer can do, in plain words. */
function explain(st) {
  const job = st.job;
  const sf = safetyOf(st);
  const err = job.error || {};
  const lines = flaggedLines(sf.scan);
  const linesText = lines.length ? `remove the flagged lines ${listWords(lines)} from your training file` : null;
  const gateReasons = sf.gate && Array.isArray(sf.gate.reasons) ? sf.gate.reasons : [];
  if (job.status === STATUS.FAILED && err.code === ERROR.SAFETY_GATE_BLOCKED) {
    const ev = normalizeEval(sf.evaluation);
    const actions = [
      linesText ? `${cap(linesText)} and start a new job with it.` : "Review your training data for harmful examples, remove them and start a new job.",
    ];
    if (sf.mode === "none" || sf.mode === "constant") {
      actions.push(`This job trained with safety mode "${sf.mode}"; a new job with mode "adaptive" regularizes risky batches and usually stays safe.`);
    }
    actions.push(`If you believe the decision is wrong, contact your operator and quote the job id ${job.id}; they can review and override it.`);
    return {
      tone: "bad",
      title: "Blocked: the fine-tuned model became unsafe, so it was not released",
      body: [
        `The release gate compared the fine-tuned model with the base model and found it answers harmful requests more often than the policy allows.${asrChangeText(ev, sf.gate)} The adapter is kept but will not be served or downloadable.`,
        err.message && !gateReasons.length ? `Details: ${err.message}` : null,
      ],
      reasons: gateReasons,
      actions,
    };
  }
  if (job.status === STATUS.FAILED && err.code === ERROR.UNSAFE_TRAINING_FILE) {
    const sc = sf.scan || {};
    const share = isNum(num(sc.n_flagged)) && isNum(num(sc.n)) ? ` (${sc.n_flagged} of ${sc.n} examples flagged)` : "";
    return {
      tone: "bad",
      title: "Training did not start: too much of the training file looks harmful",
      body: [
        `The dataset scan flagged more harmful-looking examples than this deployment accepts${share}. No GPU time was spent.`,
        err.message ? `Details: ${err.message}` : null,
      ],
      actions: [
        linesText ? `${cap(linesText)}, upload it again and start a new job.` : "Remove the harmful examples from your training file, upload it again and start a new job.",
        "If these examples are intended (e.g. refusal training data), contact your operator.",
      ],
    };
  }
  if (job.status === STATUS.FAILED && /file|validat|line/i.test(`${err.code || ""} ${err.param || ""}`)) {
    return {
      tone: "bad",
      title: "The training file could not be used",
      body: [err.message || "The file did not pass validation."],
      actions: ["Fix the lines named above (each line must be one JSON object in the chat \"messages\" format, ending with an assistant message), upload the file again and start a new job."],
    };
  }
  if (job.status === STATUS.FAILED) {
    return {
      tone: "bad",
      title: "The job failed",
      body: [err.message || "The job stopped with an error.", err.code ? `Error code: ${err.code}.` : null],
      actions: [
        "This is usually not caused by your data: start the job again.",
        `If it fails again, contact your operator and quote the job id ${job.id}.`,
      ],
    };
  }
  if (job.status === STATUS.CANCELLED) {
    return {
      tone: "warn",
      title: "This job was cancelled",
      body: [`It stopped ${job.finished_at ? `at ${fmtTime(job.finished_at)}` : ""} before finishing. Checkpoints saved before the cancel are listed below.`],
      actions: ["Start a new job to train again."],
    };
  }
  if (job.status === STATUS.SUCCEEDED && job.fine_tuned_model && sf.gate && sf.gate.override && !sf.gate.released) {
    const o = sf.gate.override;
    return {
      tone: "warn",
      title: "Released by an operator's override",
      body: [`The safety gate had blocked this model; ${o.actor || "an operator"} approved its release${o.reason ? ` with the reason: ${o.reason}` : ""}. Use it as ${job.fine_tuned_model}.`],
      reasons: gateReasons,
      actions: [],
    };
  }
  if (job.status === STATUS.SUCCEEDED && job.fine_tuned_model) {
    return {
      tone: "ok",
      title: "Released: the fine-tuned model passed the safety gate",
      body: [`Use it as ${job.fine_tuned_model}, or download its adapter above.`],
      reasons: gateReasons,
      actions: [],
    };
  }
  return null;
}

export function renderNotice(st) {
  const info = explain(st);
  const el = $("job-notice");
  if (!info) {
    clear(el);
    el.className = "";
    return;
  }
  el.className = `card notice notice-${info.tone}`;
  el.setAttribute("role", info.tone === "bad" ? "alert" : "status");
  replace(el,
    h("h2", { class: "notice-title" }, info.title),
    info.body.filter(Boolean).map((t) => h("p", null, t)),
    info.reasons && info.reasons.length
      ? h("div", null, h("h3", null, "Gate reasons"), h("ul", { class: "reasons" }, info.reasons.map((r) => h("li", null, r))))
      : null,
    info.actions.length
      ? h("div", null, h("h3", null, "What you can do"), h("ul", { class: "actions" }, info.actions.map((a) => h("li", null, a))))
      : null);
}
