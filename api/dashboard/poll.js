/* Polling: a Poller calls its tick repeatedly, slower while nothing changes. Each GET of a
 * job, its events, its safety report and checkpoints is conditional (api.js); the delay grows
 * from 2 s to 10 s while nothing changes, returns to 2 s on a change, and polling stops once
 * the job is terminal (after one last full fetch). One poller runs at a time: the view's.
 */

import { $ } from "./dom.js";

const POLL_MIN_MS = 2000;
export const POLL_MAX_MS = 10000;

// Called with a message when the key is refused (401) while polling: app.js signs out.
let unauthorized = () => {};

/** Set what a 401 while polling does. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * Calls tick() repeatedly. tick returns { changed, done }. The delay starts at min,
 * grows 1.5x per unchanged tick up to max, resets on a change; done stops it.
 */
export class Poller {
  constructor(tick, { min = POLL_MIN_MS, max = POLL_MAX_MS } = {}) {
    this.tick = tick;
    this.min = min;
    this.max = max;
    this.delay = min;
    this.timer = null;
    this.stopped = false;
    this.running = false;
  }

  start() {
    this.run();
    return this;
  }

  async run() {
    if (this.stopped || this.running) return;
    this.running = true;
    clearTimeout(this.timer);
    let result;
    try {
      result = await this.tick();
    } catch (err) {
      result = { error: err };
    }
    this.running = false;
    if (this.stopped) return;
    if (result.error) {
      const err = result.error;
      if (err.status === 401) {
        unauthorized("Your API key is no longer accepted (it may have been revoked). Sign in with a valid key.");
        return;
      }
      this.delay = Math.min(this.max, this.delay * 2);
      setPollStatus(`${err.message} Retrying in ${Math.round(this.delay / 1000)}s.`, "warn");
    } else if (result.done) {
      this.stopped = true;
      setPollStatus(result.doneText || "Final: the job has finished, polling stopped.", "done");
      return;
    } else {
      this.delay = result.changed ? this.min : Math.min(this.max, Math.round(this.delay * 1.5));
      const time = new Date().toLocaleTimeString();
      setPollStatus(`Live · checked ${time} · next in ${Math.round(this.delay / 1000)}s`, "live");
    }
    this.timer = setTimeout(() => this.run(), this.delay);
  }

  /** Check now (e.g. the tab became visible again). */
  poke() {
    if (this.stopped) return;
    this.delay = this.min;
    this.run();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

let poller = null;

/** Make ``next`` the view's poller and start it. */
export function startPolling(next) {
  poller = next;
  next.start();
}

export function stopPolling() {
  if (poller) poller.stop();
  poller = null;
}

export function setPollStatus(text, tone) {
  const el = $("poll-status");
  el.textContent = text;
  el.dataset.tone = tone || "";
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && poller) poller.poke();
});
