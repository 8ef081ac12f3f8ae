// The archive browser: lineage tree, score chart, variant pages, compare. No network assets.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#d73027", "#fc8d59", "#fee08b", "#91cf60", "#1a9850"]; // low -> high score
const POLL_MS = 2000;
const DENSE = 1500; // above this many marks, a drawing groups them into one path per colour
const state = { data: null, version: null, metric: null, showRejected: true, byId: new Map() };

// ---- small DOM helpers (text always goes in as text nodes: archive content is untrusted) ----
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
function s(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}
const fmt = (x) => (x === null || x === undefined ? "–" : Math.abs(x) >= 1000 || (Math.abs(x) < 0.001 && x !== 0) ? x.toExponential(2) : (+x.toFixed(4)).toString());
const when = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
}
const link = (id) => h("a", { href: `#/v/${id}`, "data-variant": id }, id);
// How a variant was made and judged (evolve records it; older records have none): small badges.
const JUDGED = { answers: "the held-out judge of its answers", probe: "a training probe: the model a short training round of its pipeline trains",
  both: "its answers and a training probe", meta: "an edit of the meta-agent (proposer or parent selector): it inherits its parent's scores and is scored by its clade" };
const opBadge = (op) => (op ? h("span", { class: "badge op" }, String(op)) : "–");
const kindBadges = (kinds) => (Array.isArray(kinds) ? (kinds.length ? kinds.map((k) => h("span", { class: "badge kind" }, String(k))) : h("span", { class: "dim" }, "none")) : "–");
const judgedText = (j) => (typeof j === "string" && Object.hasOwn(JUDGED, j) ? JUDGED[j] : null);
const judgedBadge = (j) => (j ? h("span", { class: `badge judged judged-${String(j).replace(/[^a-z]/g, "")}`, title: judgedText(j) }, String(j)) : "–");
const signed = (x) => (typeof x === "number" ? (x > 0 ? "+" : "") + fmt(x) : "–");
const trend = (x) => (x > 0 ? "up" : x < 0 ? "down" : "");

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// ---- data ----
async function loadVariants() {
  const data = await getJSON("/api/variants");
  const idx = Object.fromEntries(data.fields.map((f, i) => [f, i]));
  data.variants = data.rows.map((r) => {
    const [operator, changedKinds, judgedBy] = Array.isArray(r[idx.edit]) ? r[idx.edit] : [];
    return { seq: r[idx.seq], id: r[idx.id], parent: r[idx.parent], status: r[idx.status],
      created: r[idx.created], proposer: r[idx.proposer], scores: r[idx.scores] || {},
      operator: operator ?? null, changedKinds: changedKinds ?? null, judgedBy: judgedBy ?? null };
  }).sort((a, b) => a.seq - b.seq);
  state.data = data;
  state.version = data.version + "#" + data.count;
  state.byId = new Map(data.variants.map((v) => [v.id, v]));
  if (!state.metric || !data.metrics.includes(state.metric))
    state.metric = data.metrics.includes(data.main_metric) ? data.main_metric : data.metrics[0] || data.main_metric;
  document.getElementById("archive-path").textContent = data.path;
}

function scoreRange(metric) {
  let lo = Infinity, hi = -Infinity;
  for (const v of state.data.variants) {
    const x = v.scores[metric];
    if (typeof x === "number") { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  }
  return lo === Infinity ? null : [lo, hi];
}
const PALETTE_RGB = PALETTE.map((c) => c.match(/\w\w/g).map((x) => parseInt(x, 16)));
const colourCache = new Map();
function colour(x, range, steps) {
  if (typeof x !== "number" || !range) return null;
  let t = range[1] > range[0] ? (x - range[0]) / (range[1] - range[0]) : 1;
  if (steps) t = Math.round(t * steps) / steps; // few distinct colours: dense drawings group by colour
  let rgb = colourCache.get(t);
  if (rgb === undefined) {
    const pos = t * (PALETTE.length - 1), i = Math.min(PALETTE.length - 2, Math.floor(pos)), f = pos - i;
    const a = PALETTE_RGB[i], b = PALETTE_RGB[i + 1];
    rgb = `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(",")})`;
    if (colourCache.size < 5000) colourCache.set(t, rgb);
  }
  return rgb;
}
function best(metric) {
  let top = null;
  for (const v of state.data.variants)
    if (v.status === "admitted" && typeof v.scores[metric] === "number" && (!top || v.scores[metric] > top.scores[metric])) top = v;
  return top;
}

// ---- home: cards, tree, chart, recent ----
function renderHome(view) {
  const { variants } = state.data, metric = state.metric;
  const admitted = variants.filter((v) => v.status === "admitted").length;
  const top = best(metric);
  const metricSelect = h("select", { id: "metric", onchange: (e) => { state.metric = e.target.value; render(); } },
    (state.data.metrics.length ? state.data.metrics : [metric]).map((m) => h("option", { value: m, selected: m === metric }, m)));
  const rejectedBox = h("input", { type: "checkbox", id: "show-rejected", checked: state.showRejected,
    onchange: (e) => { state.showRejected = e.target.checked; render(); } });
  const range = scoreRange(metric);
  fill(view, 
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "n", id: "count" }, variants.length), h("div", { class: "k" }, "variants")),
      h("div", { class: "card" }, h("div", { class: "n" }, admitted), h("div", { class: "k" }, "admitted")),
      h("div", { class: "card" }, h("div", { class: "n" }, variants.length - admitted), h("div", { class: "k" }, "rejected")),
      h("div", { class: "card" }, h("div", { class: "n" }, top ? fmt(top.scores[metric]) : "–"),
        h("div", { class: "k" }, "best ", metric, top ? [" (", link(top.id), ")"] : ""))),
    operatorsPanel(),
    h("h2", {}, "Lineage"),
    h("div", { class: "toolbar" }, h("label", {}, "colour by ", metricSelect),
      h("label", {}, rejectedBox, " show rejected"),
      h("span", { class: "legend" },
        range ? [fmt(range[0]), h("span", { class: "ramp", style: `background: linear-gradient(90deg, ${PALETTE.join(",")})` }), fmt(range[1])] : "no scores yet",
        h("span", {}, h("span", { class: "dot", style: "background:#91cf60" }), " admitted"),
        h("span", {}, h("span", { class: "dot rejected", style: "background:#eaeef2" }), " rejected"),
        h("span", {}, h("span", { style: "color:#0969da;font-weight:700" }, "━"), " path to best"))),
    h("div", { class: "tree-box", id: "tree-box" }, lineageTree(metric, range, top)),
    h("h2", {}, "Score over iterations (", metric, ")"),
    h("div", { class: "panel", id: "chart-panel" }, h("p", { class: "dim" }, "drawing…")),
    h("h2", {}, "Latest variants"),
    recentTable(metric),
  );
  // the chart is drawn in the next frame, so the tree of a big archive shows without waiting for it
  requestAnimationFrame(() => {
    const panel = document.getElementById("chart-panel");
    if (panel && state.metric === metric) panel.replaceChildren(scoreChart(metric, range));
  });
}

// Which operators pay: per edit operator, the variants it made, how many were admitted, and the
// best gain (over its round's seed, in what judged it) among those admitted.
function operatorsPanel() {
  const by = new Map();
  for (const v of state.data.variants) {
    if (!v.operator) continue;
    const key = String(v.operator), o = by.get(key) || by.set(key, { made: 0, admitted: 0, best: null }).get(key);
    o.made++;
    if (v.status !== "admitted") continue;
    o.admitted++;
    const g = v.scores.gain;
    if (typeof g === "number" && (o.best === null || g > o.best)) o.best = g;
  }
  if (!by.size) return null;
  const rows = [...by].sort((a, b) => b[1].made - a[1].made || a[0].localeCompare(b[0]));
  return [h("h2", {}, "Operators"),
    h("table", { class: "grid compact", id: "operators" },
      h("tr", {}, h("th", {}, "operator"), h("th", { title: "variants it made, admitted or rejected" }, "made"), h("th", {}, "admitted"),
        h("th", {}, "share admitted"), h("th", { title: "the best gain over its round's seed among those admitted" }, "best gain")),
      rows.map(([name, o]) => h("tr", { "data-operator": name }, h("td", {}, opBadge(name)), h("td", { class: "num" }, o.made),
        h("td", { class: "num" }, o.admitted), h("td", { class: "num" }, Math.round((100 * o.admitted) / o.made) + "%"),
        h("td", { class: "num " + trend(o.best) }, signed(o.best)))))];
}

function layoutTree(variants) {
  const kids = new Map(), roots = [], shown = new Set(variants.map((v) => v.id));
  for (const v of variants) {
    if (v.parent && shown.has(v.parent)) (kids.get(v.parent) || kids.set(v.parent, []).get(v.parent)).push(v);
    else roots.push(v);
  }
  const pos = new Map();
  let leaf = 0, maxDepth = 0;
  // iterative post-order: leaves take the next row, a parent sits in the middle of its children
  const stack = roots.slice().reverse().map((v) => [v, 0, false]);
  while (stack.length) {
    const [v, depth, done] = stack.pop();
    const children = kids.get(v.id) || [];
    if (!done && children.length) {
      stack.push([v, depth, true]);
      for (let i = children.length - 1; i >= 0; i--) stack.push([children[i], depth + 1, false]);
      continue;
    }
    maxDepth = Math.max(maxDepth, depth);
    const y = children.length ? (pos.get(children[0].id).y + pos.get(children[children.length - 1].id).y) / 2 : leaf++;
    pos.set(v.id, { x: depth, y });
  }
  return { pos, kids, leaves: leaf, maxDepth };
}

function lineageTree(metric, range, top) {
  const variants = state.data.variants.filter((v) => state.showRejected || v.status === "admitted");
  if (!variants.length) return h("p", { class: "dim", style: "padding:10px" }, "no variants");
  const { pos, kids, leaves, maxDepth } = layoutTree(variants);
  const labels = variants.length <= 400;
  const dx = Math.max(14, Math.min(90, 1100 / Math.max(1, maxDepth))), dy = Math.max(variants.length > DENSE ? 3 : 5, Math.min(24, 520 / Math.max(1, leaves)));
  const r = Math.max(2, Math.min(6, dy / 2.6)), pad = 16;
  const X = (p) => Math.round((pad + p.x * dx) * 10) / 10, Y = (p) => Math.round((pad + p.y * dy) * 10) / 10;
  const width = pad * 2 + maxDepth * dx + (labels ? 60 : 0), height = pad * 2 + Math.max(0, leaves - 1) * dy;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lineage", role: "img" });
  let edges = "";
  for (const [parent, children] of kids) {
    const p = pos.get(parent);
    for (const c of children) { const q = pos.get(c.id); const mx = (X(p) + X(q)) / 2; edges += `M${X(p)},${Y(p)}H${mx}V${Y(q)}H${X(q)}`; }
  }
  svg.append(s("path", { class: "edge", d: edges }));
  if (top && pos.has(top.id)) {
    let path = "", v = top;
    while (v.parent && pos.has(v.parent)) { const p = pos.get(v.parent), q = pos.get(v.id), mx = (X(p) + X(q)) / 2; path += `M${X(p)},${Y(p)}H${mx}V${Y(q)}H${X(q)}`; v = state.byId.get(v.parent); }
    svg.append(s("path", { class: "best-edge", d: path }));
    const p = pos.get(top.id);
    svg.dataset.bestX = X(p); svg.dataset.bestY = Y(p);
  }
  const dense = variants.length > DENSE;
  const marks = variants.map((v) => {
    const p = pos.get(v.id), fill = colour(v.scores[metric], range, dense ? 24 : 0);
    return { id: v.id, x: X(p), y: Y(p), fill, cls: `node ${v.status}${fill ? "" : " unscored"}`, shape: "dot" };
  });
  drawMarks(svg, marks, r, dense);
  if (labels) for (const m of marks) { const t = s("text", { x: m.x + r + 3, y: m.y + 3.5, class: "label" }); t.textContent = m.id; svg.append(t); }
  svg.dataset.nodes = variants.length;
  svg.addEventListener("click", (e) => { const id = markAt(svg, e, marks, r); if (id) location.hash = `#/v/${id}`; });
  hoverTips(svg, marks, r, (id) => { const v = state.byId.get(id); return `${v.id} · ${v.status} · ${metric} ${fmt(v.scores[metric])}${v.operator ? " · " + v.operator : v.proposer ? " · " + v.proposer : ""}`; });
  return svg;
}

// Up to DENSE marks are one element each; beyond that, one <path> per colour (thousands of
// elements slow the first paint), and clicks and hovers find the nearest mark by position.
function drawMarks(svg, marks, r, dense) {
  const shape = (m) => m.shape === "cross"
    ? `M${m.x - r},${m.y - r}L${m.x + r},${m.y + r}M${m.x - r},${m.y + r}L${m.x + r},${m.y - r}`
    : `M${m.x - r},${m.y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0`;
  if (!dense) {
    const frag = document.createDocumentFragment();
    for (const m of marks) {
      const el = m.shape === "cross" ? s("path", { d: shape(m), class: m.cls }) : s("circle", { cx: m.x, cy: m.y, r, class: m.cls });
      el.setAttribute("data-id", m.id);
      if (m.fill) el.setAttribute("fill", m.fill);
      frag.append(el);
    }
    svg.append(frag);
    return;
  }
  const groups = new Map();
  for (const m of marks) {
    const key = `${m.cls}|${m.fill}|${m.shape}`;
    if (!groups.has(key)) groups.set(key, { m, d: [] });
    groups.get(key).d.push(shape(m));
  }
  for (const { m, d } of groups.values()) {
    const el = s("path", { d: d.join(""), class: `${m.cls} dense` });
    if (m.fill) el.setAttribute("fill", m.fill);
    svg.append(el);
  }
}
function markAt(svg, e, marks, r) {
  const id = e.target.getAttribute && e.target.getAttribute("data-id");
  if (id) return id;
  const point = svg.createSVGPoint();
  point.x = e.clientX; point.y = e.clientY;
  const p = point.matrixTransform(svg.getScreenCTM().inverse());
  let best = null, bestD = Math.max(6, 2 * r) ** 2;
  for (const m of marks) { const d = (m.x - p.x) ** 2 + (m.y - p.y) ** 2; if (d < bestD) { bestD = d; best = m.id; } }
  return best;
}

function hoverTips(svg, marks, r, text) {
  const tip = document.getElementById("tooltip");
  svg.addEventListener("mousemove", (e) => {
    const id = markAt(svg, e, marks, r);
    if (!id) { tip.hidden = true; return; }
    tip.textContent = text(id); tip.hidden = false;
    tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px";
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
}

function scoreChart(metric, range) {
  const points = state.data.variants.filter((v) => typeof v.scores[metric] === "number");
  if (!points.length || !range) return h("p", { class: "dim" }, "no variant has a ", metric, " score yet");
  const W = 1100, H = 260, L = 50, R = 14, T = 12, B = 28;
  const n = state.data.variants.length, maxSeq = Math.max(1, state.data.variants[n - 1].seq);
  const span = range[1] - range[0] || 1, lo = range[0] - span * 0.05, hi = range[1] + span * 0.05;
  const round = (v) => Math.round(v * 10) / 10; // short path data draws faster
  const X = (seq) => round(L + (seq / maxSeq) * (W - L - R)), Y = (x) => round(T + (1 - (x - lo) / (hi - lo)) * (H - T - B));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", id: "score-chart" });
  for (let i = 0; i <= 4; i++) {
    const x = lo + ((hi - lo) * i) / 4;
    svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: Y(x), y2: Y(x) }));
    const t = s("text", { class: "tick", x: L - 6, y: Y(x) + 3, "text-anchor": "end" }); t.textContent = fmt(x); svg.append(t);
  }
  for (let i = 0; i <= 5; i++) {
    const seq = Math.round((maxSeq * i) / 5), t = s("text", { class: "tick", x: X(seq), y: H - 8, "text-anchor": "middle" });
    t.textContent = "v" + seq; svg.append(t);
  }
  svg.append(s("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }), s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  let bestSoFar = -Infinity, line = "";
  const dense = points.length > DENSE, rr = dense ? 1.6 : 3.2, marks = [];
  for (const v of points) {
    const x = v.scores[metric], admitted = v.status === "admitted";
    if (admitted && x > bestSoFar) { line += `${line ? "H" + X(v.seq) + "V" : "M" + X(v.seq) + ","}${Y(x)}`; bestSoFar = x; }
    marks.push({ id: v.id, x: X(v.seq), y: Y(x), fill: admitted ? colour(x, range, dense ? 24 : 0) : null,
      cls: admitted ? "pt" : "pt-rejected", shape: admitted ? "dot" : "cross" });
  }
  if (line) svg.append(s("path", { class: "best-line", d: line + `H${X(maxSeq)}` }));
  drawMarks(svg, marks, rr, dense);
  svg.addEventListener("click", (e) => { const id = markAt(svg, e, marks, rr); if (id) location.hash = `#/v/${id}`; });
  hoverTips(svg, marks, rr, (id) => { const v = state.byId.get(id); return `${v.id} · ${v.status} · ${metric} ${fmt(v.scores[metric])}`; });
  return h("div", {}, svg, h("div", { class: "legend" }, h("span", {}, "● admitted (colour = score)"), h("span", {}, "✕ rejected"), h("span", { style: "color:#0969da" }, "— best admitted so far")));
}

function recentTable(metric) {
  const rows = state.data.variants.slice(-30).reverse();
  return h("table", { class: "grid", id: "recent" },
    h("tr", {}, h("th", {}, "id"), h("th", {}, "parent"), h("th", {}, "status"), h("th", {}, metric), h("th", {}, "operator"),
      h("th", {}, "changed"), h("th", {}, "judged by"), h("th", {}, "proposer"), h("th", {}, "created (UTC)")),
    rows.map((v) => h("tr", { "data-variant": v.id }, h("td", {}, link(v.id)), h("td", {}, v.parent ? link(v.parent) : "–"),
      h("td", {}, h("span", { class: `badge ${v.status}` }, v.status)), h("td", { class: "num" }, fmt(v.scores[metric])),
      h("td", { class: "operator" }, opBadge(v.operator)), h("td", { class: "changed" }, kindBadges(v.changedKinds)),
      h("td", { class: "judged" }, judgedBadge(v.judgedBy)), h("td", {}, v.proposer || "–"), h("td", { class: "dim" }, when(v.created)))));
}

// ---- diff rendering with light Python highlighting ----
const PY_TOKENS = /(#.*$)|("""|'''|"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?)|\b(def|class|return|if|elif|else|for|while|in|not|and|or|import|from|as|with|try|except|finally|raise|lambda|yield|None|True|False|pass|break|continue|is|async|await|assert|del|global|nonlocal)\b|\b(\d+(?:\.\d+)?(?:e-?\d+)?)\b/g;
function highlight(el, code, python) {
  if (!python) { el.append(code); return; }
  let last = 0;
  for (const m of code.matchAll(PY_TOKENS)) {
    if (m.index > last) el.append(code.slice(last, m.index));
    const cls = m[1] ? "tok-com" : m[2] ? "tok-str" : m[3] ? (m[3] === "def" || m[3] === "class" ? "tok-def" : "tok-kw") : "tok-num";
    el.append(h("span", { class: cls }, m[0]));
    last = m.index + m[0].length;
  }
  el.append(code.slice(last));
}
function renderDiff(text) {
  const box = h("div", { class: "diff", id: "diff" });
  if (!text.trim()) { box.append(h("div", { class: "empty" }, "no changes")); return box; }
  let python = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("diff --git ")) {
      const path = line.split(" ").pop().replace(/^[^/]*\//, "");
      python = path.endsWith(".py");
      box.append(h("div", { class: "file" }, path));
      continue;
    }
    let cls = "ctx";
    if (line.startsWith("+++") || line.startsWith("---") || /^(index|new file|deleted file|similarity|rename|old mode|new mode|Binary)/.test(line)) cls = "meta";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    const el = h("div", { class: `ln ${cls}` });
    if (cls === "add" || cls === "del" || cls === "ctx") { el.append(line.slice(0, 1)); highlight(el, line.slice(1), python); }
    else el.append(line);
    box.append(el);
  }
  return box;
}

// ---- variant page ----
function scoresTable(scores, against, againstLabel) {
  const metrics = [...new Set([...Object.keys(scores), ...Object.keys(against || {})])].sort();
  if (!metrics.length) return h("p", { class: "dim" }, "no scores recorded");
  return h("table", { class: "grid", id: "scores" },
    h("tr", {}, h("th", {}, "metric"), h("th", {}, "value"), against ? [h("th", {}, againstLabel), h("th", {}, "change")] : []),
    metrics.map((m) => {
      const x = scores[m], y = against ? against[m] : undefined;
      const delta = typeof x === "number" && typeof y === "number" ? x - y : null;
      return h("tr", {}, h("td", {}, m), h("td", { class: "num" }, fmt(x)), against ? [h("td", { class: "num" }, fmt(y)),
        h("td", { class: "num " + (delta > 0 ? "up" : delta < 0 ? "down" : "") }, delta === null ? "–" : (delta > 0 ? "+" : "") + fmt(delta))] : []);
    }));
}
function callsSection(calls) {
  if (!Array.isArray(calls) || !calls.length) return h("p", { class: "dim" }, "no language-model calls recorded");
  return calls.map((c, i) => {
    const tokens = (c.prompt_tokens || 0) + (c.completion_tokens || 0);
    const messages = Array.isArray(c.messages) ? c.messages : c.prompt ? [{ role: "user", content: c.prompt }] : [];
    return h("details", { open: i === 0 && calls.length === 1 },
      h("summary", {}, `call ${i + 1}: ${c.model || "?"} · ${tokens} tokens · cost ${c.cost_usd === null || c.cost_usd === undefined ? "unknown" : "$" + (+c.cost_usd).toFixed(4)}${c.seconds ? " · " + (+c.seconds).toFixed(1) + " s" : ""}`),
      messages.map((m) => [h("div", { class: "msg-role" }, m.role || "message"), h("pre", { class: "block" }, typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 1))]),
      h("div", { class: "msg-role" }, "response"), h("pre", { class: "block response" }, c.response ?? ""));
  });
}
function sandboxSection(sandbox) {
  if (typeof sandbox !== "object" || Array.isArray(sandbox)) return h("pre", { class: "block", id: "sandbox" }, typeof sandbox === "string" ? sandbox : JSON.stringify(sandbox, null, 2));
  const entries = Object.entries(sandbox), long = entries.filter(([, v]) => typeof v === "string" && v.includes("\n"));
  const short = entries.filter(([, v]) => !(typeof v === "string" && v.includes("\n")));
  return h("div", { id: "sandbox" },
    short.length ? h("div", { class: "panel kv" }, short.map(([k, v]) => [h("span", { class: "k" }, k), h("span", {}, typeof v === "object" ? JSON.stringify(v) : String(v))])) : null,
    long.map(([k, v]) => [h("div", { class: "msg-role" }, k), h("pre", { class: "block" }, v)]));
}
// The judge scored the variant twice: with the model, and with it taken away (random weights).
function dependencePanel(scores) {
  const without = scores["without_model.score"];
  if (typeof without !== "number") return null;
  const row = (k, x) => [h("span", { class: "k" }, k), h("span", { class: "num" }, fmt(x))];
  return [h("h2", {}, "With and without the model"),
    h("div", { class: "panel kv", id: "dependence" },
      row("held-out, with the model", scores.score),
      row("held-out, without the model", without),
      row("visible, without the model", scores["without_model.visible"]))];
}
// The clade: the variant and all its descendants in the archive (what the hgm parent selector
// samples by, and what scores an edit of the meta-agent itself).
function cladePanel(clade, meta) {
  if (!clade) return null;
  return [h("h2", {}, "Clade"),
    h("div", { class: "panel" },
      h("div", { class: "kv", id: "clade" },
        h("span", { class: "k" }, "rate"), h("span", { class: "num" }, fmt(clade.rate)),
        h("span", { class: "k" }, "members"), h("span", { class: "num" }, clade.members),
        h("span", { class: "k" }, "successes"), h("span", { class: "num" }, fmt(clade.successes)),
        h("span", { class: "k" }, "failures"), h("span", { class: "num" }, fmt(clade.failures))),
      h("p", { class: "dim note" }, "itself and its descendants: an admitted variant above its parent is a success; ",
        "one not above it, or rejected, a failure; rate = (successes + 1) / (successes + failures + 2)",
        meta ? ". A meta edit is scored by its clade." : ""))];
}
// A training probe: the model a short training round of the variant's pipeline trains, scored on
// held-out problems of each difficulty (the short probe first, then the full one).
function probePanel(scores, parentScores) {
  const prefix = "probe_by_difficulty.", shortPrefix = "probe_short_by_difficulty.";
  const levels = [...new Set(Object.keys(scores).filter((k) => k.startsWith(prefix) || k.startsWith(shortPrefix))
    .map((k) => k.slice(k.startsWith(prefix) ? prefix.length : shortPrefix.length)))]
    .sort((a, b) => (isNaN(a) || isNaN(b) ? a.localeCompare(b) : a - b));
  if (!levels.length && typeof scores.probe !== "number") return null;
  const parent = parentScores || {};
  const row = (label, key, shortKey) => {
    const delta = typeof scores[key] === "number" && typeof parent[key] === "number" ? scores[key] - parent[key] : null;
    return h("tr", {}, h("td", {}, label), h("td", { class: "num" }, fmt(scores[key])), h("td", { class: "num" }, fmt(scores[shortKey])),
      h("td", { class: "num" }, fmt(parent[key])), h("td", { class: "num " + trend(delta) }, signed(delta)));
  };
  return [h("h2", {}, "Training probe by difficulty"),
    h("table", { class: "grid", id: "probe-difficulty" },
      h("tr", {}, h("th", {}, "difficulty"), h("th", {}, "probe"), h("th", {}, "short probe"), h("th", {}, "parent's probe"), h("th", {}, "change")),
      levels.map((d) => row(d, prefix + d, shortPrefix + d)),
      row("all", "probe", "probe_short"))];
}
async function renderVariant(view, id) {
  const v = await getJSON(`/api/variant/${encodeURIComponent(id)}`);
  const m = v.meta || {}, calls = Array.isArray(m.calls) ? m.calls : [];
  const tokens = calls.reduce((a, c) => a + (c.prompt_tokens || 0) + (c.completion_tokens || 0), 0);
  const costs = calls.map((c) => c.cost_usd);
  const known = new Set(["scores", "calls", "sandbox", "summary", "proposer", "model", "decision", "reasons", "seconds",
    "operator", "changed_kinds", "judged_by"]);
  const extra = Object.fromEntries(Object.entries(m).filter(([k]) => !known.has(k)));
  const reasons = Array.isArray(m.reasons) ? m.reasons : m.reasons ? [m.reasons] : [];
  const sandbox = m.sandbox === undefined || m.sandbox === null ? null : sandboxSection(m.sandbox);
  const stages = m.stages && typeof m.stages === "object" ? m.stages : {};
  const inherited = stages.meta && typeof stages.meta === "object" && typeof stages.meta.inherited_from === "string" ? stages.meta.inherited_from : null;
  fill(view, 
    h("div", { class: "crumbs" }, v.lineage.map((a, i) => [i ? " → " : "", a === v.id ? h("b", {}, a) : link(a)])),
    h("h1", {}, `Variant ${v.id}`, h("span", { class: `badge ${v.status}`, id: "status" }, v.status)),
    m.summary ? h("p", {}, m.summary) : null,
    h("div", { class: "cols" },
      h("div", {},
        h("h2", {}, "Diff against ", v.parent ? link(v.parent) : "nothing (root)"),
        renderDiff(v.diff)),
      h("div", {},
        h("h2", {}, "Record"),
        h("div", { class: "panel kv" },
          h("span", { class: "k" }, "parent"), h("span", {}, v.parent ? link(v.parent) : "none (root)"),
          h("span", { class: "k" }, "children"), h("span", {}, v.children.length ? v.children.map((c, i) => [i ? ", " : "", link(c)]) : "none"),
          h("span", { class: "k" }, "proposer"), h("span", {}, m.proposer || "–"),
          h("span", { class: "k" }, "operator"), h("span", { id: "operator" }, opBadge(m.operator)),
          h("span", { class: "k" }, "changed kinds"), h("span", { id: "changed-kinds" }, kindBadges(m.changed_kinds)),
          h("span", { class: "k" }, "judged by"), h("span", { id: "judged-by" }, judgedBadge(m.judged_by),
            judgedText(m.judged_by) ? h("div", { class: "dim note" }, judgedText(m.judged_by)) : null),
          h("span", { class: "k" }, "model"), h("span", {}, m.model || "–"),
          h("span", { class: "k" }, "created"), h("span", {}, when(v.created), " UTC"),
          h("span", { class: "k" }, "seconds"), h("span", {}, m.seconds !== undefined ? fmt(m.seconds) : "–"),
          h("span", { class: "k" }, "LLM calls"), h("span", {}, `${calls.length} · ${tokens} tokens · ${costs.some((c) => c === null || c === undefined) ? "cost unknown" : "$" + costs.reduce((a, c) => a + c, 0).toFixed(4)}`),
          h("span", { class: "k" }, "commit"), h("span", { class: "dim" }, h("code", {}, v.commit.slice(0, 12)))),
        dependencePanel(v.scores),
        h("h2", {}, "Scores"),
        inherited ? h("p", { id: "inherited" }, "inherited from ", link(inherited),
          h("span", { class: "dim" }, ": a meta edit, the lifecycle it runs is its parent's")) : null,
        scoresTable(v.scores, v.parent ? v.parent_scores : null, v.parent || ""),
        probePanel(v.scores, v.parent ? v.parent_scores : null),
        cladePanel(v.clade, m.judged_by === "meta" || inherited),
        h("h2", {}, "Decision"),
        h("div", { class: "panel", id: "decision" }, h("b", {}, m.decision || v.status),
          reasons.length ? h("ul", { class: "reasons" }, reasons.map((r) => h("li", {}, typeof r === "string" ? r : JSON.stringify(r)))) : null),
        h("h2", {}, "Compare"),
        compareForm(v.id, v.parent || ""))),
    h("h2", {}, "Proposer prompt and response"),
    h("div", { id: "calls" }, callsSection(calls)),
    h("h2", {}, "Sandbox log"),
    sandbox || h("p", { class: "dim" }, "no sandbox log recorded"),
    Object.keys(extra).length ? [h("h2", {}, "Other metadata"), h("pre", { class: "block" }, JSON.stringify(extra, null, 2))] : null,
  );
}

// ---- compare ----
function compareForm(a, b) {
  const options = h("datalist", { id: "variant-ids" }, (state.data ? state.data.variants : []).slice(-2000).map((v) => h("option", { value: v.id })));
  const ia = h("input", { id: "cmp-a", list: "variant-ids", value: a, size: 8, placeholder: "v0" });
  const ib = h("input", { id: "cmp-b", list: "variant-ids", value: b, size: 8, placeholder: "v1" });
  const go = () => { if (ia.value && ib.value) location.hash = `#/compare/${ia.value.trim()}/${ib.value.trim()}`; };
  return h("div", { class: "toolbar" }, options, ia, " → ", ib, h("button", { id: "cmp-go", onclick: go }, "compare"));
}
function commonAncestor(a, b) {
  const seen = new Set();
  for (let v = state.byId.get(a); v; v = state.byId.get(v.parent)) seen.add(v.id);
  for (let v = state.byId.get(b); v; v = state.byId.get(v.parent)) if (seen.has(v.id)) return v.id;
  return null;
}
async function renderCompare(view, a, b) {
  if (!a || !b) {
    const top = state.metric ? best(state.metric) : null;
    fill(view, h("h1", {}, "Compare two variants"), compareForm(a || "v0", b || (top ? top.id : "")));
    return;
  }
  const [va, vb, d] = await Promise.all([getJSON(`/api/variant/${encodeURIComponent(a)}`), getJSON(`/api/variant/${encodeURIComponent(b)}`),
    getJSON(`/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`)]);
  const ancestor = commonAncestor(a, b);
  fill(view, 
    h("h1", {}, "Compare ", link(a), " → ", link(b)),
    compareForm(a, b),
    h("p", { class: "dim" }, "common ancestor: ", ancestor ? link(ancestor) : "none", ` · ${va.status} → ${vb.status}`),
    h("h2", {}, "Scores (", b, " against ", a, ")"),
    scoresTable(vb.scores, va.scores, a),
    h("h2", {}, "Diff ", a, " → ", b),
    renderDiff(d.diff));
}

// ---- routing and live refresh ----
async function render() {
  const view = document.getElementById("view");
  const route = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (!state.data) await loadVariants();
    if (route[0] === "v" && route[1]) await renderVariant(view, route[1]);
    else if (route[0] === "compare") await renderCompare(view, route[1], route[2]);
    else {
      const box = document.getElementById("tree-box"), scroll = box ? [box.scrollTop, box.scrollLeft] : null;
      renderHome(view);
      const nb = document.getElementById("tree-box"), tree = document.getElementById("lineage");
      if (scroll) { nb.scrollTop = scroll[0]; nb.scrollLeft = scroll[1]; }
      else if (nb && tree && tree.dataset.bestY) { // first view of a big tree: show the best variant
        nb.scrollTop = +tree.dataset.bestY - nb.clientHeight / 2;
        nb.scrollLeft = +tree.dataset.bestX - nb.clientWidth / 2;
      }
    }
  } catch (err) {
    fill(view, h("p", { class: "error" }, String(err.message || err)), h("p", {}, h("a", { href: "#/" }, "back to the lineage")));
  }
}
async function poll() {
  const badge = document.getElementById("live");
  try {
    const st = await getJSON("/api/state");
    badge.classList.remove("stale");
    if (state.data && st.version + "#" + st.count !== state.version) {
      await loadVariants();
      badge.textContent = `live · ${st.count}`;
      badge.classList.add("flash"); setTimeout(() => badge.classList.remove("flash"), 600);
      const route = location.hash.replace(/^#\/?/, "");
      if (!route || route === "/") render();
    } else if (state.data) badge.textContent = `live · ${state.data.count}`;
  } catch (err) {
    badge.classList.add("stale"); badge.textContent = "offline";
  }
  setTimeout(poll, POLL_MS);
}
window.addEventListener("hashchange", () => { document.getElementById("tooltip").hidden = true; window.scrollTo(0, 0); render(); });
render().then(() => setTimeout(poll, POLL_MS));
