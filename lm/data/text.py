"""Conventions about text that the sampler, the suggester and the keyboard simulation share.

There is no BOS token: a text starts where a line starts, so every reader feeds START_TEXT
before the text. A word is a run of letters (digits, marks and apostrophes included) or a
run of punctuation; whitespace separates words.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache

START_TEXT = "\n"
JOINERS = "'’"  # apostrophes stay inside words: don't, it's
SENTENCE_END = ".!?…\n"

SPACE, LETTER, PUNCT = -1, 0, 1  # character classes


@lru_cache(maxsize=65536)
def char_class(ch: str) -> int:
    """SPACE, LETTER (letters, digits, marks, apostrophes) or PUNCT (punctuation and symbols)."""
    if ch.isspace():
        return SPACE
    if ch in JOINERS:
        return LETTER
    return PUNCT if unicodedata.category(ch)[0] in "PS" else LETTER


def count_word_starts(last_char: str, text: str) -> int:
    """How many whitespace words begin in `text`, given the character before it."""
    starts = 0
    for ch in text:
        if not ch.isspace() and (not last_char or last_char.isspace()):
            starts += 1
        last_char = ch
    return starts
