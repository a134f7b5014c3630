/* The "New job" view (#/new): upload a file (upload.js), fill the job's form (jobform.js),
 * "Estimate" (POST /v1/fine_tuning/jobs?dry_run=true, shown by estimate.js), then "Create job"
 * (the same body, without dry_run), which opens the new job's page. "Create job" is enabled only
 * while the form still holds the values of the last estimate: any change asks for a new one.
 * The API's errors (400 with an OpenAI error object) show in the form with the field they name.
 */

import { API, api } from "./api.js";
import { $, h, replace } from "./dom.js";
import { renderEstimate } from "./estimate.js";
import { fillChoices, jobBody, jobFields, showRelevant } from "./jobform.js";
import { setPollStatus } from "./poll.js";
import { uploadCard } from "./upload.js";
import { FILE_STATUS } from "./vocab.js";

const JOBS = `${API}/fine_tuning/jobs`;

/** A random Idempotency-Key: a retried "Create job" of one estimate makes one job. */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dashboard-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

async function choices() {
  const [models, files] = await Promise.all([
    api(`${API}/models`),
    api(`${API}/files?purpose=fine-tune&limit=100`),
  ]);
  const valid = ((files.body && files.body.data) || []).filter((f) => f.status === FILE_STATUS.PROCESSED);
  return { models: (models.body && models.body.data) || [], files: valid };
}

/** Show the view; ``current()`` is false once the page has moved on to another view. */
export function showNewJob(current) {
  setPollStatus("", "");
  const formError = h("p", { id: "job-form-error", class: "error-text", role: "alert", hidden: true });
  const estimateButton = h("button", { class: "btn btn-light", id: "job-estimate", type: "submit" }, "Estimate");
  const createButton = h("button", { class: "btn", id: "job-create", type: "button", disabled: true }, "Create job");
  const form = h("form", { id: "job-form", class: "job-form", autocomplete: "off", novalidate: true },
    jobFields(), h("div", { class: "controls" }, estimateButton, createButton), formError);
  const estimateCard = h("section", { class: "card", id: "estimate", hidden: true },
    h("div", { class: "card-head" }, h("h2", null, "3. Estimate"),
      h("span", { class: "muted small", id: "estimate-note" })),
    h("div", { id: "estimate-body" }));
  let estimated = null; // { text: the estimated body as JSON, key: its Idempotency-Key }

  const refreshChoices = async (select) => {
    const { models, files } = await choices();
    if (!current()) return;
    fillChoices(form, models, files);
    if (select) form.querySelector("#job-training-file").value = select;
    formChanged();
  };
  const showError = (err) => {
    formError.hidden = false;
    formError.textContent = err.param ? `${err.message} (${err.param})` : err.message;
    formError.dataset.param = err.param || "";
  };
  function formChanged() {
    showRelevant(form);
    const fresh = estimated !== null && estimated.text === JSON.stringify(jobBody(form));
    createButton.disabled = !fresh;
    estimateCard.dataset.stale = String(estimated !== null && !fresh);
    $("estimate-note").textContent = estimated !== null && !fresh
      ? "The form changed since this estimate: estimate again to create the job." : "";
  }

  form.addEventListener("input", formChanged);
  form.addEventListener("change", formChanged);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = jobBody(form);
    estimateButton.disabled = true;
    formError.hidden = true;
    try {
      const answer = (await api(`${JOBS}?dry_run=true`, { method: "POST", json: body })).body;
      estimated = { text: JSON.stringify(body), key: idempotencyKey() };
      estimateCard.hidden = false;
      replace($("estimate-body"), renderEstimate(answer));
    } catch (err) {
      estimated = null;
      estimateCard.hidden = true;
      showError(err);
    } finally {
      estimateButton.disabled = false;
      formChanged();
    }
  });
  createButton.addEventListener("click", async () => {
    if (estimated === null) return;
    createButton.disabled = true;
    formError.hidden = true;
    try {
      const headers = { "Idempotency-Key": estimated.key };
      const job = (await api(JOBS, { method: "POST", json: JSON.parse(estimated.text), headers })).body;
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      showError(err);
      formChanged();
    }
  });

  replace($("view"),
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← All jobs")),
    uploadCard((file) => refreshChoices(file.id).catch(showError)),
    h("section", { class: "card", id: "new-job" },
      h("h2", null, "2. New fine-tuning job"),
      h("p", { class: "muted small" }, "Empty fields take the API's defaults (\"auto\" hyperparameters are resolved ",
        "from the training file). Estimate first: the job can be created once the estimate is for these values."),
      form),
    estimateCard);
  showRelevant(form);
  refreshChoices(null).catch(showError);
}
