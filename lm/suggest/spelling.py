"""Char and subword models: the probability of given words, scored piece by piece.

The noisy-channel decoder needs log P(w | context) for a list of candidate words, not the
best words. It is the beam search's own definition (lm/suggest/search.py) without the beam:
the product of the pieces' probabilities that spell the whitespace before the word and the
word, times the probability that the word ends there (the next piece cannot continue it), plus
the pieces that finish the word inside themselves ("sky." for "sky"), summed over the piece
sequences that spell it, and divided, as the strip is, by the probability that a word starts
after the whitespace. So a candidate's score is its probability on the strip when the search
finds it.

All candidates are spelled together, one model call per step for every piece sequence alive;
candidates that start alike share their sequences ("the" and "then"). A char model has one
sequence per word; for a subword model the `width` likeliest sequences of each word are
followed, which is exact when it has no more.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import log_softmax
from .pieces import word_end, word_mode

if TYPE_CHECKING:
    from .search import PieceSearch, Step
    from .session import Mark

SPELLINGS = 16  # piece sequences followed per word (subword models spell a word many ways)


@dataclass
class _Row:
    """A piece sequence read from the mark: one row of the batch."""

    text: str  # what it spells, the lead included
    logp: float  # its log-probability after the mark
    words: list[int] = field(default_factory=list)  # the candidates it spells the start of (or all of)


def spelling_log_probs(search: PieceSearch, mark: Mark, lead: str, words: list[str], step: Step,
                       width: int = SPELLINGS) -> list[float]:
    """log P(word | context, a word starts after `lead`) for each word; -inf for what the
    search could never offer (an empty word, or one that mixes letters and punctuation).

    Args:
        mark: the model after the context (with a cache: its `view` set).
        lead: the whitespace before the word, at most one character (as `split_typed` gives).
        step: one model step from the mark (the suggester's).
        width: piece sequences followed per word.
    """
    if len(lead) > 1:
        raise ValueError(f"the lead is at most one whitespace character, not {lead!r}")
    targets = [lead + w if _spellable(w) else None for w in words]
    totals = [0.0] * len(words)
    rows = [_Row("", 0.0, [j for j, t in enumerate(targets) if t is not None])]
    state, logits = mark.state, mark.logits[None]  # [rows, vocab]
    reached = None
    while rows:
        log_probs = log_softmax(logits)  # [rows, vocab]
        if reached is None:
            reached = _lead_mass(search, lead, log_probs[0])
        _add_ends(search, rows, log_probs, targets, words, totals)
        parents, ids, rows = _extend(search, rows, log_probs, targets, words, totals, width)
        if rows:
            state = search.select(state, np.array(parents, np.int64))
            logits, state = step(np.array(ids, np.int64)[:, None], state, mark)
    return [math.log(t / reached) if t > 0.0 and reached > 0.0 else -math.inf for t in totals]


def _spellable(word: str) -> bool:
    """Whether the search can offer this word: not empty, and all letters or all punctuation."""
    mode = word_mode(word[0]) if word else None
    return mode is not None and word_end(word, mode) == len(word)


def _lead_mass(search: PieceSearch, lead: str, log_probs: np.ndarray) -> float:
    """The probability that a word starts after the lead, summed as the search sums it."""
    if not lead:
        return 1.0
    options = search.options(lead, len(lead), 0)
    return float(np.exp(log_probs)[options.crossing_ids].sum())


def _add_ends(search, rows, log_probs, targets, words, totals) -> None:
    """Add, for each row that spells a whole candidate, the probability that the word ends there."""
    ended = None
    for r, row in enumerate(rows):
        for j in row.words:
            if row.text == targets[j]:
                if ended is None:
                    ended = (np.exp(log_probs) @ search.table.ends_by_mode).tolist()  # [rows][mode]
                totals[j] += math.exp(row.logp) * ended[r][word_mode(words[j][0])]


def _extend(search, rows, log_probs, targets, words, totals, width):
    """The next rows: each row followed by the pieces that go on spelling its candidates (up to
    `width` rows per candidate); pieces that finish a candidate inside them add to its total."""
    table = search.table
    grown: dict[tuple[int, int], _Row] = {}  # (parent row, piece id) -> the new row
    finishing = []  # (parent row, piece id, candidate)
    for r, row in enumerate(rows):
        for j in row.words:
            rest = targets[j][len(row.text):]
            mode = word_mode(words[j][0])
            for i in table.agreeing(rest) if rest else ():
                piece = table.pieces[i]
                if rest.startswith(piece):
                    grown.setdefault((r, i), _Row(row.text + piece, 0.0)).words.append(j)
                elif word_mode(piece[len(rest)]) != mode:  # the word ends inside the piece
                    finishing.append((r, i, j))
    keys = list(grown) + [(r, i) for r, i, _ in finishing]
    if not keys:
        return [], [], []
    index = np.array(keys, np.int64)
    chosen = log_probs[index[:, 0], index[:, 1]].tolist()
    for (r, i), lp in zip(grown, chosen):
        grown[(r, i)].logp = rows[r].logp + lp
    for (r, i, j), lp in zip(finishing, chosen[len(grown):]):
        totals[j] += math.exp(rows[r].logp + lp)
    kept = _likeliest(grown, width)
    return [r for r, _ in kept], [i for _, i in kept], [grown[key] for key in kept]


def _likeliest(grown: dict, width: int) -> list[tuple[int, int]]:
    """The rows kept: each candidate's `width` likeliest, a row following only the candidates that keep it."""
    by_word: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key, row in grown.items():
        for j in row.words:
            by_word[j].append(key)
    keep = {j: set(sorted(keys, key=lambda key: -grown[key].logp)[:width]) for j, keys in by_word.items()}
    for key, row in grown.items():
        row.words = [j for j in row.words if key in keep[j]]
    return [key for key, row in grown.items() if row.words]
