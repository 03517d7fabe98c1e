// The vladva search page: text queries (also from ?q=...&k=...), query-by-image uploads and
// "more like this" on a result (?like=ID), all answered by POST /search; example queries from
// GET /examples. No libraries, no build step. document.body.dataset.state says what the page is
// doing (searching, done, error, empty), for people reading the DOM and for the browser test.
"use strict";

const $ = (id) => document.getElementById(id);
const statusLine = $("status");
const results = $("results");
const queryBox = $("q");
const viewer = $("viewer");
let viewed = null; // the hit shown in the enlarged view

function setStatus(text, kind = "") {
  statusLine.textContent = text;
  statusLine.className = kind;
}

function fileName(path) {
  return path.split("/").pop();
}

function ms(x) {
  return x < 10 ? x.toFixed(1) : Math.round(x).toString();
}

// "in 23 ms (embedding 3.1 ms, index 0.1 ms)": the round trip as the browser saw it, then the
// server's own split (embedding includes the wait to share a batched model call).
function latencyText(data, roundTripMs) {
  const t = data.timings_ms;
  const split = t ? ` (embedding ${ms(t.embed)} ms, index ${ms(t.search)} ms)` : "";
  return `in ${ms(roundTripMs)} ms${split}`;
}

function resultCard(hit) {
  const li = document.createElement("li");
  li.className = "result";
  Object.assign(li.dataset, { rank: hit.rank, id: hit.id, score: hit.score, path: hit.path });
  const enlarge = document.createElement("button");
  enlarge.type = "button";
  enlarge.className = "enlarge";
  enlarge.title = "enlarge";
  const img = document.createElement("img");
  img.src = hit.url;
  img.alt = hit.captions && hit.captions.length ? hit.captions[0] : fileName(hit.path);
  enlarge.append(img);
  enlarge.addEventListener("click", () => openViewer(hit));
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = `<span class="rank">#${hit.rank}</span><span class="score">${hit.score.toFixed(3)}</span>`;
  li.append(enlarge, meta);
  if (hit.captions && hit.captions.length) {
    const cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = hit.captions[0];
    cap.title = hit.captions.join("\n");
    if (hit.captions.length > 1) {
      const more = document.createElement("span");
      more.className = "more";
      more.textContent = ` (+${hit.captions.length - 1} more)`;
      cap.append(more);
    }
    li.append(cap);
  }
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = fileName(hit.path);
  path.title = hit.path;
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  like.textContent = "More like this";
  like.addEventListener("click", () => searchLike(hit));
  li.append(path, like);
  return li;
}

function render(data, label, roundTripMs) {
  results.replaceChildren(...data.results.map(resultCard));
  const unknown = data.unknown_words && data.unknown_words.length
    ? `; the model cannot read ${data.unknown_words.map((w) => `"${w}"`).join(", ")}, so the search ignores it`
    : "";
  setStatus(`${data.results.length} results for ${label} ${latencyText(data, roundTripMs)}${unknown}`);
  document.body.dataset.state = "done";
}

async function search(body, label) {
  document.body.dataset.state = "searching";
  setStatus(`searching ${label} ...`);
  const started = performance.now();
  try {
    const init = body instanceof FormData
      ? { method: "POST", body }
      : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch("/search", init);
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
    render(data, label, performance.now() - started);
  } catch (err) {
    results.replaceChildren();
    setStatus(`error: ${err.message}`, "error");
    document.body.dataset.state = "error";
  }
}

function k() {
  return parseInt($("k").value, 10);
}

// The address bar mirrors the query, so a search can be reloaded or shared.
function setUrl(params) {
  const url = new URL(window.location);
  url.search = new URLSearchParams({ ...params, k: k() }).toString();
  history.replaceState(null, "", url);
}

function showQueryImage(src, text) {
  const preview = $("query-image");
  if (src) preview.src = src; else preview.removeAttribute("src");
  $("drop-text").textContent = text;
}

function searchText(text) {
  if (!text.trim()) {
    setStatus("Type a description first (or try an example), or drop an image below.", "hint");
    document.body.dataset.state = "empty";
    queryBox.focus();
    return;
  }
  showQueryImage(null, "Drop an image here, or click to choose one.");
  setUrl({ q: text });
  search({ text, k: k() }, `"${text}"`);
}

function searchImage(file) {
  if (!file) return;
  queryBox.value = ""; // the results are for the image now, not for the old text
  showQueryImage(URL.createObjectURL(file), `Searching by ${file.name}. Drop another image, or click to choose one.`);
  setUrl({});
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("k", String(k()));
  search(form, `image ${file.name}`);
}

function searchLike(hit) {
  if (viewer.open) viewer.close();
  queryBox.value = "";
  const name = fileName(hit.path);
  showQueryImage(hit.url, `More like ${name}. Drop an image here, or click to choose one.`);
  setUrl({ like: hit.id });
  window.scrollTo(0, 0);
  search({ image_id: hit.id, k: k() }, `images like ${name}`);
}

function openViewer(hit) {
  viewed = hit;
  $("viewer-image").src = hit.url;
  $("viewer-image").alt = fileName(hit.path);
  viewer.querySelector(".rank").textContent = `#${hit.rank}`;
  viewer.querySelector(".score").textContent = hit.score.toFixed(3);
  const captions = hit.captions && hit.captions.length ? hit.captions : ["(no stored captions)"];
  $("viewer-captions").replaceChildren(...captions.map((c) => Object.assign(document.createElement("li"), { textContent: c })));
  const id = hit.record_id != null ? ` · record ${hit.record_id}` : "";
  viewer.querySelector(".path").textContent = `${hit.path}${id}`;
  viewer.showModal(); // modal: Escape closes it, focus stays inside
  document.body.dataset.viewer = "open";
}

viewer.addEventListener("close", () => { document.body.dataset.viewer = "closed"; });
viewer.addEventListener("click", (e) => { if (e.target === viewer) viewer.close(); }); // the backdrop
$("viewer-close").addEventListener("click", () => viewer.close());
$("viewer-like").addEventListener("click", () => searchLike(viewed));

$("text-form").addEventListener("submit", (e) => {
  e.preventDefault(); // Enter in the box submits the form
  searchText(queryBox.value);
});
$("file").addEventListener("change", (e) => searchImage(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  searchImage(e.dataTransfer.files[0]);
});

fetch("/health").then((r) => r.json()).then((h) => {
  $("info").textContent = `${h.images} images indexed with ${h.model} (${h.kind}, dim ${h.dim}). ` +
    "Type a description, or drop an image to find similar ones.";
}).catch(() => {});

fetch("/examples?n=6").then((r) => r.json()).then((data) => {
  const box = $("examples");
  for (const text of data.examples || []) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.textContent = text;
    chip.addEventListener("click", () => {
      queryBox.value = text;
      searchText(text);
    });
    box.append(chip);
  }
  box.hidden = !(data.examples || []).length;
  box.dataset.source = data.source || "";
}).catch(() => {});

const params = new URLSearchParams(window.location.search);
if (params.has("k")) {
  const opt = [...$("k").options].find((o) => o.value === params.get("k"));
  if (opt) $("k").value = opt.value; else $("k").add(new Option(params.get("k"), params.get("k"), true, true));
}
if (params.get("q")) {
  queryBox.value = params.get("q");
  searchText(params.get("q"));
} else if (params.get("like")) {
  const id = parseInt(params.get("like"), 10);
  searchLike({ id, url: `/images/${id}`, path: `image ${id}` });
}
