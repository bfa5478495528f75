// The live event stream (GET /events, Server-Sent Events): one EventSource per page.
//
// EventSource cannot send headers, so the page asks POST /events/token (with the key) for a
// short-lived token and opens /events?token=T. EventSource reconnects by itself (with
// Last-Event-ID) while the token lives; once the server refuses it (401 after the token's
// expiry, 503 when full) the source is closed, and a new token is fetched and the stream
// reopened with ?last_event_id= of the last message, so no event is missed (or the server
// answers with a "reset": a fresh snapshot).

import {api, apiUrl} from "./api.js";

const RETRY_MS = [1000, 2000, 5000, 10000];

export class EventStream {
  /**
   * handlers: {snapshot(data, reset), job(event), status(text)}. ``data`` is
   * {jobs: [row...], truncated, last_event_id}; ``event`` is a job event (kind, state,
   * seq, at, worker_id, attempt, progress, details) with ``job`` (the job's row).
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.source = null;
    this.lastId = null;
    this.failures = 0;
    this.timer = null;
    this.status = "off";
    this.generation = 0;
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.handlers.status(status);
  }

  /** (Re)connect: a new token, then a new EventSource resuming after the last message. */
  async start() {
    this.stop();
    const generation = ++this.generation;
    this.setStatus("connecting");
    let token;
    try {
      token = (await api("POST", "events/token")).token;
    } catch (e) {
      if (generation !== this.generation) return;
      if (e.status === 401 || e.status === 403) {  // the page asks for a key; start() again after
        this.setStatus("off");
        return;
      }
      this.retryLater(generation);
      return;
    }
    if (generation !== this.generation) return;
    const query = new URLSearchParams({token});
    if (this.lastId) query.set("last_event_id", this.lastId);
    const source = new EventSource(apiUrl(`events?${query}`));
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.setStatus("live");
    };
    const snapshot = (reset) => (message) => {
      this.lastId = message.lastEventId || this.lastId;
      this.handlers.snapshot(JSON.parse(message.data), reset);
    };
    source.addEventListener("snapshot", snapshot(false));
    source.addEventListener("reset", snapshot(true));
    source.addEventListener("job", (message) => {
      this.lastId = message.lastEventId || this.lastId;
      this.handlers.job(JSON.parse(message.data));
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        this.retryLater(generation);
      } else {
        this.setStatus("reconnecting");  // EventSource retries by itself
      }
    };
  }

  retryLater(generation) {
    this.setStatus("reconnecting");
    const delay = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
    this.failures += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (generation === this.generation) this.start();
    }, delay);
  }

  stop() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.setStatus("off");
  }
}
