"""Keyboard metrics: how much a suggestion strip helps someone typing the text.

A simulated typist writes the text word by word (whitespace words) with a strip of three
suggestions:

- Before the first letter of each word the strip shows next-word suggestions. A suggestion is
  a hit when it is the word, or the word's leading run of letters or of punctuation ("world"
  for "world." — char and subword suggesters offer punctuation as a word of its own). Hits in
  first place, or anywhere on the strip, give top-1 and top-3 accuracy.
- The typist taps a suggestion as soon as one reaches the end of the word or of such a run
  without typing anything wrong (one keystroke; the longest if several do), and otherwise
  types the next letter (one keystroke) and looks again. A word never offered is typed in full.
- After a tap that ends the word, whitespace the suggestion appended counts toward the
  separator when it matches the text (a tap that adds the space saves typing it); whitespace
  that does not match (a space where the line ends, or inside "world.") costs one backspace
  per character. A completion without trailing whitespace leaves the separator to be typed.
- Keystroke savings = 1 - keys pressed with the strip / keys typing every character, both
  counted over the same words and their separators (spaces and newlines are keys too).
  Suggestions are compared exactly, case included.

Words the model cannot produce (<unk>) are typed in full and left out of every figure; they
are counted in `unknown_words`. Leading whitespace before the first word is not counted.

The suggester is anything with `.suggest(text, k) -> [suggestion with .completion]` (the text a
tap appends; a word is judged by what its tap would type), so the simulation can be tested with
a hand-made fake; a session (anything with `.type(chars)`
and `.suggestions(k)`, such as lm.suggest.engine.SuggestionSession) keeps the model's state as the
text is typed instead of re-reading it for every keystroke.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable

from ..data.text import PUNCT, char_class

STRIP_SLOTS = 3
WORD = re.compile(r"(\S+)(\s*)")  # a word and the whitespace after it


@dataclass
class KeyboardMetrics:
    """Counts from the simulated typist; the rates are properties."""

    words: int = 0  # word positions scored (true word known to the model)
    unknown_words: int = 0  # positions skipped because the true word is <unk>
    top1: int = 0  # positions whose word was the first next-word suggestion
    top3: int = 0  # positions whose word was among the three next-word suggestions
    taps: int = 0  # suggestions taken from the strip (before or while typing a word)
    keystrokes: int = 0  # keys pressed with the strip: letters, taps, separators, backspaces
    baseline_keystrokes: int = 0  # keys typing the same words and separators in full

    @property
    def top1_accuracy(self) -> float:
        return self.top1 / max(self.words, 1)

    @property
    def top3_accuracy(self) -> float:
        return self.top3 / max(self.words, 1)

    @property
    def keystroke_savings(self) -> float:
        return 1 - self.keystrokes / max(self.baseline_keystrokes, 1)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "top1_accuracy": self.top1_accuracy,
            "top3_accuracy": self.top3_accuracy,
            "keystroke_savings": self.keystroke_savings,
        }


class TextSession:
    """The session interface over any suggester: keeps the typed text and re-reads it each time."""

    def __init__(self, suggester, text: str = ""):
        self.suggester = suggester
        self.text = text

    def type(self, chars: str) -> None:
        self.text += chars

    def suggestions(self, k: int = STRIP_SLOTS) -> list:
        return self.suggester.suggest(self.text, k)


def keyboard_metrics(
    suggester,
    text: str,
    session=None,
    is_unknown: Callable[[str], bool] = lambda word: word == "<unk>",
    advance: Callable[[int], None] = lambda n: None,
) -> KeyboardMetrics:
    """Simulate a typist with a three-slot strip writing `text`; see the module docstring.

    Args:
        suggester: anything with `.suggest(text, k)`.
        session: an incremental session over the same suggester, starting at empty text
            (default: a TextSession, which re-reads the text for every suggestion).
        is_unknown: whether a word is <unk> to the model (skipped and counted separately).
        advance: called with 1 after each word.
    """
    session = session if session is not None else TextSession(suggester)
    metrics = KeyboardMetrics()
    session.type(text[: len(text) - len(text.lstrip())])  # leading whitespace: typed, not counted
    for match in WORD.finditer(text):
        word, separator = match.groups()
        if is_unknown(word):
            metrics.unknown_words += 1
            typed = 0
        else:
            metrics.words += 1
            metrics.baseline_keystrokes += len(word) + len(separator)
            typed = _type_word(session, word, separator, metrics)
        session.type(word[typed:] + separator)  # the session follows the true text
        advance(1)
    return metrics


def _type_word(session, word: str, separator: str, metrics: KeyboardMetrics) -> int:
    """Type one word with the strip, adding up its keys; returns how many letters went into the session."""
    typed = 0
    while typed < len(word):
        shown = session.suggestions(STRIP_SLOTS)
        reach = [_reach(word, typed, s.completion) for s in shown]  # letters each tap would complete
        if typed == 0:
            metrics.top1 += bool(reach[:1]) and _is_hit(word, reach[0])
            metrics.top3 += any(_is_hit(word, r) for r in reach)
        best = max(range(len(shown)), key=lambda i: reach[i], default=None)
        if best is None or reach[best] <= typed:
            session.type(word[typed])  # nothing usable on the strip: type a letter
            metrics.keystrokes += 1
            typed += 1
            continue
        metrics.taps += 1
        inserted = shown[best].completion[len(shown[best].completion.rstrip()):]  # whitespace after the word
        after = separator if reach[best] == len(word) else ""
        metrics.keystrokes += 1 + _keys_after_tap(inserted, after) - len(after)
        session.type(word[typed: reach[best]])
        typed = reach[best]
    metrics.keystrokes += len(separator)
    return typed


def _reach(word: str, typed: int, completion: str) -> int:
    """How far into `word` tapping this completion gets (`typed` if it is wrong or ends mid-run)."""
    core = completion.rstrip()
    end = typed + len(core)
    if not core or not word.startswith(core, typed) or end < len(word) and not _boundary(word, end):
        return typed
    return end


def _is_hit(word: str, reach: int) -> bool:
    """A next-word suggestion is the word, or its leading run of letters or punctuation."""
    return reach == len(word) or 0 < reach and not any(_boundary(word, i) for i in range(1, reach))


def _boundary(word: str, i: int) -> bool:
    """Whether word[:i] ends a run: letters (digits, apostrophes) meet punctuation or symbols."""
    return (char_class(word[i - 1]) == PUNCT) != (char_class(word[i]) == PUNCT)


def _keys_after_tap(inserted: str, separator: str) -> int:
    """Keys to finish the separator after a tap that appended the whitespace `inserted`."""
    if separator.startswith(inserted):
        return len(separator) - len(inserted)
    return len(inserted) + len(separator)  # backspace it, then type the separator


def leading_words(text: str, max_words: int) -> str:
    """The text up to the end of its first `max_words` whitespace words (all of it if shorter)."""
    for n, match in enumerate(re.finditer(r"\S+", text), 1):
        if n == max_words:
            return text[: match.end()]
    return text
