"""The beam search over pieces that char and subword models suggest words with.

One model call per step for all beams. A word's probability is the product of its pieces'
probabilities times the probability that the word ends there (the next piece starts with
whitespace or punctuation, or the word ends inside a piece), summed over the piece sequences
that spell it. The search follows only pieces that agree with the typed prefix, so "s" still
finds "sky" when the model spells it " sk" + "y", and, with a lexicon, only pieces that can
still spell one of its words.
"""
from __future__ import annotations

import heapq
import math
from collections import defaultdict
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np

from .._arrays import log_softmax, top_k
from ..data.lexicon import Lexicon
from ..data.text import LETTER, char_class
from .pieces import Allowed, Mode, Options, PieceTable, fragment_options, lexicon_closed

if TYPE_CHECKING:
    from .session import Mark

ALONE_FLOATS = 2**18  # logits floats a mark may keep of its one-stream search steps (1 MB)

# One model step of every beam from a mark: (ids [beam, 1], state, mark) -> (logits [beam, vocab], state).
Step = Callable[[np.ndarray, object, "Mark"], tuple]
# Pick the beams' rows of a state: (state, rows) -> state (the backend's `select`).
Select = Callable[[object, np.ndarray], object]


class PieceSearch:
    """Beam search for the words that follow a context, over one tokenizer's pieces."""

    def __init__(self, pieces: list[str], config, lexicon: Lexicon | None, select: Select):
        """
        Args:
            config: a SuggestConfig (beam_width and max_depth are read at each search).
            lexicon: the words the search may spell (None: any spelling).
            select: picks the beams' rows of the model's state.
        """
        self.table = PieceTable(pieces)
        self.config, self.lexicon, self.select = config, lexicon, select
        self.options = lru_cache(maxsize=1024)(self._fragment_options)
        # A closed row per word prefix spelled: 16 MB of them at most, few for a big vocabulary.
        self._lexicon_rows = lru_cache(maxsize=min(8192, 2**22 // len(pieces)))(self._lexicon_closed)

    def allowed(self, learned: frozenset) -> Allowed | None:
        """The words a strip may offer (None: any spelling)."""
        return None if self.lexicon is None else Allowed(self.lexicon, learned, self.table, self._lexicon_rows)

    def find(self, mark: Mark, fragment: str, lead: int, k: int, allowed: Allowed | None,
             step: Step) -> tuple[dict[str, float], float]:
        """Words that start with `fragment` (after its `lead` whitespace characters).

        Returns:
            word -> probability that the text goes on with `fragment` and then exactly this word,
            and the probability that it goes on with `fragment` at all.
        """
        words: dict[str, float] = defaultdict(float)
        texts, modes = [""], [Mode.INSIDE if fragment else Mode.START_WORD]
        reached = 0.0 if fragment else 1.0
        state, logits = mark.state, mark.logits[None]  # [beam, vocab]
        logp = np.zeros(1, np.float32)  # [beam]
        path = ()  # the pieces read since the mark, while every step so far had one hypothesis
        steps = len(fragment) + self.config.max_depth
        for n in range(steps):
            scores = log_softmax(logits) + logp[:, None]  # [beam, vocab]
            reached += self._collect(texts, modes, np.exp(scores), fragment, lead, words, allowed)
            if n == steps - 1:
                break
            parents, ids, texts, modes, logp = self._extend(texts, modes, scores, fragment, lead, _floor(words, k), allowed)
            if not texts:
                break
            if path is not None and len(texts) == 1:
                path += (int(ids[0]),)
                state, logits = self._step_alone(mark, path, state, step)
            else:
                path = None
                state = self.select(state, parents)
                logits, state = step(ids[:, None], state, mark)  # ids [beam, 1] -> logits [beam, vocab]
        return words, reached

    def _step_alone(self, mark: Mark, path: tuple, state, step: Step):
        """(state, logits [1, vocab]) after `path` read one piece per step from the mark, as kept there."""
        kept = mark.alone.get(path)
        if kept is None:
            logits, new_state = step(np.array([[path[-1]]], np.int64), state, mark)
            if len(mark.alone) * logits.shape[-1] >= ALONE_FLOATS:
                mark.alone.clear()
            kept = mark.alone[path] = (new_state, logits)
        return kept

    def _collect(self, texts, modes, probs, fragment, lead, words, allowed) -> float:
        """Add the words each hypothesis finishes at this step; returns the mass reaching the prefix's end.

        Args:
            probs: [beam, vocab] probability of each hypothesis followed by each piece.
        """
        table, reached = self.table, []
        ended = (probs @ table.ends_by_mode).tolist()  # [beam][mode]: mass of the pieces ending the word
        for b, (text, mode) in enumerate(zip(texts, modes)):
            if mode == Mode.INSIDE:
                options = self.options(fragment, lead, len(text))
                reached.append(probs[b, options.crossing_ids].sum())
                finishing = zip(options.finished_words, probs[b, options.finished_ids].tolist())
            else:
                # A mass that underflowed to 0 is no word to offer (it would show as probability 0).
                if text and ended[b][mode] > 0.0 and (allowed is None or allowed.word(text)):
                    words[text] += ended[b][mode]
                split_ids, id_list, cuts = table.splits[mode]
                if not id_list:
                    continue
                chosen = probs[b, split_ids].tolist()
                finishing = ((text + table.pieces[i][:c], p) for i, c, p in zip(id_list, cuts, chosen))
            for word, p in finishing:
                if p > 0.0 and (allowed is None or allowed.word(word)):
                    words[word] += p
        return float(sum(reached)) if reached else 0.0

    def _extend(self, texts, modes, scores, fragment, lead, floor, allowed):
        """The best `beam_width` one-piece extensions of all hypotheses together (spelling words
        of the lexicon, when there is one)."""
        closed = np.stack([self._closed(text, mode, fragment, lead, allowed) for text, mode in zip(texts, modes)])
        flat = (scores + closed).ravel()  # [beam * vocab]
        values, indices = top_k(flat, self.config.beam_width)  # best first
        # Those above the floor (which also stops at the -inf of pieces not allowed).
        kept = next((n for n, value in enumerate(values.tolist()) if value <= floor), len(values))
        index, vocab = indices[:kept], scores.shape[1]
        grown = [self._grow(texts[i // vocab], modes[i // vocab], i % vocab, fragment, lead) for i in index.tolist()]
        return index // vocab, index % vocab, [t for t, _ in grown], [m for _, m in grown], values[:kept]

    def _closed(self, text: str, mode: Mode, fragment: str, lead: int, allowed: Allowed | None) -> np.ndarray:
        """[vocab] 0 for the pieces that may extend a hypothesis, -inf for the others."""
        if mode == Mode.INSIDE:
            options = self.options(fragment, lead, len(text))
            if allowed is None or not options.to_letters:
                return options.closed
            # Pieces that finish the typed prefix start a word of letters: one of the lexicon's?
            blocked = [i for i, word in options.to_letters if not allowed.prefix(word)]
            closed = options.closed.copy()
            closed[blocked] = -math.inf
            return closed
        if allowed is None or mode == Mode.PUNCT:
            return self.table.closed[mode]
        return allowed.closed(text, mode)

    def _grow(self, text: str, mode: Mode, piece_id: int, fragment: str, lead: int) -> tuple[str, Mode]:
        if mode == Mode.INSIDE:
            return self.options(fragment, lead, len(text)).next[piece_id]
        if mode == Mode.START_WORD:
            return self.table.pieces[piece_id], self.table.first[piece_id]
        return text + self.table.pieces[piece_id], mode

    def _fragment_options(self, fragment: str, lead: int, pos: int) -> Options:
        return fragment_options(self.table, fragment, lead, pos)

    def _lexicon_closed(self, key: str, mode: Mode, version: int) -> np.ndarray:
        return lexicon_closed(self.table, self.lexicon, key, mode)


def _floor(words: dict[str, float], k: int) -> float:
    """Log-probability a hypothesis needs to beat the k-th best letter word found so far."""
    found = heapq.nlargest(k, (p for w, p in words.items() if char_class(w[0]) == LETTER))
    return math.log(found[k - 1]) if len(found) >= k and found[k - 1] > 0.0 else -math.inf
