/* What a released job's header offers: download the adapter, and "Try it". */

import { API, currentKey } from "./api.js";
import { h } from "./dom.js";
import { fmtBytes } from "./format.js";

/**
 * "Try it": one chat message to the released model (greedy, the server's max_tokens). Built once per job
 * page and moved between re-renders, so typed text survives polling; the answer is
 * shown as text only.
 */
export function tryIt(st, model) {
  if (st.tryIt && st.tryIt.model === model) return st.tryIt.el;
  const input = h("textarea", { id: "try-prompt", rows: "2", maxlength: "4000",
    placeholder: "Send one message to your model" });
  const button = h("button", { class: "btn", type: "submit", id: "try-send" }, "Send");
  const answer = h("pre", { class: "try-answer", id: "try-answer", "aria-live": "polite" });
  const form = h("form", { class: "try-it", id: "try-it" },
    h("label", { for: "try-prompt" }, "Try it"), input, button, answer);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    button.disabled = true;
    answer.textContent = "Generating…";
    answer.removeAttribute("data-state");
    try {
      const res = await fetch(`${API}/chat/completions`, {
        method: "POST", cache: "no-store", credentials: "omit",
        headers: { Authorization: `Bearer ${currentKey()}`, "Content-Type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: text }], temperature: 0 }),
      });
      let body = null;
      try { body = await res.json(); } catch (err) { /* not JSON */ }
      if (!res.ok) throw new Error((body && body.error && body.error.message) || `The server answered ${res.status}.`);
      answer.textContent = body.choices[0].message.content || "(an empty answer)";
      answer.setAttribute("data-state", "answered");
    } catch (err) {
      answer.textContent = `Failed: ${err.message}`;
      answer.setAttribute("data-state", "failed");
    } finally {
      button.disabled = false;
    }
  });
  st.tryIt = { model, el: form };
  return form;
}

export function adapterDownload(job) {
  const msg = h("span", { class: "muted small", id: "adapter-msg" });
  const button = h("button", { class: "btn", type: "button", id: "adapter-download" }, "Download adapter");
  button.addEventListener("click", async () => {
    button.disabled = true;
    msg.textContent = "Downloading…";
    try {
      const res = await fetch(`${API}/models/${encodeURIComponent(job.fine_tuned_model)}/adapter`, {
        headers: { Authorization: `Bearer ${currentKey()}` }, cache: "no-store", credentials: "omit",
      });
      if (!res.ok) {
        let m = `The server answered ${res.status}.`;
        try { m = (await res.json()).error.message || m; } catch (err) { /* not JSON */ }
        throw new Error(m);
      }
      const blob = await res.blob();
      const name = downloadName(res, job.fine_tuned_model);
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      msg.textContent = `Saved ${name} (${fmtBytes(blob.size)}).`;
    } catch (err) {
      msg.textContent = `Download failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return h("div", { class: "download" }, button, " ", msg,
    h("p", { class: "muted small" }, "A PEFT LoRA adapter: load it with PeftModel.from_pretrained on the base model."));
}

function downloadName(res, model) {
  const cd = res.headers.get("Content-Disposition") || "";
  let m = cd.match(/filename\*=UTF-8''([^;]+)/i);
  let name = null;
  if (m) {
    try { name = decodeURIComponent(m[1]); } catch (err) { name = null; }
  }
  if (!name && (m = cd.match(/filename="?([^";]+)"?/i))) name = m[1];
  if (!name) {
    const type = res.headers.get("Content-Type") || "";
    const ext = type.includes("zip") ? ".zip" : type.includes("gzip") || type.includes("tar") ? ".tar.gz"
      : type.includes("json") ? ".json" : ".bin";
    name = `${model}-adapter${ext}`;
  }
  return name.replace(/[^A-Za-z0-9._-]+/g, "_");
}
