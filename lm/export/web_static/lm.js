// lm in the page: the model run by onnxruntime-web, and the suggestion engine's rule over it.
//
//     import { loadEngine } from "./lm.js";
//     const engine = await loadEngine();          // lm-web.json, the lexicon, model.onnx
//     const typing = engine.session();            // keeps the model's state between keystrokes
//     await typing.suggest("the clouds are in the")  // [{ word, probability, completion }, ...]
//
// The rule is lm/suggest/engine.py's (read it for the why): a word model ranks its next-word
// row, a char model searches over pieces for whole words of the lexicon (search.js); a half-typed
// word backs off to the last word boundary, the probabilities are conditional on the typed
// prefix, and the typed word itself takes no slot: the words after it compete with its
// completions, weighted by the probability that it is finished. Left out here: the continuous
// cache, the n-gram, and the keyboard's corrections.
//
// A session keeps the model's state at every word boundary (session.py's marks), so a
// keystroke inside a word reads nothing: only the search steps from the last boundary, and
// those it has taken before are kept too. Sessions are not re-entrant: await each suggest.
"use strict";

import * as ort from "./ort.wasm.min.mjs";
import { PUNCT, Typed, casefold, charClass, codePoints, compare, firstChar, isSpace, lowerBound, segmentEnds, splitTyped,
         splitWhitespace, startText, useTextRules, words as wordsOf } from "./text.js";
import { Lexicon, PieceSearch } from "./search.js";

const HERE = new URL("./", import.meta.url);

// Load an export's engine from the folder of this file (or `base`).
export async function loadEngine(base = HERE) {
  const info = await fetchJSON(new URL("lm-web.json", base));
  useTextRules(info.text);
  const lexicon = info.lexicon ? new Lexicon(await fetchJSON(new URL(info.lexicon, base))) : null;
  // One thread: a static folder is not cross-origin isolated, so the page has no SharedArrayBuffer.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = HERE.href; // the .wasm and its loader lie beside this file, never on a CDN
  const graph = new Uint8Array(await (await fetchOk(new URL(info.graph.file, base))).arrayBuffer());
  const session = await ort.InferenceSession.create(graph, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const engine = new Engine(info, new Model(session, info), lexicon);
  await engine.start();
  return engine;
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname}: ${response.status} ${response.statusText}`);
  return response;
}

async function fetchJSON(url) {
  return (await fetchOk(url)).json();
}

// The exported step function: (ids [batch, time], state) -> (logits, state). The state is one
// Float32Array per state input, each [layers, batch, hidden]; logits come back as one row
// [vocab] per stream, for the last position only.
class Model {
  constructor(session, info) {
    this.session = session;
    this.states = info.graph.state.map((s) => [s.input, s.output]);
    this.layers = info.model.layers;
    this.hidden = info.model.hidden;
    this.vocab = info.model.vocab_size;
    this.chunk = info.engine.read_chunk;
    // A newer graph gives the last position's logits alone: a word model's output layer is most of a step.
    this.last = session.outputNames.includes("last_logits") ? "last_logits" : "logits";
  }

  zeros(batch) {
    return this.states.map(() => new Float32Array(this.layers * batch * this.hidden));
  }

  async run(ids, batch, state) {
    const time = ids.length / batch, size = [this.layers, batch, this.hidden];
    const feeds = { ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [batch, time]) };
    this.states.forEach(([input], j) => { feeds[input] = new ort.Tensor("float32", state[j], size); });
    const out = await this.session.run(feeds, [this.last, ...this.states.map(([, output]) => output)]);
    const logits = out[this.last].data, V = this.vocab, stride = this.last === "logits" ? time * V : V;
    const rows = Array.from({ length: batch }, (_, b) => logits.slice(b * stride + stride - V, b * stride + stride));
    return [rows, this.states.map(([, output]) => out[output].data)];
  }

  // One token per stream: ids [batch] -> [rows of logits, state].
  step(ids, state) {
    return this.run(ids, ids.length, state);
  }

  // Advance one stream over token ids, `chunk` per call: [state, logits of the last position].
  async read(ids, state) {
    let logits = null;
    state = state ?? this.zeros(1);
    for (let at = 0; at < ids.length; at += this.chunk) [[logits], state] = await this.run(ids.slice(at, at + this.chunk), 1, state);
    return [state, logits];
  }

  // Pick streams (rows of the batch) from a state, e.g. to branch a beam.
  select(state, rows) {
    const H = this.hidden;
    return state.map((tensor) => {
      const batch = tensor.length / (this.layers * H), picked = new Float32Array(this.layers * rows.length * H);
      for (let l = 0; l < this.layers; l++) {
        rows.forEach((r, b) => picked.set(tensor.subarray((l * batch + r) * H, (l * batch + r + 1) * H), (l * rows.length + b) * H));
      }
      return picked;
    });
  }
}

// The tokenizer of a char or word model (lm/data/tokenizer.py).
class Tokenizer {
  constructor(info) {
    Object.assign(this, { kind: info.kind, pieces: info.pieces, unk: info.unk_id, eos: info.eos_id });
    this.index = new Map(info.pieces.map((p, i) => [p, i]).filter(([p]) => p)); // a char model's <unk> is ""
  }

  encode(text) {
    if (this.kind === "char") return Array.from(text, (ch) => this.index.get(ch) ?? this.unk);
    const ids = [], lines = text.split("\n"); // a word model: whitespace words, <eos> ends each line
    lines.forEach((line, n) => {
      for (const w of splitWhitespace(line)) ids.push(this.index.get(w) ?? this.unk);
      if (n < lines.length - 1) ids.push(this.eos);
    });
    return ids;
  }
}

// A word model's vocabulary sorted by text, without <unk> and <eos> (vocabulary.py): the
// words with a typed prefix are one contiguous range.
class Vocabulary {
  constructor(pieces, sortedIds) {
    this.pieces = pieces;
    this.ids = sortedIds;
    this.texts = sortedIds.map((i) => pieces[i]);
  }

  // The words that start with `fragment` (at least the best 4k + 8), and the probability that
  // the next word starts with it at all.
  find(mark, fragment, k) {
    mark.probs ??= softmax(mark.logits);
    const lo = lowerBound(this.texts, fragment), hi = lowerBound(this.texts, fragment + "\u{10ffff}", lo);
    const size = 4 * k + 8, top = []; // [p, id], best first
    let mass = 0;
    for (let j = lo; j < hi; j++) {
      const id = this.ids[j], p = mark.probs[id];
      mass += p;
      if (top.length === size && p <= top[size - 1][0]) continue;
      let at = top.length;
      while (at > 0 && top[at - 1][0] < p) at--;
      top.splice(at, 0, [p, id]);
      if (top.length > size) top.pop();
    }
    return [new Map(top.map(([p, id]) => [this.pieces[id], p])), mass];
  }
}

function softmax(logits) {
  let top = -Infinity, sum = 0;
  for (const x of logits) if (x > top) top = x;
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i] - top);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

// The model after reading a text up to `end` (`words` words of it): session.py's Mark.
class Mark {
  constructor(end, words, state, logits, unknown = []) {
    Object.assign(this, { end, words, state, logits, unknown, probs: null, alone: new Map() });
  }
}

// Suggests whole next words, or completions of a half-typed word (engine.py's Suggester).
class Engine {
  constructor(info, model, lexicon) {
    this.info = info;
    this.model = model;
    this.config = { ...info.suggest, ...info.engine };
    this.tokenizer = new Tokenizer(info.tokenizer);
    this.byWhitespace = info.tokenizer.kind === "word";
    this.nextLead = this.byWhitespace ? "" : " "; // the whitespace before the word after a finished one
    this.lexicon = this.byWhitespace ? null : lexicon;
    this.vocabulary = this.byWhitespace ? new Vocabulary(info.tokenizer.pieces, info.tokenizer.sorted_ids) : null;
    this.pieces = this.byWhitespace ? null : new PieceSearch(info.tokenizer.pieces, this.config, this.lexicon, model);
    this.startMark = null;
  }

  // A new typing session: suggestions that follow a text as it is typed.
  session() {
    return new Session(this);
  }

  async start() {
    if (this.startMark === null) {
      const [state, logits] = await this.read(null, null, startText());
      this.startMark = new Mark(0, 0, state, logits);
    }
    return this.startMark;
  }

  // Advance (state, logits) over a text.
  async read(state, logits, text) {
    const ids = this.tokenizer.encode(text);
    return ids.length ? this.model.read(ids, state) : [state, logits];
  }

  // Suggestions for the typed word, given the model after its context (engine.py's suggest_after).
  async suggestAfter(mark, typed, k, learned) {
    if (typed.tooLong) return [];
    const allowed = this.pieces === null ? null : this.pieces.allowed(learned);
    const words = await this.conditional(mark, typed, k + 1, allowed);
    // The typed word itself (in any case) takes no slot. The probability that it is finished
    // goes to the words after it, which compete with its completions on the same scale.
    let complete = 0;
    if (typed.partial) {
      const length = codePoints(typed.partial);
      for (const [w, p] of [...words]) if (codePoints(w) === length) { complete += p; words.delete(w); }
    }
    const strip = this.present(words, typed);
    if (complete > (strip.length >= k ? strip[k - 1].probability : 0)) {
      strip.push(...await this.afterTypedWord(mark, typed, complete, k, allowed));
    }
    strip.sort((a, b) => b.probability - a.probability || compare(a.word, b.word) || compare(a.completion, b.completion));
    const best = new Map();
    for (const s of strip) if (!best.has(s.word)) best.set(s.word, s);
    return [...best.values()].slice(0, k);
  }

  find(mark, fragment, lead, k, allowed) {
    if (this.vocabulary !== null) return this.vocabulary.find(mark, fragment, k);
    return this.pieces.find(mark, fragment, lead, k, allowed);
  }

  // Words that can follow the context, with their probability given the typed prefix.
  async conditional(mark, typed, k, allowed) {
    const words = new Map();
    let reached = 0; // probability that the text goes on with the typed prefix
    for (const fragment of typed.fragments()) {
      const [found, mass] = await this.find(mark, fragment, typed.lead.length, k, allowed);
      reached += mass;
      for (const [w, p] of found) words.set(w, (words.get(w) ?? 0) + p);
    }
    if (!(reached > 0)) return new Map();
    return new Map([...words].map(([w, p]) => [w, Math.min(p / reached, 1)]));
  }

  // Next words after the typed word taken as finished, weighted by how likely it is finished.
  async afterTypedWord(mark, typed, complete, k, allowed) {
    const [state, logits] = await this.read(mark.state, mark.logits, typed.lead + typed.partial);
    const after = new Typed(mark.end, this.nextLead, "", " ", false);
    const words = await this.conditional(new Mark(mark.end, mark.words, state, logits), after, k, allowed);
    return this.present(new Map([...words].map(([w, p]) => [w, p * complete])), after);
  }

  // Keyboard conventions: punctuation only when likely, casing from the context; best first.
  present(words, typed) {
    let shown = new Map();
    for (const [word, p] of words) {
      if (p <= 0) continue; // underflowed: a word the strip cannot rank
      if (charClass(firstChar(word)) === PUNCT && p < this.config.punctuation_min) continue;
      const key = typed.present(word);
      shown.set(key, (shown.get(key) ?? 0) + p);
    }
    if (this.pieces !== null) shown = mergeCaseVariants(shown);
    return [...shown].sort(([a, p], [b, q]) => q - p || compare(a, b))
      .map(([w, p]) => ({ word: w, probability: Math.min(p, 1), completion: typed.prefix + w.slice(typed.partial.length) }));
  }
}

// Char models: spellings of one word that differ only in case are one suggestion, shown as the
// likelier (ties: the lower-case one), with their probabilities summed.
function mergeCaseVariants(shown) {
  const merged = new Map(); // folded -> [shown, its own p, summed p]
  for (const [word, p] of shown) {
    const key = casefold(word), had = merged.get(key);
    if (had === undefined) { merged.set(key, [word, p, p]); continue; }
    const [best, bestP, total] = had;
    const better = p > bestP || (p === bestP && word === key && best !== key);
    merged.set(key, better ? [word, p, total + p] : [best, bestP, total + p]);
  }
  return new Map([...merged.values()].map(([word, , total]) => [word, total]));
}

// Suggestions that follow a text as it is typed, reading each word once (session.py).
class Session {
  constructor(engine) {
    this.engine = engine;
    this.text = "";
    this.marks = [engine.startMark];
    this.unknown = new Map(); // finished words outside the lexicon, as read so far
  }

  // What the user will type next after `text`: the next words, or the rest of a half-typed word.
  async suggest(text, k = this.engine.config.k) {
    this.setText(text);
    const typed = splitTyped(text, this.engine.byWhitespace);
    if (typed.tooLong) return [];
    const mark = await this.sync(typed.contextEnd);
    return this.engine.suggestAfter(mark, typed, k, this.learned());
  }

  // Replace the text; marks before the first changed character are kept.
  setText(text) {
    let same = text.startsWith(this.text) ? this.text.length : 0;
    while (same < Math.min(this.text.length, text.length) && this.text[same] === text[same]) same++;
    while (this.marks.length > 1 && this.top.end > same) this.pop();
    this.text = text;
  }

  get top() {
    return this.marks[this.marks.length - 1];
  }

  learned() {
    return new Set([...this.unknown].filter(([, n]) => n >= this.engine.config.learn_after).map(([w]) => w));
  }

  // The mark for text.slice(0, end), reading only what the kept marks do not cover; whole groups
  // of words are read in one call, as a fresh read of the text would.
  async sync(end) {
    const group = this.engine.config.group_words;
    this.dropStale(end);
    let ends = segmentEnds(this.text, this.top.end, end);
    if ((this.top.words % group) + ends.length >= group) {
      while (this.top.words % group) this.pop();
      ends = segmentEnds(this.text, this.top.end, end);
      const whole = Math.floor(ends.length / group) * group;
      for (let j = group - 1; j < whole; j += group) await this.push(ends[j], group);
      ends = ends.slice(whole);
    }
    for (const stop of ends) await this.push(stop, 1);
    return this.top;
  }

  // Drop marks past `end` or at what is no longer a word boundary of text.slice(0, end).
  dropStale(end) {
    const text = this.text;
    while (this.marks.length > 1) {
      const at = this.top.end;
      if (at === end || (at < end && !isSpace(text[at - 1]) && isSpace(text[at]))) return;
      this.pop();
    }
  }

  pop() {
    for (const w of this.marks.pop().unknown) this.unknown.set(w, this.unknown.get(w) - 1);
  }

  async push(stop, words) {
    const mark = this.top, segment = this.text.slice(mark.end, stop), lexicon = this.engine.lexicon;
    const [state, logits] = await this.engine.read(mark.state, mark.logits, segment);
    const unknown = lexicon === null ? [] : wordsOf(segment).filter((w) => !lexicon.allows(w)).map(casefold);
    for (const w of unknown) this.unknown.set(w, (this.unknown.get(w) ?? 0) + 1);
    if (this.marks.length > 1) mark.alone.clear(); // typing has moved on (the start mark's are shared)
    this.marks.push(new Mark(stop, mark.words + words, state, logits, unknown));
    if (this.marks.length > this.engine.config.max_marks) this.marks.splice(1, 1); // a deletion that far back re-reads
  }
}
