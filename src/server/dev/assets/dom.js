// Building the page from data. Everything that comes from a payload goes in as text
// nodes or attribute values, never as HTML, so a bot (or a user) cannot inject markup.

/** `h("div", {class: "x", onclick: f}, "text", child)`: an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A link that only ever points to http(s): a `javascript:` URL from a payload is shown, not followed. */
export function safeHref(url) {
  try {
    const parsed = new URL(String(url), location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** An external link (new tab, no referrer), or plain text when the URL is not http(s). */
export function extLink(url, text, attrs = {}) {
  const href = safeHref(url);
  if (!href) return h("span", attrs, text ?? String(url));
  return h("a", { ...attrs, href, target: "_blank", rel: "noopener noreferrer" }, text ?? String(url));
}

const URL_RE = /https?:\/\/[^\s<>"]*[^\s<>".,:;'!?)\]]/;
// WhatsApp's emphasis: the marker hugs the text and stands at word edges.
const EMPHASIS_RE = /(^|[^\p{L}\p{N}])([*_~])(?!\s)([^\n]*?\S)\2(?=$|[^\p{L}\p{N}])/u;
const EMPHASIS_TAG = { "*": "strong", "_": "em", "~": "del" };

/** WhatsApp formatting (`*bold*`, `_italic_`, `~strike~`, ```mono```, `` `code` ``, links) as DOM nodes. */
export function formatText(text) {
  const frag = document.createDocumentFragment();
  splitBy(String(text ?? ""), /```([\s\S]+?)```/, (m) => h("code", { class: "mono" }, m[1]), (rest) =>
    splitBy(rest, /`([^`\n]+)`/, (m) => h("code", {}, m[1]), (rest2) =>
      splitBy(rest2, URL_RE, (m) => extLink(m[0]), emphasis),
    ),
  ).forEach((n) => frag.appendChild(n));
  return frag;
}

function emphasis(text) {
  const m = EMPHASIS_RE.exec(text);
  if (!m) return [document.createTextNode(text)];
  const start = m.index + m[1].length;
  const end = m.index + m[0].length;
  const inner = h(EMPHASIS_TAG[m[2]], {});
  emphasis(m[3]).forEach((n) => inner.appendChild(n));
  return [document.createTextNode(text.slice(0, start)), inner, ...emphasis(text.slice(end))];
}

/** Splits `text` at every match of `re`: matches through `onMatch`, the rest through `onRest`. */
function splitBy(text, re, onMatch, onRest) {
  const out = [];
  let rest = text;
  for (;;) {
    const m = re.exec(rest);
    if (!m) break;
    if (m.index > 0) out.push(...onRest(rest.slice(0, m.index)));
    out.push(onMatch(m));
    rest = rest.slice(m.index + m[0].length);
    if (m[0].length === 0) break;
  }
  if (rest) out.push(...onRest(rest));
  return out;
}

/** The first http(s) link in a text, for the link preview card. */
export function firstUrl(text) {
  const m = URL_RE.exec(String(text ?? ""));
  return m ? m[0] : null;
}

/** `05:07` in the viewer's time zone. */
export function clockTime(ms) {
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Pretty JSON for `<pre>`. */
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
