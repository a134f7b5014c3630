/* A ``fine_tuning.job.estimate`` (POST /v1/fine_tuning/jobs?dry_run=true) as the new-job view
 * shows it: examples, tokens, steps and the expected wall time, the hyperparameters as the job
 * would resolve them, and the expected seconds of each pipeline stage. Each number's element
 * carries the API's value as ``data-value`` (what the browser tests compare with the API).
 */

import { h } from "./dom.js";
import { fmtDuration, fmtNum, humanize, isNum } from "./format.js";

function kv(name, label, value, shown) {
  return h("div", { class: "kv" },
    h("dt", null, label),
    h("dd", { "data-field": name, "data-value": value === null || value === undefined ? "" : JSON.stringify(value) }, shown));
}

const seconds = (s) => (isNum(s) ? fmtDuration(s) || "under a second" : "not measured yet");

/** The estimate card's content. */
export function renderEstimate(est) {
  const hp = est.hyperparameters || {};
  const stages = Object.entries(est.stages || {});
  return [
    h("dl", { class: "kvs", id: "estimate-numbers" },
      kv("examples", "Examples", est.examples, fmtNum(est.examples)),
      kv("tokens", "Tokens trained", est.tokens, fmtNum(est.tokens)),
      kv("steps", "Optimizer steps", est.steps, fmtNum(est.steps)),
      kv("estimated_seconds", "Expected wall time", est.estimated_seconds, seconds(est.estimated_seconds)),
      kv("tokens_per_second", "Measured throughput", est.tokens_per_second,
        isNum(est.tokens_per_second)
          ? `${fmtNum(est.tokens_per_second)} tokens/s (median of ${est.measured_training_runs} training runs)`
          : "no training measured on this deployment yet"),
      Object.entries(hp).filter(([, v]) => v !== null && v !== undefined).map(([name, v]) =>
        kv(`hyperparameters.${name}`, humanize(name), v, typeof v === "number" ? fmtNum(v) : String(v)))),
    stages.length
      ? h("table", { class: "table stages", id: "estimate-stages" },
        h("thead", null, h("tr", null, h("th", null, "Stage"), h("th", { class: "num" }, "Expected"))),
        h("tbody", null, stages.map(([stage, s]) => h("tr", { "data-stage": stage },
          h("td", null, humanize(stage)),
          h("td", { class: "num", "data-value": s === null ? "" : JSON.stringify(s) }, seconds(s))))))
      : null,
    isNum(est.estimated_seconds)
      ? null
      : h("p", { class: "small muted" },
        "The wall time shows once every stage has run on this deployment's workers; until then each stage "
        + "without a measurement says so."),
  ];
}
