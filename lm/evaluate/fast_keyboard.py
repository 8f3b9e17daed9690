"""The keyboard simulation of lm/evaluate/keyboard.py, fast: a word model reads the text in large chunks.

`keyboard_metrics` asks a session for the strip at every keystroke. A `SuggestionSession`
reads the model one word at a time (a call per word, as a keyboard must): 141 words/s for a
default-size WikiText-2 word model on 2 CPU cores (bench/NOTES.md, "Keyboard simulation
speed"). Here the text is known in advance, so a word model reads it in chunks of hundreds of
tokens, one pass of the cells each, and keeps what a session keeps at every word boundary:
the engine's `Mark`, the model's state and next-word logits before the word.

Each keystroke's strip is then the engine's own answer, `Suggester.suggest_after(mark, typed,
k)`, so the rule is the Suggester's by construction (the candidates, the words after a typed
word that may be whole, the presentation) and the metrics equal those of the session-based
simulation; only the floats may differ in the last bits, because the model reads a chunk in
one call instead of word by word.

How a chunk is read: a stock LSTM, GRU or tanh RNN with float weights runs layer by layer
over the whole chunk (`states_along`), which gives its state at every position, and the output
layer reads the top layer at the word boundaries only. Other models (int8 cells) read the
chunk in pieces that end at the word boundaries, a model call per word as a session reads;
int8 activations are quantized per call, so there the metrics can differ from the session's
by a keystroke now and then (a session reads groups of 32 words in one call). The words after
a typed word that may be whole take the engine's own model step from the mark, one keystroke
at a time (the old copy of the rule batched those steps; bench/NOTES.md has both speeds).
Char and subword models, and a suggester with a cache or an n-gram, still type through a
`SuggestionSession`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.text import START_TEXT
from ..model.state import map_state, select_state
from ..suggest.session import Mark, SuggestionSession
from ..suggest.typed import Suggestion, Typed, split_typed
from .keyboard import WORD, KeyboardMetrics, keyboard_metrics

CHUNK_FLOATS = 2**24  # floats of [words, vocab] boundary logits one chunk may hold (64 MB)
MAX_CHUNK = 2048  # tokens per chunk whatever the vocabulary


def fast_keyboard_metrics(suggester, text: str, is_unknown: Callable[[str], bool] = lambda word: word == "<unk>",
                          advance: Callable[[int], None] = lambda n: None) -> KeyboardMetrics:
    """`keyboard_metrics(suggester, text, session=SuggestionSession(suggester), ...)`, faster.

    Word models read the text in chunks (`ChunkedWordSession`); other suggesters type through
    a `SuggestionSession`.
    """
    if suggester.tokenizer.word_level and getattr(suggester, "cache", None) is None and getattr(suggester, "ngram", None) is None:
        session = ChunkedWordSession(suggester, text)
    else:
        session = SuggestionSession(suggester)
    return keyboard_metrics(suggester, text, session=session, is_unknown=is_unknown, advance=advance)


@dataclass
class _Word:
    """A whitespace word of the text and where the model stands before it."""

    start: int  # index of its first character in the text
    row: int  # position in the token stream whose output predicts the word


class ChunkedWordSession:
    """A session (`.type`, `.suggestions`) over a known text for a word-model Suggester.

    It only follows the true text, as the simulated typist does: the strip for the word at
    text position `start` with some letters typed is the Suggester's, asked from the mark at
    the word's boundary, and the marks are read chunk by chunk as the typist moves on.
    """

    def __init__(self, suggester, text: str):
        if not suggester.tokenizer.word_level:
            raise ValueError("ChunkedWordSession needs a word-level tokenizer")
        self.suggester, self.text = suggester, text
        self.pos = 0
        self.stream, self.words = _token_stream(suggester.tokenizer, text)
        self.by_start = {w.start: n for n, w in enumerate(self.words)}
        self.chunk = max(1, min(MAX_CHUNK, CHUNK_FLOATS // suggester.tokenizer.vocab_size))
        self._state = None  # the model after stream[:self._chunk_end]
        self._chunk_end = 0
        self._marks: dict[int, Mark] = {}  # word -> the mark before it, for the words of the last chunk read
        self._next_word = 0  # first word whose boundary is not read yet

    def type(self, chars: str) -> None:
        if not self.text.startswith(chars, self.pos):
            raise ValueError("ChunkedWordSession follows its text only")
        self.pos += len(chars)

    def suggestions(self, k: int | None = None) -> list[Suggestion]:
        """The Suggester's strip for the text typed so far (see `Suggester.suggest`)."""
        start = self.pos
        while start > 0 and not self.text[start - 1].isspace():
            start -= 1
        return self.suggester.suggest_after(self._mark(self.by_start[start]), self._typed(start), k)

    def _typed(self, start: int) -> Typed:
        """The Suggester's split of the text typed so far, whose last word starts at `start`."""
        before = start
        while before > 0 and self.text[before - 1] in " \t":
            before -= 1
        # From the last character before the word that is not a space or tab: enough to tell
        # a sentence start, as split_typed reads the whole text.
        window = self.text[max(before - 1, 0): self.pos]
        return split_typed(window, by_whitespace=True)

    def _mark(self, n: int) -> Mark:
        """The model before word n, reading chunks up to its boundary."""
        while self._next_word <= n:
            self._read_next_chunk()
        return self._marks[n]

    def _read_next_chunk(self) -> None:
        """Advance the model over the next chunk of the token stream; keep the marks of the words
        whose boundary lies in it."""
        start, end = self._chunk_end, min(self._chunk_end + self.chunk, len(self.stream))
        if start == end:
            raise ValueError("ChunkedWordSession was asked past the end of its text")
        first = last = self._next_word
        while last < len(self.words) and self.words[last].row < end:
            last += 1
        offsets = [w.row - start for w in self.words[first:last]]
        states, logits, self._state = _read_at(self.suggester, self.stream[start:end], self._state, offsets)
        self._marks = {n: Mark(self.words[n].start, n, states[i], logits[i]) for i, n in enumerate(range(first, last))}
        self._chunk_end, self._next_word = end, last


def _read_at(suggester, ids: list[int], state, offsets: list[int]):
    """Read `ids` from `state`, stopping at the given increasing offsets.

    Returns the state after ids[:offset + 1] for each offset (one stream each), the next-token
    logits there [offsets, vocab] (fp32 numpy), and the state after all of `ids`.
    """
    model = getattr(suggester.backend, "model", None)  # the torch backend's
    if model is None or not _has_plain_cells(model):
        return _read_in_pieces(suggester, ids, state, offsets)
    along = states_along(model, ids, state)  # every position's state
    device = suggester.backend.device
    with torch.inference_mode():
        top = (along[0] if isinstance(along, tuple) else along)[-1]  # [time, hidden]: the top layer's output
        at = torch.tensor(offsets, dtype=torch.long, device=device)
        logits = model.output(model.project(top[at][None]))[0].float().cpu().numpy()  # [offsets, vocab]
        end_state = select_state(along, torch.tensor([len(ids) - 1], device=device))
    states = [map_state(along, lambda t, o=o: t[:, o: o + 1].clone()) for o in offsets]
    return states, logits, end_state


def _read_in_pieces(suggester, ids: list[int], state, offsets: list[int]):
    """`_read_at` for any model: a model call per piece that ends at an offset (a call per word, as a session reads)."""
    states, logits, at = [], [], 0
    for offset in offsets:
        state, last = suggester.backend.read(ids[at: offset + 1], state)
        states.append(state)
        logits.append(last)
        at = offset + 1
    if at < len(ids):
        state, _ = suggester.backend.read(ids[at:], state)
    return states, logits, state


def _token_stream(tokenizer, text: str) -> tuple[list[int], list[_Word]]:
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
        words.append(_Word(match.start(), len(stream) - 1))
        stream += tokenizer.encode(match.group(0))
    return stream, words


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
