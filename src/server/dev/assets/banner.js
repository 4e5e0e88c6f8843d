// What the page tells the designer about the server: the reload banner (a broken edit's
// diagnostics while the old version answers), short notices and errors.

import { h } from "./dom.js";

/** Shows every bot's diagnostics of its last failed reload; hides the banner when none has any. */
export function showBanner(bots) {
  const banner = document.getElementById("banner");
  const broken = (bots || []).filter((b) => b.diagnostics && b.diagnostics.length);
  if (!broken.length) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  banner.replaceChildren(
    ...broken.map((b) =>
      h(
        "div",
        { class: "banner-bot" },
        h(
          "p",
          { class: "banner-title" },
          h("strong", {}, `Your last edit of ${b.name} was not loaded`),
          ` — v${b.version} still answers. Fix the file and save: the bot reloads by itself.`,
        ),
        h(
          "ul",
          { class: "diagnostics" },
          b.diagnostics.map((d) =>
            h(
              "li",
              { class: `diag ${d.severity || "error"}`, "data-testid": "diagnostic" },
              h("code", { class: "where" }, `${d.file}:${d.line}:${d.column}`),
              " ",
              h("span", { class: "severity" }, d.severity || "error"),
              d.code ? h("span", { class: "muted" }, ` [${d.code}]`) : null,
              ": ",
              h("span", { class: "message" }, d.message),
              d.hint ? h("div", { class: "hint" }, "hint: ", d.hint) : null,
            ),
          ),
        ),
      ),
    ),
  );
  banner.hidden = false;
}

let noticeTimer = null;

/** A short notice ("v3 live") that goes away by itself. */
export function showNotice(text, kind = "ok") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = `notice ${kind}`;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (el.hidden = true), kind === "error" ? 8000 : 4000);
}

export function showError(text) {
  console.warn(text);
  showNotice(text, "error");
}
