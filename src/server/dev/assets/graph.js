// The flow graph: GET /dev/api/graph's Mermaid text (the same chart as `parlance graph`)
// drawn by the vendored Mermaid, with the node the conversation is at highlighted.

import { h } from "./dom.js";

let ready = false;
let seq = 0;

function mermaid() {
  const m = window.mermaid;
  if (m && !ready) {
    // `strict`: labels (designer text) are escaped and click handlers are off.
    m.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      theme: "neutral",
      themeVariables: { fontFamily: "system-ui, sans-serif" },
      flowchart: { useMaxWidth: false },
    });
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
  // Mermaid lays a subgraph's nodes out left to right whatever the chart's direction; a
  // flow reads top-down, as the file does.
  let text = graph.mermaid.replace(/^(\s*subgraph\b.*)$/gm, "$1\n    direction TB");
  if (id && /^[A-Za-z0-9_]+$/.test(id)) {
    text += `\n  classDef current fill:#25d366,stroke:#075e54,stroke-width:3px,color:#fff,font-weight:bold;\n  class ${id} current;\n`;
  }
  const { svg } = await m.render(`flow-graph-${++seq}`, text);
  // Mermaid's own output, made from escaped labels under securityLevel "strict".
  target.innerHTML = svg;
  applyZoom(target);
  if (!id) return;
  // The class added above marks it (Mermaid prefixes element ids with the render's id).
  const node = target.querySelector("g.node.current");
  if (node) {
    node.setAttribute("data-testid", "graph-current");
    node.setAttribute("aria-current", "step");
    // Scroll the chart's own box (not the page) so the node is in the middle of it.
    const box = target.getBoundingClientRect();
    const at = node.getBoundingClientRect();
    target.scrollLeft += at.left + at.width / 2 - (box.left + box.width / 2);
    target.scrollTop += at.top + at.height / 2 - (box.top + box.height / 2);
  }
}

let zoom = Number(localStorage.getItem("parlance.dev.zoom")) || 0.8;

/** Sizes the drawn chart at the zoom level (its natural size comes from its viewBox). */
function applyZoom(target) {
  const svg = target.querySelector("svg");
  const box = svg && svg.viewBox && svg.viewBox.baseVal;
  if (!box || !box.width) return;
  svg.setAttribute("width", String(Math.round(box.width * zoom)));
  svg.setAttribute("height", String(Math.round(box.height * zoom)));
  svg.style.maxWidth = "none";
}

/** Zooms the chart in `target` by `factor` (0.3× to 2×). */
export function zoomGraph(target, factor) {
  zoom = Math.min(2, Math.max(0.3, zoom * factor));
  localStorage.setItem("parlance.dev.zoom", String(zoom));
  applyZoom(target);
}
