// melodyrt karaoke live view: a scrolling piano roll of the target notes, the sung pitch line,
// lyrics with the current syllable, cents off the note and the running score.
// Data: GET song.json once, then server-sent events from /events (one JSON snapshot per
// update, at display rate). No build step, no external resources.
"use strict";

const COLORS = {
  bg: "#10131a", grid: "#1d2230", gridC: "#2c3447", label: "#5d6579",
  note: "#5c6bc0", noteNow: "#7986cb", golden: "#ffc107", rap: "#8d6e63", free: "#607d8b",
  hitFill: "#3ddc84", sung: "#00e5ff", nowLine: "#e8ebf2",
};
const PAST_S = 3.0;     // seconds of history left of the "now" line
const FUTURE_S = 5.0;   // seconds of upcoming notes right of it
const NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];

// Everything a test (or a curious user in the console) may want to read.
const K = window.karaoke = {
  song: null, state: null, updates: 0, clockEvents: 0, points: 0, draws: 0, connected: false,
  finished: false, final: null, sung: [], recvAt: 0, rate: 0, lastLine: -1, lastRated: -1,
};

const $ = (id) => document.getElementById(id);

function noteName(midi) {
  if (midi === null || midi === undefined) return "–";
  const n = Math.round(midi);
  return NAMES[((n % 12) + 12) % 12] + (Math.floor(n / 12) - 1);
}

async function start() {
  const res = await fetch("song.json");
  K.song = await res.json();
  $("title").textContent = K.song.title || "";
  $("artist").textContent = K.song.artist ? "— " + K.song.artist : "";
  const sc = K.song.score_config || {};
  $("difficulty").textContent = (sc.difficulty || "") + " ±" + (sc.tolerance || "?") + "¢" +
    (sc.octave_agnostic ? " · any octave" : "");
  const tol = sc.tolerance || 50;
  const zone = $("zone");
  zone.style.left = (50 - 50 * tol / 200) + "%";   // the bar spans ±200 cents
  zone.style.width = (100 * tol / 200) + "%";
  connect();
  window.addEventListener("resize", draw);
  requestAnimationFrame(frame);
}

function connect() {
  const es = new EventSource("events");
  K.source = es;
  es.onopen = () => { K.connected = true; $("status").textContent = "live"; };
  es.onerror = () => {
    K.connected = false;
    $("status").textContent = K.finished ? "song over" : "reconnecting…";
    if (K.finished) es.close();
  };
  es.onmessage = (e) => onState(JSON.parse(e.data));
  es.addEventListener("clock", (e) => {
    const c = JSON.parse(e.data);
    K.clockEvents++;
    if (K.state) { K.state.now = c.now; K.state.score = c.score; } else { K.state = c; }
    K.recvAt = performance.now();
  });
  es.addEventListener("final", (e) => {
    const s = JSON.parse(e.data);
    onState(s);
    K.finished = true;
    K.final = s.final;
    showFinal(s.final);
    es.close();
    $("status").textContent = "song over";
  });
}

const rateWindow = [];
function onState(s) {
  K.updates++;
  const now = performance.now();
  rateWindow.push(now);
  while (rateWindow.length && now - rateWindow[0] > 1000) rateWindow.shift();
  K.rate = rateWindow.length;
  for (const p of s.points || []) K.sung.push(p);
  K.points += (s.points || []).length;
  // Keep what the roll can show (plus a margin).
  const keepFrom = s.now - PAST_S - 2;
  let cut = 0;
  while (cut < K.sung.length && K.sung[cut][0] < keepFrom) cut++;
  if (cut > 0) K.sung.splice(0, cut);
  K.state = s;
  K.recvAt = now;
  updateText(s);
  draw();
}

function updateText(s) {
  $("score").textContent = s.score;
  $("max").textContent = s.max_score;
  $("updates").textContent = K.updates;
  $("rate").textContent = K.rate;
  $("frames").textContent = s.seq;
  const cents = $("cents");
  if (s.cents !== null && s.cents !== undefined) {
    cents.textContent = (s.cents >= 0 ? "+" : "") + Math.round(s.cents) + "¢";
    cents.className = "cents " + (s.hit ? "hit" : "miss");
    const c = Math.max(-200, Math.min(200, s.cents));
    $("needle").style.left = (50 + 50 * c / 200) + "%";
  } else {
    cents.textContent = s.midi === null ? "·" : "";
    cents.className = "cents";
  }
  $("note").textContent = s.midi === null ? "–" : noteName(s.midi);
  if (s.line !== K.lastLine || s.note !== K.lastNote) renderLyrics(s);
  const done = s.lines_done || [];
  if (done.length && done[done.length - 1][0] !== K.lastRated) {
    const [idx, rating, perf, pts] = done[done.length - 1];
    K.lastRated = idx;
    const el = $("rating");
    el.textContent = "line " + (idx + 1) + ": " + rating + " (" + Math.round(100 * perf) + "%, +" + Math.round(pts) + ")";
    el.classList.add("show");
    clearTimeout(K.ratingTimer);
    K.ratingTimer = setTimeout(() => el.classList.remove("show"), 2500);
  }
}

function renderLyrics(s) {
  K.lastLine = s.line;
  K.lastNote = s.note;
  const song = K.song;
  const fill = (el, lineIdx, current) => {
    el.textContent = "";
    if (lineIdx < 0 || lineIdx >= song.lines.length) return;
    for (const i of song.lines[lineIdx].notes) {
      const n = song.notes[i];
      const span = document.createElement("span");
      span.textContent = n.text;
      span.className = "syl" + (n.kind.indexOf("golden") >= 0 ? " golden" : "");
      if (current) {
        if (i === s.note) span.className += " now";
        else if (n.end <= s.now) span.className += " done";
      }
      el.appendChild(span);
    }
  };
  fill($("line"), s.line, true);
  fill($("next"), s.line >= 0 ? s.line + 1 : -1, false);
}

function showFinal(f) {
  if (!f) return;
  const el = $("final");
  let rows = "";
  for (const ln of f.lines || []) {
    rows += "<tr><td>" + (ln.index + 1) + "</td><td>" + escapeHtml(ln.text || "") + "</td><td>" + ln.rating +
      "</td><td>" + Math.round(100 * ln.perfection) + "%</td></tr>";
  }
  el.innerHTML = "<h2>Score " + f.total + " / " + f.max_score + "</h2><table>" + rows + "</table>";
  el.classList.remove("hidden");
  $("score").textContent = f.total;
}

function escapeHtml(t) {
  return t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

// Song time now: the server's clock at the last update, advanced by the time since then
// (at most a quarter second, so a stalled stream does not run away).
function songNow() {
  const s = K.state;
  if (!s || s.now === undefined) return 0;
  if (K.finished) return s.now;
  return s.now + Math.min(0.25, (performance.now() - K.recvAt) / 1000);
}

function frame() {
  draw();
  requestAnimationFrame(frame);
}

function draw() {
  const cv = $("roll");
  if (!cv || !K.song) return;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cv.clientWidth * dpr));
  const h = Math.max(1, Math.round(cv.clientHeight * dpr));
  if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
  const g = cv.getContext("2d");
  g.fillStyle = COLORS.bg;
  g.fillRect(0, 0, w, h);
  const now = songNow();
  const t0 = now - PAST_S, t1 = now + FUTURE_S;
  const x = (t) => (t - t0) / (t1 - t0) * w;
  const [lo0, hi0] = K.song.pitch_range;
  const lo = Math.floor(lo0) - 4, hi = Math.ceil(hi0) + 4;
  const rowH = h / (hi - lo);
  const y = (m) => h - (m - lo) * rowH;

  // Semitone grid, C rows labelled.
  g.font = Math.round(11 * dpr) + "px sans-serif";
  for (let m = lo; m <= hi; m++) {
    const isC = ((m % 12) + 12) % 12 === 0;
    g.fillStyle = isC ? COLORS.gridC : COLORS.grid;
    g.fillRect(0, Math.round(y(m + 0.5)), w, 1);
    if (isC) { g.fillStyle = COLORS.label; g.fillText(noteName(m), 4 * dpr, y(m) + 4 * dpr); }
  }

  // Target notes.
  const s = K.state || {};
  for (let i = 0; i < K.song.notes.length; i++) {
    const n = K.song.notes[i];
    if (n.end < t0 || n.start > t1) continue;
    const xa = x(n.start), xb = x(n.end);
    if (n.kind === "freestyle") {
      g.strokeStyle = COLORS.free; g.setLineDash([6 * dpr, 4 * dpr]); g.lineWidth = 2 * dpr;
      const m = (hi + lo) / 2;
      g.strokeRect(xa, y(m + 0.4), xb - xa, 0.8 * rowH);
      g.setLineDash([]);
      continue;
    }
    if (n.contour) {  // an f0 reference: draw its contour as a thick band
      g.strokeStyle = COLORS.note; g.lineWidth = Math.max(3, 0.7 * rowH); g.lineCap = "round";
      g.beginPath();
      n.contour.forEach(([t, m], k) => (k ? g.lineTo(x(t), y(m)) : g.moveTo(x(t), y(m))));
      g.stroke();
      continue;
    }
    const m = n.kind.indexOf("rap") === 0 ? (hi + lo) / 2 : n.midi;
    g.fillStyle = n.kind.indexOf("golden") >= 0 ? COLORS.golden : n.kind.indexOf("rap") === 0 ? COLORS.rap :
      (i === s.note ? COLORS.noteNow : COLORS.note);
    roundRect(g, xa, y(m + 0.4), Math.max(2, xb - xa), Math.max(3, 0.8 * rowH), Math.min(6 * dpr, 0.4 * rowH));
  }

  // Hits light up the note under the sung line.
  g.fillStyle = COLORS.hitFill;
  for (const [t, m, hit] of K.sung) {
    if (!hit || m === null || t < t0 || t > t1) continue;
    g.globalAlpha = 0.55;
    g.fillRect(x(t) - 0.5, y(Math.round(m) + 0.3), Math.max(1, x(t + 0.01) - x(t)) + 1, 0.6 * rowH);
  }
  g.globalAlpha = 1;

  // The sung pitch line (gaps where unvoiced).
  g.strokeStyle = COLORS.sung; g.lineWidth = 3 * dpr; g.lineJoin = "round"; g.lineCap = "round";
  g.beginPath();
  let pen = false, prevT = -1;
  for (const [t, m] of K.sung) {
    if (m === null || t < t0 - 0.1) { pen = false; continue; }
    const px = x(t), py = y(m);
    if (pen && t - prevT < 0.05) g.lineTo(px, py); else g.moveTo(px, py);
    pen = true; prevT = t;
  }
  g.stroke();

  // Now line.
  g.fillStyle = COLORS.nowLine;
  g.globalAlpha = 0.6;
  g.fillRect(Math.round(x(now)), 0, Math.max(1, dpr), h);
  g.globalAlpha = 1;
  K.draws++;
}

function roundRect(g, x, y, w, h, r) {
  r = Math.max(0, Math.min(r, w / 2, h / 2));
  g.beginPath();
  g.moveTo(x + r, y);
  g.arcTo(x + w, y, x + w, y + h, r);
  g.arcTo(x + w, y + h, x, y + h, r);
  g.arcTo(x, y + h, x, y, r);
  g.arcTo(x, y, x + w, y, r);
  g.closePath();
  g.fill();
}

start().catch((err) => { $("status").textContent = "error: " + err; K.error = String(err); });
