// The flow graph: GET /dev/api/graph's Mermaid text (the same chart as `parlance graph`)
// drawn by the vendored Mermaid, with the node the conversation is at highlighted.

import { h } from "./dom.js";

let ready = false;
let seq = 0;

function mermaid() {
  const m = window.mermaid;
  if (m && !ready) {
    // `strict`: labels (designer text) are escaped and click handlers are off.
    m.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral", flowchart: { useMaxWidth: false } });
    ready = true;
  }
  return m;
}

/** Draws `graph` ({mermaid, nodes}) into `target`, `current` ("flow.node") highlighted. */
export async function drawGraph(target, graph, current) {
  const m = mermaid();
  if (!m) {
    target.replaceChildren(h("pre", { class: "code" }, graph.mermaid));
    return;
  }
  const id = current && graph.nodes ? graph.nodes[current] : null;
  let text = graph.mermaid;
  if (id && /^[A-Za-z0-9_]+$/.test(id)) {
    text += `\n  classDef current fill:#25d366,stroke:#075e54,stroke-width:3px,color:#fff,font-weight:bold;\n  class ${id} current;\n`;
  }
  const { svg } = await m.render(`flow-graph-${++seq}`, text);
  // Mermaid's own output, made from escaped labels under securityLevel "strict".
  target.innerHTML = svg;
  if (!id) return;
  const node = target.querySelector(`[id^="flowchart-${id}-"]`);
  if (node) {
    node.setAttribute("data-testid", "graph-current");
    node.setAttribute("aria-current", "step");
    node.scrollIntoView({ block: "center", inline: "center" });
  }
}
