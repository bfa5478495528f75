// Settings (#/settings): the API key of this tab, and where job destinations are served for
// the browser (the media base URLs, see media.js).

import {apiKey} from "./api.js";
import {h, replaceChildren} from "./dom.js";
import {mediaRules, setMediaBase} from "./media.js";

export class SettingsView {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
  }

  mount() {
    this.keyBox = h("div");
    this.rulesBox = h("div");
    replaceChildren(this.root,
      h("div", {class: "view-head"}, h("h1", {tabindex: -1}, "Settings")),
      h("section", {"aria-labelledby": "h-key"}, h("h2", {id: "h-key"}, "API key"), this.keyBox),
      h("section", {"aria-labelledby": "h-media"}, h("h2", {id: "h-media"}, "Media base URLs"),
        h("p", {class: "muted"}, "A browser fetches http(s) URLs only. For each destination prefix (file://, s3://...), ",
          "the http(s) URL where a web server or CDN serves it: the job page resolves output paths against it to ",
          "link and play outputs. Kept in this browser (localStorage)."),
        this.rulesBox));
    this.render();
    this.ctx.rendered("settings");
  }

  render() {
    const key = apiKey.get();
    replaceChildren(this.keyBox,
      h("p", {}, key ? "This tab has an API key (kept in its session storage until the tab closes)."
                     : "No API key: the page calls the API anonymously, which feederd allows on loopback while no key exists."),
      key ? h("button", {type: "button", onclick: () => { apiKey.forget(); this.render(); }}, "Forget key")
          : h("button", {type: "button", onclick: () => this.ctx.askForKey()}, "Enter a key"));
    const rules = mediaRules();
    const prefix = h("input", {id: "rule-prefix", type: "text", required: true, spellcheck: false, autocomplete: "off",
                               placeholder: "s3://bucket/outputs/"});
    const base = h("input", {id: "rule-base", type: "url", required: true, spellcheck: false, autocomplete: "off",
                             placeholder: "https://cdn.example.com/outputs/"});
    const form = h("form", {class: "inline-form"},
      h("label", {for: "rule-prefix"}, "Destination prefix"), prefix,
      h("label", {for: "rule-base"}, "Served at"), base,
      h("button", {type: "submit"}, "Add"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!prefix.value.trim() || !/^https?:\/\//i.test(base.value.trim())) {
        this.ctx.flash("Give a destination prefix and an http(s) URL.", true);
        return;
      }
      setMediaBase(prefix.value.trim(), base.value.trim());
      this.render();
    });
    replaceChildren(this.rulesBox,
      rules.length ? h("ul", {class: "rules"}, rules.map((r) => h("li", {},
        h("span", {class: "mono break"}, r.prefix), " → ", h("span", {class: "mono break"}, r.base), " ",
        h("button", {type: "button", "aria-label": `Remove the media base URL of ${r.prefix}`,
                     onclick: () => { setMediaBase(r.prefix, ""); this.render(); }}, "Remove"))))
        : h("p", {class: "muted"}, "None yet."),
      form);
  }

  unmount() {}
}
