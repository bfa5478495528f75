// The job table (#/): newest first, filter by state, pages by cursor (GET /jobs), kept live by
// the event stream: rows change in place, new jobs appear at the top of the first page.

import {api} from "./api.js";
import {syncActions} from "./actions.js";
import {FINAL_STATES, STATES, duration, h, progressEl, replaceChildren, setProgress, shortId,
        stateBadge, timeEl, toSeconds} from "./dom.js";

const PAGE_SIZE = 50;

const COLUMNS = ["Job", "State", "Progress", "Attempts", "Worker", "Created", "Started", "Finished", "Waited",
                 "Ran", "Actions"];

function newerFirst(a, b) {
  const ta = toSeconds(a.created_at) || 0, tb = toSeconds(b.created_at) || 0;
  if (ta !== tb) return tb - ta;
  return a.job_id < b.job_id ? 1 : a.job_id > b.job_id ? -1 : 0;
}

/** True when time ``a`` is before time ``b`` (ISO strings or seconds); false when either is missing. */
export function isOlder(a, b) {
  const ta = toSeconds(a), tb = toSeconds(b);
  return ta !== null && tb !== null && ta < tb;
}

/** Seconds a job waited before a worker took it, and ran since; null when not yet. */
export function jobDurations(job, now) {
  const created = toSeconds(job.created_at), started = toSeconds(job.started_at);
  const finished = toSeconds(job.finished_at);
  const final = FINAL_STATES.has(job.job_state);
  const waited = created === null ? null
    : started !== null ? started - created : final ? null : now - created;
  const ran = started === null ? null
    : finished !== null ? finished - started : final ? null : now - started;
  return {waited, ran};
}

function whatOf(job) {
  if (job.preset) return `preset ${job.preset}`;
  if (job.nommer) return job.nommer.split(".").pop();
  return "";
}

/** One table row, updated in place as the job changes. */
class JobRow {
  constructor(job, ctx, onChange) {
    this.job = job;
    this.ctx = ctx;
    const label = (name) => ({"data-label": name});
    this.link = h("a", {href: `#/job/${job.job_id}`, class: "job-link mono"}, shortId(job.job_id));
    this.what = h("span", {class: "muted small block"});
    this.state = h("span");
    this.details = h("span", {class: "muted small block details"});
    this.progress = progressEl(job, `Progress of job ${shortId(job.job_id)}`);
    this.cells = {
      attempts: h("td", {...label("Attempts"), class: "num"}),
      worker: h("td", {...label("Worker"), class: "mono small"}),
      created: h("td", label("Created")), started: h("td", label("Started")), finished: h("td", label("Finished")),
      waited: h("td", {...label("Waited"), class: "num"}), ran: h("td", {...label("Ran"), class: "num"}),
    };
    this.actions = h("div", {class: "actions"});
    this.tr = h("tr", {dataset: {jobId: job.job_id}},
                h("th", {scope: "row", "data-label": "Job"}, this.link, this.what),
                h("td", label("State"), this.state, this.details),
                h("td", label("Progress"), this.progress),
                this.cells.attempts, this.cells.worker, this.cells.created, this.cells.started,
                this.cells.finished, this.cells.waited, this.cells.ran,
                h("td", label("Actions"), this.actions));
    this.onChange = onChange;
    this.render({});
  }

  /** Merge ``fields`` (a job row or a whole job) and redraw what changed. */
  update(fields) {
    const before = this.job;
    this.job = {...this.job, ...fields};
    this.render(before);
  }

  render(before) {
    const job = this.job;
    this.tr.dataset.state = job.job_state;
    if (before.job_state !== job.job_state) replaceChildren(this.state, stateBadge(job.job_state));
    const details = job.job_state_details || "";
    if (this.details.textContent !== details) {
      this.details.textContent = details.length > 90 ? `${details.slice(0, 89)}…` : details;
      this.details.title = details;
    }
    const what = whatOf(job);
    if (this.what.textContent !== what) this.what.textContent = what;
    setProgress(this.progress, job);
    this.cells.attempts.textContent = job.attempts ?? 0;
    this.cells.worker.textContent = job.worker_id || "—";
    for (const name of ["created", "started", "finished"]) {
      if (before[`${name}_at`] !== job[`${name}_at`] || !this.cells[name].firstChild) {
        replaceChildren(this.cells[name], timeEl(job[`${name}_at`]));
      }
    }
    this.tick(Date.now() / 1000);
    syncActions(this.actions, job, this.ctx, (answer) => {
      this.update(answer);
      this.onChange(this);
    });
  }

  /** Redraw the durations (the running ones grow each second). */
  tick(now) {
    const {waited, ran} = jobDurations(this.job, now);
    const w = duration(waited), r = duration(ran);
    if (this.cells.waited.textContent !== w) this.cells.waited.textContent = w;
    if (this.cells.ran.textContent !== r) this.cells.ran.textContent = r;
  }
}

export class JobsView {
  /** ``query``: URLSearchParams of the hash (state, cursor). */
  constructor(root, ctx, query) {
    this.root = root;
    this.ctx = ctx;
    this.stateFilter = (query.get("state") || "").toUpperCase();
    if (!STATES.includes(this.stateFilter)) this.stateFilter = "";
    this.cursor = query.get("cursor") || "";
    this.rows = new Map();
    this.order = [];
    this.nextCursor = null;
    this.loaded = false;
    this.waiting = [];  // stream messages that came before the page's jobs: applied after them
  }

  get firstPage() {
    return !this.cursor;
  }

  mount() {
    const select = h("select", {id: "state-filter", name: "state"},
                     h("option", {value: ""}, "All states"),
                     STATES.map((s) => h("option", {value: s, selected: s === this.stateFilter}, s)));
    select.addEventListener("change", () => {
      const q = new URLSearchParams();
      if (select.value) q.set("state", select.value);
      location.hash = `#/${q.toString() ? `?${q}` : ""}`;
    });
    this.tbody = h("tbody");
    this.status = h("p", {class: "muted", role: "status"}, "Loading jobs…");
    this.pager = h("nav", {class: "pager", "aria-label": "Job pages"});
    this.table = h("table", {class: "jobs cards-on-phone"},
                   h("caption", {class: "visually-hidden"}, "Jobs, newest first"),
                   h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {scope: "col"}, c)))),
                   this.tbody);
    replaceChildren(this.root,
      h("div", {class: "view-head"},
        h("h1", {tabindex: -1}, "Jobs"),
        h("form", {class: "filter", role: "search", onsubmit: (e) => e.preventDefault()},
          h("label", {for: "state-filter"}, "State"), select)),
      this.status,
      h("div", {class: "table-wrap"}, this.table),
      this.pager);
    this.load();
  }

  async load() {
    this.loaded = false;
    const q = new URLSearchParams({limit: String(PAGE_SIZE)});
    if (this.stateFilter) q.set("state", this.stateFilter);
    if (this.cursor) q.set("cursor", this.cursor);
    let answer;
    try {
      answer = await api("GET", `jobs?${q}`);
    } catch (e) {
      this.status.textContent = `Could not list the jobs: ${e.message}`;
      this.status.classList.add("error");
      return;
    }
    this.rows.clear();
    this.order = [];
    this.nextCursor = answer.next_cursor || null;
    const rows = answer.jobs.map((job) => this.makeRow(job));
    this.order = rows;
    this.tbody.replaceChildren(...rows.map((r) => r.tr));
    this.loaded = true;
    for (const replay of this.waiting.splice(0)) replay();
    this.renderStatus();
    this.renderPager();
    this.ctx.rendered("jobs");
  }

  makeRow(job) {
    const row = new JobRow(job, this.ctx, () => {});
    this.rows.set(job.job_id, row);
    return row;
  }

  renderStatus() {
    const n = this.order.length;
    const what = this.stateFilter ? ` in state ${this.stateFilter}` : "";
    this.status.classList.remove("error");
    this.status.textContent = n === 0 ? `No jobs${what}.`
      : `${n} job${n === 1 ? "" : "s"}${what}${this.firstPage ? ", newest first" : ""}${this.nextCursor ? "; more on the next page" : ""}.`;
  }

  renderPager() {
    const link = (label, params) => {
      const q = new URLSearchParams(params);
      return h("a", {href: `#/${q.toString() ? `?${q}` : ""}`}, label);
    };
    const base = this.stateFilter ? {state: this.stateFilter} : {};
    replaceChildren(this.pager,
      this.cursor ? link("Newest jobs", base) : null,
      this.nextCursor ? link("Older jobs", {...base, cursor: this.nextCursor}) : null);
  }

  matches(job) {
    return !this.stateFilter || job.job_state === this.stateFilter;
  }

  /** A job row from the stream: update it, or add it when it belongs on this page. */
  upsert(job) {
    const row = this.rows.get(job.job_id);
    if (row) {
      row.update(job);
      return;
    }
    if (!this.loaded || !this.firstPage || !this.matches(job)) return;
    const oldest = this.order[this.order.length - 1];
    if (this.nextCursor && oldest && newerFirst(job, oldest.job) > 0) return;  // belongs on a later page
    const added = this.makeRow(job);
    let index = this.order.findIndex((r) => newerFirst(job, r.job) < 0);
    if (index < 0) index = this.order.length;
    this.order.splice(index, 0, added);
    this.tbody.insertBefore(added.tr, this.order[index + 1] ? this.order[index + 1].tr : null);
    this.renderStatus();
  }

  onJobEvent(event) {
    if (!this.loaded) {
      this.waiting.push(() => this.onJobEvent(event));
      return;
    }
    const row = this.rows.get(event.job_id);
    if (row && isOlder(event.at, row.job.updated_at)) return;  // the page read the job after this event
    if (event.job) this.upsert(event.job);
  }

  onSnapshot(data, reset) {
    if (reset) {
      this.load();
      return;
    }
    if (!this.loaded) {
      this.waiting.push(() => this.onSnapshot(data, reset));
      return;
    }
    for (const job of data.jobs || []) {
      const row = this.rows.get(job.job_id);
      if (!row || !isOlder(job.updated_at, row.job.updated_at)) this.upsert(job);
    }
  }

  tick(now) {
    for (const row of this.order) if (!FINAL_STATES.has(row.job.job_state)) row.tick(now);
  }

  unmount() {}
}
