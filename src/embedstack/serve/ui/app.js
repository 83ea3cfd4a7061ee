// embedstack web UI: plain JS over the /v1 API (no build step, no external resources).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "embedstack.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------- DOM helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  return node;
}

const fmt = (x, d = 3) => (typeof x === "number" ? x.toFixed(d) : String(x));
const clip = (s, n) => (s && s.length > n ? s.slice(0, n - 1) + "…" : s || "");

// ---------------------------------------------------------------- errors and the API
function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`${method} ${path}: the server cannot be reached (${e.message})`);
  }
  const raw = await resp.text();
  let data = null;
  try {
    data = raw ? JSON.parse(raw) : null;
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const err = data && data.error;
    const detail = err && err.message ? err.message : (data && data.detail ? JSON.stringify(data.detail) : raw);
    if (resp.status === 401 || resp.status === 403) $("api-key").classList.add("wanted");
    throw new Error(`${resp.status} ${resp.statusText || "error"}: ${detail || "(no message)"}`);
  }
  return data;
}

// Runs an action from a form: clears the error box, disables the submit button while it runs, shows errors.
function handle(form, action) {
  $(form).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = ev.target.querySelector("button[type=submit]");
    clearError();
    if (button) button.disabled = true;
    try {
      await action();
    } catch (e) {
      showError(e.message);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- tabs, key and catalogue
function showTab(name) {
  const tabs = [...document.querySelectorAll("#tabs button")].map((b) => b.dataset.tab);
  if (!tabs.includes(name)) name = tabs[0];
  for (const b of document.querySelectorAll("#tabs button")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  }
  for (const t of tabs) $("tab-" + t).hidden = t !== name;
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
}

function fillSelect(select, items, keep) {
  const old = keep ? select.value : null;
  select.replaceChildren(...(keep ? [...select.options].filter((o) => o.value === "") : []));
  for (const item of items) select.append(el("option", { value: item.value, text: item.label }));
  if (!select.options.length) select.append(el("option", { value: "", text: "none served" }));
  if (old !== null && [...select.options].some((o) => o.value === old)) select.value = old;
}

async function loadCatalogue() {
  clearError();
  try {
    const [models, indexes] = await Promise.all([api("GET", "/v1/models"), api("GET", "/v1/indexes")]);
    $("api-key").classList.remove("wanted");
    const all = models.data || [];
    const byKind = (kinds) => all.filter((m) => kinds.includes(m.kind));
    fillSelect($("search-rerank"), byKind(["reranker"]).map((m) => ({ value: m.id, label: m.id })), true);
    fillSelect($("words-model"), byKind(["words"]).map((m) => ({ value: m.id, label: m.id })));
    const embedders = [...byKind(["dense"]), ...byKind(["words"])]; // what /v1/similarity takes
    fillSelect($("sim-model"), embedders.map((m) => ({ value: m.id, label: `${m.id} (${m.kind})` })));
    const idx = indexes.data || [];
    const picks = idx.map((ix, i) => el("label", {},
      el("input", { type: "checkbox", value: ix.name, checked: i < 3 ? "" : null }),
      ` ${ix.name} `, el("small", { text: `${ix.kind || ""} · ${ix.count ?? "?"} docs` })));
    $("search-indexes").replaceChildren(el("span", { text: "indexes:" }), ...picks);
    if (!idx.length) $("search-indexes").append(el("em", { text: " none served" }));
    const mappable = idx.filter((ix) => ix.kind !== "sparse" && ix.kind !== "multivector"); // the map needs dense vectors
    fillSelect($("map-index"), mappable.map((ix) => ({ value: ix.name, label: `${ix.name} (${ix.count ?? "?"} docs)` })));
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- Search
function movedBadge(moved, first) {
  if (first) return null;
  if (moved === null || moved === undefined) return el("span", { class: "moved new", text: "new" });
  if (moved > 0) return el("span", { class: "moved up", text: `↑${moved}` });
  if (moved < 0) return el("span", { class: "moved down", text: `↓${-moved}` });
  return el("span", { class: "moved same", text: "=" });
}

function renderColumns(columns) {
  const out = columns.map((col, c) => el("div", { class: "col", "data-name": col.name },
    el("h3", {}, el("span", { text: col.name }), el("span", { class: "ms", text: `${fmt(col.ms, 1)} ms` })),
    el("div", { class: "kind", text: col.kind || "" }),
    el("ol", {}, ...col.hits.map((h) => el("li", { class: "hit" },
      el("div", { class: "hit-head" },
        el("span", { class: "rank", text: `#${h.rank}` }), movedBadge(h.moved, c === 0),
        el("span", { class: "id", text: h.id }), el("span", { class: "score", text: fmt(h.score) })),
      el("p", { class: "snippet", text: clip(h.text, 240) })))),
    col.hits.length ? null : el("p", { class: "empty", text: "no hits" })));
  $("search-results").replaceChildren(...out);
}

handle("search-form", async () => {
  const indexes = [...document.querySelectorAll("#search-indexes input:checked")].map((i) => i.value);
  if (!indexes.length) throw new Error("Pick at least one index to search.");
  const body = { query: $("search-query").value, indexes, k: Number($("search-k").value) || 10 };
  if ($("search-rerank").value) body.rerank = $("search-rerank").value;
  $("search-results").replaceChildren(el("p", { class: "busy", text: "searching…" }));
  try {
    renderColumns((await api("POST", "/v1/search/compare", body)).columns || []);
  } catch (e) {
    $("search-results").replaceChildren();
    throw e;
  }
});

// ---------------------------------------------------------------- Words
function renderScores(list, rows) {
  const max = Math.max(1e-9, ...rows.map((r) => Math.abs(r.score)));
  list.replaceChildren(...rows.map((r) => el("li", {},
    el("span", { class: "word", text: r.word }),
    el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width:${(100 * Math.abs(r.score)) / max}%` })),
    el("span", { class: "score", text: fmt(r.score) }))));
  if (!rows.length) list.append(el("li", { class: "empty", text: "no results" }));
}

handle("neighbors-form", async () => {
  const body = { model: $("words-model").value, word: $("neighbors-word").value.trim(), k: Number($("neighbors-k").value) || 10 };
  renderScores($("neighbors-results"), (await api("POST", "/v1/words/neighbors", body)).neighbors || []);
});

handle("analogy-form", async () => {
  const [a, b, c] = ["a", "b", "c"].map((x) => $("analogy-" + x).value.trim());
  const body = { model: $("words-model").value, positive: [a, c], negative: [b], k: 10 };
  renderScores($("analogy-results"), (await api("POST", "/v1/words/analogy", body)).results || []);
});

// ---------------------------------------------------------------- Playground: similarity heat map
function heatColor(v) {
  // white at 0 → deep blue at 1; negative cosines in orange.
  const t = Math.min(1, Math.abs(v));
  const [r, g, b] = v >= 0 ? [30, 80, 200] : [220, 110, 20];
  return `rgb(${Math.round(255 - t * (255 - r))},${Math.round(255 - t * (255 - g))},${Math.round(255 - t * (255 - b))})`;
}

function renderHeatmap(texts, matrix) {
  const n = texts.length;
  const cell = Math.max(18, Math.min(56, Math.floor(560 / Math.max(1, n))));
  const pad = 28;
  const size = pad + n * cell;
  const svg = svgEl("svg", { class: "heatmap", width: size, height: size, viewBox: `0 0 ${size} ${size}` });
  for (let i = 0; i < n; i++) {
    svg.append(svgEl("text", { x: pad - 6, y: pad + i * cell + cell / 2, class: "axis", "text-anchor": "end", "dominant-baseline": "middle", text: i + 1 }));
    svg.append(svgEl("text", { x: pad + i * cell + cell / 2, y: pad - 8, class: "axis", "text-anchor": "middle", text: i + 1 }));
    for (let j = 0; j < n; j++) {
      const v = matrix[i][j];
      const g = svgEl("g", { class: "cell", "data-i": i, "data-j": j, "data-value": fmt(v) });
      g.dataset.tip = `${fmt(v)}\n${i + 1}: ${clip(texts[i], 120)}\n${j + 1}: ${clip(texts[j], 120)}`;
      g.append(svgEl("rect", { x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1, fill: heatColor(v) }));
      if (cell >= 34) {
        g.append(svgEl("text", { x: pad + j * cell + cell / 2, y: pad + i * cell + cell / 2, class: Math.abs(v) > 0.55 ? "val light" : "val",
          "text-anchor": "middle", "dominant-baseline": "middle", text: fmt(v, 2) }));
      }
      svg.append(g);
    }
  }
  const legend = el("ol", { class: "legend" }, ...texts.map((t) => el("li", { text: t })));
  $("sim-results").replaceChildren(el("div", { class: "heat-wrap" }, svg, legend));
}

handle("sim-form", async () => {
  const texts = $("sim-texts").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (texts.length < 2) throw new Error("Give at least two sentences, one per line.");
  const data = await api("POST", "/v1/similarity", { model: $("sim-model").value, texts });
  renderHeatmap(data.texts || texts, data.matrix);
});

// ---------------------------------------------------------------- Map: 2-D scatter of an index
function renderMap(name, points) {
  const W = 760;
  const H = 520;
  const m = 16;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => m + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * m);
  const sy = (y) => H - m - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * m);
  const svg = svgEl("svg", { class: "scatter", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  svg.append(svgEl("rect", { x: 0.5, y: 0.5, width: W - 1, height: H - 1, class: "frame" }));
  for (const p of points) {
    const c = svgEl("circle", { class: "pt", cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 4, "data-id": p.id });
    c.dataset.tip = `${p.id}\n${clip(p.text, 300)}`;
    svg.append(c);
  }
  $("map-results").replaceChildren(el("p", { class: "note", text: `${points.length} documents of ${name}, first two principal components` }), svg);
}

handle("map-form", async () => {
  const name = $("map-index").value;
  if (!name) throw new Error("No index to draw: the server serves no dense index.");
  const n = Number($("map-n").value) || 300;
  const data = await api("GET", `/v1/indexes/${encodeURIComponent(name)}/map?n=${n}`);
  renderMap(data.name || name, data.points || []);
});

// ---------------------------------------------------------------- hover tooltip (heat map cells, map points)
document.addEventListener("mouseover", (ev) => {
  const target = ev.target.closest && ev.target.closest("[data-tip]");
  const tip = $("tip");
  if (!target) {
    tip.hidden = true;
    return;
  }
  tip.textContent = target.dataset.tip;
  tip.hidden = false;
});
document.addEventListener("mousemove", (ev) => {
  const tip = $("tip");
  if (tip.hidden) return;
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = `${Math.max(4, x)}px`;
  tip.style.top = `${ev.clientY + 14}px`;
});

// ---------------------------------------------------------------- start
$("api-key").value = localStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("change", () => {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
  loadCatalogue();
});
$("api-key").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") ev.target.blur(); // commits the key (a change event) without a form
});
$("error-close").addEventListener("click", clearError);
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
showTab(location.hash.slice(1));
loadCatalogue();
