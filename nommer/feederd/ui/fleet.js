// Workers and fleet (#/workers): GET /workers (needs an admin key), read again every 5 s while
// shown: the fleet's backend and trouble, its instances (type, spot or on-demand, uptime, cost)
// and the workers with their jobs.

import {api} from "./api.js";
import {duration, h, replaceChildren, shortId, timeEl, usd} from "./dom.js";

const REFRESH_MS = 5000;

function marketLabel(market) {
  if (!market) return "—";
  return market === "spot" ? "spot" : market === "on-demand" ? "on-demand" : market;
}

function poolsOf(worker) {
  if (Array.isArray(worker.pools)) return worker.pools;
  return worker.pool ? [worker.pool] : [];
}

function table(caption, columns, rows, className) {
  return h("div", {class: "table-wrap"},
    h("table", {class: `${className} cards-on-phone`},
      h("caption", {class: "visually-hidden"}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col"}, c)))),
      h("tbody", {}, rows.map((cells) => h("tr", {},
        cells.map((cell, i) => h("td", {"data-label": columns[i]}, cell)))))));
}

/** The fleet's trouble as a paragraph, or null. */
export function troubleNote(trouble) {
  if (!trouble) return null;
  return h("p", {class: "trouble", role: "alert"},
    h("strong", {}, `Fleet trouble (${trouble.code}): `), trouble.message,
    trouble.since ? [" — since ", timeEl(trouble.since)] : null);
}

export class FleetView {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.timer = null;
  }

  mount() {
    this.status = h("p", {class: "muted", role: "status"}, "Loading workers…");
    this.body = h("div");
    replaceChildren(this.root, h("div", {class: "view-head"}, h("h1", {tabindex: -1}, "Workers and fleet")),
                    this.status, this.body);
    this.load();
  }

  async load() {
    clearTimeout(this.timer);
    let answer;
    try {
      answer = await api("GET", "workers");
    } catch (e) {
      this.status.textContent = e.status === 403 ? "Workers and fleet need a key with the admin scope."
        : e.status === 503 ? e.message : `Could not read the workers: ${e.message}`;
      this.status.classList.add("error");
      if (e.status !== 403 && e.status !== 401) this.timer = setTimeout(() => this.load(), REFRESH_MS);
      return;
    }
    this.status.classList.remove("error");
    this.status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
    this.render(answer);
    this.ctx.rendered("workers");
    this.timer = setTimeout(() => this.load(), REFRESH_MS);
  }

  render(answer) {
    const fleet = answer.fleet || null;
    const workers = answer.workers || [];
    const instances = answer.instances || null;
    const failures = fleet && fleet.launch_failures ? Object.entries(fleet.launch_failures) : [];
    const alive = workers.filter((w) => w.alive).length;
    const costPerHour = (instances || []).reduce((sum, i) => sum + (i.price_per_hour || 0), 0);
    const cost = (instances || []).reduce((sum, i) => sum + (i.cost_usd || 0), 0);
    const now = Date.now() / 1000;
    const withPools = workers.some((w) => poolsOf(w).length);
    replaceChildren(this.body,
      h("section", {"aria-labelledby": "h-fleet"},
        h("h2", {id: "h-fleet"}, "Fleet"),
        h("dl", {class: "fields"},
          h("dt", {}, "Backend"), h("dd", {}, fleet ? fleet.backend : "—"),
          h("dt", {}, "Workers"), h("dd", {}, `${alive} alive of ${workers.length} known`),
          instances ? [h("dt", {}, "Instances"), h("dd", {}, String(instances.length)),
                       h("dt", {}, "Cost"), h("dd", {}, `${usd(costPerHour)} an hour now; ${usd(cost)} so far (estimate)`)]
            : null,
          failures.length ? [h("dt", {}, "Refused launches"),
                             h("dd", {}, failures.map(([code, n]) => `${code}: ${n}`).join(", "))] : null),
        fleet ? troubleNote(fleet.trouble) : null,
        answer.fleet_error ? h("p", {class: "error"}, answer.fleet_error) : null),
      instances ? h("section", {"aria-labelledby": "h-instances"},
        h("h2", {id: "h-instances"}, "Instances"),
        instances.length === 0 ? h("p", {class: "muted"}, "No instances.")
          : table("Fleet instances", ["Instance", "Type", "Pool", "Zone", "Market", "State", "Uptime", "Price / h", "Cost",
                                      "Worker registered"],
                  instances.map((i) => [h("span", {class: "mono small"}, i.instance_id), i.instance_type || "—",
                                        i.pool || "—", i.availability_zone || "—", marketLabel(i.market), i.state || "—",
                                        duration(i.uptime_s), usd(i.price_per_hour), usd(i.cost_usd),
                                        i.registered ? "yes" : "no"]), "instances")) : null,
      h("section", {"aria-labelledby": "h-workers"},
        h("h2", {id: "h-workers"}, "Workers"),
        workers.length === 0 ? h("p", {class: "muted"}, "No worker has registered yet.")
          : table("Workers, most recently seen first",
                  ["Worker", "State", "Alive", "Host", ...(withPools ? ["Pools"] : []), "Instance", "Up for", "Last seen",
                   "Jobs now", "Finished", "Speed"],
                  workers.map((w) => [
                    h("span", {class: "mono small"}, w.worker_id), w.state || "—", w.alive ? "yes" : "no",
                    w.host || "—", ...(withPools ? [poolsOf(w).join(", ") || "—"] : []),
                    w.instance_id ? `${w.instance_id} ${w.instance_type || ""} ${marketLabel(w.market)}`.trim() : "local",
                    w.started_at ? duration((w.alive ? now : w.last_seen) - w.started_at) : "—",
                    `${duration(w.seen_s_ago)} ago`,
                    (w.current_jobs || []).length ? (w.current_jobs || []).map((j) => h("span", {class: "block"},
                      h("a", {href: `#/job/${j.job_id}`, class: "mono"}, shortId(j.job_id)),
                      ` ${j.job_state} ${j.progress === null ? "" : `${Math.round(j.progress)} %`}`)) : "—",
                    String(w.jobs_finished ?? w.jobs_done ?? 0),
                    w.last_encode_speed ? `${w.last_encode_speed.toFixed(2)}× real time` : "—",
                  ]), "workers")));
  }

  unmount() {
    clearTimeout(this.timer);
  }
}
