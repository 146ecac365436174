// The CLaSP search page: queries go to the JSON API, a clicked hit is drawn with 3Dmol.js.
"use strict";

const $ = (id) => document.getElementById(id);
let viewer = null;
let indexSize = 0;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function cell(row, text, className = "") {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render(result) {
  const tbody = $("results").tBodies[0];
  tbody.replaceChildren();
  for (const hit of result.hits) {
    const row = tbody.insertRow();
    row.dataset.id = hit.id;
    cell(row, hit.rank, "num");
    cell(row, hit.formula);
    cell(row, hit.spacegroup);
    cell(row, hit.score.toFixed(4), "num");
    cell(row, hit.cosine.toFixed(4), "num");
    cell(row, hit.lexical.toFixed(3), "num");
    cell(row, hit.parts.join(", "));
    const title = cell(row, hit.title || "(no title)", "title");
    const source = document.createElement("div");
    source.className = "source";
    source.textContent = `${hit.id} · ${hit.source}`;
    title.appendChild(source);
    const link = document.createElement("a");
    link.href = `/api/cif?id=${encodeURIComponent(hit.id)}`;
    link.textContent = "CIF";
    link.addEventListener("click", (event) => event.stopPropagation());
    row.insertCell().appendChild(link);
    row.addEventListener("click", () => show(hit, row));
  }
  $("results").dataset.count = result.hits.length;
  const how = result.kind === "text"
    ? `alpha ${result.alpha}: ${result.alpha_source}; score = cosine + alpha × lexical`
    : "structure query: score = cosine similarity of the crystal embeddings";
  setStatus(`${result.hits.length} hits for “${result.query}” (${how})`);
  if (tbody.rows.length) show(result.hits[0], tbody.rows[0]);
}

async function show(hit, row) {
  for (const other of $("results").tBodies[0].rows) other.classList.remove("selected");
  row.classList.add("selected");
  const caption = $("viewer-caption");
  caption.textContent = `loading ${hit.id}…`;
  const response = await fetch(`/api/cif?id=${encodeURIComponent(hit.id)}`);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    caption.textContent = body.error || `cannot load ${hit.id}`;
    return;
  }
  const cif = await response.text();
  if (viewer === null) viewer = $3Dmol.createViewer($("viewer"), { backgroundColor: "white" });
  viewer.clear();
  const model = viewer.addModel(cif, "cif");
  viewer.setStyle({}, { sphere: { scale: 0.3 }, stick: { radius: 0.12 } });
  viewer.addUnitCell(model);
  viewer.zoomTo();
  viewer.render();
  $("viewer").dataset.shown = hit.id;
  caption.textContent = `${hit.formula} · ${hit.spacegroup} · ${hit.id} (unit cell; drag to rotate)`;
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value;
  setStatus("searching…");
  try {
    render(await fetchJson(`/api/search?q=${encodeURIComponent(q)}&k=${$("k").value}`));
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function searchCif() {
  const file = $("cif-file").files[0];
  if (!file) return;
  setStatus(`searching with ${file.name}…`);
  const url = `/api/search/cif?k=${$("k").value}&name=${encodeURIComponent(file.name)}`;
  try {
    render(await fetchJson(url, { method: "POST", body: file }));
  } catch (error) {
    setStatus(error.message, true);
  }
  $("cif-file").value = "";
}

async function start() {
  try {
    const info = await fetchJson("/api/info");
    indexSize = info.count;
    $("k").max = indexSize;
    $("k").value = Math.min(10, indexSize);
    $("info").textContent =
      `${indexSize.toLocaleString()} structures · model ${info.checkpoint} · ` +
      `alpha ${info.alpha} (${info.alpha_source})` +
      (info.structures ? "" : " · this index has no records, so structures cannot be shown");
  } catch (error) {
    setStatus(`cannot reach the server: ${error.message}`, true);
  }
  $("search-form").addEventListener("submit", search);
  $("cif-file").addEventListener("change", searchCif);
  document.body.dataset.ready = "true";
}

start();
