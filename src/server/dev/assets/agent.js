// The agent pane: play the human agent of a handed-over user through the agent API
// (/api/v1/handovers, docs/api.md "Handovers"): accept, answer, resolve.

import { h, clockTime } from "./dom.js";

export function createAgentPane({ api, getUser, onCount, simulated }) {
  const el = document.querySelector('.view[data-view="agent"]');
  let timer = null;
  let agentName = localStorage.getItem("parlance.dev.agent") || "ada";

  async function refresh() {
    const user = getUser();
    let list;
    try {
      // The simulated numbers' handovers only: beside a real number (dev.enabled) the
      // key also opens the real number's, which are real users'.
      const ids = simulated();
      list = ((await api.handovers()).handovers || []).filter((x) => !ids.length || ids.includes(x.phone_number_id));
    } catch (e) {
      el.replaceChildren(h("p", { class: "muted" }, `The agent API is not available: ${e.message}`));
      onCount(0);
      return;
    }
    if (user !== getUser()) return;
    onCount(list.filter((x) => x.state === "queued").length);
    const mine = list.filter((x) => x.user === user);
    if (!mine.length) {
      el.replaceChildren(
        h("p", { class: "muted empty" }, "No handover for this user. A flow's handover node hands the conversation to an agent; it shows here."),
        others(list, user),
      );
      return;
    }
    const cards = [];
    for (const ho of mine) cards.push(await card(ho));
    if (user !== getUser()) return;
    // The pane is drawn again whenever the user's conversation moves: what the designer
    // was typing (and where) survives it.
    const typed = typing();
    el.replaceChildren(...cards, others(list, user));
    restore(typed);
  }

  /** The fields of the cards as typed: `handover id/field name` → value, and the focus. */
  function typing() {
    const at = (input) => `${input.closest("[data-handover]").dataset.handover}/${input.name}`;
    const values = new Map();
    for (const input of el.querySelectorAll("[data-handover] input[name]")) values.set(at(input), input.value);
    const active = document.activeElement;
    const focus = active && el.contains(active) && active.name && active.closest("[data-handover]") ? at(active) : null;
    return { values, focus, at };
  }

  function restore({ values, focus, at }) {
    for (const input of el.querySelectorAll("[data-handover] input[name]")) {
      const key = at(input);
      if (values.has(key)) input.value = values.get(key);
      if (key === focus) input.focus();
    }
  }

  function others(list, user) {
    const waiting = list.filter((x) => x.user !== user && (x.state === "queued" || x.state === "accepted"));
    if (!waiting.length) return null;
    return h("p", { class: "small muted" }, `Also handed over: ${waiting.map((x) => `${x.user} (${x.state})`).join(", ")}`);
  }

  async function card(ho) {
    let messages = [];
    try {
      messages = (await api.handover(ho.id)).messages || [];
    } catch {
      // Shown without its messages.
    }
    const live = ho.state === "queued" || ho.state === "accepted";
    return h(
      "div",
      { class: "handover", "data-testid": "handover", "data-handover": ho.id },
      h(
        "div",
        { class: "row" },
        h("strong", {}, ho.queue || "default queue"),
        h("span", { class: `pill ${ho.state}` }, ho.state),
        ho.agent ? h("span", { class: "small" }, `agent ${ho.agent}`) : null,
        h("span", { class: "small muted" }, clockTime(ho.created_at)),
        ho.status ? h("span", { class: "small" }, `status ${ho.status}`) : null,
      ),
      h(
        "ol",
        { class: "ho-messages" },
        messages.map((m) => h("li", { class: m.from === "agent" ? "agent" : "user" }, h("span", { class: "muted small" }, `${m.from}: `), messageText(m))),
      ),
      ho.state === "queued" ? acceptForm(ho) : null,
      ho.state === "accepted" ? replyForm(ho) : null,
      live ? resolveForm(ho) : null,
    );
  }

  function messageText(m) {
    const msg = m.message || m;
    if (typeof msg.text === "string") return msg.text;
    if (msg.text && msg.text.body) return msg.text.body;
    if (msg.reply) return `↩ ${msg.reply.title || msg.reply.id}`;
    return msg.type || JSON.stringify(msg);
  }

  function acceptForm(ho) {
    return h(
      "form",
      {
        class: "row",
        onsubmit: async (ev) => {
          ev.preventDefault();
          agentName = ev.target.elements.agent.value.trim() || "ada";
          localStorage.setItem("parlance.dev.agent", agentName);
          await act(() => api.accept(ho.id, agentName));
        },
      },
      h("label", { class: "grow" }, "Agent ", h("input", { name: "agent", value: agentName, required: true })),
      h("button", { type: "submit", "data-testid": "handover-accept" }, "Accept"),
    );
  }

  function replyForm(ho) {
    return h(
      "form",
      {
        class: "row",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const text = ev.target.elements.text.value.trim();
          if (text) await act(() => api.agentSay(ho.id, text));
        },
      },
      h("input", { name: "text", class: "grow", "aria-label": "Agent's message", placeholder: "Answer as the agent", required: true }),
      h("button", { type: "submit", "data-testid": "handover-send" }, "Send"),
    );
  }

  function resolveForm(ho) {
    return h(
      "form",
      {
        class: "row",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const f = ev.target.elements;
          const body = { status: f.status.value.trim() || "resolved" };
          const vars = f.vars.value.trim();
          if (vars) {
            try {
              body.vars = JSON.parse(vars);
            } catch {
              f.vars.setCustomValidity("JSON, e.g. {\"refund_id\": \"R-1\"}");
              f.vars.reportValidity();
              return;
            }
          }
          await act(() => api.resolve(ho.id, body));
        },
      },
      h("label", {}, "Status ", h("input", { name: "status", value: "resolved", size: 10 })),
      h("label", { class: "grow" }, "Vars ", h("input", { name: "vars", placeholder: '{"refund_id": "R-1"}', oninput: (ev) => ev.target.setCustomValidity("") })),
      h("button", { type: "submit", "data-testid": "handover-resolve" }, "Resolve"),
    );
  }

  async function act(fn) {
    try {
      await fn();
    } catch (e) {
      el.prepend(h("p", { class: "bad" }, e.message));
      return;
    }
    refresh();
  }

  return {
    setUser() {
      refresh();
    },
    refreshSoon() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 200);
    },
  };
}
