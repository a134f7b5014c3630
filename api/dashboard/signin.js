/* Sign-in and sign-out: the key is checked with one request before it is kept. */

import { API, api, forgetKey, rememberKey } from "./api.js";
import { $, clear } from "./dom.js";
import { setPollStatus, stopPolling } from "./poll.js";

export function showSignin(message) {
  stopPolling();
  $("signin").hidden = false;
  clear($("view"));
  $("sign-out").hidden = true;
  $("whoami").textContent = "";
  setPollStatus("", "");
  const err = $("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("api-key").focus();
}

export function signOut(message) {
  forgetKey();
  showSignin(message);
}

/** The sign-in form's submit: on success the key is kept and ``then()`` shows the page. */
export async function signIn(event, then) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  if (!key) return;
  const button = $("signin-button");
  button.disabled = true;
  try {
    await api(`${API}/fine_tuning/jobs?limit=1`, { key });
    rememberKey(key);
    input.value = "";
    then();
  } catch (err) {
    const msg = err.status === 401
      ? `That key was not accepted: ${err.message}`
      : `Could not sign in: ${err.message}`;
    showSignin(msg);
  } finally {
    button.disabled = false;
  }
}
