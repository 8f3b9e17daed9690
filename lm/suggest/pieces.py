"""What each piece of a char or subword vocabulary does to a word being spelled.

A search hypothesis is in one `Mode`: spelling a word of letters or of punctuation, before the
first character of its word, or still inside the typed prefix. For each mode the `PieceTable`
says once per tokenizer which pieces end the word, which extend it, and which finish it inside
themselves ("sky." finishes "sky"); `fragment_options` says the same for a hypothesis inside a
typed prefix, and `Allowed` narrows the pieces to those that still spell a word of the lexicon.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..data.lexicon import Lexicon, continuations
from ..data.text import LETTER, PUNCT, char_class


class Mode(IntEnum):
    """What a search hypothesis is doing. Its value is its row in the piece table's [mode, vocab] tables."""

    LETTER = 0  # spelling a word of letters (digits, marks and apostrophes included)
    PUNCT = 1  # spelling a run of punctuation
    START_WORD = 2  # the word has no character yet
    INSIDE = 3  # still inside the typed prefix: the fragment's options decide, its rows stay empty


# The mode of a word by the character class of its first character; whitespace starts no word.
WORD_MODES = {LETTER: Mode.LETTER, PUNCT: Mode.PUNCT}


def word_mode(ch: str) -> Mode | None:
    """The mode of a word that starts with `ch` (None for whitespace)."""
    return WORD_MODES.get(char_class(ch))


def word_end(text: str, mode: Mode) -> int:
    """Index of the first character of `text` that cannot continue a word of `mode`."""
    for i, ch in enumerate(text):
        if word_mode(ch) != mode:
            return i
    return len(text)


class PieceTable:
    """What each piece does to a word, worked out once per tokenizer.

    For a word of letters or punctuation, and for a word not started yet (Mode.START_WORD), a
    piece either ends the word (`ends_by_mode`), extends it and leaves it open (`closed` is 0
    there, -inf elsewhere), finishes it inside the piece (`splits`: id and the cut), or is not
    allowed (byte, <unk> and control pieces, and whitespace where the word has not started).
    """

    def __init__(self, pieces: list[str]):
        self.pieces = pieces
        self.first = [word_mode(p[0]) if p else None for p in pieces]  # the mode of a word each piece starts
        ends, grows, splits = self._classify()
        # Per step, one product gives every hypothesis the mass of the pieces that end its word,
        # and one addition hides the pieces that may not extend it.
        self.ends_by_mode = np.ascontiguousarray(ends.T, np.float32)  # [vocab, mode]
        self.closed = np.where(grows, 0.0, -math.inf).astype(np.float32)  # [mode, vocab]
        # mode -> (ids as an array, the same ids as a list, cuts)
        self.splits = {m: (np.array([i for i, _ in s], np.int64), [i for i, _ in s], [c for _, c in s])
                       for m, s in splits.items()}
        ordered = sorted((p, i) for i, p in enumerate(pieces) if p)
        self.sorted_texts = [p for p, _ in ordered]
        self.sorted_ids = [i for _, i in ordered]
        self.by_text: dict[str, list[int]] = defaultdict(list)
        for p, i in ordered:
            self.by_text[p].append(i)
        self.longest = max((len(p) for p in pieces), default=0)
        self.by_folded: dict[str, list[int]] = defaultdict(list)  # pieces that start with a letter, case-folded
        for i, p in enumerate(pieces):
            if self.first[i] == Mode.LETTER:
                self.by_folded[p.casefold()].append(i)
        letter_first = [i for i, m in enumerate(self.first) if m == Mode.LETTER]
        self.letter_first = np.array(letter_first, np.int64)

    def _classify(self):
        """[mode, vocab] masks of the pieces that end and that extend a word, and the splits by mode."""
        ends = np.zeros((len(Mode), len(self.pieces)), bool)  # Mode.INSIDE's row stays empty
        grows = np.zeros((len(Mode), len(self.pieces)), bool)
        splits: dict[Mode, list[tuple[int, int]]] = {Mode.LETTER: [], Mode.PUNCT: [], Mode.START_WORD: []}
        for i, piece in enumerate(self.pieces):
            first = self.first[i]
            if not piece:
                continue
            for mode in splits:
                if mode != Mode.START_WORD and first != mode:
                    ends[mode, i] = True
                elif first is not None:
                    cut = word_end(piece, first)
                    if cut == len(piece):
                        grows[mode, i] = True
                    else:
                        splits[mode].append((i, cut))
        return ends, grows, splits

    def ids_of(self, folded: set[str]) -> list[int]:
        """Ids of the pieces starting with a letter whose case-folded text is in `folded`."""
        return [i for text in folded for i in self.by_folded.get(text, ())]

    def agreeing(self, rest: str) -> list[int]:
        """Ids of pieces that agree with `rest` on their common length (either may be longer)."""
        ids = [i for n in range(1, min(len(rest), self.longest + 1)) for i in self.by_text.get(rest[:n], ())]
        j = bisect.bisect_left(self.sorted_texts, rest)
        while j < len(self.sorted_texts) and self.sorted_texts[j].startswith(rest):
            ids.append(self.sorted_ids[j])
            j += 1
        return ids


@dataclass
class Options:
    """What each allowed piece does to a hypothesis still inside the typed prefix."""

    next: dict[int, tuple[str, Mode]]  # piece id -> (text, mode) of the hypothesis it leads to
    crossing_ids: np.ndarray  # pieces that reach the end of the typed prefix
    finished_ids: np.ndarray  # pieces that also finish a word...
    finished_words: list[str]  # ...this one
    to_letters: list[tuple[int, str]]  # pieces that cross into a word of letters, and the word so far
    closed: np.ndarray  # [vocab] 0 for the pieces in `next`, -inf for the others


def fragment_options(table: PieceTable, fragment: str, lead: int, pos: int) -> Options:
    """What each piece does to a hypothesis that has produced fragment[:pos] so far.

    Args:
        lead: the length of the whitespace the fragment starts with (the word follows it).
    """
    following: dict[int, tuple[str, Mode]] = {}
    crossing, finished = [], []
    for i in table.agreeing(fragment[pos:]):
        text = fragment[:pos] + table.pieces[i]
        if len(text) < len(fragment):
            following[i] = (text, Mode.INSIDE)
            continue
        word = text[lead:]  # the typed prefix is covered: what follows the lead is the word
        mode = word_mode(word[0]) if word else Mode.START_WORD
        if mode is None:  # more whitespace: no word starts here
            continue
        crossing.append(i)
        cut = len(word) if mode == Mode.START_WORD else word_end(word, mode)
        if cut == len(word):
            following[i] = (word, mode)
        else:
            finished.append((i, word[:cut]))
    as_ids = lambda ids: np.array(ids, np.int64)  # noqa: E731
    to_letters = [(i, text) for i, (text, mode) in following.items() if mode == Mode.LETTER]
    closed = np.full(len(table.pieces), -math.inf, np.float32)
    closed[as_ids(list(following))] = 0.0
    return Options(following, as_ids(crossing), as_ids([i for i, _ in finished]), [w for _, w in finished],
                   to_letters, closed)


def lexicon_closed(table: PieceTable, lexicon: Lexicon, key: str, mode: Mode) -> np.ndarray:
    """The piece table's closed row for `mode`, with the pieces after which a case-folded
    `key` starts no word of the lexicon closed too."""
    mask = np.zeros(len(table.pieces), np.float32)
    mask[table.letter_first] = -math.inf
    mask[table.ids_of(lexicon.continuations(key, table.longest))] = 0.0
    return table.closed[mode] + mask


class Allowed:
    """The words a strip may offer: the lexicon's, those learned in the session, and punctuation."""

    def __init__(self, lexicon: Lexicon, learned: frozenset, table: PieceTable, lexicon_rows):
        """
        Args:
            lexicon_rows: (case-folded key, mode, lexicon version) -> `lexicon_closed`'s row, cached.
        """
        self.lexicon, self.learned, self.table, self.lexicon_rows = lexicon, learned, table, lexicon_rows

    def word(self, word: str) -> bool:
        return char_class(word[0]) != LETTER or self.lexicon.allows(word) or word.casefold() in self.learned

    def prefix(self, text: str) -> bool:
        """Whether a word being spelled can still become an allowed word."""
        key = text.casefold()
        return self.lexicon.allows_prefix(text) or bool(self.learned) and any(w.startswith(key) for w in self.learned)

    def closed(self, text: str, mode: Mode) -> np.ndarray:
        """[vocab] 0 for the pieces that may extend `text` (a word of letters, or one not
        started, `mode`) so that it can still become an allowed word; -inf for the others."""
        key = text.casefold()
        closed = self.lexicon_rows(key, mode, self.lexicon.version)
        learned = [w for w in self.learned if w.startswith(key)]
        if learned:
            ids = self.table.ids_of(continuations(learned, len(key), self.table.longest))
            closed = closed.copy()
            closed[ids] = self.table.closed[mode, ids]
        return closed
