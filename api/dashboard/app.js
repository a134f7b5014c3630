/* guardtune dashboard: plain JS, no build step, no external assets.
 *
 * Safety of the page itself: every piece of text that comes from the API goes into
 * the DOM through textContent / createTextNode / setAttribute (the h() and svg()
 * helpers below); nothing is ever parsed as markup. The server adds a strict
 * Content-Security-Policy on top.
 *
 * Polling: each GET of a job, its events, its safety report and checkpoints sends
 * If-None-Match with the last ETag of that URL; 304 means "no change". The delay
 * grows from 2 s to 10 s while nothing changes, returns to 2 s on a change, and
 * polling stops once the job is terminal (after one last full fetch). Events are
 * fetched incrementally with order=asc&after=<last event id>.
 */
"use strict";

(() => {
  const KEY_STORAGE = "guardtune.apiKey";
  const API = "/v1";
  const POLL_MIN_MS = 2000;
  const POLL_MAX_MS = 10000;
  const LIST_POLL_MAX_MS = 15000;
  const EVENTS_PAGE = 100;
  const MAX_POINT_MARKS = 400; // above this, charts draw the line only

  const STAGES = [
    { id: "validating_files", label: "Validating files" },
    { id: "queued", label: "Queued" },
    { id: "scanning", label: "Scanning data" },
    { id: "training", label: "Training" },
    { id: "evaluating", label: "Evaluating" },
    { id: "gating", label: "Safety gate" },
    { id: "result", label: "Result" },
  ];
  const STAGE_INDEX = Object.fromEntries(STAGES.map((s, i) => [s.id, i]));
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

  const CHARTS = [
    { key: "train_loss", title: "Train loss", note: "SFT loss on the batch" },
    { key: "kl", title: "KL to the reference", note: "KL(P_ref ‖ P_θ) per token" },
    { key: "kl_weight", title: "KL weight", domain: [0, 1],
      note: "w_kl = clamp((risk − 2) / 3, 0.1, 0.9) of each example: the step's mean, and the mean of its flagged and of its unflagged examples",
      extra: [{ key: "kl_weight_flagged", label: "flagged" }, { key: "kl_weight_unflagged", label: "unflagged" }] },
    { key: "risk", title: "Batch risk", note: "mean risk score of the step's examples, 1–5", domain: [1, 5] },
  ];

  // Counters the tests (and curious operators) can read: how much polling cost.
  const stats = { requests: 0, notModified: 0, errors: 0 };
  window.guardtuneStats = stats;

  // ---------------------------------------------------------------- DOM helpers

  const SVG_NS = "http://www.w3.org/2000/svg";

  function setAttrs(el, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.setAttribute("class", String(value));
      else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /** An HTML element; strings among the children become text nodes (never markup). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  /** An SVG element. */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function replace(el, ...children) {
    return append(clear(el), children);
  }

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const num = (v) => (isNum(v) ? v : typeof v === "string" && v.trim() !== "" && Number.isFinite(+v) ? +v : null);

  function fmtNum(v, digits = 4) {
    if (!isNum(v)) return "—";
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 1) return v.toFixed(Math.max(0, digits - 1 - Math.floor(Math.log10(a))));
    if (a === 0) return "0";
    return v.toPrecision(Math.max(1, digits - 1));
  }
  const pct = (v) => (isNum(v) ? `${(v * 100).toFixed(1).replace(/\.0$/, "")}%` : "—");
  function points(d) {
    if (!isNum(d)) return "—";
    const p = (d * 100).toFixed(1).replace(/\.0$/, "");
    return `${d > 0 ? "+" : ""}${p} pts`;
  }
  function fmtTime(unix) {
    if (!isNum(unix)) return "—";
    return new Date(unix * 1000).toLocaleString(undefined, {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }
  function fmtDuration(seconds) {
    if (!isNum(seconds) || seconds < 0) return "";
    const s = Math.round(seconds);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    const hrs = Math.floor(m / 60);
    return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
  }
  const nowUnix = () => Date.now() / 1000;
  const humanize = (id) => String(id || "").replace(/_/g, " ");
  function listWords(items, max = 12) {
    const shown = items.slice(0, max).map(String);
    const more = items.length - shown.length;
    if (shown.length === 0) return "";
    if (more > 0) return `${shown.join(", ")} and ${more} more`;
    if (shown.length === 1) return shown[0];
    return `${shown.slice(0, -1).join(", ")} and ${shown[shown.length - 1]}`;
  }

  // ---------------------------------------------------------------- API client

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Per URL: the last ETag (sent back as If-None-Match) and the last body. Endpoints
  // without an ETag are compared by text, so an unchanged answer still counts as
  // "no change" and the poller backs off.
  const lastSeen = new Map(); // url -> { etag, text, body }
  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

  /**
   * Fetch a JSON endpoint with the key. With conditional, send If-None-Match with the
   * URL's last ETag; a 304 (or an identical body) answers { changed: false, body }.
   */
  async function api(path, { conditional = false, method = "GET", key = apiKey } = {}) {
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    const cached = conditional ? lastSeen.get(path) : undefined;
    if (cached && cached.etag) headers["If-None-Match"] = cached.etag;
    let res;
    stats.requests += 1;
    try {
      res = await fetch(path, { method, headers, cache: "no-store", credentials: "omit", redirect: "error" });
    } catch (err) {
      stats.errors += 1;
      throw new ApiError(0, "network_error", "The server could not be reached. The page keeps retrying.");
    }
    if (res.status === 304 && cached) {
      stats.notModified += 1;
      return { changed: false, body: cached.body, status: 304 };
    }
    const text = await res.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (err) {
        body = null;
      }
    }
    if (!res.ok) {
      stats.errors += 1;
      const e = (body && body.error) || {};
      throw new ApiError(res.status, e.code || null, e.message || `The server answered ${res.status}.`);
    }
    if (!conditional) return { changed: true, body, status: res.status };
    if (cached && cached.text === text) return { changed: false, body: cached.body, status: res.status };
    lastSeen.set(path, { etag: res.headers.get("ETag"), text, body });
    return { changed: true, body, status: res.status };
  }

  function jobPath(id, tail = "") {
    return `${API}/fine_tuning/jobs/${encodeURIComponent(id)}${tail}`;
  }

  // ---------------------------------------------------------------- polling

  /**
   * Calls tick() repeatedly. tick returns { changed, done }. The delay starts at min,
   * grows 1.5x per unchanged tick up to max, resets on a change; done stops it.
   */
  class Poller {
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
          signOut("Your API key is no longer accepted (it may have been revoked). Sign in with a valid key.");
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
  let viewToken = 0;

  function stopPolling() {
    if (poller) poller.stop();
    poller = null;
  }

  function setPollStatus(text, tone) {
    const el = $("poll-status");
    el.textContent = text;
    el.dataset.tone = tone || "";
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && poller) poller.poke();
  });

  // ---------------------------------------------------------------- sign-in

  function showSignin(message) {
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

  function signOut(message) {
    apiKey = "";
    sessionStorage.removeItem(KEY_STORAGE);
    lastSeen.clear();
    showSignin(message);
  }

  async function onSignin(event) {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    if (!key) return;
    const button = $("signin-button");
    button.disabled = true;
    try {
      await api(`${API}/fine_tuning/jobs?limit=1`, { key });
      apiKey = key;
      sessionStorage.setItem(KEY_STORAGE, key);
      input.value = "";
      route();
    } catch (err) {
      const msg = err.status === 401
        ? `That key was not accepted: ${err.message}`
        : `Could not sign in: ${err.message}`;
      showSignin(msg);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- routing

  function route() {
    stopPolling();
    viewToken += 1;
    if (!apiKey) {
      showSignin();
      return;
    }
    $("signin").hidden = true;
    $("sign-out").hidden = false;
    $("whoami").textContent = `key ${apiKey.slice(0, 10)}…`;
    const m = (location.hash || "").match(/^#\/jobs\/([^/?#]+)/);
    if (m) showJob(decodeURIComponent(m[1]), viewToken);
    else showList(viewToken);
  }

  // ---------------------------------------------------------------- chips

  function jobStage(job) {
    if (!job) return null;
    if (TERMINAL.has(job.status)) return "result";
    const safety = job.safety || {};
    if (job.status === "running") return safety.stage || job.stage || "training";
    return job.status;
  }

  function statusChip(status) {
    return h("span", { class: `chip status status-${String(status || "unknown").replace(/[^a-z_]/g, "")}`, "data-role": "status", "data-status": status || "unknown" }, humanize(status || "unknown"));
  }

  function stageChip(job) {
    const safety = job.safety || {};
    const stage = job.status === "running" ? safety.stage || job.stage : null;
    if (!stage) return h("span", { class: "chip stage stage-none", "data-role": "stage" }, "—");
    return h("span", { class: "chip stage", "data-role": "stage", "data-stage": stage }, humanize(stage));
  }

  function resultChip(job) {
    const word = resultWord(job);
    const tone = job.status === "succeeded" ? "pass" : job.status === "cancelled" ? "warn" : "fail";
    return h("span", { class: `chip result ${tone}`, "data-role": "result" }, word);
  }

  function resultWord(job) {
    if (job.status === "succeeded") return job.fine_tuned_model ? "Released" : "Succeeded";
    if (job.status === "cancelled") return "Cancelled";
    if (job.status === "failed") {
      const code = job.error && job.error.code;
      if (code === "safety_gate_blocked") return "Blocked by gate";
      if (code === "unsafe_training_file") return "Data refused";
      return "Failed";
    }
    return "Result";
  }

  // ---------------------------------------------------------------- job list

  function showList(token) {
    const tbody = h("tbody", { id: "jobs-body" });
    const note = h("p", { id: "jobs-note", class: "muted" }, "Loading jobs…");
    replace(
      $("view"),
      h("section", { class: "card" },
        h("div", { class: "card-head" },
          h("h1", null, "Fine-tuning jobs"),
          h("span", { class: "muted", id: "jobs-count" })),
        h("table", { class: "table jobs", id: "jobs-table" },
          h("thead", null, h("tr", null,
            h("th", null, "Job"), h("th", null, "Model"), h("th", null, "Created"),
            h("th", null, "Status"), h("th", null, "Stage"), h("th", null, "Outcome"))),
          tbody),
        note));
    const path = `${API}/fine_tuning/jobs?limit=50`;
    const listPoller = new Poller(async () => {
      const res = await api(path, { conditional: true });
      if (token !== viewToken) return { done: true };
      if (res.changed) renderJobRows(res.body);
      const jobs = (res.body && res.body.data) || [];
      // Keep polling (new jobs can appear) but slowly when nothing is in flight.
      listPoller.max = jobs.some((j) => !TERMINAL.has(j.status)) ? POLL_MAX_MS : LIST_POLL_MAX_MS;
      return { changed: res.changed };
    });
    poller = listPoller;
    listPoller.start();
  }

  function outcomeCell(job) {
    if (job.status === "succeeded" && job.fine_tuned_model) return h("code", { class: "model-id" }, job.fine_tuned_model);
    if (job.error && (job.error.message || job.error.code)) {
      return h("span", { class: "outcome-bad" }, h("strong", null, resultWord(job)), job.error.message ? ` — ${job.error.message}` : "");
    }
    if (job.status === "cancelled") return h("span", { class: "muted" }, "cancelled");
    if (isNum(job.estimated_finish) && !TERMINAL.has(job.status)) {
      return h("span", { class: "muted" }, `about ${fmtDuration(job.estimated_finish - nowUnix()) || "a moment"} left`);
    }
    return h("span", { class: "muted" }, "");
  }

  function renderJobRows(body) {
    const jobs = (body && body.data) || [];
    const rows = jobs.map((job) => {
      const href = `#/jobs/${encodeURIComponent(job.id)}`;
      return h("tr", { "data-job-id": job.id, class: "job-row" },
        h("td", null, h("a", { href, class: "job-link" }, job.id),
          job.user_provided_suffix ? h("span", { class: "muted small" }, ` ${job.user_provided_suffix}`) : null),
        h("td", null, job.model || ""),
        h("td", null, fmtTime(job.created_at)),
        h("td", null, statusChip(job.status)),
        h("td", null, TERMINAL.has(job.status) ? resultChip(job) : stageChip(job)),
        h("td", null, outcomeCell(job)));
    });
    replace($("jobs-body"), rows);
    $("jobs-count").textContent = jobs.length ? `${jobs.length}${body.has_more ? "+" : ""} jobs, newest first` : "";
    const note = $("jobs-note");
    if (jobs.length === 0) {
      replace(note, "No jobs yet. Create one with the OpenAI SDK pointed at this server: ",
        h("code", null, `OpenAI(base_url="${location.origin}/v1", api_key=...).fine_tuning.jobs.create(...)`));
    } else {
      note.textContent = body.has_more ? "Showing the newest 50 jobs." : "";
    }
  }

  // ---------------------------------------------------------------- job page

  function newJobState(id) {
    return {
      id,
      job: null,
      events: [], // all events, oldest first
      eventIds: new Set(),
      lastEventId: null,
      metrics: new Map(), // step -> data (latest wins: a resumed job may repeat steps)
      stageTimes: {}, // stage -> unix seconds of its start
      report: null,
      reportMissing: false,
      checkpoints: null,
      finalFetched: false,
    };
  }

  function showJob(id, token) {
    const st = newJobState(id);
    replace(
      $("view"),
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← All jobs")),
      h("section", { class: "card", id: "job-header" }, h("p", { class: "muted" }, "Loading job…")),
      h("section", { id: "job-notice" }),
      h("section", { class: "card" }, h("h2", null, "Stages"), h("ol", { class: "timeline", id: "timeline" })),
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", null, "Training"), h("span", { class: "muted", id: "train-summary" })),
        h("div", { class: "charts", id: "charts" },
          CHARTS.map((c) => h("figure", { class: "chart", id: `chart-${c.key}`, "data-metric": c.key },
            h("figcaption", null, h("span", { class: "chart-title" }, c.title), " ",
              h("span", { class: "chart-latest", id: `latest-${c.key}` })),
            svg("svg", { class: "plot", viewBox: "0 0 320 170", role: "img", "aria-label": c.title }),
            c.extra ? h("p", { class: "chart-legend small" }, h("span", { "data-series": c.key }, "all examples"),
              c.extra.map((e) => h("span", { "data-series": e.key }, e.label))) : null,
            h("p", { class: "chart-note muted small" }, c.note)))),
        h("div", { id: "training-report" })),
      h("div", { class: "grid2" },
        h("section", { class: "card", id: "scan" }, h("h2", null, "Dataset scan"), h("p", { class: "muted" }, "Waiting for the scan…")),
        h("section", { class: "card", id: "evaluation" }, h("h2", null, "Evaluation"), h("p", { class: "muted" }, "Runs after training."))),
      h("section", { class: "card", id: "gate" }, h("h2", null, "Release gate"), h("p", { class: "muted" }, "Decides after the evaluation.")),
      h("div", { class: "grid2" },
        h("section", { class: "card", id: "checkpoints" }, h("h2", null, "Checkpoints"), h("p", { class: "muted" }, "None yet.")),
        h("section", { class: "card", id: "event-log" }, h("h2", null, "Messages"), h("ol", { class: "log", id: "log" }))));
    renderCharts(st);

    poller = new Poller(async () => {
      let result;
      try {
        result = await jobTick(st);
      } catch (err) {
        if (err.status !== 404 || st.job) throw err;
        if (token === viewToken) showMissingJob(id, err.message);
        return { done: true, doneText: "" };
      }
      if (token !== viewToken) return { done: true };
      return result;
    });
    poller.start();
  }

  function showMissingJob(id, message) {
    replace($("view"),
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← All jobs")),
      h("section", { class: "card notice notice-bad", id: "job-notice", role: "alert" },
        h("h2", { class: "notice-title" }, "Job not found"),
        h("p", null, message),
        h("p", null, `There is no job ${id} in the organization of this API key. Check the id, or sign in with a key of the organization that created it.`)));
  }

  async function jobTick(st) {
    let changed = false;
    const jobRes = await api(jobPath(st.id), { conditional: true });
    const stageBefore = jobStage(st.job);
    if (jobRes.changed || !st.job) {
      st.job = jobRes.body;
      changed = true;
    }
    const terminal = TERMINAL.has(st.job.status);
    // A stage seen to change while watching starts about now (events, read next, may
    // date it more exactly); on the first look its start comes from the events only.
    if (stageBefore !== null && jobStage(st.job) !== stageBefore) {
      noteStage(st, jobStage(st.job), terminal ? st.job.finished_at : null);
    }

    const newEvents = await fetchNewEvents(st);
    if (newEvents.length) changed = true;

    // The report and checkpoints change only when the job or its events do.
    if (changed || st.report === null) {
      try {
        const rep = await api(jobPath(st.id, "/safety_report"), { conditional: true });
        if (rep.changed) {
          st.report = rep.body;
          changed = true;
        }
        st.reportMissing = false;
      } catch (err) {
        if (err.status !== 404) throw err;
        st.reportMissing = true;
        st.report = null;
      }
      try {
        const cps = await api(`${jobPath(st.id, "/checkpoints")}?limit=100`, { conditional: true });
        if (cps.changed) st.checkpoints = cps.body;
      } catch (err) {
        if (err.status !== 404) throw err;
      }
    }

    if (changed) renderJob(st, newEvents);
    else renderTimeline(st); // keeps the running stage's clock moving

    if (terminal) {
      if (st.finalFetched) return { done: true, doneText: doneText(st.job) };
      st.finalFetched = true; // one more full round, then stop
      return { changed: true };
    }
    return { changed };
  }

  function doneText(job) {
    return `Final: the job ${job.status === "succeeded" ? "succeeded" : `is ${job.status}`}; polling stopped.`;
  }

  async function fetchNewEvents(st) {
    const fresh = [];
    for (let page = 0; page < 50; page += 1) {
      let path = `${jobPath(st.id, "/events")}?order=asc&limit=${EVENTS_PAGE}`;
      if (st.lastEventId) path += `&after=${encodeURIComponent(st.lastEventId)}`;
      const res = await api(path, { conditional: true });
      const data = (res.body && res.body.data) || [];
      if (!res.changed || data.length === 0) break;
      for (const ev of data) {
        if (!ev || st.eventIds.has(ev.id)) continue;
        st.eventIds.add(ev.id);
        st.events.push(ev);
        fresh.push(ev);
        ingestEvent(st, ev);
      }
      const last = data[data.length - 1].id;
      if (last === st.lastEventId) break;
      lastSeen.delete(path); // that page is done; the next poll asks after its last event
      st.lastEventId = last;
      if (!res.body.has_more) break;
    }
    return fresh;
  }

  // ---------------------------------------------------------------- stages

  // When an event carries no data.stage, its message names the stage it announces.
  // Checked in this order (the first match wins): the pipeline's own wording first.
  const STAGE_WORDS = [
    ["result", /^(released as|job (failed|blocked)|(fine-tuning )?job cancelled|job succeeded)\b/i],
    ["queued", /^validated\b|\bjob queued\b|^queued\b/i],
    ["validating_files", /^validat/i],
    ["scanning", /^scan/i],
    ["training", /^(fine-tuning started|training (started|resumed)|resumed training)\b/i],
    ["evaluating", /^evaluat/i],
    ["gating", /^(applying the release gate|gate:|gating)/i],
  ];

  /** The stage an event announces: data.stage / data.status first, else its words. */
  function eventStage(ev) {
    const d = ev.data && typeof ev.data === "object" ? ev.data : {};
    if (typeof d.stage === "string" && d.stage in STAGE_INDEX) return d.stage;
    if (typeof d.status === "string") {
      if (TERMINAL.has(d.status)) return "result";
      if (d.status in STAGE_INDEX) return d.status;
    }
    if (ev.type === "metrics") return num(d.step) !== null ? "training" : null;
    const message = String(ev.message || "").trim();
    for (const [stage, re] of STAGE_WORDS) if (re.test(message)) return stage;
    return null;
  }

  function noteStage(st, stage, when) {
    if (!stage || !(stage in STAGE_INDEX)) return;
    const t = isNum(when) ? when : nowUnix();
    if (!(stage in st.stageTimes) || st.stageTimes[stage] > t) st.stageTimes[stage] = t;
  }

  function ingestEvent(st, ev) {
    noteStage(st, eventStage(ev), ev.created_at);
    if (ev.type === "metrics" && ev.data && typeof ev.data === "object") {
      const step = num(ev.data.step);
      if (step !== null) st.metrics.set(step, ev.data);
    }
  }

  function renderTimeline(st) {
    const job = st.job;
    const el = $("timeline");
    if (!job || !el) return;
    if (isNum(job.created_at)) noteStage(st, "validating_files", job.created_at);
    const current = STAGE_INDEX[jobStage(job)] ?? 0;
    const terminal = TERMINAL.has(job.status);
    if (terminal && isNum(job.finished_at)) noteStage(st, "result", job.finished_at);
    // The last stage the job really reached before its result (for "skipped").
    let reached = current;
    if (terminal) {
      reached = 0;
      STAGES.forEach((s, i) => { if (s.id !== "result" && s.id in st.stageTimes) reached = i; });
    }
    const starts = STAGES.map((s) => st.stageTimes[s.id]);
    const items = STAGES.map((s, i) => {
      let state;
      if (i < current) state = terminal && i > reached ? "skipped" : "done";
      else if (i === current) state = terminal ? (job.status === "succeeded" ? "ok" : job.status === "cancelled" ? "cancelled" : "bad") : "current";
      else state = "pending";
      if (state === "done" && !(s.id in st.stageTimes) && i > reached) state = "skipped";
      const start = starts[i];
      let end = null;
      for (let j = i + 1; j < STAGES.length; j += 1) if (isNum(starts[j])) { end = starts[j]; break; }
      let when = "";
      if (state === "current" && isNum(start)) when = `${fmtDuration(nowUnix() - start)} so far`;
      else if (state === "done" && isNum(start) && isNum(end)) when = fmtDuration(end - start);
      const label = s.id === "result" ? (terminal ? resultWord(job) : "Result") : s.label;
      return h("li", { class: `step step-${state}`, "data-stage": s.id, "data-state": state },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "step-label" }, label),
        h("span", { class: "step-time muted small" }, isNum(start) && state !== "pending" && state !== "skipped" ? fmtTime(start) : state === "skipped" ? "skipped" : ""),
        h("span", { class: "step-duration small" }, when));
    });
    replace(el, items);
  }

  // ---------------------------------------------------------------- job render

  function renderJob(st, newEvents) {
    renderHeader(st);
    renderNotice(st);
    renderTimeline(st);
    renderCharts(st);
    renderTrainingReport(st);
    renderScan(st);
    renderEvaluation(st);
    renderGate(st);
    renderCheckpoints(st);
    if (newEvents.length || !$("log").firstChild) renderLog(st);
  }

  function safetyOf(st) {
    const job = st.job || {};
    const s = job.safety && typeof job.safety === "object" ? job.safety : {};
    const r = st.report && typeof st.report === "object" ? st.report : {};
    const config = r.config && typeof r.config === "object" ? r.config : {};
    return {
      mode: s.mode || config.mode || null,
      estimator: s.estimator || config.estimator || null,
      scan: r.scan || s.scan_summary || s.scan || null,
      training: r.training || s.training || null,
      evaluation: r.evaluation || s.eval_summary || s.evaluation || null,
      gate: r.gate || s.gate || null,
    };
  }

  function kv(label, value) {
    return h("div", { class: "kv" }, h("dt", null, label), h("dd", null, value));
  }

  function renderHeader(st) {
    const job = st.job;
    const sf = safetyOf(st);
    const hp = job.hyperparameters || {};
    const hpText = ["n_epochs", "batch_size", "learning_rate_multiplier"]
      .filter((k) => hp[k] !== undefined && hp[k] !== null)
      .map((k) => `${humanize(k)} ${hp[k]}`).join(" · ");
    replace($("job-header"),
      h("div", { class: "card-head" },
        h("h1", { class: "job-title" }, job.id),
        h("span", { class: "chips" }, statusChip(job.status), " ", TERMINAL.has(job.status) ? resultChip(job) : stageChip(job))),
      h("dl", { class: "kvs" },
        kv("Base model", job.model || "—"),
        kv("Created", fmtTime(job.created_at)),
        job.finished_at ? kv("Finished", fmtTime(job.finished_at)) : null,
        kv("Training file", job.training_file || "—"),
        job.validation_file ? kv("Validation file", job.validation_file) : null,
        kv("Safety", [sf.mode || "—", sf.estimator ? ` (estimator ${sf.estimator})` : ""].join("")),
        hpText ? kv("Hyperparameters", hpText) : null,
        isNum(job.trained_tokens) ? kv("Trained tokens", String(job.trained_tokens)) : null,
        !TERMINAL.has(job.status) && isNum(job.estimated_finish)
          ? kv("Estimated finish", `${fmtTime(job.estimated_finish)}`) : null,
        job.fine_tuned_model ? kv("Fine-tuned model", h("code", { class: "model-id" }, job.fine_tuned_model)) : null),
      job.fine_tuned_model && job.status === "succeeded" ? adapterDownload(job) : null,
      job.fine_tuned_model && job.status === "succeeded" ? tryIt(st, job.fine_tuned_model) : null);
  }

  /**
   * "Try it": one chat message to the released model (greedy, the server's max_tokens). Built once per job
   * page and moved between re-renders, so typed text survives polling; the answer is
   * shown as text only.
   */
  function tryIt(st, model) {
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
          headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
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

  function adapterDownload(job) {
    const msg = h("span", { class: "muted small", id: "adapter-msg" });
    const button = h("button", { class: "btn", type: "button", id: "adapter-download" }, "Download adapter");
    button.addEventListener("click", async () => {
      button.disabled = true;
      msg.textContent = "Downloading…";
      try {
        const res = await fetch(`${API}/models/${encodeURIComponent(job.fine_tuned_model)}/adapter`, {
          headers: { Authorization: `Bearer ${apiKey}` }, cache: "no-store", credentials: "omit",
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

  function fmtBytes(n) {
    if (!isNum(n)) return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
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

  // ------------------------------------------------------------ plain words

  function flaggedLines(scan) {
    if (!scan) return [];
    let lines = [];
    if (Array.isArray(scan.flagged_lines)) lines = scan.flagged_lines.map(num).filter(isNum);
    else if (Array.isArray(scan.top_flagged)) lines = scan.top_flagged.map((r) => num(r && r.line)).filter(isNum);
    return [...new Set(lines)].sort((a, b) => a - b);
  }

  function asrChangeText(ev, gate) {
    if (!ev || !ev.base || !ev.tuned) return "";
    // The attack condition the gate found worst (a failed ASR check names it), else plain prompts.
    const failed = gate && Array.isArray(gate.checks) ? gate.checks.find((c) => c && !c.passed && /^asr_/.test(c.name || "")) : null;
    const cond = failed && failed.condition && failed.condition !== "plain" ? ev.conditions.find((c) => c.name === failed.condition) : null;
    const base = cond ? cond.base : ev.base;
    const tuned = cond ? cond.tuned : ev.tuned;
    const where = cond ? ` ${cond.description}` : "";
    for (const k of ["asr_keyword", "asr_judge"]) {
      const b = num(base && base[k]);
      const t = num(tuned && tuned[k]);
      if (isNum(b) && isNum(t)) return ` Its attack success rate on harmful prompts${where} went from ${pct(b)} (base model) to ${pct(t)}.`;
    }
    return "";
  }

  /** What happened and what the customer can do, in plain words. */
  function explain(st) {
    const job = st.job;
    const sf = safetyOf(st);
    const err = job.error || {};
    const lines = flaggedLines(sf.scan);
    const linesText = lines.length ? `remove the flagged lines ${listWords(lines)} from your training file` : null;
    const gateReasons = sf.gate && Array.isArray(sf.gate.reasons) ? sf.gate.reasons : [];
    if (job.status === "failed" && err.code === "safety_gate_blocked") {
      const ev = normalizeEval(sf.evaluation);
      const actions = [
        linesText ? `${cap(linesText)} and start a new job with it.` : "Review your training data for harmful examples, remove them and start a new job.",
      ];
      if (sf.mode === "none" || sf.mode === "constant") {
        actions.push(`This job trained with safety mode "${sf.mode}"; a new job with mode "adaptive" regularizes risky batches and usually stays safe.`);
      }
      actions.push(`If you believe the decision is wrong, contact your operator and quote the job id ${job.id}; they can review and override it.`);
      return {
        tone: "bad",
        title: "Blocked: the fine-tuned model became unsafe, so it was not released",
        body: [
          `The release gate compared the fine-tuned model with the base model and found it answers harmful requests more often than the policy allows.${asrChangeText(ev, sf.gate)} The adapter is kept but will not be served or downloadable.`,
          err.message && !gateReasons.length ? `Details: ${err.message}` : null,
        ],
        reasons: gateReasons,
        actions,
      };
    }
    if (job.status === "failed" && err.code === "unsafe_training_file") {
      const sc = sf.scan || {};
      const share = isNum(num(sc.n_flagged)) && isNum(num(sc.n)) ? ` (${sc.n_flagged} of ${sc.n} examples flagged)` : "";
      return {
        tone: "bad",
        title: "Training did not start: too much of the training file looks harmful",
        body: [
          `The dataset scan flagged more harmful-looking examples than this deployment accepts${share}. No GPU time was spent.`,
          err.message ? `Details: ${err.message}` : null,
        ],
        actions: [
          linesText ? `${cap(linesText)}, upload it again and start a new job.` : "Remove the harmful examples from your training file, upload it again and start a new job.",
          "If these examples are intended (e.g. refusal training data), contact your operator.",
        ],
      };
    }
    if (job.status === "failed" && /file|validat|line/i.test(`${err.code || ""} ${err.param || ""}`)) {
      return {
        tone: "bad",
        title: "The training file could not be used",
        body: [err.message || "The file did not pass validation."],
        actions: ["Fix the lines named above (each line must be one JSON object in the chat \"messages\" format, ending with an assistant message), upload the file again and start a new job."],
      };
    }
    if (job.status === "failed") {
      return {
        tone: "bad",
        title: "The job failed",
        body: [err.message || "The job stopped with an error.", err.code ? `Error code: ${err.code}.` : null],
        actions: [
          "This is usually not caused by your data: start the job again.",
          `If it fails again, contact your operator and quote the job id ${job.id}.`,
        ],
      };
    }
    if (job.status === "cancelled") {
      return {
        tone: "warn",
        title: "This job was cancelled",
        body: [`It stopped ${job.finished_at ? `at ${fmtTime(job.finished_at)}` : ""} before finishing. Checkpoints saved before the cancel are listed below.`],
        actions: ["Start a new job to train again."],
      };
    }
    if (job.status === "succeeded" && job.fine_tuned_model && sf.gate && sf.gate.override && !sf.gate.released) {
      const o = sf.gate.override;
      return {
        tone: "warn",
        title: "Released by an operator's override",
        body: [`The safety gate had blocked this model; ${o.actor || "an operator"} approved its release${o.reason ? ` with the reason: ${o.reason}` : ""}. Use it as ${job.fine_tuned_model}.`],
        reasons: gateReasons,
        actions: [],
      };
    }
    if (job.status === "succeeded" && job.fine_tuned_model) {
      return {
        tone: "ok",
        title: "Released: the fine-tuned model passed the safety gate",
        body: [`Use it as ${job.fine_tuned_model}, or download its adapter above.`],
        reasons: gateReasons,
        actions: [],
      };
    }
    return null;
  }

  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

  function renderNotice(st) {
    const info = explain(st);
    const el = $("job-notice");
    if (!info) {
      clear(el);
      el.className = "";
      return;
    }
    el.className = `card notice notice-${info.tone}`;
    el.setAttribute("role", info.tone === "bad" ? "alert" : "status");
    replace(el,
      h("h2", { class: "notice-title" }, info.title),
      info.body.filter(Boolean).map((t) => h("p", null, t)),
      info.reasons && info.reasons.length
        ? h("div", null, h("h3", null, "Gate reasons"), h("ul", { class: "reasons" }, info.reasons.map((r) => h("li", null, r))))
        : null,
      info.actions.length
        ? h("div", null, h("h3", null, "What you can do"), h("ul", { class: "actions" }, info.actions.map((a) => h("li", null, a))))
        : null);
  }

  // ---------------------------------------------------------------- charts

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / Math.max(1, count);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    const stepSize = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
    const ticks = [];
    for (let v = Math.ceil(lo / stepSize) * stepSize; v <= hi + stepSize * 1e-9; v += stepSize) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  /** A chart of ``series`` (``[[step, value], …]``) and, drawn beside it, each of ``extras``
   * (``[{key, label, points}]``, e.g. the flagged / unflagged KL weights; a ``null`` value, a
   * step with no such examples, breaks that line). */
  function drawChart(figure, spec, series, extras = []) {
    const plot = figure.querySelector("svg.plot");
    const W = 320; const H = 170;
    const m = { l: 38, r: 8, t: 8, b: 20 };
    clear(plot);
    plot.setAttribute("data-points", String(series.length));
    if (series.length === 0) {
      plot.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no steps yet"));
      return;
    }
    const xs = series.map((p) => p[0]);
    const ys = series.concat(...extras.map((e) => e.points)).map((p) => p[1]).filter((y) => y !== null);
    let x0 = Math.min(...xs); let x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    let [y0, y1] = spec.domain || [Math.min(...ys), Math.max(...ys)];
    if (spec.domain) { y0 = Math.min(y0, ...ys); y1 = Math.max(y1, ...ys); }
    if (y1 - y0 < 1e-12) { const pad = Math.abs(y1) * 0.1 || 1; y0 -= pad; y1 += pad; }
    else if (!spec.domain) { const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad; if (Math.min(...ys) >= 0 && y0 < 0) y0 = 0; }
    const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);

    const grid = svg("g", { class: "grid" });
    const yt = niceTicks(y0, y1, 4);
    const decimals = yt.length > 1 ? Math.max(0, Math.min(6, -Math.floor(Math.log10(yt[1] - yt[0] + 1e-15)))) : 2;
    for (const t of yt) {
      grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t) }));
      grid.append(svg("text", { x: m.l - 5, y: Y(t) + 3.5, "text-anchor": "end" }, t.toFixed(decimals)));
    }
    const xt = niceTicks(x0, x1, 5).filter((t) => Number.isInteger(t));
    for (const t of xt) grid.append(svg("text", { x: X(t), y: H - 5, "text-anchor": "middle" }, String(t)));
    plot.append(grid);
    if (spec.key === "risk") {
      // Below risk 2 the KL weight sits at its floor; above it, regularization grows.
      plot.append(svg("line", { class: "guide", x1: m.l, x2: W - m.r, y1: Y(2), y2: Y(2) },
        svg("title", null, "risk 2: above this the KL weight rises above its floor")));
    }
    const pathOf = (points) => points.map((p, i) => p[1] === null ? ""
      : `${i && points[i - 1][1] !== null ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ").trim();
    for (const e of extras) {
      const present = e.points.filter((p) => p[1] !== null);
      if (present.length === 0) continue;
      plot.append(svg("path", { class: "line extra", "data-series": e.key, d: pathOf(e.points) }));
      const marks = svg("g", { class: "marks" });
      for (const [x, y] of present) {
        marks.append(svg("circle", { class: "pt-extra", "data-series": e.key, cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: 1.6, "data-step": x },
          svg("title", null, `step ${x}, ${e.label}: ${fmtNum(y, 5)}`)));
      }
      if (present.length <= MAX_POINT_MARKS) plot.append(marks);
    }
    plot.append(svg("path", { class: "line", d: pathOf(series) }));
    if (series.length <= MAX_POINT_MARKS) {
      const marks = svg("g", { class: "marks" });
      for (const [x, y] of series) {
        marks.append(svg("circle", { class: "pt", cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: series.length > 120 ? 1.2 : 2.2, "data-step": x },
          svg("title", null, `step ${x}: ${fmtNum(y, 5)}`)));
      }
      plot.append(marks);
    }
  }

  function renderCharts(st) {
    const steps = [...st.metrics.keys()].sort((a, b) => a - b);
    for (const spec of CHARTS) {
      const fig = $(`chart-${spec.key}`);
      if (!fig) continue;
      const pointsOf = (key) => steps.map((s) => [s, num(st.metrics.get(s)[key])]);
      const series = pointsOf(spec.key).filter((p) => p[1] !== null);
      drawChart(fig, spec, series, (spec.extra || []).map((e) => ({ ...e, points: pointsOf(e.key) })));
      const last = series[series.length - 1];
      $(`latest-${spec.key}`).textContent = last ? `${fmtNum(last[1], 4)} at step ${last[0]}` : "";
    }
    const summary = $("train-summary");
    if (summary) {
      const last = steps[steps.length - 1];
      if (steps.length === 0) summary.textContent = "Per-step metrics appear here while the job trains.";
      else {
        const total = num(st.metrics.get(last).total_steps);
        summary.textContent = `step ${last}${total ? ` of ${total}` : ""} · ${steps.length} points logged`;
      }
    }
  }

  function renderTrainingReport(st) {
    const tr = safetyOf(st).training;
    const el = $("training-report");
    if (!tr || typeof tr !== "object") { clear(el); return; }
    const labels = {
      steps: ["Steps", fmtNum], mean_risk: ["Mean batch risk", fmtNum], regularized_share: ["Steps regularized", pct],
      final_kl: ["Final KL to the reference", fmtNum], mean_loss: ["Mean train loss", fmtNum],
      trained_tokens: ["Trained tokens", fmtNum],
      mean_kl_weight_flagged: ["Mean KL weight, flagged examples", fmtNum],
      mean_kl_weight_unflagged: ["Mean KL weight, unflagged examples", fmtNum],
    };
    const tiles = [];
    for (const [k, v] of Object.entries(tr)) {
      if (!(isNum(v) || typeof v === "boolean")) continue;
      const [label, f] = labels[k] || [cap(humanize(k)), fmtNum];
      tiles.push(h("div", { class: "tile" }, h("div", { class: "tile-value" }, typeof v === "boolean" ? (v ? "yes" : "no") : f(v)), h("div", { class: "tile-label" }, label)));
    }
    replace(el, tiles.length ? h("div", { class: "tiles" }, tiles) : null);
  }

  // ---------------------------------------------------------------- scan

  function renderScan(st) {
    const scan = safetyOf(st).scan;
    const el = $("scan");
    if (!scan || typeof scan !== "object") return;
    const counts = scan.counts_by_score || scan.histogram || {};
    const bins = [1, 2, 3, 4, 5].map((s) => num(counts[s] ?? counts[String(s)]) || 0);
    const n = num(scan.n) ?? bins.reduce((a, b) => a + b, 0);
    const flagged = num(scan.n_flagged) ?? flaggedLines(scan).length;
    const lines = flaggedLines(scan);
    const W = 420; const H = 170; const m = { l: 34, r: 8, t: 14, b: 30 };
    const maxC = Math.max(1, ...bins);
    const bw = (W - m.l - m.r) / 5;
    const hist = svg("svg", { class: "hist", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Histogram of risk scores 1 to 5" });
    const g = svg("g", { class: "grid" });
    for (const t of niceTicks(0, maxC, 3).filter(Number.isInteger)) {
      const y = H - m.b - (t / maxC) * (H - m.t - m.b);
      g.append(svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y }), svg("text", { x: m.l - 5, y: y + 4, "text-anchor": "end" }, String(t)));
    }
    hist.append(g);
    bins.forEach((c, i) => {
      const bh = (c / maxC) * (H - m.t - m.b);
      const x = m.l + i * bw + 6;
      hist.append(
        svg("rect", { class: `bar risk-${i + 1}`, x, y: H - m.b - bh, width: bw - 12, height: Math.max(bh, c ? 1 : 0), "data-score": i + 1, "data-count": c },
          svg("title", null, `risk ${i + 1}: ${c} examples`)),
        svg("text", { class: "bar-count", x: x + (bw - 12) / 2, y: H - m.b - bh - 3, "text-anchor": "middle" }, String(c)),
        svg("text", { x: x + (bw - 12) / 2, y: H - 10, "text-anchor": "middle" }, `risk ${i + 1}`));
    });
    const cats = scan.counts_by_category && typeof scan.counts_by_category === "object" ? Object.entries(scan.counts_by_category) : [];
    const top = Array.isArray(scan.top_flagged) ? scan.top_flagged : [];
    const byLine = new Map(top.map((r) => [num(r && r.line), r]));
    replace(el,
      h("h2", null, "Dataset scan"),
      h("p", { class: "scan-summary" },
        h("strong", null, `${flagged} of ${n}`), ` examples flagged as harmful (${pct(n ? flagged / n : 0)})`,
        isNum(num(scan.mean_risk)) ? ` · mean risk ${fmtNum(num(scan.mean_risk), 3)}` : ""),
      hist,
      cats.length ? h("p", { class: "small" }, "Flagged by category: ", cats.map(([c, k], i) => [i ? ", " : "", `${c} ${k}`])) : null,
      lines.length
        ? h("div", null,
          h("h3", null, "Flagged lines"),
          h("ul", { class: "line-list", id: "flagged-lines" }, lines.slice(0, 200).map((ln) => {
            const r = byLine.get(ln);
            const title = r ? `risk ${fmtNum(num(r.risk), 3)}${r.category_guess ? `, ${r.category_guess}` : ""}` : "";
            const turn = r && isNum(num(r.turn)) && num(r.turn) > 1 ? `, turn ${num(r.turn)}` : "";
            return h("li", { class: "line-chip", title }, `line ${ln}${turn}`, r && r.category_guess ? h("span", { class: "muted small" }, ` ${r.category_guess}`) : null);
          })),
          flagged > lines.length ? h("p", { class: "muted small" }, `Showing the ${lines.length} highest-risk of ${flagged} flagged lines.`) : null)
        : h("p", { class: "muted" }, "No line was flagged."));
  }

  // ---------------------------------------------------------------- evaluation

  function pickSide(ev, names) {
    for (const n of names) if (ev && ev[n] && typeof ev[n] === "object") return ev[n];
    return null;
  }

  function sideSummary(side) {
    if (!side) return null;
    const asr = side.asr && typeof side.asr === "object" ? side.asr : side;
    const or = side.over_refusal ?? side.overrefusal;
    return {
      n: num(asr.n),
      asr_keyword: num(asr.asr_keyword ?? (isNum(side.asr) ? side.asr : undefined)),
      asr_judge: num(asr.asr_judge),
      per_category: (asr.per_category && typeof asr.per_category === "object" ? asr.per_category : side.per_category) || {},
      over_refusal: or && typeof or === "object" ? num(or.rate) : num(or),
      val_loss: num(side.val_loss ?? side.validation_loss),
    };
  }

  function normalizeEval(ev) {
    if (!ev || typeof ev !== "object") return null;
    let base = pickSide(ev, ["base", "reference", "before"]);
    let tuned = pickSide(ev, ["tuned", "fine_tuned", "finetuned", "after"]);
    if (!base && ev.asr && typeof ev.asr === "object" && (ev.asr.base || ev.asr.tuned || ev.asr.fine_tuned)) {
      const pick = (o, names) => (o && typeof o === "object" ? names.map((k) => o[k]).find((v) => v !== undefined) : undefined);
      base = { asr: ev.asr.base, over_refusal: pick(ev.over_refusal, ["base"]), val_loss: pick(ev.val_loss, ["base"]) };
      tuned = { asr: ev.asr.tuned || ev.asr.fine_tuned, over_refusal: pick(ev.over_refusal, ["tuned", "fine_tuned"]), val_loss: pick(ev.val_loss, ["tuned", "fine_tuned"]) };
    }
    if (!base && !tuned) return null;
    const conditions = (Array.isArray(ev.conditions) ? ev.conditions : [])
      .filter((c) => c && typeof c === "object" && typeof c.name === "string")
      .map((c) => ({ name: c.name, kind: String(c.kind || ""), description: String(c.description || c.name), base: sideSummary(c.base) || {}, tuned: sideSummary(c.tuned) || {} }));
    return { base: sideSummary(base) || {}, tuned: sideSummary(tuned) || {}, conditions };
  }

  function asrBar(v, cls) {
    const bar = h("span", { class: `asr-bar ${cls}` });
    bar.style.width = `${Math.max(0, Math.min(1, isNum(v) ? v : 0)) * 100}%`;
    return h("span", { class: "asr-track" }, bar);
  }

  function renderEvaluation(st) {
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

  // ---------------------------------------------------------------- gate

  function gateBound(gate, name) {
    if (!gate || !Array.isArray(gate.checks)) return null;
    const c = gate.checks.find((x) => x && x.name === name);
    return c ? num(c.bound) : null;
  }

  function fmtCheck(name, v) {
    if (!isNum(v)) return "—";
    if (/increase/.test(name)) return points(v);
    if (/asr|refusal/.test(name)) return pct(v);
    return fmtNum(v, 4);
  }

  function renderGate(st) {
    const gate = safetyOf(st).gate;
    const el = $("gate");
    if (!gate || typeof gate !== "object") return;
    let released = gate.released;
    if (typeof released !== "boolean" && typeof gate.decision === "string") released = /releas|pass|approv/i.test(gate.decision);
    const reasons = Array.isArray(gate.reasons) ? gate.reasons : [];
    const checks = Array.isArray(gate.checks) ? gate.checks : [];
    const override = gate.override && typeof gate.override === "object" ? gate.override : null;
    const overridden = !!override && !released && st.job && st.job.status === "succeeded";
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

  // ---------------------------------------------------------------- checkpoints, log

  function renderCheckpoints(st) {
    const el = $("checkpoints");
    const list = (st.checkpoints && st.checkpoints.data) || [];
    if (!list.length) return;
    const rows = [...list].sort((a, b) => (num(b.step_number) ?? 0) - (num(a.step_number) ?? 0)).map((c) => {
      const mt = c.metrics || {};
      return h("tr", null,
        h("td", { class: "num" }, String(c.step_number ?? mt.step ?? "—")),
        h("td", null, fmtTime(c.created_at)),
        h("td", { class: "num" }, fmtNum(num(mt.train_loss))),
        h("td", { class: "num" }, fmtNum(num(mt.valid_loss ?? mt.full_valid_loss))),
        h("td", null, h("code", { class: "small" }, c.fine_tuned_model_checkpoint || c.id || "")));
    });
    replace(el, h("h2", null, "Checkpoints"),
      h("table", { class: "table" },
        h("thead", null, h("tr", null, h("th", null, "Step"), h("th", null, "Saved"), h("th", null, "Train loss"), h("th", null, "Valid loss"), h("th", null, "Checkpoint"))),
        h("tbody", null, rows)));
  }

  function renderLog(st) {
    const msgs = st.events.filter((e) => e.type !== "metrics").slice(-40).reverse();
    replace($("log"), msgs.length
      ? msgs.map((e) => h("li", { class: `log-${String(e.level || "info").replace(/[^a-z]/g, "")}` },
        h("span", { class: "muted small" }, fmtTime(e.created_at)), " ", e.message || ""))
      : h("li", { class: "muted" }, "No messages yet."));
  }

  // ---------------------------------------------------------------- start

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", onSignin);
    $("sign-out").addEventListener("click", () => signOut());
    window.addEventListener("hashchange", route);
    route();
  });
})();
