// The suggestion strip follows the text up to the caret: one request at a time, the newest text
// sent as soon as the previous answer is in, and an answer shown only if it is still current.
"use strict";

const box = document.getElementById("text");
const strip = document.getElementById("strip");
const slots = Array.from(strip.querySelectorAll(".suggestion"));
const statusLine = document.getElementById("status");
const continueButton = document.getElementById("continue");
const keyForm = document.getElementById("key-form");
const GENERATE = { max_words: 30, temperature: 0.8 };

// One keystroke session per page: the server keeps the state of our text between requests.
const session = "page-" + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
let apiKey = sessionStorage.getItem("lm-api-key") || "";
let suggestions = [];
let hidden = false;
let inFlight = false;
let wanted = false;
let generation = null; // AbortController of the running "continue"
let insertWhenCurrent = -1; // a suggestion asked for (Tab) before the strip caught up with the text

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

async function failure(response) {
  if (response.status === 401) keyForm.hidden = false;
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return response.statusText;
  }
}

async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) throw new Error(await failure(response));
  return response;
}

function typedText() {
  return box.value.slice(0, box.selectionStart);
}

// keepStatus: leave the status line as it is (the summary of a generation that just ended).
async function refresh(keepStatus = false) {
  if (inFlight) { wanted = true; return; }
  inFlight = true;
  const text = typedText();
  strip.classList.add("stale");
  try {
    const started = performance.now();
    const answer = await (await post("/suggest", { text, k: slots.length, session })).json();
    if (text === typedText()) {
      show(answer.suggestions, text);
      const roundTrip = performance.now() - started;
      if (keepStatus !== true) statusLine.textContent = `${answer.elapsed_ms.toFixed(1)} ms on the server, ${roundTrip.toFixed(0)} ms round trip`;
    } else {
      wanted = true;
    }
  } catch (error) {
    statusLine.textContent = error.message;
  }
  inFlight = false;
  if (wanted) { wanted = false; refresh(keepStatus); }
}

function show(found, text) {
  suggestions = found;
  slots.forEach((slot, i) => {
    const s = found[i];
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
  if (asked >= 0 && found[asked]) insert(found[asked]);
}

// A suggestion completes the half-typed word or adds the next word, then a space.
function insert(s) {
  const before = box.value.slice(0, box.selectionStart);
  const after = box.value.slice(box.selectionEnd);
  const added = s.completion + (/^\s/.test(after) ? "" : " ");
  box.value = before + added + after;
  const caret = before.length + added.length;
  box.setSelectionRange(caret, caret);
  box.focus();
  hidden = false;
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
  } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    continueText();
  }
});
slots.forEach((slot, i) => slot.addEventListener("click", () => { if (suggestions[i]) insert(suggestions[i]); }));

// "Continue" streams a generation into the box, piece by piece (server-sent events); again stops it.
async function continueText() {
  if (generation) { generation.abort(); return; }
  generation = new AbortController();
  continueButton.textContent = "Stop";
  try {
    const response = await post("/generate", { prompt: box.value, stream: true, ...GENERATE }, generation.signal);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = buffer.slice(0, end).replace(/^data: /, "");
        buffer = buffer.slice(end + 2);
        if (data === "[DONE]") continue;
        const message = JSON.parse(data);
        if (message.error) throw new Error(message.error);
        box.value += message.text;
        box.scrollTop = box.scrollHeight;
        if (message.finish_reason) statusLine.textContent = `continued by ${message.tokens} tokens (${message.finish_reason})`;
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") statusLine.textContent = error.message;
  } finally {
    generation = null;
    continueButton.textContent = "Continue";
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
    refresh(true); // the strip for the longer text; the status keeps "continued by …"
  }
}
continueButton.addEventListener("click", continueText);

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = document.getElementById("key").value.trim();
  sessionStorage.setItem("lm-api-key", apiKey);
  keyForm.hidden = true;
  start();
});

async function start() {
  try {
    const response = await fetch("/info", { headers: headers() });
    if (!response.ok) throw new Error(await failure(response));
    const info = await response.json();
    const weights = info.weights ? `${info.weights} ` : "";
    document.getElementById("model").textContent = `${info.name} · ${info.tokenizer.kind}, ${weights}on ${info.device}`;
    refresh();
  } catch (error) {
    statusLine.textContent = error.message;
  }
}
start();
