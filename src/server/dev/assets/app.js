// The simulator page: state, the live event stream, users, the composer and the clock.
// The chat is drawn by render.js, the inspector by inspector.js, the agent pane by agent.js.

import { api, onKeyNeeded, subscribe } from "./api.js";
import { h } from "./dom.js";
import { renderEntry, fillListSheet, ticks } from "./render.js";
import { createInspector } from "./inspector.js";
import { createAgentPane } from "./agent.js";
import { showBanner, showNotice, showError } from "./banner.js";
import { loadUsers, saveUsers, validUserId, suggestUserId } from "./users.js";

const $ = (sel) => document.querySelector(sel);

const state = {
  info: null,
  users: loadUsers(),
  selected: null,
  /** user id → {entries: [], byId: Map, loaded, typing, unread} */
  chats: new Map(),
  clockOffset: 0,
};
state.selected = localStorage.getItem("parlance.dev.selected");
if (!state.users.some((u) => u.id === state.selected)) state.selected = state.users[0].id;

function chat(user) {
  let c = state.chats.get(user);
  if (!c) {
    c = { entries: [], byId: new Map(), loaded: false, typing: false, unread: 0 };
    state.chats.set(user, c);
  }
  return c;
}

const userName = (id) => (state.users.find((u) => u.id === id) || {}).name || "";

// ---- chat entries --------------------------------------------------------------------

/** Adds an entry unless one with its id is there (the page's own send and the stream's echo). */
function addEntry(user, entry) {
  const c = chat(user);
  if (entry.id && c.byId.has(entry.id)) return;
  const p = entry.payload || {};
  // A reaction is shown on the message it reacts to, as WhatsApp does.
  if (entry.direction === "out" && p.type === "reaction" && p.reaction) {
    const target = c.byId.get(p.reaction.message_id);
    if (target) {
      target.reactions = p.reaction.emoji ? [p.reaction.emoji] : [];
      if (entry.id) c.byId.set(entry.id, { reactionOf: target });
      if (user === state.selected) refreshEntry(target);
      return;
    }
  }
  c.entries.push(entry);
  if (entry.id) c.byId.set(entry.id, entry);
  if (user === state.selected) {
    appendEntry(entry);
    if (entry.direction === "out") scheduleRead();
  } else if (entry.direction === "out") {
    c.unread += 1;
    renderUsers();
  }
}

function setStatus(user, wamid, status, error) {
  const c = chat(user);
  const entry = c.byId.get(wamid);
  if (!entry || entry.reactionOf) return;
  // Statuses can arrive out of order; never go back from read to delivered.
  const rank = { queued: 0, sent: 1, delivered: 2, read: 3, failed: 4 };
  if ((rank[status] ?? 0) < (rank[entry.status] ?? 0) && status !== "failed") return;
  entry.status = status;
  entry.error = error || null;
  if (user === state.selected) refreshEntry(entry);
}

const messagesEl = $("#messages");
const liOf = new Map();

// Follow the conversation while the view is at its end, also when a message grows after
// it was drawn (an image loads, a broken one is replaced); leave it alone while the
// designer scrolls back.
let stick = true;
let autoTop = -1;
messagesEl.addEventListener("scroll", () => {
  // Our own scrolling says nothing about where the designer wants to be.
  if (Math.abs(messagesEl.scrollTop - autoTop) < 2) return;
  stick = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 60;
});
function toEnd() {
  messagesEl.scrollTop = messagesEl.scrollHeight;
  autoTop = messagesEl.scrollTop;
}
const grown = new ResizeObserver(() => {
  if (stick) toEnd();
});

function quote(id) {
  const e = chat(state.selected).byId.get(id);
  return e && !e.reactionOf ? e : undefined;
}

const ctx = {
  quote,
  actions: {
    reply: (reply) => send({ reply }),
    openList: (interactive) =>
      fillListSheet($("#list-sheet"), interactive, (row) => send({ reply: { id: row.id, title: row.title, kind: "list" } })),
    askLocation: () => openAttach("location"),
  },
};

function renderChat() {
  liOf.clear();
  grown.disconnect();
  const c = chat(state.selected);
  messagesEl.replaceChildren();
  for (const entry of c.entries) appendEntry(entry, false);
  renderTyping();
  scrollToEnd(true);
}

function appendEntry(entry, scroll = true) {
  const li = renderEntry(entry, ctx);
  liOf.set(entry, li);
  const typing = messagesEl.querySelector(".typing");
  messagesEl.insertBefore(li, typing);
  grown.observe(li);
  if (scroll) scrollToEnd(stick || entry.direction === "in");
}

/** Updates ticks and reactions in place, so focus and a playing video stay. */
function refreshEntry(entry) {
  const li = liOf.get(entry);
  if (!li) return;
  const old = li.querySelector(".ticks");
  if (old) old.replaceWith(ticks(entry.status));
  if (entry.error) li.querySelector(".bubble").title = entry.error;
  let r = li.querySelector(".reactions");
  if (entry.reactions && entry.reactions.length) {
    if (!r) {
      r = h("div", { class: "reactions", "data-testid": "reaction" });
      li.appendChild(r);
    }
    r.textContent = entry.reactions.join(" ");
  } else if (r) r.remove();
}

function renderTyping() {
  const c = chat(state.selected);
  const el = messagesEl.querySelector(".typing");
  if (c.typing && !el) {
    messagesEl.appendChild(
      h("li", { class: "msg bot typing", "data-testid": "typing", "aria-label": "typing" }, h("div", { class: "bubble" }, h("span", { class: "dots" }, h("i"), h("i"), h("i")))),
    );
    scrollToEnd(stick);
  } else if (!c.typing && el) el.remove();
  $("#chat-sub").textContent = c.typing ? "typing…" : subtitle();
}

function subtitle() {
  const bot = state.info && state.info.bots[0];
  return bot ? `talking to ${userName(state.selected) || "user"} (${state.selected})` : "";
}

function scrollToEnd(force) {
  if (!force) return;
  stick = true;
  toEnd();
}

async function loadHistory(user) {
  const c = chat(user);
  try {
    const items = await api.history(user);
    c.entries = [];
    c.byId = new Map();
    c.loaded = true;
    for (const item of items || []) {
      addEntryQuiet(c, {
        direction: item.direction,
        id: item.id || item.wamid || null,
        payload: item.payload,
        status: item.status || (item.direction === "out" ? "sent" : undefined),
        at: item.at,
        flow: item.flow,
        node: item.node,
      });
    }
  } catch (e) {
    showError(`Could not load the conversation: ${e.message}`);
  }
  if (user === state.selected) {
    renderChat();
    scheduleRead();
  }
}

/** As addEntry, without drawing (a whole history at once). */
function addEntryQuiet(c, entry) {
  const p = entry.payload || {};
  if (entry.direction === "out" && p.type === "reaction" && p.reaction) {
    const target = c.byId.get(p.reaction.message_id);
    if (target) {
      target.reactions = p.reaction.emoji ? [p.reaction.emoji] : [];
      return;
    }
  }
  if (entry.id && c.byId.has(entry.id)) return;
  c.entries.push(entry);
  if (entry.id) c.byId.set(entry.id, entry);
}

// A phone showing the chat reads what arrives: blue ticks a moment later.
let readTimer = null;
function scheduleRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (document.visibilityState !== "visible") return;
    const c = chat(state.selected);
    if (!c.entries.some((e) => e.direction === "out" && e.status !== "read" && e.status !== "failed")) return;
    api.read(state.selected).catch((e) => console.warn("read:", e.message));
  }, 1200);
}
document.addEventListener("visibilitychange", scheduleRead);

// ---- sending -------------------------------------------------------------------------

async function send(message) {
  const user = state.selected;
  const body = { from: user, ...message };
  const name = userName(user);
  if (name) body.name = name;
  try {
    const { id } = await api.send(body);
    addEntry(user, { direction: "in", id, payload: message, at: Date.now() });
  } catch (e) {
    showError(`Not sent: ${e.message}`);
  }
}

$("#composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("#composer-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  send({ text });
});

function openAttach(which) {
  const panel = $("#attach");
  panel.hidden = false;
  $("#attach-toggle").setAttribute("aria-expanded", "true");
  for (const b of panel.querySelectorAll("[data-attach]")) b.setAttribute("aria-pressed", String(b.dataset.attach === which));
  $("#location-form").hidden = which !== "location";
  $("#media-form").hidden = which !== "media";
  panel.querySelector(`#${which}-form input, #${which}-form select`).focus();
}
function closeAttach() {
  $("#attach").hidden = true;
  $("#attach-toggle").setAttribute("aria-expanded", "false");
}
$("#attach-toggle").addEventListener("click", () => ($("#attach").hidden ? openAttach("location") : closeAttach()));
for (const b of document.querySelectorAll("[data-attach]")) b.addEventListener("click", () => openAttach(b.dataset.attach));
$("#attach").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    closeAttach();
    $("#attach-toggle").focus();
  }
});

$("#location-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const location = { latitude: Number(f.get("latitude")), longitude: Number(f.get("longitude")) };
  if (f.get("name")) location.name = String(f.get("name"));
  if (f.get("address")) location.address = String(f.get("address"));
  closeAttach();
  send({ location });
});

$("#media-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const media = { kind: String(f.get("kind")), link: String(f.get("link")) };
  if (f.get("caption")) media.caption = String(f.get("caption"));
  closeAttach();
  send({ media });
});

// ---- users ---------------------------------------------------------------------------

function renderUsers() {
  const list = $("#user-list");
  list.replaceChildren(
    ...state.users.map((u) => {
      const selected = u.id === state.selected;
      const c = state.chats.get(u.id);
      const unread = c && c.unread && !selected ? h("span", { class: "badge", "aria-label": `${c.unread} new` }, String(c.unread)) : null;
      return h(
        "li",
        { class: selected ? "user selected" : "user" },
        h(
          "button",
          { type: "button", class: "user-pick", "aria-pressed": String(selected), "data-testid": "user", "data-user": u.id, onclick: () => selectUser(u.id) },
          h("span", { class: "user-avatar", "aria-hidden": "true" }, (u.name || "?").slice(0, 1).toUpperCase()),
          h("span", { class: "user-text" }, h("span", { class: "user-name" }, u.name || "(no name)"), h("span", { class: "user-id" }, u.id)),
          unread,
        ),
        h("button", { type: "button", class: "icon", "aria-label": `Rename ${u.name || u.id}`, title: "Rename", onclick: () => renameUser(u) }, "✎"),
        state.users.length > 1 ? h("button", { type: "button", class: "icon", "aria-label": `Remove ${u.name || u.id} from this list`, title: "Remove from the list", onclick: () => removeUser(u) }, "✕") : null,
      );
    }),
  );
}

function selectUser(id) {
  state.selected = id;
  localStorage.setItem("parlance.dev.selected", id);
  const c = chat(id);
  c.unread = 0;
  renderUsers();
  $("#chat-title").textContent = (state.info && state.info.bots[0] && state.info.bots[0].name) || "Bot";
  renderChat();
  loadHistory(id);
  inspector.setUser(id);
  agent.setUser(id);
  if (isNarrow()) showPane("chat");
}

function renameUser(u) {
  const name = prompt(`Name for ${u.id} (the bot sees it as contact.name)`, u.name || "");
  if (name === null) return;
  u.name = name.trim().slice(0, 40);
  saveUsers(state.users);
  renderUsers();
  renderTyping();
}

function removeUser(u) {
  state.users = state.users.filter((x) => x.id !== u.id);
  saveUsers(state.users);
  if (state.selected === u.id) selectUser(state.users[0].id);
  else renderUsers();
}

/** A user the server knows of (another tab, /dev/message) joins the list. */
function ensureUser(id) {
  if (!validUserId(id) || state.users.some((u) => u.id === id)) return;
  state.users.push({ id, name: "" });
  saveUsers(state.users);
  renderUsers();
}

$("#add-user").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const id = form.elements.id.value.trim();
  if (!validUserId(id)) {
    showError("A WhatsApp id is 1 to 15 digits: the phone number without +.");
    return;
  }
  const name = form.elements.name.value.trim().slice(0, 40);
  const known = state.users.find((u) => u.id === id);
  if (known) known.name = name || known.name;
  else state.users.push({ id, name });
  saveUsers(state.users);
  form.reset();
  form.elements.id.value = suggestUserId(state.users);
  selectUser(id);
});
$("#add-user").elements.id.value = suggestUserId(state.users);

$("#reset-session").addEventListener("click", async () => {
  try {
    await api.reset(state.selected);
  } catch (e) {
    showError(`Reset failed: ${e.message}`);
  }
});

// ---- clock ---------------------------------------------------------------------------

function setClock(offsetSecs) {
  state.clockOffset = Number(offsetSecs) || 0;
  drawClock();
}

function drawClock() {
  const now = new Date(Date.now() + state.clockOffset * 1000);
  const el = $("#clock-now");
  el.dateTime = now.toISOString();
  el.textContent = now.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  const off = $("#clock-offset");
  off.textContent = state.clockOffset ? `+${duration(state.clockOffset)}` : "real time";
  off.classList.toggle("warn", state.clockOffset !== 0);
}
setInterval(drawClock, 15000);

function duration(secs) {
  const d = Math.floor(secs / 86400);
  const hrs = Math.floor((secs % 86400) / 3600);
  const min = Math.floor((secs % 3600) / 60);
  return [d && `${d} d`, hrs && `${hrs} h`, min && `${min} min`].filter(Boolean).join(" ") || `${secs} s`;
}

async function advance(body) {
  try {
    const r = await api.clock(body);
    setClock(r.clock_offset_secs);
  } catch (e) {
    showError(`Clock: ${e.message}`);
  }
}
for (const b of document.querySelectorAll("[data-advance]")) b.addEventListener("click", () => advance({ advance_secs: Number(b.dataset.advance) }));
$("#clock-reset").addEventListener("click", () => advance({ reset: true }));
$("#clock-custom").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const secs = Math.round(Number(f.get("amount")) * Number(f.get("unit")));
  if (secs > 0) advance({ advance_secs: secs });
});

// ---- bot info and reloads ------------------------------------------------------------

function applyInfo(info) {
  state.info = info;
  const bot = info.bots[0];
  if (bot) {
    $("#bot-name").textContent = info.bots.map((b) => b.name).join(", ");
    $("#chat-title").textContent = bot.name;
    $("#bot-version").textContent = `v${bot.version}`;
    $("#bot-delay").textContent = `delay ${bot.message_delay_ms} ms`;
  }
  setClock(info.clock_offset_secs);
  showBanner(info.bots);
  inspector.setBots(info.bots);
  renderTyping();
}

function onReload(ev) {
  if (!state.info) return;
  const bot = state.info.bots.find((b) => b.phone_number_id === ev.phone_number_id) || state.info.bots[0];
  if (!bot) return;
  bot.diagnostics = ev.diagnostics || [];
  if (ev.ok) {
    bot.version = ev.version;
    $("#bot-version").textContent = `v${ev.version}`;
    showNotice(`v${ev.version} live`);
    // Flows may have been added or removed.
    api.info().then(applyInfo).catch(() => {});
  }
  showBanner(state.info.bots);
  inspector.refreshGraph();
}

// ---- the live stream -----------------------------------------------------------------

function connect() {
  const conn = $("#connection");
  let dropped = false;
  const handlers = new Map();
  const on = (name, fn) => handlers.set(name, fn);
  subscribe({
    onOpen: () => {
      conn.textContent = "● live";
      conn.className = "connection ok";
      if (dropped) resync();
      dropped = false;
    },
    // The stream reconnects by itself; what was missed is fetched again on reconnect.
    onDrop: () => {
      conn.textContent = "○ reconnecting…";
      conn.className = "connection down";
      dropped = true;
    },
    onEvent: (name, raw) => {
      const fn = handlers.get(name);
      if (!fn) return;
      let data;
      try {
        data = JSON.parse(raw);
      } catch {
        console.warn("unreadable event", name, raw);
        return;
      }
      fn(data);
    },
  });
  on("message", (d) => {
    ensureUser(d.user);
    addEntry(d.user, { direction: "out", id: d.wamid, payload: d.payload, status: "sent", at: d.at, flow: d.flow, node: d.node });
    if (d.user === state.selected) inspector.refreshSoon();
  });
  on("inbound", (d) => {
    ensureUser(d.user);
    addEntry(d.user, { direction: "in", id: d.id, payload: d.payload, at: d.at });
  });
  on("typing", (d) => {
    chat(d.user).typing = Boolean(d.on);
    if (d.user === state.selected) renderTyping();
  });
  on("status", (d) => {
    setStatus(d.user, d.wamid, d.status, d.error);
    if (d.user === state.selected) inspector.refreshSoon();
  });
  on("turn", (d) => {
    chat(d.user).typing = false;
    if (d.user === state.selected) {
      renderTyping();
      inspector.refreshSoon();
      agent.refreshSoon();
    }
  });
  on("reset", (d) => {
    const c = chat(d.user);
    c.entries = [];
    c.byId = new Map();
    c.typing = false;
    if (d.user === state.selected) {
      renderChat();
      inspector.refreshSoon();
      showNotice(`Session of ${userName(d.user) || d.user} reset`);
    }
  });
  on("clock", (d) => setClock(d.clock_offset_secs));
  on("reload", onReload);
}

async function resync() {
  try {
    applyInfo(await api.info());
  } catch (e) {
    showError(`The server does not answer: ${e.message}`);
  }
  loadHistory(state.selected);
  inspector.refreshSoon();
}

// ---- panes (phone width: one at a time) ----------------------------------------------

const narrow = window.matchMedia("(max-width: 599px)");
const isNarrow = () => narrow.matches;

function showPane(name) {
  document.body.dataset.pane = name;
  for (const b of document.querySelectorAll(".tabs [data-pane]")) {
    if (b.dataset.pane === name) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  if (name === "inspector") inspector.refreshSoon();
}
for (const b of document.querySelectorAll(".tabs [data-pane]")) b.addEventListener("click", () => showPane(b.dataset.pane));
showPane("chat");

// ---- start ---------------------------------------------------------------------------

const inspector = createInspector({
  api,
  getUser: () => state.selected,
  // The node that sent the bot's last message: where the graph points without a trace.
  lastNode: () => {
    const out = chat(state.selected).entries.filter((e) => e.direction === "out" && e.flow);
    const last = out[out.length - 1];
    return last ? { kind: "sent", flow: last.flow, node: last.node, fallback: true } : null;
  },
});
const agent = createAgentPane({ api, getUser: () => state.selected, simulated: () => ((state.info && state.info.bots) || []).map((b) => b.phone_number_id), onCount: (n) => {
  const el = $("#agent-count");
  el.hidden = !n;
  el.textContent = String(n);
} });

// Asked for by api.js when the server answers 401 (a bot with api.key).
$("#key-cancel").addEventListener("click", () => $("#key-dialog").close("cancel"));
onKeyNeeded(
  (message) =>
    new Promise((resolve) => {
      const dialog = $("#key-dialog");
      const input = dialog.querySelector("input");
      $("#key-why").textContent = message;
      input.value = "";
      dialog.returnValue = "";
      dialog.addEventListener(
        "close",
        () => resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null),
        { once: true },
      );
      dialog.showModal();
      input.focus();
    }),
);

saveUsers(state.users);
renderUsers();
selectUser(state.selected);
api
  .info()
  .then(applyInfo)
  .catch((e) => showError(`The server does not answer: ${e.message}`));
connect();
