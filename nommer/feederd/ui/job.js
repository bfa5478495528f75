// The job page (#/job/<id>): its fields, a chunked job's chunks, its event log (GET /job/<id>/events),
// its outputs with links, and a player for HLS, DASH and MP4 outputs; kept live by the event stream.

import {api} from "./api.js";
import {syncActions} from "./actions.js";
import {FINAL_STATES, bitrate, bytes, duration, h, progressEl, replaceChildren, setProgress, shortId,
        stateBadge, timeEl} from "./dom.js";
import {isOlder, jobDurations} from "./jobs.js";
import {attachPlayer, browserUrl, mediaBaseOf, setMediaBase, storedUri} from "./media.js";

const EVENT_PAGES = 20;  // 500 events a page: more than a job keeps (MAX_EVENTS_PER_JOB)

/** What an output can be played as: {kind, path} or null. */
export function playable(output) {
  if ((output.type === "hls" || output.type === "dash") && output.manifest) {
    return {kind: output.type, path: output.manifest};
  }
  const file = (output.files || []).find((f) => /^(video|audio)\/(mp4|webm|mpeg|ogg)/.test(f.content_type || ""));
  return file ? {kind: "file", path: file.path} : null;
}

function outputTitle(output) {
  const name = output.manifest || (output.dir && output.name ? `${output.dir}/${output.name}` : output.name || output.dir);
  return name ? `${output.type}: ${name}` : output.type;
}

function outputFacts(output) {
  const facts = [];
  for (const rung of output.rungs || []) {
    facts.push(`${rung.name || ""} ${rung.width}x${rung.height} ${rung.codec || ""} ${bitrate(rung.bitrate_average || rung.bitrate_target)}`.trim());
  }
  for (const track of output.audio || []) {
    if (track && typeof track === "object") {
      facts.push(`audio ${track.language || ""} ${track.codec || ""} ${track.channels ? `${track.channels} ch` : ""} ${bitrate(track.bitrate_average)}`.replace(/\s+/g, " ").trim());
    }
  }
  if (output.width && output.height && !(output.rungs || []).length) facts.push(`${output.width}x${output.height}`);
  if (output.bytes) facts.push(`${output.file_count || (output.files || []).length} files, ${bytes(output.bytes)}`);
  return facts;
}

/** A chunk's span of the source: "12.0–24.0 s" (seconds, one decimal). */
export function chunkSpan(chunk) {
  const s = (v) => (typeof v === "number" ? v.toFixed(1) : "?");
  return `${s(chunk.start_s)}–${s(chunk.end_s)} s`;
}

/** A chunked job's plan (``job.chunks``, in order) or null for a job encoded whole (or not planned yet). */
function chunksOf(job) {
  return Array.isArray(job.chunks) && job.chunks.length ? job.chunks : null;
}

export class JobView {
  constructor(root, ctx, jobId) {
    this.root = root;
    this.ctx = ctx;
    this.jobId = jobId;
    this.job = null;
    this.lastSeq = 0;
    this.loaded = false;
    this.waiting = [];
    this.player = null;
    this.outputsKey = null;
    this.chunksKey = null;
    this.chunkRows = new Map();  // chunk index -> {key, tr}: a row is rebuilt only when its chunk changed
    this.refreshing = false;
    this.refreshAgain = false;
  }

  mount() {
    this.status = h("p", {class: "muted", role: "status"}, "Loading the job…");
    this.summary = h("dl", {class: "fields two"});
    this.actions = h("div", {class: "actions"});
    this.chunksBox = h("div");  // holds the Chunks section when the job has chunks
    this.outputs = h("div");
    this.playerBox = h("div", {class: "player", id: "player"});
    this.eventsBody = h("tbody");
    this.eventsNote = h("p", {class: "muted small"});
    replaceChildren(this.root,
      h("p", {}, h("a", {href: "#/"}, "← All jobs")),
      h("div", {class: "view-head"},
        h("h1", {tabindex: -1}, "Job ", h("span", {class: "mono"}, shortId(this.jobId))),
        this.actions),
      h("p", {class: "mono small muted break"}, this.jobId),
      this.status,
      h("section", {"aria-labelledby": "h-summary"}, h("h2", {id: "h-summary", class: "visually-hidden"}, "Fields"),
        this.summary),
      this.chunksBox,
      h("section", {"aria-labelledby": "h-outputs"}, h("h2", {id: "h-outputs"}, "Outputs"), this.outputs,
        this.playerBox),
      h("section", {"aria-labelledby": "h-events"}, h("h2", {id: "h-events"}, "Event log"), this.eventsNote,
        h("div", {class: "table-wrap"},
          h("table", {class: "events cards-on-phone"},
            h("caption", {class: "visually-hidden"}, "The job's events, oldest first"),
            h("thead", {}, h("tr", {}, ["#", "Time", "Kind", "State", "Worker", "Attempt", "Progress", "Details"]
              .map((c) => h("th", {scope: "col"}, c)))),
            this.eventsBody))));
    this.load();
  }

  async load() {
    try {
      const [answer] = await Promise.all([api("GET", `job/${encodeURIComponent(this.jobId)}`), this.loadEvents()]);
      this.job = answer.job;
    } catch (e) {
      this.status.textContent = e.status === 404 ? "No such job (or not one this key may see)."
        : `Could not read the job: ${e.message}`;
      this.status.classList.add("error");
      return;
    }
    this.status.textContent = "";
    this.loaded = true;
    this.render();
    for (const replay of this.waiting.splice(0)) replay();
    this.ctx.rendered("job");
  }

  async loadEvents() {
    if (!this.ctx.features.jobEvents) {
      this.eventsNote.textContent = "This feederd keeps no event log.";
      return;
    }
    for (let page = 0; page < EVENT_PAGES; page++) {
      const answer = await api("GET", `job/${encodeURIComponent(this.jobId)}/events?after=${this.lastSeq}`);
      for (const event of answer.events) this.addEvent(event);
      if (!answer.next_after) break;
    }
  }

  addEvent(event) {
    if (event.seq <= this.lastSeq) return;
    this.lastSeq = event.seq;
    const cell = (label, ...content) => h("td", {"data-label": label}, ...content);
    this.eventsBody.append(h("tr", {dataset: {kind: event.kind}},
      cell("#", event.seq), cell("Time", timeEl(event.at)), cell("Kind", event.kind),
      cell("State", event.state ? stateBadge(event.state) : "—"), cell("Worker", h("span", {class: "mono small"}, event.worker_id || "—")),
      cell("Attempt", event.attempt ?? "—"),
      cell("Progress", event.progress === null || event.progress === undefined ? "—" : `${Math.round(event.progress)} %`),
      cell("Details", h("span", {class: "break"}, event.details || ""))));
    this.eventsNote.textContent = `${this.lastSeq} event${this.lastSeq === 1 ? "" : "s"}.`;
  }

  render() {
    const job = this.job;
    document.title = `Job ${shortId(job.job_id)} (${job.job_state}) · nommer`;
    const {waited, ran} = jobDurations(job, Date.now() / 1000);
    const row = (name, ...value) => [h("dt", {}, name), h("dd", {}, ...value)];
    if (!this.progressBox) this.progressBox = progressEl(job, "Progress");
    setProgress(this.progressBox, job);
    replaceChildren(this.summary,
      row("State", stateBadge(job.job_state), job.job_state_details ? h("span", {class: "details break"}, ` ${job.job_state_details}`) : null),
      row("Progress", this.progressBox),
      row("Attempts", String(job.attempts ?? 0), job.retries ? ` (retried ${job.retries} time${job.retries === 1 ? "" : "s"})` : ""),
      row("Worker", h("span", {class: "mono"}, job.worker_id || "—")),
      job.priority !== undefined && job.priority !== null ? row("Priority", String(job.priority)) : null,
      job.pool ? row("Pool", job.pool) : null,
      row(job.preset ? "Preset" : "Nommer", job.preset || job.nommer || "—"),
      row("Source", h("span", {class: "mono break"}, job.source_path)),
      row("Destination", h("span", {class: "mono break"}, job.dest_path)),
      job.notify_url ? row("Notify URL", h("span", {class: "mono break"}, job.notify_url)) : null,
      row("Created", timeEl(job.created_at)),
      row("Started", timeEl(job.started_at)),
      row("Finished", timeEl(job.finished_at)),
      row("Waited", duration(waited)),
      row("Ran", duration(ran)));
    syncActions(this.actions, job, this.ctx, (answer) => {
      this.job = answer;
      this.render();
    });
    this.renderChunks();
    this.renderOutputs();
  }

  /** The Chunks section: one row per chunk of ``job.chunks``; none for a job encoded whole. Rows whose chunk
   * did not change are kept as they are (an update elsewhere in the job never rebuilds the table). */
  renderChunks() {
    const chunks = chunksOf(this.job);
    const key = chunks ? JSON.stringify(chunks) : null;
    if (key === this.chunksKey) return;
    this.chunksKey = key;
    if (!chunks) {
      replaceChildren(this.chunksBox);
      this.chunksSection = null;
      this.chunkRows = new Map();
      return;
    }
    if (!this.chunksSection) {
      this.chunksBody = h("tbody");
      this.chunksNote = h("p", {class: "muted small", id: "chunks-note"});
      this.chunksSection = h("section", {"aria-labelledby": "h-chunks", class: "chunks"},
        h("h2", {id: "h-chunks"}, "Chunks"), this.chunksNote,
        h("div", {class: "table-wrap"},
          h("table", {class: "chunks cards-on-phone", "aria-describedby": "chunks-note"},
            h("caption", {class: "visually-hidden"}, "The job's chunks, in the order of the source"),
            h("thead", {}, h("tr", {}, ["Chunk", "Span", "Frames", "State", "Attempts", "Worker", "Progress",
                                        "Details"].map((c) => h("th", {scope: "col"}, c)))),
            this.chunksBody)));
      replaceChildren(this.chunksBox, this.chunksSection);
      this.chunkRows = new Map();
    }
    const sameIndexes = chunks.length === this.chunkRows.size && chunks.every((c) => this.chunkRows.has(c.index));
    const rows = new Map();
    for (const chunk of chunks) {
      const rowKey = JSON.stringify(chunk);
      const old = sameIndexes ? this.chunkRows.get(chunk.index) : null;
      if (old && old.key === rowKey) {
        rows.set(chunk.index, old);
        continue;
      }
      const tr = this.chunkRow(chunk);
      if (old) old.tr.replaceWith(tr);
      rows.set(chunk.index, {key: rowKey, tr});
    }
    if (!sameIndexes) replaceChildren(this.chunksBody, [...rows.values()].map((r) => r.tr));  // a new plan
    this.chunkRows = rows;
    const finished = chunks.filter((c) => c.state === "FINISHED").length;
    const encoding = chunks.filter((c) => c.state === "ENCODING").length;
    const frames = chunks.reduce((n, c) => n + (c.frames || 0), 0);
    this.chunksNote.textContent = `${finished} of ${chunks.length} chunk${chunks.length === 1 ? "" : "s"} finished`
      + (encoding ? `, ${encoding} encoding` : "") + ` (${frames} frames in all).`;
  }

  chunkRow(chunk) {
    const cell = (label, ...content) => h("td", {"data-label": label}, ...content);
    const num = (label, value) => h("td", {"data-label": label, class: "num"}, value ?? "—");
    const progress = progressEl({progress: chunk.state === "FINISHED" ? 100 : chunk.progress, job_state: chunk.state},
                                `Progress of chunk ${chunk.index}`);
    return h("tr", {dataset: {index: String(chunk.index), state: chunk.state || ""}},
      h("th", {scope: "row", "data-label": "Chunk"}, String(chunk.index)),
      cell("Span", h("span", {class: "nowrap", title: `${chunk.start_s} to ${chunk.end_s} seconds of the source`},
                     chunkSpan(chunk))),
      num("Frames", chunk.frames),
      cell("State", stateBadge(chunk.state)),
      num("Attempts", chunk.attempts ?? 0),
      cell("Worker", h("span", {class: "mono small"}, chunk.worker_id || "—")),
      cell("Progress", progress),
      cell("Details", h("span", {class: "break"}, chunk.details || "")));
  }

  renderOutputs() {
    const job = this.job;
    const outputs = Array.isArray(job.outputs) ? job.outputs : null;
    const key = JSON.stringify([job.job_state, job.dest_path, outputs, mediaBaseOf(job.dest_path)]);
    if (key === this.outputsKey) return;  // unchanged: keep the focus where it is
    this.outputsKey = key;
    if (!this.baseForm) {  // made once: an update of the job never drops what is being typed
      this.baseForm = this.mediaBaseForm(job.dest_path);
      this.outputList = h("div");
      replaceChildren(this.outputs, this.baseForm, this.outputList);
    }
    const produced = job.job_state === "FINISHED";
    const blocks = [];
    if (!outputs) {
      const url = browserUrl(job.dest_path);
      blocks.push(h("p", {}, "Output: ", url ? h("a", {href: url, class: "mono break"}, url)
                                              : h("span", {class: "mono break"}, job.dest_path)));
      if (produced && url) blocks.push(h("p", {}, this.playButton({kind: "file", path: ""}, "Play")));
    } else {
      if (!produced) {
        blocks.push(h("p", {class: "muted"}, "Requested outputs (files are listed once the job has finished)."));
      }
      for (const output of outputs) blocks.push(this.outputBlock(output, produced));
    }
    replaceChildren(this.outputList, blocks);
  }

  /** The "media base URL" form of destination ``destPath`` (see media.js). */
  mediaBaseForm(destPath) {
    const baseId = "media-base";
    const base = h("input", {id: baseId, type: "url", name: "media_base", value: mediaBaseOf(destPath),
                             placeholder: "https://cdn.example.com/path/", "aria-describedby": "media-base-help",
                             spellcheck: false, autocomplete: "off"});
    const form = h("form", {class: "inline-form media-base"},
      h("label", {for: baseId}, "Media base URL"), base,
      h("button", {type: "submit"}, "Save"),
      h("p", {id: "media-base-help", class: "muted small"},
        "Where a web server (or CDN) serves this job's destination ", h("span", {class: "mono break"}, destPath),
        ": output paths are resolved against it for links and playback. Kept in this browser. ",
        "That server must allow this page's origin (CORS)."));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = base.value.trim();
      if (value && !/^https?:\/\//i.test(value)) {
        this.ctx.flash("The media base URL must start with http:// or https://.", true);
        base.focus();
        return;
      }
      setMediaBase(destPath, value);
      this.ctx.flash(value ? "Media base URL saved." : "Media base URL cleared.");
      this.renderOutputs();
    });
    return form;
  }

  outputBlock(output, produced) {
    const facts = outputFacts(output);
    const files = output.files || [];
    const play = produced ? playable(output) : null;
    const fileRows = files.map((f) => {
      const uri = storedUri(this.job.dest_path, f.path);
      const url = browserUrl(uri);
      return h("li", {},
        url ? h("a", {href: url, class: "mono break"}, f.path) : h("span", {class: "mono break", title: uri}, f.path),
        h("span", {class: "muted small"}, ` ${bytes(f.bytes)}, ${f.content_type || "?"}`));
    });
    const list = h("ul", {class: "files"}, fileRows);
    return h("article", {class: "output"},
      h("h3", {}, outputTitle(output)),
      facts.length ? h("ul", {class: "facts"}, facts.map((f) => h("li", {}, f))) : null,
      play ? h("p", {}, this.playButton(play, `Play ${play.kind === "file" ? "" : play.kind.toUpperCase()}`.trim())) : null,
      files.length > 12 ? h("details", {}, h("summary", {}, `${files.length} files`), list) : list);
  }

  playButton(play, label) {
    const uri = storedUri(this.job.dest_path, play.path);
    const url = browserUrl(uri);
    if (!url) {
      return h("span", {class: "muted small"},
               `${label}: set a media base URL above; the browser cannot fetch ${uri.split(":")[0]}:// URLs.`);
    }
    return h("button", {type: "button", class: "play", dataset: {kind: play.kind},
                        onclick: () => this.play(url, play.kind, play.path || this.job.dest_path)}, label);
  }

  async play(url, kind, name) {
    this.stopPlayer();
    const video = h("video", {id: "player-video", controls: true, muted: true, playsinline: true,
                              "aria-label": `Output ${name}`});
    const note = h("p", {class: "small muted"}, `Loading ${name}…`);
    const errors = h("p", {class: "error small", role: "alert"});
    replaceChildren(this.playerBox, video, note, errors);
    try {
      this.player = await attachPlayer(video, url, kind, (message) => { errors.textContent = message; });
      note.textContent = `${name} (${url}), played by ${this.player.engine}.`;
    } catch (e) {
      errors.textContent = `Cannot play ${name}: ${e.message}`;
    }
    video.focus();
  }

  stopPlayer() {
    if (this.player) {
      try {
        this.player.destroy();
      } catch {
        // already gone
      }
    }
    this.player = null;
  }

  onJobEvent(event) {
    if (event.job_id !== this.jobId) return;
    if (!this.loaded) {
      this.waiting.push(() => this.onJobEvent(event));
      return;
    }
    if (event.seq > this.lastSeq + 1) {
      this.catchUp();
    } else {
      this.addEvent(event);
    }
    if (event.job && !isOlder(event.at, this.job.updated_at)) {
      this.job = {...this.job, ...event.job};
      this.render();
    }
    // The stream's rows carry no chunks: a chunk or merge event (and, for a chunked job, a progress
    // milestone: the chunks' progress) reads the whole job again.
    if (event.kind === "retry" || event.kind === "chunk" || event.kind === "merge"
        || (event.kind === "progress" && chunksOf(this.job))
        || (event.kind === "state" && FINAL_STATES.has(event.state))) this.refresh();
  }

  async catchUp() {
    try {
      await this.loadEvents();
    } catch {
      // the next event tries again
    }
  }

  /** Read the whole job again (its outputs, chunks and retries are not in the stream's rows). One read at a
   * time: asked again while one is under way, one more follows it (answers never arrive out of order). */
  async refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = true;
    try {
      do {
        this.refreshAgain = false;
        try {
          this.job = (await api("GET", `job/${encodeURIComponent(this.jobId)}`)).job;
          this.render();
        } catch {
          // kept as it was
        }
      } while (this.refreshAgain);
    } finally {
      this.refreshing = false;
    }
  }

  onSnapshot(data, reset) {
    const row = (data.jobs || []).find((j) => j.job_id === this.jobId);
    if (reset) {
      if (this.loaded) {
        this.refresh();
        this.catchUp();
      }
      return;
    }
    if (row && this.loaded && !isOlder(row.updated_at, this.job.updated_at)) {
      this.job = {...this.job, ...row};
      this.render();
    }
  }

  tick() {
    if (this.loaded && !FINAL_STATES.has(this.job.job_state)) {
      // durations of a running job grow: redraw the two cells
      const {waited, ran} = jobDurations(this.job, Date.now() / 1000);
      const dds = this.summary.querySelectorAll("dd");
      const dts = [...this.summary.querySelectorAll("dt")];
      dts.forEach((dt, i) => {
        if (dt.textContent === "Waited") dds[i].textContent = duration(waited);
        if (dt.textContent === "Ran") dds[i].textContent = duration(ran);
      });
    }
  }

  unmount() {
    this.stopPlayer();
  }
}
