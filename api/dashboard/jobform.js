/* The new job's form: its fields (model, files, method, hyperparameters, suffix, seed and the
 * safety options of POST /v1/fine_tuning/jobs) and ``jobBody()``, the request body they make.
 * The page checks nothing the API checks: a value is sent as typed (a number when it reads as
 * one) and the API's 400 names what is wrong. Empty optional fields are left out, empty
 * hyperparameters are "auto", so the API's defaults apply.
 */

import { h } from "./dom.js";
import { humanize } from "./format.js";
import { RANGES, SAFETY } from "./vocab.js";

const METHODS = ["supervised", "dpo"];
const ADAPTIVE = "adaptive";
const CONSTANT = "constant";
const NONE = "none";
const HYPERPARAMETERS = ["n_epochs", "batch_size", "learning_rate_multiplier"];
const OPERATOR_DEFAULT = "";
// The fields some choices have no use for: shown, and sent, only when their test holds.
const RELEVANT = {
  "hp-beta": (method) => method === "dpo",
  "safety-kl-min": (method, mode) => mode === ADAPTIVE,
  "safety-kl-max": (method, mode) => mode === ADAPTIVE,
  "safety-risk-weighting": (method, mode) => mode === ADAPTIVE,
  "safety-constant-kl": (method, mode) => mode === CONSTANT,
  "safety-reference": (method, mode) => mode !== NONE,
};

function field(id, label, control, hint) {
  return h("div", { class: "field", "data-field": id },
    h("label", { for: id }, label), control, hint ? h("span", { class: "hint" }, hint) : null);
}

function select(id, options, { blank } = {}) {
  return h("select", { id, name: id },
    blank ? h("option", { value: OPERATOR_DEFAULT }, blank) : null,
    options.map(([value, label]) => h("option", { value }, label)));
}

const text = (id, placeholder) => h("input", { id, name: id, type: "text", placeholder, spellcheck: "false", autocomplete: "off" });
const choices = (values) => values.map((v) => [v, humanize(v)]);
const range = (name) => `auto, or ${RANGES[name][0]}–${RANGES[name][1]}`;

/** The form's fieldsets; the model and file selects are filled by ``fillChoices``. */
export function jobFields() {
  return [
    h("fieldset", null, h("legend", null, "Model and data"),
      field("job-model", "Base model", select("job-model", [])),
      field("job-training-file", "Training file", select("job-training-file", [])),
      field("job-validation-file", "Validation file", select("job-validation-file", [], { blank: "none" })),
      field("job-method", "Method", select("job-method", METHODS.map((m) => [m, m === "dpo" ? "dpo (preference pairs)" : m])))),
    h("fieldset", null, h("legend", null, "Hyperparameters"),
      HYPERPARAMETERS.map((name) => field(`hp-${name}`, humanize(name), text(`hp-${name}`, "auto"), range(name))),
      field("hp-beta", "beta (dpo)", text("hp-beta", "auto"), range("beta")),
      field("job-suffix", "Suffix", text("job-suffix", "optional"), "in the model's name: A-Z a-z 0-9 . _ -"),
      field("job-seed", "Seed", text("job-seed", "random"))),
    h("fieldset", null, h("legend", null, "Safety"),
      field("safety-mode", "Mode", select("safety-mode", choices(SAFETY.mode)),
        "adaptive: KL weight from each example's risk; constant: one KL weight; none: plain fine-tuning"),
      field("safety-estimator", "Risk estimator", select("safety-estimator", choices(SAFETY.estimator))),
      field("safety-kl-min", "KL weight min", text("safety-kl-min", "operator's"), "0–1, adaptive"),
      field("safety-kl-max", "KL weight max", text("safety-kl-max", "operator's"), "0–1, adaptive"),
      field("safety-constant-kl", "Constant KL weight", text("safety-constant-kl", "default"), "0–1, constant"),
      field("safety-risk-weighting", "Risk weighting",
        select("safety-risk-weighting", choices(SAFETY.risk_weighting), { blank: "operator's default" })),
      field("safety-reference", "Reference",
        select("safety-reference", choices(SAFETY.reference), { blank: "operator's default" })),
      field("safety-max-flagged", "Max flagged fraction", text("safety-max-flagged", "operator's"),
        "fail the job when the scan flags more (0–1)")),
  ];
}

/** Fill the model and file selects (keeping a still-listed choice). */
export function fillChoices(form, models, files) {
  const label = (f) => `${f.filename} · ${f.id}`;
  const refill = (id, options, blank) => {
    const el = form.querySelector(`#${id}`);
    const was = el.value;
    el.replaceChildren(...(blank ? [h("option", { value: "" }, blank)] : []),
      ...options.map(([value, name]) => h("option", { value }, name)));
    if (options.some(([value]) => value === was)) el.value = was;
  };
  refill("job-model", models.map((m) => [m.id, m.id]));
  refill("job-training-file", files.map((f) => [f.id, label(f)]));
  refill("job-validation-file", files.map((f) => [f.id, label(f)]), "none");
}

/** A typed value: "" stays "" (absent), a numeral becomes its number, anything else is sent as is. */
function typed(value) {
  const v = value.trim();
  return v !== "" && Number.isFinite(Number(v)) ? Number(v) : v;
}

/** The request body of the form's current values (a hidden field's value is not sent). */
export function jobBody(form) {
  const value = (id) => (form.querySelector(`[data-field="${id}"]`).hidden ? "" : form.querySelector(`#${id}`).value);
  const method = value("job-method");
  const hyperparameters = {};
  for (const name of [...HYPERPARAMETERS, "beta"]) {
    if (form.querySelector(`[data-field="hp-${name}"]`).hidden) continue;
    const v = typed(value(`hp-${name}`));
    hyperparameters[name] = v === "" ? "auto" : v;
  }
  const body = {
    model: value("job-model"),
    training_file: value("job-training-file"),
    method: { type: method, [method]: { hyperparameters } },
  };
  if (value("job-validation-file")) body.validation_file = value("job-validation-file");
  if (value("job-suffix").trim()) body.suffix = value("job-suffix").trim();
  if (value("job-seed").trim()) body.seed = typed(value("job-seed"));

  const mode = value("safety-mode");
  const safety = { mode, estimator: value("safety-estimator") };
  const klMin = typed(value("safety-kl-min"));
  const klMax = typed(value("safety-kl-max"));
  if (klMin !== "" || klMax !== "") safety.kl_weight = { min: klMin, max: klMax };
  const constant = typed(value("safety-constant-kl"));
  if (constant !== "") safety.constant_kl_weight = constant;
  for (const [id, key] of [["safety-risk-weighting", "risk_weighting"], ["safety-reference", "reference"]]) {
    if (value(id) !== OPERATOR_DEFAULT) safety[key] = value(id);
  }
  const flagged = typed(value("safety-max-flagged"));
  if (flagged !== "") safety.max_flagged_fraction = flagged;
  body.safety = safety;
  return body;
}

/** Show only the fields the chosen method and safety mode use (beta: dpo; KL bounds: adaptive; …). */
export function showRelevant(form) {
  const method = form.querySelector("#job-method").value;
  const mode = form.querySelector("#safety-mode").value;
  for (const [id, when] of Object.entries(RELEVANT)) {
    form.querySelector(`[data-field="${id}"]`).hidden = !when(method, mode);
  }
}
