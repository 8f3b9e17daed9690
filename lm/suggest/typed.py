"""What was typed, where decoding backs off to, and what the strip offers back.

A half-typed word backs off to the last word boundary: `split_typed` cuts a text into the
context to read, the whitespace the next word starts with, and the typed part of the word.
Nothing here imports torch.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum

from ..data.text import LETTER, SENTENCE_END, START_TEXT, char_class

MAX_WORD_CHARS = 64  # a longer run of letters is not a word being typed: no suggestions


class Slot(str, Enum):
    """The role of a word on the suggestion strip."""

    PREDICTION = "prediction"  # a next word, or a completion of the typed letters (slips in them fixed)
    TYPED = "typed"  # a finished word as typed: picking it undoes its correction
    CORRECTION = "correction"  # the word that replaced the typed one
    ALTERNATIVE = "alternative"  # another word the typed one may have meant


@dataclass
class Suggestion:
    """One word on the suggestion strip. Picking it: delete the last `delete` characters of the
    text, then append `completion`."""

    word: str  # the whole word as shown
    probability: float  # for a half-typed word: conditional on the typed prefix
    completion: str  # text to append (after the deletion) to get the word
    slot: Slot = Slot.PREDICTION
    delete: int = 0  # characters of the text the word replaces: a slip in a prefix, a corrected word

    def to_dict(self) -> dict:
        return {"word": self.word, "probability": self.probability, "completion": self.completion,
                "slot": self.slot.value, "delete": self.delete}

    def applied_to(self, text: str) -> str:
        """The text after picking this suggestion."""
        return text[: len(text) - self.delete] + self.completion

    def rebased(self, text: str, onto: str) -> "Suggestion":
        """The same pick for another text: the one that gives the same result from `onto`
        (a strip worked out on the corrected text, offered for the text as it was typed)."""
        if text == onto:
            return self
        result = self.applied_to(text)
        same = 0
        while same < min(len(result), len(onto)) and result[same] == onto[same]:
            same += 1
        if same < len(onto):  # a replacement: of whole words ("skt " -> "sky ", not "t " -> "y ")
            while same > 0 and char_class(onto[same - 1]) == LETTER:
                same -= 1
        return Suggestion(self.word, self.probability, result[same:], self.slot, len(onto) - same)


@dataclass(frozen=True)
class Typed:
    """A typed text split where decoding backs off to: context, whitespace, typed part of the word."""

    context_end: int  # text[:context_end] is read as context
    lead: str  # whitespace the next word starts with ("" at a line start or after a bracket)
    partial: str  # the typed part of the word ("" for next-word suggestions)
    prefix: str  # put before each completion: " " after punctuation typed without a space
    sentence_start: bool  # capitalise the suggestions

    @property
    def too_long(self) -> bool:
        return len(self.partial) > MAX_WORD_CHARS

    def fragments(self) -> list[str]:
        """What the next text must start with; a capitalised prefix also matches the word in lower case."""
        variants = [self.partial]
        if self.partial[:1].isupper():
            variants += [self.partial[:1].lower() + self.partial[1:], self.partial.lower()]
        # Lower-casing can change the length ("İ"): such variants would not line up with the typed text.
        kept = [v for v in dict.fromkeys(variants) if len(v) == len(self.partial)]
        return [self.lead + v for v in kept]

    def present(self, word: str) -> str:
        """The word as typed so far, with the rest cased like the typed prefix or the sentence."""
        if self.partial:
            rest = word[len(self.partial):]
            return self.partial + (rest.upper() if len(self.partial) > 1 and self.partial.isupper() else rest)
        return word[:1].upper() + word[1:] if self.sentence_start else word


def split_typed(text: str, by_whitespace: bool = False) -> Typed:
    """Split a text into the context to read and the word being typed.

    Args:
        by_whitespace: word models: a word is any run of non-whitespace (their vocabulary's unit).
    """
    if by_whitespace:
        in_word = lambda ch: not ch.isspace()  # noqa: E731
    else:
        in_word = lambda ch: char_class(ch) == LETTER  # noqa: E731
    start = len(text)
    while start > 0 and in_word(text[start - 1]) and len(text) - start <= MAX_WORD_CHARS:
        start -= 1
    partial, before = text[start:], text[start - 1] if start else START_TEXT
    sentence_start = _sentence_start(text, start)
    if by_whitespace:
        return Typed(start, "", partial, "", sentence_start)
    if before.isspace() and before != START_TEXT:  # "the s", "the ": the word starts with this space
        return Typed(start - 1, before, partial, "", sentence_start)
    if partial or before == START_TEXT:  # a line start, or a word right after punctuation ("hi,th")
        return Typed(start, "", partial, "", sentence_start)
    # Punctuation typed without a space after it: the next word follows a space, except after
    # an opening bracket or quote.
    space = "" if unicodedata.category(before) in ("Ps", "Pi") else " "
    return Typed(start, space, "", space, sentence_start)


def _sentence_start(text: str, end: int) -> bool:
    while end > 0 and text[end - 1] in " \t":
        end -= 1
    return end == 0 or text[end - 1] in SENTENCE_END
