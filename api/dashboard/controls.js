/* A job's controls in its header: Pause (a running job), Resume (a paused one) and Cancel (any
 * unfinished one), each a POST to the job's endpoint. The outcome, or the API's error message
 * (say, 409 "still pausing" while the worker saves its checkpoint), shows beside the buttons,
 * and the page polls at once.
 */

import { api, forgetAnswer, jobPath } from "./api.js";
import { h } from "./dom.js";
import { STATUS, TERMINAL } from "./vocab.js";

const ACTIONS = [
  {
    action: "pause",
    label: "Pause",
    when: (status) => status === STATUS.RUNNING,
    done: "Pausing: training stops at its next step, saves a checkpoint and frees its worker.",
  },
  {
    action: "resume",
    label: "Resume",
    when: (status) => status === STATUS.PAUSED,
    done: "Resumed: the job is queued and continues from its last checkpoint.",
  },
  {
    action: "cancel",
    label: "Cancel job",
    when: (status) => !TERMINAL.has(status),
    confirm: "Cancel this job? Training stops and the job cannot be resumed; saved checkpoints stay listed.",
    done: "Cancelled.",
  },
];

/**
 * The buttons for ``st.job``'s status (null when it has none: a finished job) and one message
 * line kept on ``st`` across re-renders; ``refresh()`` is called after every click's answer.
 */
export function jobControls(st, refresh) {
  const actions = ACTIONS.filter((a) => a.when(st.job.status));
  if (!actions.length) return null;
  if (!st.controlMessage) st.controlMessage = h("span", { class: "small", id: "job-control-msg", "aria-live": "polite" });
  const message = st.controlMessage;
  const buttons = actions.map((a) => h("button",
    { class: `btn btn-light${a.confirm ? " btn-danger" : ""}`, type: "button", id: `job-${a.action}` }, a.label));
  actions.forEach((a, i) => buttons[i].addEventListener("click", async () => {
    if (a.confirm && !window.confirm(a.confirm)) return;
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api(jobPath(st.id, `/${a.action}`), { method: "POST" });
      message.textContent = a.done;
      message.dataset.state = "ok";
    } catch (err) {
      message.textContent = err.message;
      message.dataset.state = "failed";
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      forgetAnswer(jobPath(st.id));
      refresh();
    }
  }));
  return h("div", { class: "controls", id: "job-controls" }, buttons, " ", message);
}
