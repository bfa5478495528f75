// Where a job's outputs can be fetched by the browser, and playing them.
//
// An output's files are named by paths relative to the job's dest_path. A browser can fetch
// http(s) URLs only: a file:// or s3:// destination must be served by something else (a web
// server, a CDN, an S3 website or CloudFront), and the "media base URL" says where. It is kept
// in this browser's localStorage as rules "destination prefix -> base URL" (the job page sets
// one for its own dest_path); the longest matching prefix wins. An http(s) destination with no
// rule is fetched from where it was uploaded. Players fetch manifests and segments with XHR,
// so that server must allow this page's origin (CORS: Access-Control-Allow-Origin).

const RULES_ITEM = "nommer.mediaBase";

function store() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** The rules, as [{prefix, base}], longest prefix first. */
export function mediaRules() {
  let rules = [];
  try {
    rules = JSON.parse((store() && store().getItem(RULES_ITEM)) || "[]");
  } catch {
    rules = [];
  }
  return (Array.isArray(rules) ? rules : [])
    .filter((r) => r && typeof r.prefix === "string" && typeof r.base === "string")
    .sort((a, b) => b.prefix.length - a.prefix.length);
}

function saveRules(rules) {
  const s = store();
  if (s) s.setItem(RULES_ITEM, JSON.stringify(rules));
}

/** Set (or with an empty base, remove) the base URL of destination ``prefix``. */
export function setMediaBase(prefix, base) {
  const rules = mediaRules().filter((r) => r.prefix !== prefix);
  if (base) rules.push({prefix, base: withSlash(base)});
  saveRules(rules);
}

/** The base URL set for exactly ``prefix``, or "". */
export function mediaBaseOf(prefix) {
  const rule = mediaRules().find((r) => r.prefix === prefix);
  return rule ? rule.base : "";
}

function withSlash(text) {
  return text.endsWith("/") ? text : `${text}/`;
}

/** ``dest_path`` + a relative path, as the worker stored it (prefix with a trailing slash). */
export function storedUri(destPath, relPath) {
  return relPath ? withSlash(destPath) + relPath : destPath;
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/**
 * The http(s) URL the browser can fetch for the file stored at ``uri`` (a dest_path plus an
 * output's relative path), or null: the longest rule whose prefix starts ``uri``, else
 * ``uri`` itself when it is http(s) without credentials.
 */
export function browserUrl(uri) {
  if (!uri) return null;
  for (const rule of mediaRules()) {
    if (uri.startsWith(rule.prefix)) {
      try {
        return new URL(encodePath(uri.slice(rule.prefix.length)), rule.base).href;
      } catch {
        return null;
      }
    }
  }
  try {
    const url = new URL(uri);
    if ((url.protocol === "http:" || url.protocol === "https:") && !url.username && !url.password) return url.href;
  } catch {
    return null;
  }
  return null;
}

// --- players -----------------------------------------------------------------------------

const scripts = new Map();

function loadScript(path) {
  if (!scripts.has(path)) {
    scripts.set(path, new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = new URL(path, document.baseURI).href;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`could not load ${path}`));
      document.head.append(s);
    }));
  }
  return scripts.get(path);
}

/**
 * Play ``url`` in ``video``: ``kind`` "hls" (hls.js where Media Source Extensions exist,
 * else the browser's own HLS), "dash" (dash.js) or "file" (the <video> itself).
 * ``onError(message)`` hears fatal player errors. Returns {destroy()}.
 */
export async function attachPlayer(video, url, kind, onError) {
  if (kind === "hls") {
    await loadScript("vendor/hls.min.js");
    const Hls = window.Hls;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls({enableWorker: true});
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) onError(`HLS: ${data.type} ${data.details}`);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      startPlaying(video);
      return {destroy: () => hls.destroy(), engine: `hls.js ${Hls.version}`};
    }
    if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url;
      startPlaying(video);
      return {destroy: () => video.removeAttribute("src"), engine: "native HLS"};
    }
    throw new Error("this browser cannot play HLS");
  }
  if (kind === "dash") {
    await loadScript("vendor/dash.all.min.js");
    const dashjs = window.dashjs;
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({debug: {logLevel: dashjs.Debug.LOG_LEVEL_WARNING}});
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      onError(`DASH: ${(e.error && (e.error.message || e.error.code)) || "error"}`);
    });
    player.initialize(video, url, true);
    return {destroy: () => player.reset(), engine: `dash.js ${player.getVersion()}`};
  }
  video.src = url;
  startPlaying(video);
  return {destroy: () => video.removeAttribute("src"), engine: "the browser"};
}

function startPlaying(video) {
  video.muted = true;  // browsers refuse to autoplay sound; the controls unmute
  const p = video.play();
  if (p) p.catch(() => {});  // autoplay refused: the controls are there
}
