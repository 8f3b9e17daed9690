// The suggestion strip follows the text up to the caret: one request at a time, the newest text
// sent as soon as the previous answer is in, and an answer shown only if it is still current.
// A word finished by a typed space or punctuation is sent even if typing went on, because its
// answer may correct it: the page applies the correction and one Backspace undoes it, as a phone's
// keyboard does. The keys under the strip (GET /layout) type a letter on a click and a word on a
// swipe (POST /swipe). The server decides every correction and every word; the page only applies them.
"use strict";

const box = document.getElementById("text");
const strip = document.getElementById("strip");
const slots = Array.from(strip.querySelectorAll(".suggestion"));
const statusLine = document.getElementById("status");
const continueButton = document.getElementById("continue");
const keyForm = document.getElementById("key-form");
const keyboard = document.getElementById("keyboard");
const trail = keyboard.querySelector("polyline");
const GENERATE = { max_words: 30, temperature: 0.8 };
const ROLES = { typed: "as typed", correction: "the correction", alternative: "another word it may be" };
const MAX_SWIPE_POINTS = 2000; // the server's bound on one stroke (lm/serve/routes.py)
const TAP_REACH = 0.5; // key widths: a stroke that never goes further from where it started is a click

// One keystroke session per page: the server keeps the state of our text between requests, and
// the last correction, so that a text putting the typed word back is taken as an undo.
const session = "page-" + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
let apiKey = sessionStorage.getItem("lm-api-key") || "";
let suggestions = [];
let hidden = false;
let inFlight = false;
let wanted = false;
let generation = null; // AbortController of the running "continue"
let insertWhenCurrent = -1; // a suggestion asked for (Tab) before the strip caught up with the text
let finishing = null; // the text up to a word just finished by a typed separator, until its answer is in
// The text whose strip came with a correction or a swipe. It is not asked for again: the server's
// session would take it as a new text and forget the correction that Backspace may undo.
let held = null;
let undo = null; // after a correction applied: { text: as corrected, typed: with the typed word back }
let layout = null; // GET /layout, with its extent in key widths
let stroke = null; // the pointer's path over the keys while pressed: { key, points }

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

// Replace the text up to the caret (and any selection), keeping what follows; the caret goes after it.
function setTypedText(text) {
  box.value = text + box.value.slice(box.selectionEnd);
  box.setSelectionRange(text.length, text.length);
}

// The text to ask about: a word just finished comes first, as long as the box still starts with it.
function textToAsk() {
  const text = typedText();
  if (finishing !== null && !text.startsWith(finishing)) finishing = null;
  return finishing ?? text;
}

// keepStatus: leave the status line as it is (the summary of a generation that just ended).
async function refresh(keepStatus = false) {
  if (inFlight) { wanted = true; return; }
  const text = textToAsk();
  if (text === held) return; // its strip is on show already
  inFlight = true;
  strip.classList.add("stale");
  try {
    const started = performance.now();
    const answer = await (await post("/suggest", { text, k: slots.length, session })).json();
    const answered = text === finishing ? finish(answer, text) : text;
    if (answered === typedText()) {
      show(answer.suggestions, text, answered);
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

// The answer for a word just finished. When it corrects the word and the box still starts with the
// text sent (more may have been typed after it, and is kept), the correction slot's edit is applied.
// Returns the text the answer's strip stands for now, or null when typing went on past it.
function finish(answer, sent) {
  finishing = null;
  const now = typedText();
  const fix = answer.correction && answer.suggestions.find((s) => s.slot === "correction");
  if (!fix || !now.startsWith(sent)) return sent;
  const start = sent.length - fix.delete; // where the typed word starts
  const corrected = sent.slice(0, start) + fix.completion;
  setTypedText(corrected + now.slice(sent.length));
  if (now !== sent) return null;
  undo = { text: corrected, typed: sent.slice(0, start) + answer.correction.typed };
  held = corrected;
  return corrected;
}

// Show a strip worked out for the text `from`, standing for `text` (the text after a correction or
// a swipe, or `from` itself). Each pick keeps its result: `from` less `delete` characters, plus
// `completion`. A predicted word is followed by a space when inserted; a swiped one is not.
function show(found, from, text, swiped = false) {
  suggestions = found.map((s) => ({ ...s, result: from.slice(0, from.length - s.delete) + s.completion,
                                     spaced: s.slot === "prediction" && !swiped }));
  slots.forEach((slot, i) => {
    const s = suggestions[i];
    slot.disabled = !s || hidden;
    slot.textContent = s ? s.word : "";
    slot.dataset.slot = s ? s.slot : "";
    if (s) {
      const odds = document.createElement("small");
      odds.textContent = `${(s.probability * 100).toFixed(1)}%`;
      slot.append(odds);
      slot.title = ROLES[s.slot] ? `Alt+${i + 1}: ${ROLES[s.slot]}` : `Alt+${i + 1}`;
    }
  });
  strip.dataset.text = text; // which text the strip answers (tests wait on it)
  strip.classList.remove("stale");
  const asked = insertWhenCurrent;
  insertWhenCurrent = -1;
  if (asked >= 0 && suggestions[asked]) insert(suggestions[asked]);
}

// A pick puts its result in place of the text up to the caret: the rest of a half-typed word, the
// next word, a slip fixed, the typed word back or another word in place of the one the text holds.
function insert(s) {
  const space = s.spaced && !/^\s/.test(box.value.slice(box.selectionEnd)) ? " " : "";
  setTypedText(s.result + space);
  box.focus();
  hidden = false;
  moved();
  refresh();
}

// Put the typed word back in place of its correction (one Backspace right after it).
function undoCorrection() {
  setTypedText(undo.typed);
  moved();
  refresh(); // the server's session sees the typed word back, and leaves it alone from then on
}

// The text changed here: a correction can no longer be undone, and its strip is no longer held.
function moved() {
  undo = null;
  held = null;
}

// After a character typed at the caret (`typed`; null for a paste, a deletion or an edit): a space
// or punctuation right after a word finishes it, so the answer for that text may correct it.
function typedAtCaret(typed) {
  moved();
  setHidden(false);
  const text = typedText();
  if (typed !== null && text.endsWith(typed) && /[\p{L}\p{N}][^\p{L}\p{N}]$/u.test(text)) finishing = text;
  refresh();
}

function setHidden(value) {
  hidden = value;
  slots.forEach((slot, i) => { slot.disabled = hidden || !suggestions[i]; });
}

function typedCharacter(event) {
  if (event.inputType === "insertLineBreak") return "\n";
  return event.inputType === "insertText" && event.data?.length === 1 ? event.data : null;
}

box.addEventListener("input", (event) => typedAtCaret(typedCharacter(event)));
box.addEventListener("click", refresh);
box.addEventListener("keyup", (event) => { if (event.key.startsWith("Arrow") || event.key === "Home" || event.key === "End") refresh(); });
box.addEventListener("keydown", (event) => {
  const usable = !hidden && suggestions.length > 0;
  const slot = event.key === "Tab" && !event.shiftKey ? 0 : event.altKey && /^[1-9]$/.test(event.key) ? Number(event.key) - 1 : -1;
  const plain = !event.ctrlKey && !event.altKey && !event.metaKey && !event.shiftKey;
  if (slot >= 0 && usable) {
    event.preventDefault();
    if (strip.dataset.text === typedText()) {
      if (suggestions[slot]) insert(suggestions[slot]);
    } else {
      insertWhenCurrent = slot; // the answer for the text as it is now is on its way
    }
  } else if (event.key === "Backspace" && plain && undo && box.selectionStart === box.selectionEnd && typedText() === undo.text) {
    event.preventDefault();
    undoCorrection();
  } else if (event.key === "Escape") {
    setHidden(true);
  } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    continueText();
  }
});
slots.forEach((slot, i) => slot.addEventListener("click", () => { if (suggestions[i]) insert(suggestions[i]); }));

// --- the keys under the strip: a click types a key, a drag across them swipes a word

function drawKeyboard(answer) {
  const keys = answer.keys;
  layout = { ...answer, width: Math.max(...keys.map((k) => k.x + k.width / 2)),
             height: Math.max(...keys.map((k) => k.y + k.height / 2)) };
  keyboard.style.aspectRatio = `${layout.width} / ${layout.height}`;
  keyboard.querySelector("svg").setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
  for (const k of keys) {
    const key = document.createElement("span");
    key.className = "key";
    key.dataset.key = k.key;
    key.textContent = k.key === " " ? "space" : k.key;
    Object.assign(key.style, { left: percent(k.x - k.width / 2, layout.width), top: percent(k.y - k.height / 2, layout.height),
                               width: percent(k.width, layout.width), height: percent(k.height, layout.height) });
    keyboard.append(key);
  }
  keyboard.hidden = !answer.forgiving; // no lexicon: nothing is corrected, no word can be swiped
  document.getElementById("forgiving-help").hidden = !answer.forgiving;
}

function percent(value, whole) {
  return `${(100 * value) / whole}%`;
}

// Where the pointer is, in key widths from the layout's top left (the frame of /layout and /swipe).
function layoutPoint(event) {
  const frame = keyboard.getBoundingClientRect();
  const scale = frame.width / layout.width; // pixels per key width
  return [(event.clientX - frame.left) / scale, (event.clientY - frame.top) / scale];
}

function typeKey(label) {
  box.setRangeText(label, box.selectionStart, box.selectionEnd, "end");
  box.focus();
  typedAtCaret(label);
}

// The swipe's best word goes in after the text up to the caret, and the strip shows its words (a
// pick puts another in its place). Dropped if the text changed while the server decoded it.
async function swipe(points) {
  const text = typedText();
  try {
    const answer = await (await post("/swipe", { text, points, k: slots.length, session })).json();
    const best = answer.suggestions[0];
    if (!best || typedText() !== text) return;
    const inserted = text.slice(0, text.length - best.delete) + best.completion;
    setTypedText(inserted);
    box.focus();
    moved();
    held = inserted;
    hidden = false;
    show(answer.suggestions, text, inserted, true);
    statusLine.textContent = `swipe: ${answer.elapsed_ms.toFixed(1)} ms on the server`;
  } catch (error) {
    statusLine.textContent = error.message;
  }
}

keyboard.addEventListener("mousedown", (event) => event.preventDefault()); // the box keeps the focus
keyboard.addEventListener("pointerdown", (event) => {
  if (!event.isPrimary || event.button !== 0) return;
  keyboard.setPointerCapture(event.pointerId); // the stroke is followed off the keys too
  stroke = { key: event.target.closest(".key")?.dataset.key ?? null, points: [layoutPoint(event)] };
  trail.setAttribute("points", "");
});
keyboard.addEventListener("pointermove", (event) => {
  if (!stroke || !event.isPrimary || stroke.points.length >= MAX_SWIPE_POINTS) return;
  stroke.points.push(layoutPoint(event));
  trail.setAttribute("points", stroke.points.map((p) => p.join(",")).join(" "));
});
keyboard.addEventListener("pointerup", (event) => {
  if (!stroke || !event.isPrimary) return;
  const { key, points } = stroke;
  stroke = null;
  trail.setAttribute("points", "");
  const [x0, y0] = points[0];
  const reach = Math.max(...points.map(([x, y]) => Math.hypot(x - x0, y - y0)));
  if (reach >= TAP_REACH) swipe(points);
  else if (key !== null) typeKey(key);
});
keyboard.addEventListener("pointercancel", () => { stroke = null; trail.setAttribute("points", ""); });

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

async function get(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(await failure(response));
  return response.json();
}

async function start() {
  try {
    const info = await get("/info");
    const weights = info.weights ? `${info.weights} ` : "";
    document.getElementById("model").textContent = `${info.name} · ${info.tokenizer.kind}, ${weights}on ${info.device}`;
    refresh();
    if (layout === null) drawKeyboard(await get("/layout"));
  } catch (error) {
    statusLine.textContent = error.message;
  }
}
start();
