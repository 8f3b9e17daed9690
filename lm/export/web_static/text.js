// Conventions about text, as lm/data/text.py and lm/suggest/typed.py state them in Python:
// character classes, case folding, the order of strings, and where a typed text backs off to.
//
// Python counts and orders strings by code point and JavaScript by UTF-16 unit; the helpers
// here step over whole code points and compare by code point, so that a word with an emoji
// or an astral letter is cut and ordered as the Python engine cuts and orders it. The tables
// Python's own definitions need (its whitespace, its case folding where it differs from
// lower-casing) come from the export's lm-web.json (`useTextRules`).
"use strict";

export const SPACE = -1, LETTER = 0, PUNCT = 1; // character classes

let rules = null; // { start_text, sentence_end, joiners, spaces: Set, casefold: {char: folded}, max_word_chars }
let patterns = null; // regular expressions built from the rules

export function useTextRules(text) {
  rules = { ...text, spaces: new Set(Array.from(text.spaces)) };
  const space = Array.from(text.spaces, (ch) => "\\u{" + ch.codePointAt(0).toString(16) + "}").join("");
  const joiners = text.joiners.replace(/[\\\]^-]/g, "\\$&");
  patterns = {
    nonSpace: new RegExp(`[^${space}]+`, "gu"),
    segment: new RegExp(`[${space}]*[^${space}]+|[${space}]+`, "gu"), // session.py's SEGMENT
    word: new RegExp(`[\\p{L}\\p{N}]+(?:[${joiners}][\\p{L}\\p{N}]+)*`, "gu"), // lexicon.py's WORD
  };
}

export function startText() {
  return rules.start_text;
}

// Python's str.isspace (JavaScript's \s differs: U+001C–U+001F, U+0085, U+FEFF).
export function isSpace(ch) {
  return rules.spaces.has(ch);
}

export function charClass(ch) {
  if (rules.spaces.has(ch)) return SPACE;
  if (rules.joiners.includes(ch)) return LETTER;
  return /^[\p{P}\p{S}]$/u.test(ch) ? PUNCT : LETTER;
}

// The first code point of a string ("" for an empty one).
export function firstChar(text) {
  return text ? String.fromCodePoint(text.codePointAt(0)) : "";
}

// The code point that ends at `end` (a UTF-16 index).
export function charBefore(text, end) {
  const low = text.charCodeAt(end - 1);
  if (end >= 2 && low >= 0xdc00 && low <= 0xdfff) {
    const high = text.charCodeAt(end - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.slice(end - 2, end);
  }
  return text.slice(end - 1, end);
}

export function codePoints(text) {
  let n = 0;
  for (const _ of text) n++; // eslint-disable-line no-unused-vars
  return n;
}

// Python's str.casefold: lower case, with its full folding where that differs ("ß" -> "ss").
export function casefold(text) {
  let folded = "";
  for (const ch of text) folded += rules.casefold[ch] ?? ch.toLowerCase();
  return folded;
}

// Python's str.isupper: some cased character, and none in lower case.
export function isUpper(text) {
  return text === text.toUpperCase() && text !== text.toLowerCase();
}

// Python's order of strings: by code point (UTF-16 puts U+E000–U+FFFF after the astral planes).
export function compare(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) { // a surrogate sorts above every BMP character after it
      x = x < 0xe000 ? x + 0x2000 : x - 0x800;
      y = y < 0xe000 ? y + 0x2000 : y - 0x800;
    }
    return x - y;
  }
  return a.length - b.length;
}

// bisect.bisect_left over strings sorted in Python's order.
export function lowerBound(sorted, key, lo = 0) {
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compare(sorted[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The words of a text, as lm/data/lexicon.py's WORD: letters and digits, apostrophes inside.
export function words(text) {
  return text.match(patterns.word) ?? [];
}

// Python's str.split(): the runs of non-whitespace.
export function splitWhitespace(text) {
  return text.match(patterns.nonSpace) ?? [];
}

// One word with the whitespace before it, or trailing whitespace (session.py's SEGMENT).
export function segmentEnds(text, start, end) {
  const ends = [];
  for (const m of text.slice(start, end).matchAll(patterns.segment)) ends.push(start + m.index + m[0].length);
  return ends;
}

// A typed text split where decoding backs off to (typed.py's Typed): text.slice(0, contextEnd)
// is read as context, `lead` is the whitespace the next word starts with, `partial` the typed
// part of the word, `prefix` goes before each completion.
export class Typed {
  constructor(contextEnd, lead, partial, prefix, sentenceStart) {
    Object.assign(this, { contextEnd, lead, partial, prefix, sentenceStart });
  }

  get tooLong() {
    return codePoints(this.partial) > rules.max_word_chars;
  }

  // What the next text must start with; a capitalised prefix also matches the word in lower case.
  fragments() {
    const p = this.partial, first = firstChar(p), variants = [p];
    if (first && isUpper(first)) variants.push(first.toLowerCase() + p.slice(first.length), p.toLowerCase());
    const length = codePoints(p);
    return [...new Set(variants)].filter((v) => codePoints(v) === length).map((v) => this.lead + v);
  }

  // The word as typed so far, with the rest cased like the typed prefix or the sentence.
  present(word) {
    const p = this.partial;
    if (p) {
      const rest = word.slice(p.length);
      return p + (codePoints(p) > 1 && isUpper(p) ? rest.toUpperCase() : rest);
    }
    const first = firstChar(word);
    return this.sentenceStart ? first.toUpperCase() + word.slice(first.length) : word;
  }
}

// typed.py's split_typed. byWhitespace: word models (a word is any run of non-whitespace).
export function splitTyped(text, byWhitespace) {
  const inWord = byWhitespace ? (ch) => !isSpace(ch) : (ch) => charClass(ch) === LETTER;
  let start = text.length, count = 0;
  while (start > 0 && count <= rules.max_word_chars) {
    const ch = charBefore(text, start);
    if (!inWord(ch)) break;
    start -= ch.length;
    count++;
  }
  const partial = text.slice(start), before = start ? charBefore(text, start) : rules.start_text;
  const sentenceStart = isSentenceStart(text, start);
  if (byWhitespace) return new Typed(start, "", partial, "", sentenceStart);
  if (isSpace(before) && before !== rules.start_text) return new Typed(start - before.length, before, partial, "", sentenceStart);
  if (partial || before === rules.start_text) return new Typed(start, "", partial, "", sentenceStart);
  // Punctuation typed without a space after it: the next word follows a space, except after
  // an opening bracket or quote.
  const space = /^[\p{Ps}\p{Pi}]$/u.test(before) ? "" : " ";
  return new Typed(start, space, "", space, sentenceStart);
}

function isSentenceStart(text, end) {
  while (end > 0 && (text[end - 1] === " " || text[end - 1] === "\t")) end--;
  return end === 0 || rules.sentence_end.includes(charBefore(text, end));
}
