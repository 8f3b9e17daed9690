// The page of `lm export --web`: a text box and a strip of suggestions, all computed in the page
// by lm.js. The strip follows the text up to the caret: one computation at a time, the newest
// text asked as soon as the previous answer is in, and an answer shown only if it is still
// current. Each answer's time goes to `window.lmTimings` (ms), and the engine, once loaded, to
// `window.lmEngine` (bench/web_latency.py reads both).
"use strict";

import { loadEngine } from "./lm.js";

const box = document.getElementById("text");
const strip = document.getElementById("strip");
const slots = Array.from(strip.querySelectorAll(".suggestion"));
const statusLine = document.getElementById("status");
const timings = [];
window.lmTimings = timings;

let typing = null; // the engine's session: the model's state follows the text between keystrokes
let suggestions = [];
let hidden = false;
let busy = false;
let wanted = false;
let insertWhenCurrent = -1; // a suggestion asked for (Tab) before the strip caught up with the text

function typedText() {
  return box.value.slice(0, box.selectionStart);
}

// Replace the text up to the caret (and any selection), keeping what follows; the caret goes after it.
function setTypedText(text) {
  box.value = text + box.value.slice(box.selectionEnd);
  box.setSelectionRange(text.length, text.length);
}

async function refresh() {
  if (typing === null) return;
  if (busy) { wanted = true; return; }
  busy = true;
  strip.classList.add("stale");
  try {
    do {
      wanted = false;
      const text = typedText();
      const started = performance.now();
      const found = await typing.suggest(text, slots.length);
      const elapsed = performance.now() - started;
      timings.push(elapsed);
      if (text === typedText()) {
        show(found, text);
        statusLine.textContent = `${elapsed.toFixed(1)} ms in this page`;
      } else {
        wanted = true;
      }
    } while (wanted);
  } catch (error) {
    statusLine.textContent = error.message;
  }
  busy = false;
}

// Show a strip worked out for `text`; each pick appends its completion to it.
function show(found, text) {
  suggestions = found.map((s) => ({ ...s, result: text + s.completion }));
  slots.forEach((slot, i) => {
    const s = suggestions[i];
    slot.disabled = !s || hidden;
    slot.textContent = s ? s.word : "";
    if (s) {
      const odds = document.createElement("small");
      odds.textContent = `${(s.probability * 100).toFixed(1)}%`;
      slot.append(odds);
      slot.title = `Alt+${i + 1}`;
    }
  });
  strip.dataset.text = text; // which text the strip answers (tests wait on it)
  strip.classList.remove("stale");
  const asked = insertWhenCurrent;
  insertWhenCurrent = -1;
  if (asked >= 0 && suggestions[asked]) insert(suggestions[asked]);
}

// A pick puts its word in place of the text up to the caret, followed by a space.
function insert(s) {
  const space = /^\s/.test(box.value.slice(box.selectionEnd)) ? "" : " ";
  setTypedText(s.result + space);
  box.focus();
  setHidden(false);
  refresh();
}

function setHidden(value) {
  hidden = value;
  slots.forEach((slot, i) => { slot.disabled = hidden || !suggestions[i]; });
}

box.addEventListener("input", () => { setHidden(false); refresh(); });
box.addEventListener("click", refresh);
box.addEventListener("keyup", (event) => { if (event.key.startsWith("Arrow") || event.key === "Home" || event.key === "End") refresh(); });
box.addEventListener("keydown", (event) => {
  const usable = !hidden && suggestions.length > 0;
  const slot = event.key === "Tab" && !event.shiftKey ? 0 : event.altKey && /^[1-9]$/.test(event.key) ? Number(event.key) - 1 : -1;
  if (slot >= 0 && usable) {
    event.preventDefault();
    if (strip.dataset.text === typedText()) {
      if (suggestions[slot]) insert(suggestions[slot]);
    } else {
      insertWhenCurrent = slot; // the answer for the text as it is now is on its way
    }
  } else if (event.key === "Escape") {
    setHidden(true);
  }
});
slots.forEach((slot, i) => slot.addEventListener("click", () => { if (suggestions[i]) insert(suggestions[i]); }));

async function start() {
  statusLine.textContent = "loading the model…";
  try {
    const started = performance.now();
    const engine = await loadEngine();
    typing = engine.session();
    const { name, tokenizer, model } = engine.info;
    document.getElementById("model").textContent = `${name} · ${tokenizer.kind}, ${model.weights}, in this page`;
    statusLine.textContent = `loaded in ${(performance.now() - started).toFixed(0)} ms`;
    box.disabled = false;
    box.placeholder = "Start typing…";
    box.focus();
    window.lmEngine = engine;
    document.body.dataset.ready = "true"; // everything is fetched: typing asks nothing of the network
    refresh();
  } catch (error) {
    document.body.dataset.failed = "true";
    statusLine.textContent = location.protocol === "file:"
      ? "Serve this folder over http (python -m http.server): browsers run no WebAssembly modules from file://"
      : `cannot load the model: ${error.message}`;
  }
}
start();
