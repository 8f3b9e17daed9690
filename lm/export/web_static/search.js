// The beam search over pieces that char models suggest words with: lm/suggest/pieces.py and
// lm/suggest/search.py in JavaScript, step for step (read those for the why).
//
// One model call per step for all beams. A word's probability is the product of its pieces'
// probabilities times the probability that the word ends there, summed over the piece
// sequences that spell it. Only pieces that agree with the typed prefix are followed, and with
// a lexicon only pieces that can still spell one of its words. Arithmetic is in doubles where
// Python's is in float32: a probability that float32 would round to 0 counts as 0 here too.
"use strict";

import { LETTER, PUNCT, casefold, charClass, codePoints, compare, firstChar, lowerBound } from "./text.js";

export const Mode = { LETTER: 0, PUNCT: 1, START_WORD: 2, INSIDE: 3 };
const ROW_CACHE = 8192; // lexicon rows kept, as search.py's lru_cache

function wordMode(ch) {
  const cls = charClass(ch);
  return cls === LETTER ? Mode.LETTER : cls === PUNCT ? Mode.PUNCT : null;
}

// The UTF-16 index of the first character of `text` that cannot continue a word of `mode`.
function wordEnd(text, mode) {
  let at = 0;
  for (const ch of text) {
    if (wordMode(ch) !== mode) return at;
    at += ch.length;
  }
  return text.length;
}

function closedRow(size, open) {
  const row = new Float64Array(size).fill(-Infinity);
  for (const i of open) row[i] = 0;
  return row;
}

// What each piece does to a word, worked out once per tokenizer (pieces.py's PieceTable).
export class PieceTable {
  constructor(pieces) {
    const size = pieces.length;
    this.pieces = pieces;
    this.first = pieces.map((p) => (p ? wordMode(firstChar(p)) : null));
    this.ends = [[], [], []]; // by mode: the pieces that end the word
    this.splits = [[], [], []]; // by mode: [id, cut] of the pieces that finish it inside themselves
    const grows = [[], [], []];
    pieces.forEach((piece, i) => {
      const first = this.first[i];
      if (!piece) return;
      for (const mode of [Mode.LETTER, Mode.PUNCT, Mode.START_WORD]) {
        if (mode !== Mode.START_WORD && first !== mode) this.ends[mode].push(i);
        else if (first !== null) {
          const cut = wordEnd(piece, first);
          if (cut === piece.length) grows[mode].push(i);
          else this.splits[mode].push([i, cut]);
        }
      }
    });
    this.closed = grows.map((open) => closedRow(size, open));
    const ordered = pieces.map((p, i) => [p, i]).filter(([p]) => p).sort(([a, i], [b, j]) => compare(a, b) || i - j);
    this.sortedTexts = ordered.map(([p]) => p);
    this.sortedIds = ordered.map(([, i]) => i);
    this.byText = new Map();
    for (const [p, i] of ordered) this.byText.set(p, [...(this.byText.get(p) ?? []), i]);
    this.longest = Math.max(0, ...pieces.map((p) => p.length));
    this.longestChars = Math.max(0, ...pieces.map(codePoints));
    this.byFolded = new Map(); // pieces that start with a letter, case-folded
    pieces.forEach((p, i) => {
      if (this.first[i] === Mode.LETTER) this.byFolded.set(casefold(p), [...(this.byFolded.get(casefold(p)) ?? []), i]);
    });
    this.letterFirst = this.first.flatMap((m, i) => (m === Mode.LETTER ? [i] : []));
  }

  idsOf(folded) {
    return [...folded].flatMap((text) => this.byFolded.get(text) ?? []);
  }

  // Ids of pieces that agree with `rest` on their common length (either may be longer).
  agreeing(rest) {
    const ids = [];
    for (let n = 1; n < Math.min(rest.length, this.longest + 1); n++) ids.push(...(this.byText.get(rest.slice(0, n)) ?? []));
    for (let j = lowerBound(this.sortedTexts, rest); j < this.sortedTexts.length && this.sortedTexts[j].startsWith(rest); j++) {
      ids.push(this.sortedIds[j]);
    }
    return ids;
  }
}

// What each piece does to a hypothesis that has produced fragment.slice(0, pos) (pieces.py's
// fragment_options); `lead`: the length of the whitespace the word follows.
function fragmentOptions(table, fragment, lead, pos) {
  const next = new Map(), crossing = [], finished = [];
  for (const i of table.agreeing(fragment.slice(pos))) {
    const text = fragment.slice(0, pos) + table.pieces[i];
    if (text.length < fragment.length) {
      next.set(i, [text, Mode.INSIDE]);
      continue;
    }
    const word = text.slice(lead);
    const mode = word ? wordMode(firstChar(word)) : Mode.START_WORD;
    if (mode === null) continue; // more whitespace: no word starts here
    crossing.push(i);
    const cut = mode === Mode.START_WORD ? word.length : wordEnd(word, mode);
    if (cut === word.length) next.set(i, [word, mode]);
    else finished.push([i, word.slice(0, cut)]);
  }
  const toLetters = [...next].filter(([, [, mode]]) => mode === Mode.LETTER).map(([i, [text]]) => [i, text]);
  return { next, crossing, finished, toLetters, closed: closedRow(table.pieces.length, next.keys()) };
}

// The strings of 1 to `longest` characters that follow position `start` in `words`.
function continuations(words, start, longest) {
  const found = new Set();
  for (const word of words) {
    const rest = Array.from(word.slice(start));
    for (let n = 1; n <= Math.min(longest, rest.length); n++) found.add(rest.slice(0, n).join(""));
  }
  return found;
}

// The words a strip may offer, case-folded and sorted in Python's order (lm/data/lexicon.py).
export class Lexicon {
  constructor(sorted) {
    this.sorted = sorted;
    this.words = new Set(sorted);
  }

  allows(word) {
    return this.words.has(casefold(word));
  }

  allowsPrefix(prefix) {
    const key = casefold(prefix), i = lowerBound(this.sorted, key);
    return i < this.sorted.length && this.sorted[i].startsWith(key);
  }

  continuations(prefix, longest) {
    const lo = lowerBound(this.sorted, prefix), hi = lowerBound(this.sorted, prefix + "\u{10ffff}", lo);
    return continuations(this.sorted.slice(lo, hi), prefix.length, longest);
  }
}

// The lexicon's words, those learned in the session, and punctuation (pieces.py's Allowed).
class Allowed {
  constructor(search, learned) {
    this.search = search;
    this.lexicon = search.lexicon;
    this.learned = learned;
  }

  word(word) {
    return charClass(firstChar(word)) !== LETTER || this.lexicon.allows(word) || this.learned.has(casefold(word));
  }

  prefix(text) {
    const key = casefold(text);
    return this.lexicon.allowsPrefix(text) || [...this.learned].some((w) => w.startsWith(key));
  }

  closed(text, mode) {
    const key = casefold(text), table = this.search.table;
    let closed = this.search.lexiconRow(key, mode);
    const learned = [...this.learned].filter((w) => w.startsWith(key));
    if (learned.length) {
      closed = closed.slice();
      for (const i of table.idsOf(continuations(learned, key.length, table.longestChars))) closed[i] = table.closed[mode][i];
    }
    return closed;
  }
}

// Beam search for the words that follow a context (search.py's PieceSearch). `model` steps
// the beams: step(ids, state) -> [rows of logits, state] and select(state, rows) -> state.
export class PieceSearch {
  constructor(pieces, config, lexicon, model) {
    this.table = new PieceTable(pieces);
    Object.assign(this, { config, lexicon, model });
    this.options = new Map();
    this.rows = new Map();
  }

  allowed(learned) {
    return this.lexicon === null ? null : new Allowed(this, learned);
  }

  // Words that start with `fragment` (after its `lead` whitespace characters): a Map word ->
  // probability that the text goes on with the fragment and then this word, and the
  // probability that it goes on with the fragment at all.
  async find(mark, fragment, lead, k, allowed) {
    const words = new Map();
    let texts = [""], modes = [fragment ? Mode.INSIDE : Mode.START_WORD];
    let reached = fragment ? 0 : 1;
    let state = mark.state, logits = [mark.logits], logp = [0];
    let path = []; // the pieces read since the mark, while every step so far had one hypothesis
    const steps = codePoints(fragment) + this.config.max_depth;
    for (let n = 0; n < steps; n++) {
      const scores = logits.map((row, b) => logSoftmax(row, logp[b]));
      reached += this.collect(texts, modes, scores, fragment, lead, words, allowed);
      if (n === steps - 1) break;
      const grown = this.extend(texts, modes, scores, fragment, lead, floor(words, k), allowed);
      if (!grown.length) break;
      texts = grown.map((g) => g.text);
      modes = grown.map((g) => g.mode);
      logp = grown.map((g) => g.score);
      if (path !== null && grown.length === 1) {
        path.push(grown[0].id);
        [state, logits] = await this.stepAlone(mark, path, state);
      } else {
        path = null;
        state = this.model.select(state, grown.map((g) => g.parent));
        [logits, state] = await this.model.step(grown.map((g) => g.id), state);
      }
    }
    return [words, reached];
  }

  async stepAlone(mark, path, state) {
    const key = path.join(",");
    let kept = mark.alone.get(key);
    if (kept === undefined) {
      const [logits, next] = await this.model.step([path[path.length - 1]], state);
      if (mark.alone.size * logits[0].length >= this.config.alone_floats) mark.alone.clear();
      kept = [next, logits];
      mark.alone.set(key, kept);
    }
    return kept;
  }

  // Add the words each hypothesis finishes at this step; returns the mass reaching the prefix's end.
  collect(texts, modes, scores, fragment, lead, words, allowed) {
    const table = this.table;
    let reached = 0;
    const add = (word, p) => {
      if (Math.fround(p) > 0 && (allowed === null || allowed.word(word))) words.set(word, (words.get(word) ?? 0) + p);
    };
    texts.forEach((text, b) => {
      const row = scores[b], mode = modes[b];
      if (mode === Mode.INSIDE) {
        const options = this.fragmentOptions(fragment, lead, text.length);
        for (const i of options.crossing) reached += Math.exp(row[i]);
        for (const [i, word] of options.finished) add(word, Math.exp(row[i]));
        return;
      }
      if (text) {
        let ended = 0;
        for (const i of table.ends[mode]) ended += Math.exp(row[i]);
        add(text, ended);
      }
      for (const [i, cut] of table.splits[mode]) add(text + table.pieces[i].slice(0, cut), Math.exp(row[i]));
    });
    return reached;
  }

  // The best `beam_width` one-piece extensions of all hypotheses together, above the floor.
  extend(texts, modes, scores, fragment, lead, bound, allowed) {
    const found = [];
    texts.forEach((text, b) => {
      const closed = this.closed(text, modes[b], fragment, lead, allowed), row = scores[b];
      for (let i = 0; i < row.length; i++) {
        const score = row[i] + closed[i];
        if (score > bound) found.push({ score, parent: b, id: i });
      }
    });
    found.sort((x, y) => y.score - x.score || x.parent - y.parent || x.id - y.id);
    return found.slice(0, this.config.beam_width).map((g) => ({ ...g, ...this.grow(texts[g.parent], modes[g.parent], g.id, fragment, lead) }));
  }

  closed(text, mode, fragment, lead, allowed) {
    if (mode === Mode.INSIDE) {
      const options = this.fragmentOptions(fragment, lead, text.length);
      if (allowed === null || !options.toLetters.length) return options.closed;
      // Pieces that finish the typed prefix start a word of letters: one of the lexicon's?
      const closed = options.closed.slice();
      for (const [i, word] of options.toLetters) if (!allowed.prefix(word)) closed[i] = -Infinity;
      return closed;
    }
    if (allowed === null || mode === Mode.PUNCT) return this.table.closed[mode];
    return allowed.closed(text, mode);
  }

  grow(text, mode, id, fragment, lead) {
    if (mode === Mode.INSIDE) {
      const [grown, next] = this.fragmentOptions(fragment, lead, text.length).next.get(id);
      return { text: grown, mode: next };
    }
    if (mode === Mode.START_WORD) return { text: this.table.pieces[id], mode: this.table.first[id] };
    return { text: text + this.table.pieces[id], mode };
  }

  fragmentOptions(fragment, lead, pos) {
    const key = `${lead}:${pos}:${fragment}`;
    let options = this.options.get(key);
    if (options === undefined) {
      if (this.options.size >= 1024) this.options.clear();
      options = fragmentOptions(this.table, fragment, lead, pos);
      this.options.set(key, options);
    }
    return options;
  }

  // The closed row for `mode`, with the pieces after which `key` starts no lexicon word closed too.
  lexiconRow(key, mode) {
    const cacheKey = `${mode}:${key}`;
    let row = this.rows.get(cacheKey);
    if (row === undefined) {
      const table = this.table, mask = new Float64Array(table.pieces.length);
      for (const i of table.letterFirst) mask[i] = -Infinity;
      for (const i of table.idsOf(this.lexicon.continuations(key, table.longestChars))) mask[i] = 0;
      row = table.closed[mode].map((value, i) => value + mask[i]);
      if (this.rows.size >= ROW_CACHE) this.rows.clear();
      this.rows.set(cacheKey, row);
    }
    return row;
  }
}

// log_softmax of one row of logits, plus the hypothesis's log-probability so far.
export function logSoftmax(logits, offset = 0) {
  let top = -Infinity;
  for (const x of logits) if (x > top) top = x;
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - top);
  const norm = top + Math.log(sum) - offset, out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - norm;
  return out;
}

// Log-probability a hypothesis needs to beat the k-th best letter word found so far.
function floor(words, k) {
  const found = [...words].filter(([w]) => charClass(firstChar(w)) === LETTER).map(([, p]) => p).sort((a, b) => b - a);
  return found.length >= k && found[k - 1] > 0 ? Math.log(found[k - 1]) : -Infinity;
}
