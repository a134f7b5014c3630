/* The new-job view's upload card: a JSONL file picked here goes to POST /v1/files (purpose
 * fine-tune) with the page's key. A file the API finds invalid (status "error") is shown with
 * its errors by line, as the API words them in ``status_details``, and is deleted at once:
 * only valid files stay uploaded. A refused upload (413, 415, 409 quota, 429) shows the API's
 * message; nothing was stored.
 */

import { API, api } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtBytes } from "./format.js";
import { FILE_STATUS } from "./vocab.js";

const LINE_ERROR = /^line (\d+): (.*)$/s;

/** ``status_details`` as { head, issues: [{ line, message }] } (line null: a whole-file problem). */
function parseDetails(details) {
  const [head, ...rest] = String(details || "").split("\n");
  const issues = rest.filter((text) => text.trim() !== "").map((text) => {
    const m = text.match(LINE_ERROR);
    return m ? { line: Number(m[1]), message: m[2] } : { line: null, message: text };
  });
  return { head, issues };
}

function errorList(file, deleted) {
  const { head, issues } = parseDetails(file.status_details);
  return h("div", { class: "notice notice-bad upload-errors", id: "upload-errors", role: "alert" },
    h("p", { class: "notice-title" }, h("strong", null, `${file.filename} is not a valid training file. `), head),
    h("ol", { id: "upload-error-lines", class: "error-lines" },
      issues.map((issue) => h("li", { "data-line": issue.line ?? "" },
        issue.line !== null ? h("strong", null, `line ${issue.line}`) : null,
        issue.line !== null ? ": " : "",
        issue.message))),
    h("p", { class: "small muted" }, deleted
      ? "Nothing was kept: the file was deleted. Fix these lines and upload it again."
      : `The file could not be deleted (${file.id}); delete it with DELETE /v1/files/${file.id}.`));
}

/**
 * The upload card. ``onUploaded(file)`` is called with the API's file object of each valid
 * upload (the form lists it as the training file).
 */
export function uploadCard(onUploaded) {
  const input = h("input", { id: "upload-file", type: "file", accept: ".jsonl,.json,application/jsonl" });
  const button = h("button", { class: "btn", id: "upload-button", type: "submit" }, "Upload");
  const message = h("p", { id: "upload-msg", class: "small", "aria-live": "polite" });
  const errors = h("div", { id: "upload-result" });
  const form = h("form", { id: "upload-form", class: "upload-form", autocomplete: "off" },
    h("label", { for: "upload-file" }, "JSONL file (chat, prompt/completion or preference pairs)"), input, button);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const picked = input.files && input.files[0];
    if (!picked) {
      message.textContent = "Pick a .jsonl file first.";
      message.dataset.state = "failed";
      return;
    }
    const body = new FormData();
    body.append("purpose", "fine-tune");
    body.append("file", picked, picked.name);
    button.disabled = true;
    replace(errors);
    message.dataset.state = "";
    message.textContent = `Uploading ${picked.name} (${fmtBytes(picked.size)}) and validating it…`;
    try {
      const file = (await api(`${API}/files`, { method: "POST", form: body })).body;
      if (file.status === FILE_STATUS.PROCESSED) {
        message.textContent = `Uploaded ${file.filename} as ${file.id} (${fmtBytes(file.bytes)}): valid.`;
        message.dataset.state = "ok";
        onUploaded(file);
        return;
      }
      let deleted = true;
      try {
        await api(`${API}/files/${encodeURIComponent(file.id)}`, { method: "DELETE" });
      } catch (err) {
        deleted = false;
      }
      message.textContent = "";
      message.dataset.state = "failed";
      replace(errors, errorList(file, deleted));
    } catch (err) {
      message.textContent = `Upload refused: ${err.message}`;
      message.dataset.state = "failed";
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", id: "upload" },
    h("h2", null, "1. Upload training data"),
    h("p", { class: "muted small" }, "The file is validated line by line as it arrives. ",
      "An invalid file is not kept: its errors show here by line."),
    form, message, errors);
}
