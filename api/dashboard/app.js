/* guardtune dashboard: plain JS as ES modules, no build step, no external assets.
 *
 * This module starts the page and routes between its three views: the job list (#/,
 * joblist.js), a job's page (#/jobs/<id>, jobpage.js) and the new-job view (#/new, newjob.js:
 * upload.js, jobform.js, estimate.js). The other modules: dom.js (the
 * only way text reaches the DOM: never as markup), format.js, api.js (the key and
 * conditional GETs), poll.js, signin.js, status.js and timeline.js (stages), report.js
 * (reading the safety results), notice.js, charts.js, scan.js, evaluation.js (and the gate),
 * released.js (adapter download, "Try it").
 */

import { currentKey } from "./api.js";
import { $ } from "./dom.js";
import { showJob } from "./jobpage.js";
import { showList } from "./joblist.js";
import { showNewJob } from "./newjob.js";
import { onUnauthorized, stopPolling } from "./poll.js";
import { showSignin, signIn, signOut } from "./signin.js";

// Incremented on every route: a view's poller stops once its view is no longer current.
let viewToken = 0;

function route() {
  stopPolling();
  const token = (viewToken += 1);
  const current = () => token === viewToken;
  if (!currentKey()) {
    showSignin();
    return;
  }
  $("signin").hidden = true;
  $("sign-out").hidden = false;
  $("whoami").textContent = `key ${currentKey().slice(0, 10)}…`;
  const m = (location.hash || "").match(/^#\/jobs\/([^/?#]+)/);
  if (m) showJob(decodeURIComponent(m[1]), current);
  else if (location.hash === "#/new") showNewJob(current);
  else showList(current);
}

onUnauthorized(signOut);

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => signIn(event, route));
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  route();
});
