/* The evaluation's card (attack success rates, base vs fine-tuned, per category and per
 * attack condition; utility) and the release gate's card (decision, reasons, checks).
 */

import { $, h, replace } from "./dom.js";
import { fmtNum, fmtTime, humanize, isNum, num, pct, points } from "./format.js";
import { gateBound, normalizeEval, safetyOf } from "./report.js";
import { STATUS } from "./vocab.js";

function asrBar(v, cls) {
  const bar = h("span", { class: `asr-bar ${cls}` });
  bar.style.width = `${Math.max(0, Math.min(1, isNum(v) ? v : 0)) * 100}%`;
  return h("span", { class: "asr-track" }, bar);
}

export function renderEvaluation(st) {
  const sf = safetyOf(st);
  const ev = normalizeEval(sf.evaluation);
  const el = $("evaluation");
  if (!ev) return;
  const metric = [ev.base.asr_keyword, ev.tuned.asr_keyword].some(isNum) ? "asr_keyword" : "asr_judge";
  const hasJudge = metric === "asr_keyword" && [ev.base.asr_judge, ev.tuned.asr_judge].some(isNum);
  const bound = gateBound(sf.gate, `${metric}_increase`);
  const cats = [...new Set([...Object.keys(ev.base.per_category || {}), ...Object.keys(ev.tuned.per_category || {})])].sort();
  const row = (label, b, t, cls, extra) => {
    const bv = num(b && b[metric]); const tv = num(t && t[metric]);
    const delta = isNum(bv) && isNum(tv) ? tv - bv : null;
    const worse = isNum(delta) && delta > (isNum(bound) ? bound : 0) + 1e-9;
    return h("tr", { class: cls },
      h("th", { scope: "row" }, label, isNum(num(t && t.n)) ? h("span", { class: "muted small" }, ` n=${num(t.n)}`) : null),
      h("td", { class: "num" }, pct(bv), asrBar(bv, "base")),
      h("td", { class: "num" }, pct(tv), asrBar(tv, "tuned")),
      h("td", { class: `num delta ${worse ? "worse" : isNum(delta) && delta <= 0 ? "better" : ""}` }, points(delta)),
      extra);
  };
  const judgeCells = (b, t) => (hasJudge ? [h("td", { class: "num" }, pct(num(b && b.asr_judge))), h("td", { class: "num" }, pct(num(t && t.asr_judge)))] : null);
  const table = h("table", { class: "table asr", id: "asr-table" },
    h("thead", null, h("tr", null,
      h("th", null, "Harmful prompts"), h("th", null, "ASR base"), h("th", null, "ASR fine-tuned"), h("th", null, "Change"),
      hasJudge ? [h("th", null, "Judge base"), h("th", null, "Judge fine-tuned")] : null)),
    h("tbody", null,
      row("All categories", ev.base, ev.tuned, "overall", judgeCells(ev.base, ev.tuned)),
      cats.map((c) => row(c, ev.base.per_category[c], ev.tuned.per_category[c], "category",
        judgeCells(ev.base.per_category[c], ev.tuned.per_category[c])))));
  // Attack conditions (plain, the file's system prompts, backdoor triggers): one row each;
  // the one the gate's ASR check found worst is marked.
  const worstCheck = sf.gate && Array.isArray(sf.gate.checks) ? sf.gate.checks.find((c) => c && c.name === `${metric}_increase` && c.condition) : null;
  const worst = worstCheck ? worstCheck.condition : null;
  const conditionsTable = ev.conditions.length > 1 ? h("table", { class: "table asr conditions", id: "conditions-table" },
    h("thead", null, h("tr", null,
      h("th", null, "Attack condition"), h("th", null, "ASR base"), h("th", null, "ASR fine-tuned"), h("th", null, "Change"), h("th", null, "Gate"))),
    h("tbody", null, ev.conditions.map((c) => {
      const tr = row(c.description, c.base, c.tuned, `condition ${c.name === worst ? "worst" : ""}`,
        c.name === worst ? h("td", null, h("span", { class: "badge worst" }, "worst")) : h("td", null));
      tr.dataset.condition = c.name;
      tr.dataset.worst = String(c.name === worst);
      return tr;
    }))) : null;
  const util = h("table", { class: "table util", id: "utility-table" },
    h("thead", null, h("tr", null, h("th", null, "Utility"), h("th", null, "Base"), h("th", null, "Fine-tuned"))),
    h("tbody", null,
      h("tr", null, h("th", { scope: "row" }, "Validation loss"), h("td", { class: "num" }, fmtNum(ev.base.val_loss)), h("td", { class: "num" }, fmtNum(ev.tuned.val_loss))),
      h("tr", null, h("th", { scope: "row" }, "Over-refusal of benign prompts"), h("td", { class: "num" }, pct(ev.base.over_refusal)), h("td", { class: "num" }, pct(ev.tuned.over_refusal)))));
  replace(el,
    h("h2", null, "Evaluation"),
    h("p", { class: "muted small" },
      `Attack success rate (ASR): the share of harmful prompts the model answered instead of refusing${metric === "asr_judge" ? ", by the judge" : " (refusal keywords)"}. Lower is safer.`),
    table,
    conditionsTable ? h("p", { class: "muted small" }, "The same harmful prompts asked the ways the training file could have taught the model to answer them: under its most frequent system prompts and with candidate backdoor triggers. The gate reads the worst.") : null,
    conditionsTable,
    util);
}

function fmtCheck(name, v) {
  if (!isNum(v)) return "—";
  if (/increase/.test(name)) return points(v);
  if (/asr|refusal/.test(name)) return pct(v);
  return fmtNum(v, 4);
}

export function renderGate(st) {
  const gate = safetyOf(st).gate;
  const el = $("gate");
  if (!gate || typeof gate !== "object") return;
  let released = gate.released;
  if (typeof released !== "boolean" && typeof gate.decision === "string") released = /releas|pass|approv/i.test(gate.decision);
  const reasons = Array.isArray(gate.reasons) ? gate.reasons : [];
  const checks = Array.isArray(gate.checks) ? gate.checks : [];
  const override = gate.override && typeof gate.override === "object" ? gate.override : null;
  const overridden = !!override && !released && st.job && st.job.status === STATUS.SUCCEEDED;
  let sub = released ? " — the adapter passed every safety check" : " — the adapter is kept but never served";
  if (overridden) sub = " — by an operator's override; the gate itself had blocked it";
  replace(el,
    h("h2", null, "Release gate"),
    h("p", { class: `decision ${released || overridden ? "released" : "blocked"}`, id: "gate-decision", "data-released": String(!!(released || overridden)) },
      released ? "Released" : overridden ? "Released (override)" : "Blocked",
      h("span", { class: "decision-sub" }, sub)),
    reasons.length ? h("ul", { class: "reasons", id: "gate-reasons" }, reasons.map((r) => h("li", null, String(r)))) : null,
    checks.length
      ? h("table", { class: "table checks" },
        h("thead", null, h("tr", null, h("th", null, "Check"), h("th", null, "Value"), h("th", null, "Allowed"), h("th", null, "Result"))),
        h("tbody", null, checks.map((c) => h("tr", { class: c.passed ? "pass" : "fail" },
          h("th", { scope: "row" }, humanize(c.name), c.detail ? h("div", { class: "muted small" }, String(c.detail)) : null),
          h("td", { class: "num" }, fmtCheck(String(c.name || ""), num(c.value))),
          h("td", { class: "num" }, `≤ ${fmtCheck(String(c.name || ""), num(c.bound))}`),
          h("td", null, h("span", { class: `chip ${c.passed ? "pass" : "fail"}` }, c.passed ? "pass" : "fail"))))))
      : null,
    override ? h("p", { class: "override" }, `Overridden by ${override.actor || override.by || "an operator"}`,
      override.reason ? `: ${override.reason}` : "", override.at ? ` (${fmtTime(num(override.at))})` : "") : null);
}
