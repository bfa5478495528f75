// The JSON API as the page uses it: the API key (kept in this tab's sessionStorage only),
// fetch with "Authorization: Bearer", errors as ApiError.

const KEY_ITEM = "nommer.apiKey";

/** The API's root: the parent of /ui/ (so a feederd behind a path prefix works too). */
export const API_ROOT = new URL("../", document.baseURI);

/** The absolute URL of an API path such as "jobs?limit=50". */
export function apiUrl(path) {
  return new URL(path, API_ROOT).href;
}

/** An error answer of the API (or none at all: status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error_code) || (status === 0 ? "NETWORK" : "ERROR");
    this.field = (body && body.field) || null;
  }
}

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null;  // storage refused (a privacy setting): the key lasts as long as the page
  }
}

let memoryKey = "";
const keyListeners = new Set();
let unauthorized = () => {};

/** The API key of this tab: get, set, forget; ``onChange(f)`` calls f() after each change. */
export const apiKey = {
  get() {
    const s = storage();
    return (s ? s.getItem(KEY_ITEM) : memoryKey) || "";
  },
  set(key) {
    const s = storage();
    if (s) s.setItem(KEY_ITEM, key); else memoryKey = key;
    keyListeners.forEach((f) => f());
  },
  forget() {
    const s = storage();
    if (s) s.removeItem(KEY_ITEM);
    memoryKey = "";
    keyListeners.forEach((f) => f());
  },
  onChange(f) {
    keyListeners.add(f);
  },
};

/** ``f(error)`` is called on every 401 (the page then asks for a key). */
export function onUnauthorized(f) {
  unauthorized = f;
}

/**
 * ``await api("GET", "jobs?limit=50")`` -> the parsed JSON answer.
 * ``body`` (any JSON value) is sent as JSON. Throws ApiError for an error answer
 * (``success: false`` or a status of 400 or more) or when feederd cannot be reached.
 */
export async function api(method, path, body, {auth = true} = {}) {
  const headers = {Accept: "application/json"};
  const key = apiKey.get();
  if (auth && key) headers.Authorization = `Bearer ${key}`;
  const init = {method, headers, cache: "no-store", credentials: "omit", redirect: "error"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path), init);
  } catch (e) {
    throw new ApiError(0, {message: `feederd did not answer (${e.message})`});
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok || (data && data.success === false)) {
    const error = new ApiError(response.status, data || {message: `HTTP ${response.status} ${response.statusText}`});
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return data;
}

/** What this feederd offers, from its public /openapi.json: ``{retry, events, jobEvents}``. */
export async function features() {
  try {
    const doc = await api("GET", "openapi.json", undefined, {auth: false});
    const paths = doc.paths || {};
    return {retry: "/job/{job_id}/retry" in paths, events: "/events" in paths,
            jobEvents: "/job/{job_id}/events" in paths};
  } catch {
    return {retry: true, events: true, jobEvents: true};
  }
}
