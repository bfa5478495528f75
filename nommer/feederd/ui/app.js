// nommer's dashboard: hash routes (#/, #/job/<id>, #/submit, #/workers, #/settings), the API
// key prompt, the live event stream feeding the current view, the fleet trouble banner.
// Plain ES modules, no build step; served by feederd at /ui/ (nommer/feederd/dashboard.py).

import {api, apiKey, features as readFeatures, onUnauthorized} from "./api.js";
import {h, replaceChildren, timeEl} from "./dom.js";
import {FleetView} from "./fleet.js";
import {JobView} from "./job.js";
import {JobsView} from "./jobs.js";
import {SettingsView} from "./settings.js";
import {EventStream} from "./stream.js";
import {SubmitView} from "./submit.js";

const HEALTH_MS = 15000;
const JOB_ROUTE = /^\/job\/([0-9a-f]{50})\/?$/;

const main = document.getElementById("main");
const flashBox = document.getElementById("flash");
const keyPanel = document.getElementById("key-panel");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyMessage = document.getElementById("key-message");
const keyStatus = document.getElementById("key-status");
const forgetButton = document.getElementById("forget-key");
const streamStatus = document.getElementById("stream-status");
const troubleBox = document.getElementById("trouble");

let view = null;
let flashTimer = null;
const firstRender = {};

const ctx = {
  features: {retry: true, events: true, jobEvents: true},
  /** A message in the live region; ``isError`` makes it an alert. */
  flash(text, isError = false) {
    clearTimeout(flashTimer);
    flashBox.className = isError ? "flash error" : "flash";
    flashBox.setAttribute("role", isError ? "alert" : "status");
    flashBox.textContent = text;
    flashTimer = setTimeout(() => { flashBox.textContent = ""; flashBox.className = "flash"; }, isError ? 15000 : 6000);
  },
  /** A view has drawn its data: marks the first time (performance "nommer:<view>"). */
  rendered(name) {
    if (firstRender[name] === undefined) {
      performance.mark(`nommer:${name}`);
      firstRender[name] = performance.now();
    }
    document.body.dataset.rendered = name;
  },
  askForKey(message) {
    showKeyPanel(message);
  },
};

// --- the API key ---------------------------------------------------------------------------

function showKeyStatus() {
  const key = apiKey.get();
  keyStatus.textContent = key ? "Key: set for this tab" : "No key";
  forgetButton.hidden = !key;
}

function showKeyPanel(message) {
  keyMessage.textContent = message || "This feederd needs an API key.";
  keyPanel.hidden = false;
  keyInput.value = "";
  keyInput.focus();
}

onUnauthorized((error) => {
  stream.stop();
  showKeyPanel(apiKey.get() ? `The key was refused: ${error.message}` : "This feederd needs an API key: enter one to go on.");
});

keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    keyMessage.textContent = "Enter a key (nommer keys create NAME --scope read,submit,cancel).";
    keyInput.focus();
    return;
  }
  apiKey.set(key);
  keyInput.value = "";
  keyPanel.hidden = true;
  restart();
});

forgetButton.addEventListener("click", () => {
  apiKey.forget();
  ctx.flash("The key is forgotten.");
  restart();
});

apiKey.onChange(showKeyStatus);

function restart() {
  route();
  stream.start();
}

// --- the live stream -----------------------------------------------------------------------

const STATUS_TEXT = {live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", off: "Not live"};

const stream = new EventStream({
  snapshot(data, reset) {
    if (firstRender.snapshot === undefined) {
      performance.mark("nommer:snapshot");
      firstRender.snapshot = performance.now();
    }
    if (view && view.onSnapshot) view.onSnapshot(data, reset);
  },
  job(event) {
    if (view && view.onJobEvent) view.onJobEvent(event);
  },
  status(status) {
    streamStatus.textContent = STATUS_TEXT[status] || status;
    streamStatus.dataset.status = status;
    document.body.dataset.stream = status;
  },
});

// --- fleet trouble (public /health) --------------------------------------------------------

async function checkHealth() {
  try {
    const health = await api("GET", "health", undefined, {auth: false});
    const trouble = health.fleet && health.fleet.trouble;
    if (trouble) {
      replaceChildren(troubleBox, h("strong", {}, `Fleet trouble (${trouble.code}): `), trouble.message,
                      trouble.since ? [" — since ", timeEl(trouble.since)] : null, " ",
                      h("a", {href: "#/workers"}, "Workers and fleet"));
      troubleBox.hidden = false;
    } else {
      troubleBox.hidden = true;
      troubleBox.replaceChildren();
    }
  } catch (e) {
    replaceChildren(troubleBox, h("strong", {}, "feederd is not healthy: "), e.message);
    troubleBox.hidden = false;
  }
}

// --- routes --------------------------------------------------------------------------------

function route() {
  const hash = location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
  const [path, queryText] = hash.split("?");
  const query = new URLSearchParams(queryText || "");
  if (view && view.unmount) view.unmount();
  let match, title, nav;
  if (path === "/" || path === "") {
    view = new JobsView(main, ctx, query);
    title = "Jobs";
    nav = "#/";
  } else if ((match = JOB_ROUTE.exec(path))) {
    view = new JobView(main, ctx, match[1]);
    title = "Job";
    nav = "#/";
  } else if (path === "/submit") {
    view = new SubmitView(main, ctx);
    title = "Submit a job";
    nav = "#/submit";
  } else if (path === "/workers") {
    view = new FleetView(main, ctx);
    title = "Workers and fleet";
    nav = "#/workers";
  } else if (path === "/settings") {
    view = new SettingsView(main, ctx);
    title = "Settings";
    nav = "#/settings";
  } else {
    view = null;
    replaceChildren(main, h("h1", {tabindex: -1}, "Not found"),
                    h("p", {}, "No such page. ", h("a", {href: "#/"}, "All jobs")));
    title = "Not found";
  }
  document.title = `${title} · nommer`;
  for (const link of document.querySelectorAll("nav.main-nav a")) {
    if (link.getAttribute("href") === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view) view.mount();
  return title;
}

window.addEventListener("hashchange", () => {
  route();
  // a new page: move the focus to its heading, as a full page load would
  const heading = main.querySelector("h1");
  if (heading) heading.focus({preventScroll: false});
});

document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

setInterval(() => {
  if (view && view.tick) view.tick(Date.now() / 1000);
}, 1000);

function boot() {
  showKeyStatus();
  route();
  stream.start();
  checkHealth();
  setInterval(checkHealth, HEALTH_MS);
  // Which optional routes this feederd has (retry): read off the first render's path.
  readFeatures().then((found) => {
    ctx.features = found;
  });
}

// A page kept in the back/forward cache must not hold its stream open (a connection per
// cached page: six of them and the browser has no connection left for this origin).
window.addEventListener("pagehide", () => stream.stop());
window.addEventListener("pageshow", (e) => {
  if (e.persisted) {
    route();
    stream.start();
  }
});

window.nommerUi = {firstRender, stream, ctx};
boot();
