// The submit form (#/submit): a server preset (GET /presets), source and destination,
// optional overrides as JSON, priority and pool when the server's job schema has them
// (GET /schema); POST /job/submit.

import {api} from "./api.js";
import {h, replaceChildren, shortId} from "./dom.js";

const FIELD_IDS = {source_path: "f-source", dest_path: "f-dest", preset: "f-preset", overrides: "f-overrides",
                   priority: "f-priority", pool: "f-pool", notify_url: "f-notify"};

function field(id, label, input, help) {
  if (help) input.setAttribute("aria-describedby", `${id}-help`);
  return h("div", {class: "field"},
    h("label", {for: id}, label), input,
    help ? h("p", {id: `${id}-help`, class: "muted small"}, help) : null,
    h("p", {id: `${id}-error`, class: "error small field-error", hidden: true}));
}

export class SubmitView {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.presets = [];
  }

  mount() {
    this.status = h("p", {class: "muted", role: "status"}, "Loading the server's presets…");
    this.formBox = h("div");
    replaceChildren(this.root, h("div", {class: "view-head"}, h("h1", {tabindex: -1}, "Submit a job")),
                    this.status, this.formBox);
    this.load();
  }

  async load() {
    let presets, schema;
    try {
      [presets, schema] = await Promise.all([
        api("GET", "presets"),
        api("GET", "schema", undefined, {auth: false}).catch(() => ({})),
      ]);
    } catch (e) {
      this.status.textContent = `Could not read the presets: ${e.message}`;
      this.status.classList.add("error");
      return;
    }
    this.presets = presets.presets || [];
    const props = (schema && schema.properties) || {};
    this.status.textContent = "";
    this.renderForm(props);
    this.ctx.rendered("submit");
  }

  renderForm(props) {
    const preset = h("select", {id: FIELD_IDS.preset, name: "preset", required: true},
      this.presets.map((p) => h("option", {value: p.name}, p.name)));
    const describe = h("p", {id: `${FIELD_IDS.preset}-help`, class: "muted small", "aria-live": "polite"});
    const showDescription = () => {
      const p = this.presets.find((x) => x.name === preset.value);
      describe.textContent = p ? `${p.description || ""}${(p.requires || []).length
        ? ` Needs in overrides: ${p.requires.join(", ")}.` : ""}` : "";
    };
    preset.setAttribute("aria-describedby", describe.id);
    preset.addEventListener("change", showDescription);
    const hlsFirst = this.presets.find((p) => p.name === "hls-h264");
    if (hlsFirst) preset.value = hlsFirst.name;
    showDescription();

    this.inputs = {
      preset,
      source_path: h("input", {id: FIELD_IDS.source_path, name: "source_path", type: "text", required: true,
                               autocomplete: "off", spellcheck: false, placeholder: "s3://bucket/in/title.mov"}),
      dest_path: h("input", {id: FIELD_IDS.dest_path, name: "dest_path", type: "text", required: true,
                             autocomplete: "off", spellcheck: false, placeholder: "s3://bucket/out/title/"}),
      overrides: h("textarea", {id: FIELD_IDS.overrides, name: "overrides", rows: 3, spellcheck: false,
                                placeholder: '{"encoder_preset": "veryfast"}'}),
      notify_url: h("input", {id: FIELD_IDS.notify_url, name: "notify_url", type: "url", autocomplete: "off",
                              spellcheck: false}),
    };
    if (props.priority) {
      this.inputs.priority = h("input", {id: FIELD_IDS.priority, name: "priority", type: "number",
                                         min: props.priority.minimum ?? 0, max: props.priority.maximum ?? 100,
                                         step: 1, placeholder: String(props.priority.default ?? 50)});
    }
    if (props.pool) {
      this.inputs.pool = h("input", {id: FIELD_IDS.pool, name: "pool", type: "text", autocomplete: "off",
                                     spellcheck: false, placeholder: "default"});
    }
    this.result = h("div", {class: "submit-result", role: "status"});
    this.submitButton = h("button", {type: "submit", class: "primary"}, "Submit");
    const form = h("form", {class: "submit-form", novalidate: true},
      h("div", {class: "field"}, h("label", {for: FIELD_IDS.preset}, "Preset"), preset, describe,
        h("p", {id: `${FIELD_IDS.preset}-error`, class: "error small field-error", hidden: true})),
      field(FIELD_IDS.source_path, "Source", this.inputs.source_path,
            "The file to encode: file://, http(s):// or s3:// (as the server allows)."),
      field(FIELD_IDS.dest_path, "Destination", this.inputs.dest_path,
            "Where the outputs go: a prefix ending in /; output paths are relative to it."),
      field(FIELD_IDS.overrides, "Overrides (JSON, optional)", this.inputs.overrides,
            "Fields to change in the preset's outputs, as a JSON object."),
      this.inputs.priority ? field(FIELD_IDS.priority, "Priority (optional)", this.inputs.priority,
                                   `${props.priority.minimum ?? 0} to ${props.priority.maximum ?? 100}; higher runs first.`) : null,
      this.inputs.pool ? field(FIELD_IDS.pool, "Pool (optional)", this.inputs.pool,
                               "The pool of workers to run it; default: the preset's, else \"default\".") : null,
      field(FIELD_IDS.notify_url, "Notify URL (optional)", this.inputs.notify_url,
            "A URL called at each state change of the job."),
      h("div", {class: "form-actions"}, this.submitButton),
      this.result);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    replaceChildren(this.formBox, form);
  }

  clearErrors() {
    for (const [name, id] of Object.entries(FIELD_IDS)) {
      const error = document.getElementById(`${id}-error`);
      if (error) {
        error.hidden = true;
        error.textContent = "";
      }
      const input = this.inputs[name];
      if (input) input.removeAttribute("aria-invalid");
    }
  }

  showError(name, message) {
    const input = this.inputs[name];
    const error = document.getElementById(`${FIELD_IDS[name]}-error`);
    if (!input || !error) return false;
    error.textContent = message;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && x !== error.id);
    input.setAttribute("aria-describedby", [...described, error.id].join(" "));
    input.focus();
    return true;
  }

  /** The job body from the form, or null after showing what is wrong. */
  body() {
    const body = {preset: this.inputs.preset.value};
    for (const name of ["source_path", "dest_path"]) {
      const value = this.inputs[name].value.trim();
      if (!value) {
        this.showError(name, "Required.");
        return null;
      }
      body[name] = value;
    }
    const overrides = this.inputs.overrides.value.trim();
    if (overrides) {
      let parsed;
      try {
        parsed = JSON.parse(overrides);
      } catch (e) {
        this.showError("overrides", `Not valid JSON: ${e.message}`);
        return null;
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        this.showError("overrides", "Must be a JSON object, such as {\"encoder_preset\": \"veryfast\"}.");
        return null;
      }
      body.overrides = parsed;
    }
    const notify = this.inputs.notify_url.value.trim();
    if (notify) body.notify_url = notify;
    if (this.inputs.priority && this.inputs.priority.value.trim() !== "") {
      const n = Number(this.inputs.priority.value);
      if (!Number.isInteger(n)) {
        this.showError("priority", "A whole number.");
        return null;
      }
      body.priority = n;
    }
    if (this.inputs.pool && this.inputs.pool.value.trim()) body.pool = this.inputs.pool.value.trim();
    return body;
  }

  async submit() {
    this.clearErrors();
    replaceChildren(this.result);
    const body = this.body();
    if (!body) return;
    this.submitButton.disabled = true;
    try {
      const answer = await api("POST", "job/submit", body);
      const id = answer.job_id;
      this.ctx.flash(`Job ${shortId(id)} submitted.`);
      replaceChildren(this.result, "Submitted: ",
        h("a", {href: `#/job/${id}`, class: "mono", id: "submitted-job", dataset: {jobId: id}}, id),
        ". ", h("a", {href: "#/"}, "See it in the job table"), ".");
    } catch (e) {
      const name = (e.field || "").split(/[.[]/)[0];
      if (!this.showError(name in this.inputs ? name : "", e.message)) {
        replaceChildren(this.result, h("p", {class: "error", role: "alert"}, `Not submitted: ${e.message}`));
      }
    } finally {
      this.submitButton.disabled = false;
    }
  }
}
