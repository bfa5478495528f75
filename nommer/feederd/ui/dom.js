// Small DOM and formatting helpers shared by the views. Text always goes in as text
// (textContent / attributes), never as HTML: job fields come from callers.

/** h("a", {href: "#/", class: "x", onclick: f}, "text", child...) -> an Element. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (typeof value !== "string" && name in el) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nested arrays, strings, numbers, nodes; null and false skipped). */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace every child of ``el``. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const FINAL_STATES = new Set(["FINISHED", "ERROR", "ABANDONED", "CANCELED"]);
export const RETRYABLE_STATES = new Set(["ERROR", "CANCELED", "ABANDONED"]);
export const STATES = ["PENDING", "DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED", "ERROR", "ABANDONED",
                       "CANCELED"];

/** Seconds since the epoch of an ISO 8601 string or a number of seconds; null when absent. */
export function toSeconds(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms / 1000;
}

const timeFmt = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit",
                                                    hour12: false});
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {month: "short", day: "numeric", hour: "2-digit",
                                                        minute: "2-digit", hour12: false});

/** A <time> element: local time of day (with the date when not today), the ISO time as its datetime. */
export function timeEl(value) {
  const s = toSeconds(value);
  if (s === null) return h("span", {class: "muted"}, "—");
  const d = new Date(s * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return h("time", {datetime: d.toISOString(), title: d.toISOString()},
           today ? timeFmt.format(d) : dateTimeFmt.format(d));
}

/** "0.8 s", "42 s", "3 min 05 s", "2 h 07 min", "3 d 4 h"; "—" for null. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** 1234567 -> "1.2 MB". */
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** 2340800 -> "2.34 Mb/s". */
export function bitrate(bps) {
  if (!bps) return "—";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mb/s` : `${Math.round(bps / 1000)} kb/s`;
}

/** US dollars with cents, or more digits below a cent. */
export function usd(value) {
  if (value === null || value === undefined) return "—";
  return value >= 0.01 || value === 0 ? `$${value.toFixed(2)}` : `$${value.toPrecision(2)}`;
}

/** The first characters of a job id, for tables. */
export function shortId(id) {
  return id ? id.slice(0, 10) : "";
}

/** A state badge (the state's name is its text: colour is never the only signal). */
export function stateBadge(state) {
  return h("span", {class: `badge state-${(state || "unknown").toLowerCase()}`}, state || "?");
}

/** Progress in percent (0..100) to show for a job: its progress, else 100 when FINISHED, else 0. */
export function progressOf(job) {
  if (typeof job.progress === "number") return Math.max(0, Math.min(100, job.progress));
  return job.job_state === "FINISHED" ? 100 : 0;
}

/** A labelled <progress> with its percentage beside it. */
export function progressEl(job, label) {
  const value = progressOf(job);
  return h("span", {class: "progress"},
           h("progress", {max: 100, value, "aria-label": label}),
           h("span", {class: "progress-text"}, `${Math.round(value)} %`));
}

/** Update a progressEl in place. */
export function setProgress(wrapper, job) {
  const value = progressOf(job);
  const bar = wrapper.querySelector("progress");
  if (bar.value !== value) bar.value = value;
  const text = `${Math.round(value)} %`;
  const span = wrapper.querySelector(".progress-text");
  if (span.textContent !== text) span.textContent = text;
}
