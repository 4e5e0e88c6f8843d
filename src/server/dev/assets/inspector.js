// The inspector: why the bot said what it said. Turn by turn from
// GET /api/v1/users/{user}/trace (docs/api.md), the flow graph with the node the
// conversation is at, and "Record a test".

import { h, pretty } from "./dom.js";
import { ticks } from "./render.js";
import { drawGraph, zoomGraph } from "./graph.js";

export function createInspector({ api, getUser, lastNode }) {
  const turnsEl = document.querySelector('.view[data-view="turns"]');
  const graphSelect = document.getElementById("graph-flow");
  let bots = [];
  let lastTrace = null;
  let timer = null;
  let view = "turns";
  /** Turn numbers the designer opened or closed by hand, kept across refreshes. */
  const toggled = new Map();

  // ---- views ----
  for (const tab of document.querySelectorAll(".subtabs [data-view]")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
    tab.addEventListener("keydown", (ev) => {
      if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
      const tabs = [...document.querySelectorAll(".subtabs [data-view]")];
      const next = tabs[(tabs.indexOf(tab) + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      next.focus();
      showView(next.dataset.view);
    });
  }

  function showView(name) {
    view = name;
    for (const tab of document.querySelectorAll(".subtabs [data-view]")) tab.setAttribute("aria-selected", String(tab.dataset.view === name));
    for (const panel of document.querySelectorAll(".inspector-pane .view")) panel.hidden = panel.dataset.view !== name;
    if (name === "graph") refreshGraph();
  }

  // ---- turns ----
  async function refresh() {
    const user = getUser();
    let trace;
    try {
      trace = await api.trace(user);
    } catch (e) {
      if (user !== getUser()) return;
      lastTrace = null;
      turnsEl.replaceChildren(
        h("p", { class: "muted empty", "data-testid": "trace-empty" }, e.status === 404 ? "No turns yet: send the bot a message." : `The trace is not available: ${e.message}`),
      );
      if (view === "graph") refreshGraph();
      return;
    }
    if (user !== getUser()) return;
    // Only the simulated numbers' turns: beside a real number (dev.enabled) the key also
    // opens the real number, whose user of the same id is someone else.
    const simulated = new Set(bots.map((b) => b.phone_number_id));
    trace.numbers = (trace.numbers || []).filter((n) => !simulated.size || simulated.has(n.phone_number_id));
    lastTrace = trace;
    drawTurns(trace);
    if (view === "graph") refreshGraph();
  }

  function drawTurns(trace) {
    const turns = [];
    for (const number of trace.numbers || []) {
      for (const t of number.turns || []) turns.push({ ...t, number: number.phone_number_id });
    }
    if (!turns.length) {
      turnsEl.replaceChildren(h("p", { class: "muted empty", "data-testid": "trace-empty" }, "No turns yet: send the bot a message."));
      return;
    }
    // Newest first, the newest open: that is the turn the designer just caused.
    turns.sort((a, b) => String(b.at).localeCompare(String(a.at)) || b.turn - a.turn);
    turnsEl.replaceChildren(...turns.map((t, i) => drawTurn(t, i === 0)));
  }

  function drawTurn(t, newest) {
    const key = `${t.number}/${t.turn}/${t.at}`;
    const open = toggled.has(key) ? toggled.get(key) : newest;
    const inbound = t.inbound || {};
    const details = h(
      "details",
      { class: "turn", "data-testid": "turn", open },
      h(
        "summary",
        // Only the designer's own clicks are remembered (a click comes before the toggle).
        { onclick: () => toggled.set(key, !details.open) },
        h("span", { class: "turn-no" }, `Turn ${t.turn}`),
        h("span", { class: "pill kind" }, inbound.kind || "?"),
        h("span", { class: "turn-summary" }, inbound.summary || ""),
        h("time", { class: "muted small", datetime: t.at }, shortTime(t.at)),
        t.problems && t.problems.length ? h("span", { class: "pill bad" }, `${t.problems.length} problem${t.problems.length > 1 ? "s" : ""}`) : null,
      ),
      section("Inbound", h("details", { class: "json" }, h("summary", {}, inbound.id || "event"), h("pre", { class: "code" }, pretty(inbound.detail ?? inbound)))),
      section(
        "Visited nodes",
        t.visited && t.visited.length
          ? h(
              "ol",
              { class: "visited", "data-testid": "visited" },
              t.visited.map((v) =>
                h(
                  "li",
                  { "data-testid": "trace-node" },
                  h("code", { class: "node-id" }, `${v.flow}.${v.node}`),
                  h("span", { class: "pill" }, v.kind),
                  h("span", { class: "source muted small" }, v.source || ""),
                ),
              ),
            )
          : h("p", { class: "muted small" }, "none"),
      ),
      section("Variables", varsDiff(t.vars_before || {}, t.vars_after || {})),
      section(
        `Sent (${(t.outgoing || []).length})`,
        (t.outgoing || []).length
          ? h(
              "ol",
              { class: "outgoing" },
              t.outgoing.map((o) =>
                h(
                  "li",
                  { "data-testid": "trace-outgoing" },
                  h(
                    "div",
                    { class: "row small" },
                    ticks(o.status),
                    h("span", {}, o.status),
                    h("code", { class: "muted" }, o.wamid || "no wamid yet"),
                    o.error ? h("span", { class: "bad" }, o.error) : null,
                  ),
                  h("pre", { class: "code" }, pretty(o.payload)),
                ),
              ),
            )
          : h("p", { class: "muted small" }, "nothing"),
      ),
      t.problems && t.problems.length ? section("Problems", h("ul", { class: "problems" }, t.problems.map((p) => h("li", {}, p)))) : null,
      section("Then", h("p", { class: "small", "data-testid": "state-after" }, stateText(t.state_after))),
    );
    return details;
  }

  function section(title, body) {
    return h("div", { class: "turn-section" }, h("h3", {}, title), body);
  }

  function stateText(s) {
    if (!s) return "?";
    const at = s.flow ? ` at ${s.flow}${s.node ? `.${s.node}` : ""}` : "";
    return `${s.kind}${at}`;
  }

  function varsDiff(before, after) {
    const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    if (!names.length) return h("p", { class: "muted small" }, "none");
    return h(
      "table",
      { class: "vars" },
      h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "before"), h("th", {}, "after"))),
      h(
        "tbody",
        {},
        names.map((n) => {
          const had = n in before;
          const has = n in after;
          const b = had ? JSON.stringify(before[n]) : "";
          const a = has ? JSON.stringify(after[n]) : "";
          const change = !had ? "added" : !has ? "removed" : a !== b ? "changed" : "same";
          return h("tr", { class: change, "data-testid": `var-${change}` }, h("td", {}, h("code", {}, n)), h("td", {}, h("code", {}, b)), h("td", {}, h("code", {}, a)));
        }),
      ),
    );
  }

  function shortTime(at) {
    const d = new Date(at);
    return Number.isNaN(d.getTime()) ? String(at || "") : d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // ---- graph ----
  let graphSeq = 0;
  async function refreshGraph() {
    if (view !== "graph") return;
    const state = currentState();
    if (state && state.flow && !graphSelect.dataset.chosen && [...graphSelect.options].some((o) => o.value === state.flow)) graphSelect.value = state.flow;
    const flow = graphSelect.value;
    if (!flow) return;
    const seq = ++graphSeq;
    const target = document.getElementById("graph");
    try {
      const g = await api.graph(flow);
      if (seq !== graphSeq) return;
      const here = state && state.flow === flow && state.node ? `${state.flow}.${state.node}` : null;
      document.getElementById("graph-current").textContent = !state
        ? ""
        : state.fallback
          ? `the last message came from ${state.flow}.${state.node}`
          : `now: ${state.kind}${state.flow ? ` at ${state.flow}.${state.node || ""}` : ""}`;
      await drawGraph(target, g, here);
    } catch (e) {
      if (seq === graphSeq) target.replaceChildren(h("p", { class: "bad" }, `The graph is not available: ${e.message}`));
    }
  }
  document.getElementById("graph-in").addEventListener("click", () => zoomGraph(document.getElementById("graph"), 1.25));
  document.getElementById("graph-out").addEventListener("click", () => zoomGraph(document.getElementById("graph"), 0.8));
  graphSelect.addEventListener("change", () => {
    graphSelect.dataset.chosen = "1";
    refreshGraph();
  });

  /** Where the conversation is: the newest turn's state after. */
  function currentState() {
    if (!lastTrace) return lastNode();
    let newest = null;
    for (const number of lastTrace.numbers || []) {
      for (const t of number.turns || []) if (!newest || String(t.at) >= String(newest.at)) newest = t;
    }
    if (!newest) return null;
    const s = newest.state_after || {};
    if (s.flow) return s;
    const last = (newest.visited || [])[newest.visited.length - 1];
    return last ? { kind: s.kind || "?", flow: last.flow, node: last.node } : s;
  }

  // ---- record a test ----
  const recordForm = document.getElementById("record-form");
  const out = document.getElementById("record-out");
  const yamlEl = document.getElementById("record-yaml");
  const status = document.getElementById("record-status");
  let recorded = null;

  recordForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = recordForm.elements.name.value.trim();
    if (!name) return;
    status.textContent = "";
    try {
      const r = await api.record({ user: getUser(), name, write: false, overwrite: false });
      recorded = { name, yaml: r.yaml };
      yamlEl.textContent = r.yaml;
      out.hidden = false;
    } catch (e) {
      out.hidden = false;
      yamlEl.textContent = "";
      status.textContent = `Not recorded: ${e.message}`;
      status.className = "small bad";
    }
  });

  document.getElementById("record-download").addEventListener("click", () => {
    if (!recorded) return;
    const a = h("a", { href: URL.createObjectURL(new Blob([recorded.yaml], { type: "application/yaml" })), download: `${fileStem(recorded.name)}.yaml` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  });

  document.getElementById("record-save").addEventListener("click", async () => {
    if (!recorded) return;
    const save = (overwrite) => api.record({ user: getUser(), name: recorded.name, write: true, overwrite });
    try {
      let r;
      try {
        r = await save(false);
      } catch (e) {
        if (e.status !== 409 || !confirm(`${e.message}\n\nOverwrite it?`)) throw e;
        r = await save(true);
      }
      yamlEl.textContent = r.yaml;
      status.textContent = `Saved as ${r.path}: run it with parlance test`;
      status.className = "small ok";
    } catch (e) {
      status.textContent = `Not saved: ${e.message}`;
      status.className = "small bad";
    }
  });

  function fileStem(name) {
    return name.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "") || "test";
  }

  return {
    setUser() {
      lastTrace = null;
      toggled.clear();
      turnsEl.replaceChildren(h("p", { class: "muted empty" }, "Loading…"));
      out.hidden = true;
      recorded = null;
      refresh();
    },
    setBots(list) {
      bots = list || [];
      // Beside a real number (dev.enabled) the test is downloaded, never written into
      // the server's bot folder.
      document.getElementById("record-save").hidden = !(bots[0] && bots[0].writes_tests);
      const flows = [...new Set(bots.flatMap((b) => b.flows || []))];
      const keep = graphSelect.value;
      graphSelect.replaceChildren(...flows.map((f) => h("option", { value: f }, f)));
      const entry = (bots[0] && bots[0].entry) || flows[0];
      graphSelect.value = flows.includes(keep) ? keep : entry;
      refreshGraph();
    },
    refreshSoon() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 150);
    },
    refreshGraph,
  };
}
