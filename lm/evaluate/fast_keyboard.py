"""The keyboard simulation of lm/evaluate/keyboard.py, fast: a word model reads the text in large chunks.

`keyboard_metrics` asks a session for the strip at every keystroke. A `SuggestionSession`
reads the model one word at a time (a call per word, as a keyboard must): 141 words/s for a
default-size WikiText-2 word model on 2 CPU cores. Here the text is known in advance, so a
word model's strips are worked out from one forward pass over the text (930 words/s;
bench/NOTES.md, "Keyboard simulation speed"):

- Before the first letter of a word the strip depends only on the model's distribution at the
  word boundary, and after a few letters only on that distribution restricted to the words
  with the typed prefix (a range of the vocabulary sorted by text), except that
- when the typed prefix may itself be a whole word, the words after it compete for the strip
  (lm/suggest/engine.py). Their distribution is one model step from the boundary state; the steps a
  chunk needs run together as one batch.

The rule is the Suggester's, step for step (the same candidates, sums and presentation), so
the metrics equal those of the session-based simulation; only the floats may differ in the
last bits, because the model reads a chunk in one call instead of word by word. Char and
subword models, and a suggester with a cache or an n-gram, still type through a `SuggestionSession`.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .keyboard import STRIP_SLOTS, WORD, KeyboardMetrics, keyboard_metrics
from ..model.reading import read_ids
from ..model.state import select_state
from ..suggest.session import SuggestionSession
from ..suggest.typed import Suggestion, Typed, split_typed
from ..data.text import START_TEXT

CHUNK_FLOATS = 2**24  # floats of [time, vocab] probabilities one chunk may hold (64 MB)
MAX_CHUNK = 2048  # tokens per chunk whatever the vocabulary
AFTER_BATCH = 256  # "typed word as whole" steps per model call


def fast_keyboard_metrics(suggester, text: str, is_unknown: Callable[[str], bool] = lambda word: word == "<unk>",
                          advance: Callable[[int], None] = lambda n: None) -> KeyboardMetrics:
    """`keyboard_metrics(suggester, text, session=SuggestionSession(suggester), ...)`, faster.

    Word models read the text in chunks (`ChunkedWordSession`); other suggesters type through
    a `SuggestionSession`.
    """
    if suggester.tokenizer.word_level and getattr(suggester, "cache", None) is None and getattr(suggester, "ngram", None) is None:
        session = ChunkedWordSession(suggester, text, is_unknown)
    else:
        session = SuggestionSession(suggester)
    return keyboard_metrics(suggester, text, session=session, is_unknown=is_unknown, advance=advance)


def next_token_probs(logits: torch.Tensor) -> torch.Tensor:
    """Next-token probabilities [time, vocab] from the model's output for a chunk [time, vocab].

    The one place a chunk's distribution is made (a cache mixture would go here).
    """
    return torch.softmax(logits.float(), -1)


@dataclass
class _Word:
    """A whitespace word of the text and where the model stands before it."""

    start: int  # index of its first character in the text
    text: str
    row: int  # position in the token stream whose output predicts the word
    known: bool


class ChunkedWordSession:
    """A session (`.type`, `.suggestions`) over a known text for a word-model Suggester.

    It only follows the true text, as the simulated typist does: the strip for the word at
    text position `start` with `j` letters typed is computed from the distribution at the
    word's boundary, chunk by chunk as the typist moves on.
    """

    def __init__(self, suggester, text: str, is_unknown: Callable[[str], bool] = lambda word: False):
        if not suggester.tokenizer.word_level:
            raise ValueError("ChunkedWordSession needs a word-level tokenizer")
        self.suggester, self.text = suggester, text
        self.pos = 0
        self.vocab = _SortedVocabulary(suggester.tokenizer)
        self.stream, self.words = _token_stream(suggester.tokenizer, text, is_unknown)
        self.by_start = {w.start: n for n, w in enumerate(self.words)}
        self.chunk = max(1, min(MAX_CHUNK, CHUNK_FLOATS // suggester.tokenizer.vocab_size))
        self._state = None  # the model after stream[:self._chunk_end]
        self._chunk_state = None  # ...and after stream[:self._chunk_start]
        self._chunk_start = self._chunk_end = 0
        self._probs: np.ndarray | None = None  # [chunk, vocab] rows of the current chunk
        self._strips: dict[tuple[int, int], list[Suggestion]] = {}  # (word, letters typed) -> strip
        self._next_word = 0  # first word whose strips are not worked out yet

    def type(self, chars: str) -> None:
        if not self.text.startswith(chars, self.pos):
            raise ValueError("ChunkedWordSession follows its text only")
        self.pos += len(chars)

    def suggestions(self, k: int | None = None) -> list[Suggestion]:
        if k not in (None, STRIP_SLOTS):
            raise ValueError(f"ChunkedWordSession works out strips of {STRIP_SLOTS}")
        start = self.pos
        while start > 0 and not self.text[start - 1].isspace():
            start -= 1
        n, j = self.by_start[start], self.pos - start
        while self._next_word <= n:
            self._work_out_chunk()
        strip = self._strips.get((n, j))
        if strip is None:  # the typed word cannot be whole: its completions alone
            typed = self._typed(self.words[n], j)
            strip = [] if typed.too_long else _best(self._completions(self.words[n].row - self._chunk_start, typed)[0])
        return strip

    # --- one chunk: read it, then the strips of every word whose boundary lies in it

    def _work_out_chunk(self) -> None:
        self._strips = {}  # the typist has finished every word before this chunk
        first, last = self._next_word, self._next_word
        probs = self._read_next_chunk()  # [time, vocab]
        while last < len(self.words) and self.words[last].row < self._chunk_end:
            last += 1
        self._probs = probs.cpu().numpy()
        self._whole = self.vocab.rank_all(probs, STRIP_SLOTS + 1)  # strips before a word's first letter
        # Strips are worked out when the typist gets there, except where the typed word may be
        # whole (it is a word of the vocabulary): those need a model step, batched here.
        pending = {}  # (word, letters) -> (completion strip, weight of the words after it)
        for n in range(first, last):
            word = self.words[n]
            for j in range(1, len(word.text) if word.known else 0):
                if not self.vocab.has_case_variant(word.text[:j]):
                    continue
                typed = self._typed(word, j)
                if typed.too_long:
                    continue
                strip, complete = self._completions(word.row - self._chunk_start, typed)
                if complete > (strip[STRIP_SLOTS - 1].probability if len(strip) >= STRIP_SLOTS else 0.0):
                    pending[(n, j)] = (strip, complete)  # the words after the typed word can enter the strip
                else:
                    self._strips[(n, j)] = _best(strip)
        self._add_words_after(pending)
        self._next_word = last

    def _read_next_chunk(self) -> torch.Tensor:
        """Advance the model over the next chunk of the token stream; every row's distribution [time, vocab]."""
        start, end = self._chunk_end, min(self._chunk_end + self.chunk, len(self.stream))
        if start == end:
            raise ValueError("ChunkedWordSession was asked past the end of its text")
        with torch.inference_mode():
            ids = torch.tensor([self.stream[start:end]], dtype=torch.long, device=self.suggester.device)  # [1, time]
            self._chunk_state = self._state
            logits, self._state = self.suggester.model(ids, self._state)  # [1, time, vocab]
            probs = next_token_probs(logits[0])  # [time, vocab]
        self._chunk_start, self._chunk_end = start, end
        return probs

    def _typed(self, word: _Word, j: int) -> Typed:
        """The Suggester's split of the text typed up to `j` letters into `word`."""
        before = word.start
        while before > 0 and self.text[before - 1] in " \t":
            before -= 1
        # From the last character before the word that is not a space or tab: enough to tell
        # a sentence start, as split_typed reads the whole text.
        window = self.text[max(before - 1, 0): word.start + j]
        return split_typed(window, by_whitespace=True)

    def _completions(self, row: int, typed: Typed) -> tuple[list[Suggestion], float]:
        """Suggester.suggest_after up to the words after the typed word: the strip of completions,
        and the probability that the typed word is already whole."""
        if typed.partial:
            words = self._conditional(typed, lambda fragment: self.vocab.rank(self._probs[row], fragment, _candidates(STRIP_SLOTS + 1)))
        else:
            words = self._conditional(typed, lambda fragment: self._whole[row])
        typed_whole = [w for w in words if len(w) == len(typed.partial)] if typed.partial else []
        complete = sum(words.pop(w) for w in typed_whole)
        return self.suggester._present(words, typed), complete

    @staticmethod
    def _conditional(typed: Typed, rank) -> dict[str, float]:
        """Suggester._conditional for a word model: words with the typed prefix, given the prefix.

        Args:
            rank: fragment -> (the likeliest words that start with it, with their probabilities;
                the probability of all of them).
        """
        words: dict[str, float] = defaultdict(float)
        reached = 0.0
        for fragment in typed.fragments():
            found, mass = rank(fragment)
            reached += mass
            for word, p in found:
                words[word] += p
        return {w: min(p / reached, 1.0) for w, p in words.items()} if reached > 0.0 else {}

    def _add_words_after(self, pending: dict) -> None:
        """Finish the strips whose typed word may be whole: one batched step per AFTER_BATCH of them."""
        keys = list(pending)
        after = Typed(0, "", "", " ", False)  # what Suggester._after_typed_word asks of a word model
        for at in range(0, len(keys), AFTER_BATCH):
            batch = keys[at: at + AFTER_BATCH]
            rows = [self.words[n].row for n, _ in batch]
            tokens = [self.suggester.tokenizer.encode(self.words[n].text[:j]) for n, j in batch]
            ranked = self.vocab.rank_all(self._step_from(rows, tokens), STRIP_SLOTS)  # as _after_typed_word asks
            for key, whole in zip(batch, ranked):
                strip, complete = pending[key]
                words = self._conditional(after, lambda fragment: whole)
                strip = strip + self.suggester._present({w: p * complete for w, p in words.items()}, after)
                self._strips[key] = _best(strip)

    def _step_from(self, rows: list[int], tokens: list[list[int]]) -> torch.Tensor:
        """Distributions [batch, vocab] after reading each `tokens[i]` from the state after stream[:rows[i] + 1]."""
        model, device = self.suggester.model, self.suggester.device
        with torch.inference_mode():
            states = self._states_at(rows)
            out = torch.empty(len(rows), self.suggester.tokenizer.vocab_size, device=device)
            single = [i for i, t in enumerate(tokens) if len(t) == 1]
            if single:
                ids = torch.tensor([tokens[i] for i in single], dtype=torch.long, device=device)  # [batch, 1]
                logits, _ = model(ids, select_state(states, torch.tensor(single, device=device)))  # [batch, 1, vocab]
                out[single] = next_token_probs(logits[:, -1])
            for i, t in enumerate(tokens):  # a word tokenizer gives one token; anything else reads alone
                if len(t) != 1:
                    state = select_state(states, torch.tensor([i], device=device))
                    _, logits = read_ids(model, t, state, self.suggester.chunk)
                    out[i] = next_token_probs(logits[None])[0]
        return out

    def _states_at(self, rows: list[int]):
        """The model states after stream[:row + 1] for rows of the current chunk, one stream each."""
        offsets = [row - self._chunk_start for row in rows]
        ids = self.stream[self._chunk_start: max(rows) + 1]
        if _has_plain_cells(self.suggester.model):
            along = states_along(self.suggester.model, ids, self._chunk_state)  # every position's state
            return select_state(along, torch.tensor(offsets, device=self.suggester.device))
        # Quantized or other cells: re-read the chunk in pieces that end at the rows (slow, exact).
        states, state, at = {}, self._chunk_state, 0
        for offset in sorted(set(offsets)):
            state, _ = read_ids(self.suggester.model, ids[at: offset + 1], state, self.suggester.chunk)
            states[offset], at = state, offset + 1
        return _cat_states([states[offset] for offset in offsets])


def _candidates(k: int) -> int:
    """How many words Suggester._rank keeps for k suggestions: room for punctuation dropped and cases merged."""
    return 4 * k + 8


class _SortedVocabulary:
    """A word model's vocabulary sorted by text (special tokens left out): a prefix is one range."""

    def __init__(self, tokenizer):
        special = tokenizer.special_ids
        ordered = sorted((w, i) for i, w in enumerate(tokenizer.pieces) if i not in special)
        self.texts = [w for w, _ in ordered]
        self.ids = np.array([i for _, i in ordered], dtype=np.int64)
        self.pieces = tokenizer.pieces
        self.special = torch.tensor(sorted(special), dtype=torch.long)
        self.special_set = set(special)
        self.ordinary = torch.ones(len(tokenizer.pieces)).index_fill(0, self.special, 0.0)  # [vocab]
        self.known = set(self.texts)

    def rank_all(self, probs: torch.Tensor, k: int) -> list[tuple[list[tuple[str, float]], float]]:
        """`rank(row, "", ...)` for every row of probs [rows, vocab] at once."""
        special = self.special.to(probs.device)
        wanted = min(_candidates(k), len(self.texts))
        top = probs.topk(min(wanted + len(special), probs.shape[1]), dim=1)  # special tokens dropped below
        # A sum over the ordinary words (not the total less the special tokens: <eos> may hold
        # nearly all the mass, and the difference would lose the rest's precision).
        masses = (probs @ self.ordinary.to(probs.device, probs.dtype)).tolist()  # [rows]
        pieces, skip = self.pieces, self.special_set
        ranked = []
        for ids, values, mass in zip(top.indices.tolist(), top.values.tolist(), masses):
            found = [(pieces[i], p) for i, p in zip(ids, values) if i not in skip]
            ranked.append((found[:wanted], mass))
        return ranked

    def has_case_variant(self, prefix: str) -> bool:
        """Whether the prefix, or a variant of it that Typed.fragments tries, is a word of the vocabulary."""
        if prefix in self.known:
            return True
        return prefix[:1].isupper() and (prefix[:1].lower() + prefix[1:] in self.known or prefix.lower() in self.known)

    def rank(self, probs: np.ndarray, prefix: str, top: int) -> tuple[list[tuple[str, float]], float]:
        """The `top` most likely words with `prefix` (as Suggester._rank), and the mass of all of them."""
        lo = bisect.bisect_left(self.texts, prefix)
        hi = bisect.bisect_left(self.texts, prefix + "\U0010ffff")
        ids = self.ids[lo:hi]
        matching = probs[ids]  # [matching]
        if len(ids) > top:
            best = np.argpartition(-matching, top - 1)[:top]
            ids, chosen = ids[best], matching[best]
        else:
            chosen = matching
        pieces = self.pieces
        return [(pieces[i], p) for i, p in zip(ids.tolist(), chosen.tolist())], float(matching.sum())


def _best(strip: list[Suggestion]) -> list[Suggestion]:
    """The end of Suggester.suggest_after: most likely first, one suggestion per word, k of them."""
    best: dict[str, Suggestion] = {}
    for s in sorted(strip, key=lambda s: (-s.probability, s.word, s.completion)):
        best.setdefault(s.word, s)
    return list(best.values())[:STRIP_SLOTS]


def _token_stream(tokenizer, text: str, is_unknown) -> tuple[list[int], list[_Word]]:
    """The token ids a session reads (START_TEXT, then the text), and each word's boundary row.

    A word's row is the stream position whose output predicts it: the last token of the
    context before it. Pieces (a word and the whitespace after it) encode on their own as
    they do inside the whole text, since a word tokenizer splits at whitespace.
    """
    stream = tokenizer.encode(START_TEXT)
    lead = len(text) - len(text.lstrip())
    stream += tokenizer.encode(text[:lead])
    words = []
    for match in WORD.finditer(text):
        word = match.group(1)
        words.append(_Word(match.start(), word, len(stream) - 1, not is_unknown(word)))
        stream += tokenizer.encode(match.group(0))
    return stream, words


def _cat_states(states: list):
    """Join single-stream states (tensor or tuple of tensors, streams on dim 1) into one batch."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=1)
    return tuple(torch.cat([s[i] for s in states], dim=1) for i in range(len(first)))


def _has_plain_cells(model) -> bool:
    """Whether `states_along` can follow the model: a stock one-way LSTM, GRU or tanh RNN with float weights."""
    rnn = getattr(model, "rnn", None)
    if type(rnn) not in (nn.LSTM, nn.GRU, nn.RNN) or not isinstance(getattr(rnn, "weight_ih_l0", None), torch.Tensor):
        return False
    return (rnn.batch_first and rnn.bias and not rnn.bidirectional and getattr(rnn, "proj_size", 0) == 0
            and getattr(rnn, "nonlinearity", "tanh") == "tanh")


FUSED_LAYERS = {nn.LSTM: torch.lstm, nn.GRU: torch.gru, nn.RNN: torch.rnn_tanh}


@torch.inference_mode()
def states_along(model, ids: list[int], state):
    """The model's state after each of `ids`, read from `state` (inference: no dropout).

    The stacked cells run one layer at a time, so every layer's output at every position is
    at hand; an LSTM's cell state is then rebuilt from its gates (c_t = f_t * c_{t-1} + i_t * g_t,
    PyTorch's gate order i, f, g, o). Returns the state with positions as streams: tensors
    [layers, time, hidden] (a pair (h, c) for an LSTM).
    """
    rnn = model.rnn
    weight = rnn.weight_ih_l0
    x = model.embedding(torch.tensor([ids], dtype=torch.long, device=weight.device))  # [1, time, emb]
    lstm = isinstance(rnn, nn.LSTM)
    state = state if state is not None else model.init_state(1)
    h0, c0 = (state[0], state[1]) if lstm else (state, None)  # [layers, 1, hidden]
    hs, cs = [], []
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        # Arguments: has_biases, num_layers, dropout, train, bidirectional, batch_first.
        if lstm:
            out, _, _ = torch.lstm(x, (h0[layer: layer + 1], c0[layer: layer + 1]), weights, True, 1, 0.0, False, False, True)
            cs.append(_cell_states(x[0], h0[layer, 0], c0[layer, 0], out[0], weights))
        else:
            out, _ = FUSED_LAYERS[type(rnn)](x, h0[layer: layer + 1], weights, True, 1, 0.0, False, False, True)
        hs.append(out[0])  # [time, hidden]
        x = out  # [1, time, hidden]
    h = torch.stack(hs)  # [layers, time, hidden]
    return (h, torch.stack(cs)) if lstm else h


def _cell_states(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, h: torch.Tensor, weights) -> torch.Tensor:
    """An LSTM layer's cell state [time, hidden] at every step, from its input x [time, in], its
    output h [time, hidden] and the state (h0, c0) [hidden] before the first step."""
    w_ih, w_hh, b_ih, b_hh = weights
    h_before = torch.cat([h0[None], h[:-1]])  # [time, hidden]: the output each step starts from
    gates = torch.addmm(b_ih, x, w_ih.t()) + torch.addmm(b_hh, h_before, w_hh.t())  # [time, 4 * hidden]
    i, f, g, _ = gates.chunk(4, 1)
    written = torch.sigmoid(i) * torch.tanh(g)  # [time, hidden]
    kept = torch.sigmoid(f)
    c = torch.empty_like(written)
    before = c0
    for t in range(len(c)):  # a cheap elementwise recurrence; the matrix products are all done above
        before = torch.addcmul(written[t], kept[t], before, out=c[t])
    return c
