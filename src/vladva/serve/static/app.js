// The vladva search page: text queries (also from ?q=...&k=...) and query-by-image uploads,
// both answered by POST /search. No libraries, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const statusLine = $("status");
const results = $("results");

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function render(data, label) {
  results.replaceChildren();
  for (const hit of data.results) {
    const li = document.createElement("li");
    li.className = "result";
    Object.assign(li.dataset, { rank: hit.rank, id: hit.id, score: hit.score, path: hit.path });
    const img = document.createElement("img");
    img.src = hit.url;
    img.alt = hit.path;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<span class="rank">#${hit.rank}</span><span class="score">${hit.score.toFixed(3)}</span>`;
    const path = document.createElement("div");
    path.className = "path";
    path.textContent = hit.path.split("/").pop();
    path.title = hit.path;
    li.append(img, meta, path);
    if (hit.captions && hit.captions.length) {
      const cap = document.createElement("div");
      cap.className = "caption";
      cap.textContent = hit.captions[0];
      li.append(cap);
    }
    results.append(li);
  }
  setStatus(`${data.results.length} results for ${label}`);
  document.body.dataset.state = "done";
}

async function search(body, label) {
  document.body.dataset.state = "searching";
  setStatus(`searching ${label} ...`);
  try {
    const init = body instanceof FormData
      ? { method: "POST", body }
      : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch("/search", init);
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
    render(data, label);
  } catch (err) {
    results.replaceChildren();
    setStatus(`error: ${err.message}`, true);
    document.body.dataset.state = "error";
  }
}

function k() {
  return parseInt($("k").value, 10);
}

function searchText(text) {
  if (!text.trim()) return;
  const url = new URL(window.location);
  url.searchParams.set("q", text);
  url.searchParams.set("k", k());
  history.replaceState(null, "", url);
  search({ text, k: k() }, `"${text}"`);
}

function searchImage(file) {
  if (!file) return;
  const preview = $("query-image");
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("k", String(k()));
  search(form, `image ${file.name}`);
}

$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  searchText($("q").value);
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

const params = new URLSearchParams(window.location.search);
if (params.has("k")) {
  const opt = [...$("k").options].find((o) => o.value === params.get("k"));
  if (opt) $("k").value = opt.value; else $("k").add(new Option(params.get("k"), params.get("k"), true, true));
}
if (params.get("q")) {
  $("q").value = params.get("q");
  searchText(params.get("q"));
}
