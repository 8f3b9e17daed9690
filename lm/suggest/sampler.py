"""The sampler: a model plus the hidden state of the text read so far.

Text is read once; every token after it costs one step of the model, never a re-read of the
prefix (as in pytorch/examples' word_language_model generate.py). The sampler drives
generation, the REPL and suggestions.

Decoding is a chain of small functions on [batch, vocab] logits, one step each (the steps of
nanoGPT's `generate`): repetition guard, temperature, top-k, top-p, then a draw or argmax.
"""
from __future__ import annotations

import codecs
import secrets
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..backend.base import as_backend
from ..data.text import START_TEXT, count_word_starts
from .config import HISTORY_LIMIT, GenerationConfig

DRAW_BLOCK = 256  # weights summed per block when drawing a token (see inverse_cdf)

SENTENCE_MARKS = (".", "!", "?", "…")
CLOSERS = "\"'”’)]»"


# One decoding step each, on [batch, vocab] logits.

def repetition_guard(logits: np.ndarray, recent: np.ndarray, penalty: float) -> np.ndarray:
    """Make recently seen tokens less likely (CTRL, Keskar et al. 2019): positive logits are
    divided by the penalty and negative ones multiplied, so both move towards unlikely.

    Args:
        logits: [batch, vocab].
        recent: [batch, window] ids of the tokens to penalise (repeats allowed).
    """
    if penalty == 1 or recent.size == 0:
        return logits
    rows = np.arange(len(logits))[:, None]
    scores = logits[rows, recent]  # [batch, window]
    guarded = logits.copy()
    guarded[rows, recent] = np.where(scores > 0, scores / penalty, scores * penalty)
    return guarded


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Sharpen (below 1) or flatten (above 1) the distribution; temperature must be above 0."""
    return logits / temperature


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep exactly the k highest logits of each row (-inf elsewhere); k=0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]  # [batch, k]
    kept = np.full_like(logits, -np.inf)
    np.put_along_axis(kept, top, np.take_along_axis(logits, top, -1), -1)
    return kept


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Nucleus sampling (Holtzman et al. 2020): keep the most likely tokens until their
    probability reaches p (-inf elsewhere); the most likely token always stays."""
    if p >= 1:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")  # [batch, vocab]
    ranked = np.take_along_axis(logits, order, -1)
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(-1, keepdims=True)
    # A token is dropped when the tokens ranked above it already hold p.
    drop = probs.cumsum(-1) - probs >= p
    kept = np.empty_like(logits)
    np.put_along_axis(kept, order, np.where(drop, -np.inf, ranked), -1)
    return kept


def next_tokens(logits: np.ndarray, recent: np.ndarray, config: GenerationConfig,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """One decoding step: [batch, vocab] logits -> [batch] token ids."""
    logits = repetition_guard(logits, recent, config.repetition_penalty)
    if config.temperature == 0:
        return logits.argmax(-1)
    logits = apply_temperature(logits, config.temperature)
    logits = top_p_filter(top_k_filter(logits, config.top_k), config.top_p)
    return draw(logits, rng or np.random.default_rng())


def draw(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row, with probability softmax(logits) (a token of probability 0 is never drawn)."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return np.array([inverse_cdf(row, u) for row, u in zip(probs, rng.random(len(probs)))], np.int64)


def inverse_cdf(weights: np.ndarray, u: float) -> int:
    """The index at which the running sum of `weights` first passes u times their total.

    Blocks first, then the weights of one block: a running sum over a word model's whole
    vocabulary was most of the time a token took to draw (73 µs of 286 for 33k words).
    """
    if len(weights) <= DRAW_BLOCK:
        return _first_past(weights, u * weights.sum(dtype=np.float64))
    whole = len(weights) // DRAW_BLOCK * DRAW_BLOCK
    sums = weights[:whole].reshape(-1, DRAW_BLOCK).sum(1, dtype=np.float64)
    if whole < len(weights):
        sums = np.append(sums, weights[whole:].sum(dtype=np.float64))
    running = np.cumsum(sums)
    at = u * running[-1]
    block = min(int(np.searchsorted(running, at, side="right")), len(sums) - 1)
    while sums[block] == 0.0:  # rounding past the last block with weight
        block -= 1
    start = block * DRAW_BLOCK
    return start + _first_past(weights[start: start + DRAW_BLOCK], at - (running[block - 1] if block else 0.0))


def _first_past(weights: np.ndarray, at: float) -> int:
    """The first index whose running sum of `weights` passes `at` (never one of weight 0)."""
    i = min(int(np.searchsorted(np.cumsum(weights, dtype=np.float64), at, side="right")), len(weights) - 1)
    while weights[i] == 0.0:  # rounding past the last index with weight
        i -= 1
    return i


class TextStream:
    """Turns token ids into text as they come, for any tokenizer kind.

    Byte pieces are held back until they form complete UTF-8 (the tokenizer says what bytes
    each token adds, word spacing included). Concatenated, the pieces equal
    `tokenizer.decode(ids)` for ids that start a line.
    """

    def __init__(self, tokenizer, last_char: str = START_TEXT):
        self.tokenizer = tokenizer
        self.lead = last_char  # the character before the stream's first piece
        self.last_char = last_char  # the character before the next piece
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token: int, commit: bool = True) -> str:
        """The text this token adds (possibly ""); with commit=False nothing changes."""
        saved = self._decoder.getstate()
        text = self._decoder.decode(self.tokenizer.token_bytes(token, self.last_char))
        if not commit:
            self._decoder.setstate(saved)
        elif text:
            self.last_char = text[-1]
        return text

    def flush(self) -> str:
        """Whatever an unfinished byte sequence stands for (replacement characters)."""
        return self._decoder.decode(b"", final=True)


@dataclass
class Piece:
    """One generated token of one sample, and the text it adds ("" while a character is incomplete)."""

    index: int  # which sample
    token: int
    text: str


@dataclass
class Sample:
    """One generated continuation."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    words: int = 0
    finish_reason: str | None = None  # max_tokens, max_words, stop, sentence, paragraph; None while running

    @property
    def stop_reason(self) -> str | None:
        """The finish reason under its former name, for code written before it was renamed."""
        return self.finish_reason

    @stop_reason.setter
    def stop_reason(self, reason: str | None) -> None:
        self.finish_reason = reason

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": len(self.ids), "words": self.words, "finish_reason": self.finish_reason}


class Generation:
    """A running generation. Iterate it for `Piece`s as they are produced; `samples` fills as it goes."""

    def __init__(self, sampler: "Sampler", config: GenerationConfig):
        config.validate()
        self.config = config
        self.samples = [Sample() for _ in range(config.n)]
        # A fresh seed when none is given, kept so a run can be repeated (53 bits: exact in JSON clients).
        self.seed = secrets.randbits(53) if config.seed is None else config.seed
        self.rng = np.random.default_rng(self.seed)
        self._pieces = sampler._generate(config, self.samples, self.rng)

    def __iter__(self) -> Iterator[Piece]:
        return self._pieces

    def run(self) -> list[Sample]:
        """Generate to the end; returns the samples."""
        for _ in self._pieces:
            pass
        return self.samples

    def to_dict(self) -> dict:
        return {"seed": self.seed, "samples": [s.to_dict() for s in self.samples]}


class Sampler:
    """Carries the model's state across calls.

    Attributes:
        backend: what steps the model (lm.backend: ONNX Runtime or PyTorch).
        state: what the cell carries after the text fed so far (None before any text).
        logits: [vocab] raw next-token logits after the last token fed (None before any), float32.
        recent: the last token ids fed or generated (for the repetition guard).
        last_char: the last character of the text so far (word spacing and word counts).
    """

    def __init__(self, model, tokenizer, state=None, logits: np.ndarray | None = None):
        """
        Args:
            model: a backend (lm.load(path).backend), or a PyTorch LanguageModel.
        """
        self.backend = as_backend(model, tokenizer.vocab_size)
        self.tokenizer = tokenizer
        self.state = state
        self.logits = logits
        self.recent: list[int] = []
        self.last_char = START_TEXT

    def feed_ids(self, ids: list[int]) -> np.ndarray | None:
        """Advance the state over token ids; returns the next-token logits [vocab]."""
        if not ids:
            return self.logits
        self.state, self.logits = self.backend.read(ids, self.state)
        self.recent = (self.recent + list(ids))[-HISTORY_LIMIT:]
        self.last_char = self.tokenizer.decode(ids[-4:])[-1:] or self.last_char
        return self.logits

    def feed(self, text: str) -> np.ndarray | None:
        """Advance the state over a text; returns the next-token logits [vocab]."""
        logits = self.feed_ids(self.tokenizer.encode(text))
        self.last_char = text[-1:] or self.last_char  # exact even where decode would differ
        return logits

    def copy(self) -> "Sampler":
        """An independent sampler at the same point, to branch from the same context."""
        # States and logits are never changed in place (each step makes new ones): sharing is safe.
        twin = Sampler(self.backend, self.tokenizer, self.state, self.logits)
        twin.recent, twin.last_char = list(self.recent), self.last_char
        return twin

    def reset(self) -> None:
        """Forget the context."""
        self.state, self.logits = None, None
        self.recent, self.last_char = [], START_TEXT

    def generate(self, config: GenerationConfig | None = None) -> Generation:
        """Continue the text fed so far (the newline context if none), streaming as it goes.

        With n=1 the sampler follows what it writes, token by token, so a later feed or
        generate continues the generated text, even after the caller stops early; copy()
        first to branch. With n>1 the sampler stays where it is; each Sample keeps its ids.

        Raises:
            ConfigError: a setting is out of range.
        """
        return Generation(self, config or GenerationConfig())

    def _generate(self, config: GenerationConfig, samples: list[Sample], rng) -> Iterator[Piece]:
        """One model step per token for all live streams; a finished stream leaves the batch."""
        if self.logits is None:
            self.feed(START_TEXT)
        n, follow = config.n, config.n == 1
        backend = self.backend
        state = backend.select(self.state, np.zeros(n, np.int64))  # n copies of the one stream
        logits = np.repeat(self.logits[None], n, 0)  # [n, vocab]
        window = self.recent[-config.repetition_window:]
        recent = np.repeat(np.array(window, np.int64).reshape(1, -1), n, 0)  # [n, window]
        streams = [TextStream(self.tokenizer, self.last_char) for _ in range(n)]
        active = list(range(n))  # the sample each batch row belongs to
        while active:
            tokens = next_tokens(logits, recent, config, rng).tolist()
            outcomes = [self._take(samples[i], streams[i], t, config) for i, t in zip(active, tokens)]
            # Feed the tokens that were emitted and go on (or that the sampler follows).
            fed = [r for r, (text, stop) in enumerate(outcomes) if text is not None and (stop is None or follow)]
            if fed:
                rows = np.array(fed, np.int64)
                x = np.array([[tokens[r]] for r in fed], np.int64)  # [fed, 1]
                if len(fed) < len(active):
                    state, recent = backend.select(state, rows), recent[rows]
                logits, state = backend.step(x, state)  # [fed, vocab]
                recent = np.concatenate([recent, x], 1)[:, -config.repetition_window:]  # [fed, <=window]
                if follow:
                    self._follow(state, logits[0], tokens[0], streams[0])
            for r, (text, stop) in enumerate(outcomes):
                if text is not None:
                    yield Piece(active[r], tokens[r], text)
            going = [j for j, r in enumerate(fed) if outcomes[r][1] is None]
            if going and len(going) < len(fed):
                keep = np.array(going, np.int64)
                state, logits, recent = backend.select(state, keep), logits[keep], recent[keep]
            active = [active[fed[j]] for j in going]

    def _follow(self, state, logits: np.ndarray, token: int, stream: TextStream) -> None:
        """Move this sampler to the end of the single sample being generated."""
        self.state, self.logits = state, logits
        self.recent = (self.recent + [token])[-HISTORY_LIMIT:]
        self.last_char = stream.last_char

    @staticmethod
    def _take(sample: Sample, stream: TextStream, token: int, config: GenerationConfig):
        """Add a drawn token to a sample: (text it added or None if refused, reason to stop or None)."""
        before = stream.last_char
        text = stream.push(token, commit=False)
        words = sample.words + count_word_starts(before, text)
        if config.max_words is not None and words > config.max_words:
            sample.finish_reason = "max_words"  # the token would start one word too many: not emitted
            return None, sample.finish_reason
        stream.push(token)
        sample.ids.append(token)
        sample.text += text
        sample.words = words
        sample.finish_reason = _finish_reason(sample, text, stream.lead, config)
        return text, sample.finish_reason


def _finish_reason(sample: Sample, text: str, lead: str, config: GenerationConfig) -> str | None:
    """Why the sample ends after adding `text` (lead: the character before the sample)."""
    if any(_completes(sample.text, text, s) for s in config.stop):
        return "stop"
    if config.stop_at is not None and "\n" in text:
        before = sample.text[: len(sample.text) - len(text) + text.index("\n")]
        if before.strip():  # a line the sample wrote something on has ended
            return config.stop_at
    if config.stop_at == "sentence" and text.rstrip().rstrip(CLOSERS).endswith(SENTENCE_MARKS):
        if any(ch.isalnum() for ch in lead + sample.text):
            return "sentence"
    if len(sample.ids) >= config.token_limit:
        return "max_tokens"
    return None


def _completes(whole: str, added: str, stop: str) -> bool:
    """Whether `stop` occurs in `whole` ending inside its last `added` characters."""
    return whole.find(stop, max(0, len(whole) - len(added) - len(stop) + 1)) >= 0


def generate(model, tokenizer, prompt: str = "", config: GenerationConfig | None = None) -> Generation:
    """Continue a prompt, read after the newline context (with no prompt, start a new text).

    Returns a Generation: iterate it for pieces as they come, or call `.run()` for the samples.

    Raises:
        ConfigError: a setting is out of range.
    """
    config = config or GenerationConfig()
    config.validate()
    sampler = Sampler(model, tokenizer)
    sampler.feed(START_TEXT + prompt)
    return sampler.generate(config)
