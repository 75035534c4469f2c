// vigilflow review page: camera tiles, the alert list, an alert's page. No build step.
// Data goes into the page as text (textContent), never as markup.
"use strict";

const POLL_MS = 2000;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("bad", !!bad);
}

async function api(path, options) {
  const resp = await fetch(path, options);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

function when(ts) {
  return ts === null || ts === undefined ? "–" : new Date(ts).toLocaleString();
}

function fmt(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits);
}

function reviewText(review) {
  if (!review) return "not reviewed";
  return review.mark === "false_alarm" ? "false alarm" : "reviewed";
}

// A score line: points [[x, score], ...] against the threshold (and an exit threshold).
function drawLine(canvas, points, threshold, exitThreshold, xs, span) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#10151c";
  ctx.fillRect(0, 0, w, h);
  if (!points.length) return;
  const x0 = xs ? xs[0] : points[0][0], x1 = xs ? xs[1] : points[points.length - 1][0];
  const ymax = Math.max(threshold * 1.5, ...points.map((p) => (p[1] === null ? 0 : p[1])));
  const X = (x) => pad + ((x - x0) / Math.max(1, x1 - x0)) * (w - 2 * pad);
  const Y = (y) => h - pad - (Math.max(0, y) / ymax) * (h - 2 * pad);
  const rule = (y, dash, colour) => {
    ctx.strokeStyle = colour; ctx.setLineDash(dash); ctx.beginPath();
    ctx.moveTo(0, Y(y)); ctx.lineTo(w, Y(y)); ctx.stroke(); ctx.setLineDash([]);
  };
  if (span) { // the alert itself, start to end
    ctx.fillStyle = "rgba(248, 81, 73, 0.15)";
    ctx.fillRect(X(span[0]), 0, Math.max(2, X(span[1]) - X(span[0])), h);
  }
  rule(threshold, [], "#e05050");
  ctx.fillStyle = "#e05050";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`threshold ${Number(threshold).toFixed(2)}`, pad + 2, Math.max(11, Y(threshold) - 3));
  if (exitThreshold !== undefined && exitThreshold !== null) rule(exitThreshold, [4, 4], "#e0a050");
  ctx.strokeStyle = "#7fd1ff"; ctx.lineWidth = 1.5; ctx.beginPath();
  let started = false;
  for (const [x, y] of points) {
    if (y === null) { started = false; continue; }
    if (!started) { ctx.moveTo(X(x), Y(y)); started = true; } else ctx.lineTo(X(x), Y(y));
  }
  ctx.stroke();
}

// ---------------------------------------------------------------- the index page
const tiles = new Map();

function tileFor(cam) {
  let t = tiles.get(cam.camera);
  if (t) return t;
  const root = el("article", { class: "tile", "data-camera": cam.camera });
  const head = el("div", { class: "tile-head" });
  const name = el("span", { class: "cam" }, cam.camera);
  const badge = el("span", { class: "health" });
  head.append(name, badge);
  const img = el("img", { alt: `latest frame of ${cam.camera} with heat overlay` });
  img.addEventListener("error", () => { img.hidden = true; });
  img.addEventListener("load", () => { img.hidden = false; });
  const line = el("canvas", { width: 320, height: 60, class: "spark" });
  const info = el("div", { class: "tile-info" });
  root.append(head, img, line, info);
  const box = document.getElementById("tiles");
  if (!tiles.size) box.textContent = "";
  box.append(root);
  t = { root, badge, img, line, info };
  tiles.set(cam.camera, t);
  return t;
}

async function refreshTiles() {
  const data = await api("/api/cameras");
  for (const cam of data.cameras) {
    const t = tileFor(cam);
    t.badge.textContent = cam.health;
    t.badge.className = `health ${cam.health}`;
    const key = `${cam.seq}`;
    if (t.img.dataset.key !== key) {
      t.img.dataset.key = key;
      t.img.src = `${cam.tile_url}?v=${cam.seq === null ? 0 : cam.seq}`;
    }
    const prov = cam.provisional ? " · learning period" : "";
    t.info.textContent = cam.score === null
      ? (cam.live ? "no score yet" : "no live frames (showing its newest alert, if any)")
      : `score ${fmt(cam.score)} (threshold 1.00) · ${when(cam.ts)}${prov}`;
    if (cam.live) {
      const s = await api(cam.scores_url);
      drawLine(t.line, s.points, s.threshold);
    } else {
      t.line.hidden = true;
    }
  }
}

const listState = { cursors: [""], filters: {} };

function listQuery() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(listState.filters)) if (v) q.set(k, v);
  const before = listState.cursors[listState.cursors.length - 1];
  if (before) q.set("before", before);
  return q.toString();
}

async function refreshAlerts() {
  const data = await api(`/api/alerts?${listQuery()}`);
  const select = document.getElementById("f-camera");
  const have = new Set([...select.options].map((o) => o.value));
  for (const cam of data.cameras) if (!have.has(cam)) select.append(el("option", { value: cam }, cam));
  const body = document.getElementById("alerts");
  body.textContent = "";
  for (const a of data.alerts) {
    const row = el("tr", { class: "alert-row", "data-alert": a.alert_id });
    const snap = el("td");
    if (a.snapshot_url) {
      const img = el("img", { src: a.snapshot_url, alt: "snapshot", class: "thumb" });
      img.addEventListener("error", () => { img.hidden = true; }); // expired or never stored
      snap.append(img);
    }
    const time = el("td");
    time.append(el("a", { href: a.page_url, class: "alert-link" }, when(a.start_ts)));
    const status = a.provisional ? `${a.status} (provisional)` : a.status;
    row.append(snap, time, el("td", {}, a.camera), el("td", {}, fmt(a.peak_score)),
      el("td", {}, `${fmt(a.duration_s, 1)} s`), el("td", {}, status),
      el("td", { class: "review" }, reviewText(a.review)));
    row.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") location.href = a.page_url; });
    body.append(row);
  }
  document.getElementById("no-alerts").hidden = data.alerts.length > 0;
  const older = document.getElementById("older");
  older.hidden = !data.next;
  older.dataset.next = data.next || "";
  document.getElementById("newer").hidden = listState.cursors.length <= 1;
}

function toMs(value) {
  if (!value) return "";
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) && ms >= 0 ? String(ms) : "";
}

function initIndex() {
  const apply = () => {
    listState.filters = {
      camera: document.getElementById("f-camera").value,
      since: toMs(document.getElementById("f-since").value),
      until: toMs(document.getElementById("f-until").value),
    };
    listState.cursors = [""];
    refreshAlerts().catch((e) => setStatus(e.message, true));
  };
  for (const id of ["f-camera", "f-since", "f-until"]) document.getElementById(id).addEventListener("change", apply);
  document.getElementById("f-clear").addEventListener("click", () => {
    document.getElementById("filters").reset();
    apply();
  });
  document.getElementById("older").addEventListener("click", (ev) => {
    listState.cursors.push(ev.target.dataset.next);
    refreshAlerts().catch((e) => setStatus(e.message, true));
  });
  document.getElementById("newer").addEventListener("click", () => {
    listState.cursors = [""];
    refreshAlerts().catch((e) => setStatus(e.message, true));
  });
  const tick = async () => {
    try {
      await refreshTiles();
      if (listState.cursors.length === 1) await refreshAlerts(); // live on the first page only
      setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
    } catch (e) {
      setStatus(`cannot reach vigilflow: ${e.message}`, true);
    }
  };
  tick();
  setInterval(tick, POLL_MS);
}

// ---------------------------------------------------------------- an alert's page
function alertId() {
  return decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
}

function fact(name, value) {
  const row = el("tr");
  row.append(el("th", {}, name), el("td", {}, value));
  return row;
}

async function loadAlert() {
  const a = await api(`/api/alerts/${encodeURIComponent(alertId())}`);
  document.title = `vigilflow · alert ${a.alert_id}`;
  document.getElementById("title").textContent = `Alert ${a.alert_id} · camera ${a.camera}`;
  document.getElementById("review-state").textContent = reviewText(a.review);
  const video = document.getElementById("clip");
  if (a.clip_url && video.dataset.src !== a.clip_url) {
    video.dataset.src = a.clip_url;
    video.src = a.clip_url;
  }
  document.getElementById("clip-caption").textContent = a.clip_url
    ? `Clip: ${a.clip_frames} frames, pre-roll to post-roll, heat overlay`
    : "The clip is still being recorded (post-roll)";
  const snap = document.getElementById("snapshot");
  if (a.snapshot_url && snap.getAttribute("src") !== a.snapshot_url) snap.src = a.snapshot_url;
  const pts = a.timeline.map((p) => [p[0], p[2]]);
  const xs = pts.length ? [pts[0][0], pts[pts.length - 1][0]] : null;
  const span = [a.start_seq, a.end_seq === null ? (xs ? xs[1] : a.start_seq) : a.end_seq];
  drawLine(document.getElementById("timeline"), pts, a.threshold, a.exit_threshold, xs, span);
  const r = a.region;
  const facts = document.getElementById("facts");
  facts.textContent = "";
  facts.append(
    fact("Camera", a.camera), fact("Scene", a.scene), fact("Status", a.status),
    fact("Started", `${when(a.start_ts)} (frame ${a.start_seq})`),
    fact("Ended", a.end_ts === null ? "running" : `${when(a.end_ts)} (frame ${a.end_seq})`),
    fact("Duration", `${fmt(a.duration_s, 1)} s`),
    fact("Peak score", `${fmt(a.peak_score)} at frame ${a.peak_seq}`),
    fact("Threshold", `${fmt(a.threshold)} (exit ${fmt(a.exit_threshold)}); calibrated: 1.0 is the scene's threshold`),
    fact("Model", a.model),
    fact("Decided during learning period", a.provisional ? "yes (provisional)" : "no"),
    fact("Region", r ? `x ${r.x0}–${r.x1}, y ${r.y0}–${r.y1} of ${r.width}×${r.height}` : "none"),
  );
  return a;
}

async function mark(value) {
  const resp = await api(`/api/alerts/${encodeURIComponent(alertId())}/review`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mark: value }),
  });
  document.getElementById("review-state").textContent = reviewText(resp.review);
  setStatus("review saved", false);
}

function initAlert() {
  const guard = (p) => p.catch((e) => setStatus(e.message, true));
  document.getElementById("mark-reviewed").addEventListener("click", () => guard(mark("reviewed")));
  document.getElementById("mark-false").addEventListener("click", () => guard(mark("false_alarm")));
  document.getElementById("mark-clear").addEventListener("click", () => guard(mark(null)));
  const tick = async () => {
    try {
      const a = await loadAlert();
      if (a.status !== "open") return; // closed: clip and timeline are final
    } catch (e) {
      setStatus(e.message, true);
    }
    setTimeout(tick, POLL_MS);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "alert") initAlert();
  else initIndex();
});
