// One chat entry → one list item, drawn as WhatsApp shows it. The bot's messages are
// exact Cloud API payloads (src/render/mod.rs); the simulated user's are the bodies this
// page posted to /dev/api/message. One function per message kind.

import { h, formatText, extLink, firstUrl, clockTime, safeHref, pretty } from "./dom.js";

/**
 * `entry`: {direction: "in"|"out", id, payload, status, at, reactions: [emoji]}.
 * `ctx`: {actions: {reply, openList, askLocation, flowInfo}, quote(id) → entry|undefined}.
 */
export function renderEntry(entry, ctx) {
  const mine = entry.direction === "in";
  const body = mine ? renderUserMessage(entry.payload) : renderBotMessage(entry.payload, ctx);
  const classes = ["msg", mine ? "me" : "bot", body.bare ? "bare" : ""].join(" ");
  const quoted = !mine && entry.payload && entry.payload.context && ctx.quote(entry.payload.context.message_id);
  return h(
    "li",
    { class: classes, "data-testid": mine ? "msg-user" : "msg-bot", "data-kind": body.kind, "data-id": entry.id || "" },
    h(
      "div",
      { class: "bubble" },
      quoted ? h("div", { class: "quote" }, excerpt(quoted)) : null,
      body.node,
      meta(entry, mine),
    ),
    body.after || null,
    entry.reactions && entry.reactions.length
      ? h("div", { class: "reactions", "data-testid": "reaction" }, entry.reactions.join(" "))
      : null,
  );
}

function meta(entry, mine) {
  const title = Number.isFinite(entry.at) ? new Date(entry.at).toISOString() : "";
  return h(
    "div",
    { class: "meta" },
    h("time", { title }, clockTime(entry.at)),
    mine ? null : ticks(entry.status),
  );
}

/** ✓ sent, ✓✓ delivered, blue ✓✓ read, ! failed, 🕓 queued: the bot's message as Meta reports it. */
export function ticks(status) {
  const s = status || "queued";
  const label = { queued: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "⚠" }[s] || s;
  return h("span", { class: `ticks ${s}`, "data-testid": "ticks", "data-status": s, title: s, "aria-label": s }, label);
}

function excerpt(entry) {
  const p = entry.payload || {};
  const text =
    (p.text && (p.text.body || p.text)) ||
    (p.reply && p.reply.title) ||
    (p.interactive && p.interactive.body && p.interactive.body.text) ||
    (p.location && "📍 Location") ||
    (p.media && `📎 ${p.media.kind}`) ||
    (p.type ? `${p.type}` : "message");
  return String(text).slice(0, 120);
}

// ---- the simulated user's messages -------------------------------------------------

function renderUserMessage(p) {
  p = p || {};
  if (typeof p.text === "string") return { kind: "text", node: h("div", { class: "text" }, formatText(p.text)) };
  if (p.text && typeof p.text.body === "string") return { kind: "text", node: h("div", { class: "text" }, formatText(p.text.body)) };
  if (p.reply) {
    return {
      kind: "reply",
      node: h("div", { class: "text" }, h("span", { class: "reply-mark", "aria-hidden": "true" }, p.reply.kind === "list" ? "☰ " : "↩ "), p.reply.title || p.reply.id),
    };
  }
  if (p.location) return { kind: "location", node: locationCard(p.location) };
  if (p.media) return { kind: p.media.kind, node: mediaNode(p.media.kind, p.media) };
  return { kind: "unknown", node: h("pre", { class: "code small" }, pretty(p)) };
}

// ---- the bot's messages --------------------------------------------------------------

const BOT_KINDS = {
  text: renderText,
  image: renderMedia,
  video: renderMedia,
  audio: renderMedia,
  document: renderMedia,
  sticker: renderMedia,
  interactive: renderInteractive,
  template: renderTemplate,
  location: (p) => ({ node: locationCard(p.location || {}) }),
  contacts: renderContacts,
  reaction: (p) => ({ node: h("div", { class: "text muted" }, `reacted ${(p.reaction || {}).emoji || ""}`) }),
};

function renderBotMessage(p, ctx) {
  p = p || {};
  const draw = BOT_KINDS[p.type];
  const out = draw ? draw(p, ctx) : renderUnknown(p);
  out.kind = out.kind || p.type || "unknown";
  return out;
}

function renderText(p) {
  const t = p.text || {};
  const body = h("div", { class: "text" }, formatText(t.body));
  const url = t.preview_url ? firstUrl(t.body) : null;
  if (!url) return { node: body };
  // WhatsApp fetches the page for its card; offline we show the address it would fetch.
  let host = url;
  try {
    host = new URL(url).host;
  } catch {
    /* shown as is */
  }
  const card = extLink(url, [h("div", { class: "preview-host" }, host), h("div", { class: "preview-url" }, url)], {
    class: "link-preview",
    "data-testid": "link-preview",
  });
  return { node: h("div", {}, card, body) };
}

function renderMedia(p) {
  const kind = p.type;
  const m = p[kind] || {};
  if (kind === "sticker") return { node: mediaNode(kind, m), bare: true };
  return { node: mediaNode(kind, m) };
}

/** A media file by link (or a Media API id, which only WhatsApp can show). */
function mediaNode(kind, m) {
  const caption = m.caption ? h("div", { class: "text caption" }, formatText(m.caption)) : null;
  const href = m.link ? safeHref(m.link) : null;
  let media;
  if (!href) {
    media = h("div", { class: "media-missing" }, `${icon(kind)} ${kind}`, h("div", { class: "small muted" }, m.id ? `media id ${m.id}` : "no link"));
  } else if (kind === "image" || kind === "sticker") {
    media = h("img", { class: kind === "sticker" ? "sticker" : "media", src: href, alt: m.caption || kind, loading: "lazy" });
    // Offline or a dead link: keep the bubble's shape, say what it was.
    media.addEventListener("error", () => media.replaceWith(brokenMedia(kind, href)), { once: true });
  } else if (kind === "video") {
    media = h("video", { class: "media", src: href, controls: true, preload: "none" });
  } else if (kind === "audio") {
    media = h("audio", { class: "audio", src: href, controls: true, preload: "none" });
  } else {
    const name = m.filename || lastSegment(href);
    media = extLink(href, [h("span", { class: "doc-icon", "aria-hidden": "true" }, "📄"), h("span", { class: "doc-name" }, name)], { class: "document" });
  }
  return h("div", { class: "media-wrap", "data-testid": `media-${kind}` }, media, caption);
}

function brokenMedia(kind, href) {
  return h("div", { class: "media-missing" }, `${icon(kind)} ${kind} not loaded`, h("div", { class: "small" }, extLink(href, lastSegment(href))));
}

function icon(kind) {
  return { image: "🖼", video: "🎬", audio: "🎵", document: "📄", sticker: "🏷" }[kind] || "📎";
}

function lastSegment(url) {
  try {
    const parts = new URL(url).pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || url);
  } catch {
    return url;
  }
}

function locationCard(l) {
  const lat = Number(l.latitude);
  const lon = Number(l.longitude);
  const coords = Number.isFinite(lat) && Number.isFinite(lon) ? `${lat.toFixed(4)}, ${lon.toFixed(4)}` : "?";
  const osm = Number.isFinite(lat) && Number.isFinite(lon) ? `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}` : null;
  return h(
    "div",
    { class: "location", "data-testid": "location" },
    // A drawn map, not tiles: the page works offline.
    h("div", { class: "map", "aria-hidden": "true" }, h("span", { class: "pin" }, "📍")),
    l.name ? h("div", { class: "loc-name" }, l.name) : null,
    l.address ? h("div", { class: "loc-address small" }, l.address) : null,
    h("div", { class: "small muted" }, osm ? extLink(osm, coords) : coords),
  );
}

function renderContacts(p) {
  const cards = Array.isArray(p.contacts) ? p.contacts : [];
  return {
    node: h(
      "div",
      { class: "contacts" },
      cards.map((c) => {
        const name = (c.name && (c.name.formatted_name || [c.name.first_name, c.name.last_name].filter(Boolean).join(" "))) || "Contact";
        const phones = Array.isArray(c.phones) ? c.phones : [];
        const emails = Array.isArray(c.emails) ? c.emails : [];
        return h(
          "div",
          { class: "contact", "data-testid": "contact" },
          h("div", { class: "contact-avatar", "aria-hidden": "true" }, name.slice(0, 1).toUpperCase()),
          h(
            "div",
            {},
            h("div", { class: "contact-name" }, name),
            c.org && c.org.company ? h("div", { class: "small muted" }, c.org.company) : null,
            phones.map((ph) => h("div", { class: "small" }, `📞 ${ph.phone || ph.wa_id || ""}${ph.type ? ` · ${ph.type}` : ""}`)),
            emails.map((e) => h("div", { class: "small" }, `✉ ${e.email || ""}`)),
          ),
        );
      }),
    ),
  };
}

// ---- interactive: buttons, list, cta_url, location request, flow ---------------------

function renderInteractive(p, ctx) {
  const i = p.interactive || {};
  const parts = [header(i.header), i.body ? h("div", { class: "text" }, formatText(i.body.text)) : null, i.footer ? h("div", { class: "footer" }, i.footer.text) : null];
  const action = i.action || {};
  switch (i.type) {
    case "button": {
      const buttons = (action.buttons || []).map((b) => b.reply || {});
      return {
        kind: "buttons",
        node: h("div", {}, parts),
        after: h(
          "div",
          { class: "actions", role: "group", "aria-label": "Reply buttons" },
          buttons.map((b) =>
            h("button", { type: "button", class: "action", "data-testid": "reply-button", "data-reply-id": b.id, onclick: () => ctx.actions.reply({ id: b.id, title: b.title, kind: "button" }) }, "↩ ", b.title),
          ),
        ),
      };
    }
    case "list":
      return {
        kind: "list",
        node: h("div", {}, parts),
        after: h(
          "div",
          { class: "actions" },
          h("button", { type: "button", class: "action", "data-testid": "list-open", "aria-haspopup": "dialog", onclick: () => ctx.actions.openList(i) }, "☰ ", action.button || "Options"),
        ),
      };
    case "cta_url": {
      const prm = action.parameters || {};
      return {
        kind: "cta_url",
        node: h("div", {}, parts),
        after: h("div", { class: "actions" }, extLink(prm.url, ["↗ ", prm.display_text || prm.url], { class: "action", "data-testid": "cta-url" })),
      };
    }
    case "location_request_message":
      return {
        kind: "request_location",
        node: h("div", {}, parts),
        after: h(
          "div",
          { class: "actions" },
          h("button", { type: "button", class: "action", "data-testid": "send-location", onclick: () => ctx.actions.askLocation() }, "📍 Send location"),
        ),
      };
    case "flow": {
      const prm = action.parameters || {};
      const which = prm.flow_name || prm.flow_id || "a flow";
      return {
        kind: "whatsapp_flow",
        node: h(
          "div",
          {},
          parts,
          h("div", { class: "flow-placeholder", "data-testid": "flow-placeholder" }, `WhatsApp Flow “${which}” (${prm.mode || "published"}${prm.flow_action_payload && prm.flow_action_payload.screen ? `, screen ${prm.flow_action_payload.screen}` : ""}). Forms open on a phone only: the simulator does not fill them.`),
        ),
        after: h("div", { class: "actions" }, h("button", { type: "button", class: "action", disabled: true, title: "WhatsApp Flows are not simulated" }, "📝 ", prm.flow_cta || "Open")),
      };
    }
    default:
      return renderUnknown(p);
  }
}

function header(hd) {
  if (!hd) return null;
  if (hd.type === "text") return h("div", { class: "header" }, hd.text);
  const m = hd[hd.type];
  if (m) return mediaNode(hd.type, m);
  return null;
}

// ---- templates ---------------------------------------------------------------------

/** A template's text lives in WhatsApp Manager; we show its name and the parameters filled in. */
function renderTemplate(p, ctx) {
  const t = p.template || {};
  const components = Array.isArray(t.components) ? t.components : [];
  const lines = [];
  const buttons = [];
  for (const c of components) {
    const params = Array.isArray(c.parameters) ? c.parameters : [];
    if (c.type === "button") {
      const param = params[0] || {};
      buttons.push({ index: c.index, sub: c.sub_type, value: param.payload ?? param.text ?? "" });
      continue;
    }
    if (!params.length) continue;
    lines.push(
      h(
        "div",
        { class: "tpl-part" },
        h("span", { class: "tpl-label" }, c.type || "body"),
        params.map((prm, n) => h("span", { class: "tpl-param" }, h("span", { class: "muted" }, `{{${n + 1}}} `), paramText(prm))),
      ),
    );
  }
  const lang = t.language && (t.language.code || t.language);
  return {
    kind: "template",
    node: h(
      "div",
      { class: "template", "data-testid": "template" },
      h("div", { class: "tpl-name" }, "📄 Template ", h("strong", {}, t.name || "?"), lang ? h("span", { class: "muted" }, ` · ${lang}`) : null),
      lines.length ? lines : h("div", { class: "muted small" }, "no parameters"),
    ),
    after: buttons.length
      ? h(
          "div",
          { class: "actions" },
          buttons.map((b) =>
            b.sub === "url"
              ? h("span", { class: "action static" }, `↗ URL button ${Number(b.index) + 1}: …${b.value}`)
              : h("button", { type: "button", class: "action", "data-testid": "template-button", onclick: () => ctx.actions.reply({ id: String(b.value), title: String(b.value), kind: "button" }) }, "↩ ", String(b.value || `button ${Number(b.index) + 1}`)),
          ),
        )
      : null,
  };
}

function paramText(prm) {
  switch (prm.type) {
    case "text":
      return prm.text;
    case "currency":
      return (prm.currency && prm.currency.fallback_value) || "currency";
    case "date_time":
      return (prm.date_time && prm.date_time.fallback_value) || "date";
    case "image":
    case "video":
    case "document":
      return `${icon(prm.type)} ${(prm[prm.type] && (prm[prm.type].link || prm[prm.type].id)) || prm.type}`;
    default:
      return JSON.stringify(prm);
  }
}

function renderUnknown(p) {
  return {
    kind: p.type || "payload",
    node: h("details", { class: "unknown" }, h("summary", {}, `⚙ ${p.type || "unknown"} message`), h("pre", { class: "code small" }, pretty(p))),
  };
}

/** The list's sheet: sections, rows with descriptions, one to pick, then Send. */
export function fillListSheet(dialog, interactive, onPick) {
  const action = interactive.action || {};
  dialog.querySelector("h2").textContent = action.button || "Options";
  const body = dialog.querySelector(".sheet-body");
  const send = dialog.querySelector("[value=send]");
  send.disabled = true;
  let picked = null;
  body.replaceChildren(
    ...(action.sections || []).map((s, si) =>
      h(
        "fieldset",
        { class: "section" },
        s.title ? h("legend", {}, s.title) : null,
        (s.rows || []).map((r) =>
          h(
            "label",
            { class: "row-pick", "data-testid": "list-row", "data-row-id": r.id },
            h("span", { class: "row-text" }, h("span", { class: "row-title" }, r.title), r.description ? h("span", { class: "row-desc" }, r.description) : null),
            h("input", {
              type: "radio",
              name: "row",
              value: `${si}`,
              onchange: () => {
                picked = r;
                send.disabled = false;
              },
            }),
          ),
        ),
      ),
    ),
  );
  dialog.onclose = () => {
    if (dialog.returnValue === "send" && picked) onPick(picked);
  };
  dialog.returnValue = "";
  dialog.showModal();
}
