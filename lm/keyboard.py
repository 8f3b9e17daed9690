"""Keyboard metrics: how much a suggestion strip helps someone typing the text.

A simulated typist writes the text word by word with a strip of three suggestions:

- Before the first letter of each word the strip shows next-word suggestions; whether the
  true word is first, or among the three, gives top-1 and top-3 accuracy.
- The typist taps the word as soon as it appears on the strip (one keystroke) and otherwise
  types its next letter (one keystroke) and looks again. A word never offered is typed in full.
- After a tap, whitespace the suggestion appended after the word counts toward the separator
  when it matches the text (a tap that adds the space saves typing it); whitespace that does
  not match (a space where the line ends) costs one backspace per character. A completion
  without trailing whitespace leaves the separator to be typed, a key per character.
- Keystroke savings = 1 - keys pressed with the strip / keys typing every character, both
  counted over the same words and their separators (spaces and newlines are keys too).

Words the model cannot produce (<unk>) are typed in full and left out of every figure; they
are counted in `unknown_words`. Leading whitespace before the first word is not counted.

The suggester is anything with `.suggest(text, k) -> [suggestion with .word and .completion]`,
so the simulation can be tested with a hand-made fake; a session (anything with `.type(chars)`
and `.suggestions(k)`, such as lm.suggest.SuggestionSession) keeps the model's state as the
text is typed instead of re-reading it for every keystroke.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable

STRIP_SLOTS = 3
WORD = re.compile(r"(\S+)(\s*)")  # a word and the whitespace after it


@dataclass
class KeyboardMetrics:
    """Counts from the simulated typist; the rates are properties."""

    words: int = 0  # word positions scored (true word known to the model)
    unknown_words: int = 0  # positions skipped because the true word is <unk>
    top1: int = 0  # positions whose word was the first next-word suggestion
    top3: int = 0  # positions whose word was among the three next-word suggestions
    taps: int = 0  # words taken from the strip (before or while typing them)
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
    for typed in range(len(word)):
        shown = session.suggestions(STRIP_SLOTS)
        words = [s.word.strip() for s in shown]
        if typed == 0:
            metrics.top1 += words[:1] == [word]
            metrics.top3 += word in words
        if word in words:
            metrics.taps += 1
            metrics.keystrokes += typed + 1 + _keys_after_tap(shown[words.index(word)].completion, separator)
            return typed
        session.type(word[typed])
    metrics.keystrokes += len(word) + len(separator)
    return len(word)


def _keys_after_tap(completion: str, separator: str) -> int:
    """Keys to finish the separator after a tap inserted `completion`."""
    inserted = completion[len(completion.rstrip()):]  # whitespace the tap added after the word
    if separator.startswith(inserted):
        return len(separator) - len(inserted)
    return len(inserted) + len(separator)  # backspace it, then type the separator


def leading_words(text: str, max_words: int) -> str:
    """The text up to the end of its first `max_words` whitespace words (all of it if shorter)."""
    for n, match in enumerate(re.finditer(r"\S+", text), 1):
        if n == max_words:
            return text[: match.end()]
    return text
