/* The API client: the key (this tab's session storage only), JSON requests with it, and
 * conditional GETs: with { conditional: true } a request sends If-None-Match with the URL's
 * last ETag, and a 304 (or an identical body) answers { changed: false, body }. A request
 * sends { json } as a JSON body or { form } (FormData) as multipart; an error answer throws an
 * ApiError with the API's status, code, param and message.
 */

const KEY_STORAGE = "guardtune.apiKey";
export const API = "/v1";

// Counters the tests (and curious operators) can read: how much polling cost.
const stats = { requests: 0, notModified: 0, errors: 0 };
window.guardtuneStats = stats;

class ApiError extends Error {
  constructor(status, code, message, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
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
 * ``json`` (sent as JSON) or ``form`` (FormData, sent as multipart) is the request's body;
 * ``headers`` adds headers (an Idempotency-Key).
 */
export async function api(path, { conditional = false, method = "GET", key = apiKey, json, form, headers: extra } = {}) {
  const headers = { ...extra, Authorization: `Bearer ${key}`, Accept: "application/json" };
  const cached = conditional ? lastSeen.get(path) : undefined;
  if (cached && cached.etag) headers["If-None-Match"] = cached.etag;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart Content-Type with its boundary
  }
  let res;
  stats.requests += 1;
  try {
    res = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit", redirect: "error" });
  } catch (err) {
    stats.errors += 1;
    throw new ApiError(0, "network_error", "The server could not be reached. The page keeps retrying.");
  }
  if (res.status === 304 && cached) {
    stats.notModified += 1;
    return { changed: false, body: cached.body, status: 304 };
  }
  const text = await res.text();
  let answer = null;
  if (text) {
    try {
      answer = JSON.parse(text);
    } catch (err) {
      answer = null;
    }
  }
  if (!res.ok) {
    stats.errors += 1;
    const e = (answer && answer.error) || {};
    throw new ApiError(res.status, e.code || null, e.message || `The server answered ${res.status}.`, e.param || null);
  }
  if (!conditional) return { changed: true, body: answer, status: res.status };
  if (cached && cached.text === text) return { changed: false, body: cached.body, status: res.status };
  lastSeen.set(path, { etag: res.headers.get("ETag"), text, body: answer });
  return { changed: true, body: answer, status: res.status };
}

export function jobPath(id, tail = "") {
  return `${API}/fine_tuning/jobs/${encodeURIComponent(id)}${tail}`;
}

/** The key in use ("" when signed out). */
export function currentKey() {
  return apiKey;
}

/** Use ``key`` from now on, in this tab's session storage. */
export function rememberKey(key) {
  apiKey = key;
  sessionStorage.setItem(KEY_STORAGE, key);
}

/** Sign out: forget the key and every remembered answer. */
export function forgetKey() {
  apiKey = "";
  sessionStorage.removeItem(KEY_STORAGE);
  lastSeen.clear();
}

/** Forget the last answer of ``path`` (its next GET is unconditional). */
export function forgetAnswer(path) {
  lastSeen.delete(path);
}
