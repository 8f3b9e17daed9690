"""Evaluation: negative log-likelihood over a text with the state carried through it.

Results are reported in units that compare across tokenizers: loss and perplexity per token,
perplexity per whitespace word and bits per character, all from the same total NLL. The
keyboard metrics (top-k next-word accuracy, keystroke savings) come from lm/keyboard.py.

Reading a text in parallel streams
----------------------------------
The standard is one stream read from the first token to the last with the state carried
(`batch=1`): that result is exact. Several streams go faster, but a stream that starts in the
middle of the text would start from a zero state and score its first tokens with almost no
context. So every stream after the first first reads `overlap` tokens of the text before its
cut point without scoring them (priming), then scores its own part:

    text:    | a b c d e f g h i j k l m n o p q r s t u v w x |
    stream 0   a b c d e f g h                                   scores a..h
    stream 1           (e f g h) i j k l m n o p                 primes on e..h, scores i..p
    stream 2                           (m n o p) q r s t u v w x primes on m..p, scores q..x

Every token is scored exactly once, the ragged tail included. What is approximate: a primed
stream's state at its cut point is the state after `overlap` tokens from zero, not after the
whole text before it. An LSTM forgets its start state within a few hundred tokens, so with the
default overlap the total agrees with one stream to float tolerance (tests/test_evaluate.py
checks it); `overlap=0` gives the classic zero-state cut, faster and a little pessimistic.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ._util import pick_device
from .checkpoint import load_checkpoint
from .corpus import HF_PREFIX, count_words, expand_paths, load_hf_dataset, read_text, token_ids
from .errors import ConfigError, CorpusError
from .keyboard import KeyboardMetrics, keyboard_metrics, leading_words
from .model import detach_state, quantize_int8
from .suggest import Suggester, SuggestionSession
from .tokenizer import UNK

DEFAULT_OVERLAP = 256  # priming tokens per stream; an LSTM's memory of its start state is shorter
SPLITS = ("test", "valid", "train")


@dataclass
class LossMetrics:
    """Likelihood of a text under a model, in comparable units."""

    loss: float  # mean NLL per token, nats
    tokens: int  # tokens scored
    chars: int  # characters of the text those tokens cover
    words: int  # whitespace words of that text

    @property
    def perplexity(self) -> float:
        return _safe_exp(self.loss)

    @property
    def word_perplexity(self) -> float:
        return _safe_exp(self.loss * self.tokens / max(self.words, 1))

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / max(self.chars, 1) / math.log(2)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "perplexity": self.perplexity,
            "word_perplexity": self.word_perplexity,
            "bits_per_char": self.bits_per_char,
        }


@torch.inference_mode()
def total_nll(
    model,
    ids: np.ndarray,
    batch: int = 16,
    bptt: int = 256,
    autocast=None,
    overlap: int = DEFAULT_OVERLAP,
    first: int = 1,
    advance: Callable[[int], None] | None = None,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed NLL of ids[first:] (a device scalar, no host sync) and the number of tokens scored.

    Each token is predicted from all the ids before it (ids[:first] are context, read but not
    scored). The text is read in up to `batch` primed streams, windows of `bptt` tokens at a
    time; see the module docstring for what is exact and what is approximate.

    Args:
        overlap: tokens each stream after the first reads unscored before its cut point.
        first: index of the first scored token (at least 1: token 0 has no context).
        advance: called with the number of tokens scored after each window.
        vocab_size: when given, windows are shortened so that their logits stay within
            LOGITS_BUDGET_BYTES (large vocabularies).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    read, score, end = stream_plan(len(ids), first, batch, overlap)
    if vocab_size:
        bptt = window_for_budget(bptt, len(read), vocab_size)
    total = torch.zeros((), device=device, dtype=torch.float64)
    state = None
    for j in range(0, int((end - read).max(initial=0)), bptt):
        inputs, targets, scored = _window(ids, read, score, end, j, bptt)
        with autocast or nullcontext():
            nll, state = token_nll(model, inputs.to(device), targets.to(device), state)  # [batch, time]
        total += torch.where(scored.to(device), nll, 0.0).double().sum()
        state = detach_state(state)
        if advance is not None:
            advance(int(scored.sum()))
    model.train(was_training)
    return total, int((end - score).sum())


def token_nll(model, inputs: torch.Tensor, targets: torch.Tensor, state):
    """NLL of each target [batch, time] and the new state, through the model's own `token_nll`
    where it has one (an adaptive softmax scores targets without the full distribution), else
    from the logits of `model(ids, state)`, so any model with that contract can be evaluated."""
    if hasattr(model, "token_nll"):
        return model.token_nll(inputs, targets, state)
    logits, state = model(inputs, state)  # [batch, time, vocab]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape), state


LOGITS_BUDGET_BYTES = 64 * 2**20


def window_for_budget(bptt: int, streams: int, vocab: int) -> int:
    """The window length that keeps one window's fp32 logits within LOGITS_BUDGET_BYTES.

    With a 33k-word vocabulary, 16 streams of 256 tokens would hold 545 MB of logits (and
    as much again for their log-softmax); shorter windows give the same sums.
    """
    return max(1, min(bptt, LOGITS_BUDGET_BYTES // (streams * vocab * 4)))


def stream_plan(length: int, first: int, batch: int, overlap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each stream starts reading, starts scoring and stops, as input positions.

    Input position i predicts token i+1, so scoring ids[first:] means scoring input positions
    first-1 .. length-2. Streams are sized so that priming plus scoring is about the same
    length in each (little padding), and each scores at least `overlap` tokens (priming at most
    doubles the work). Returns three int arrays [streams]: read, score, end (end exclusive).
    """
    start, stop = max(first, 1) - 1, max(length - 1, 0)
    todo = stop - start
    streams = max(1, min(batch, todo // max(overlap, 1)))
    per_stream = -(-(todo + start + (streams - 1) * overlap) // streams)  # ceil
    cuts = [start]
    for s in range(streams):
        primed = start if s == 0 else min(overlap, cuts[-1])
        cuts.append(min(stop, cuts[-1] + max(per_stream - primed, 1)))
    cuts[-1] = stop  # the ragged tail belongs to the last stream
    score = np.array(cuts[:-1], dtype=np.int64)
    end = np.array(cuts[1:], dtype=np.int64)
    read = np.maximum(score - overlap, 0)
    read[0] = 0
    return read, score, end


def _window(ids, read, score, end, j: int, bptt: int):
    """Inputs, targets and the scored mask of window j..j+bptt of every stream, each [streams, time]."""
    position = read[:, None] + np.arange(j, j + bptt)[None, :]  # [streams, time]
    active = position < end[:, None]
    columns = int(active.any(axis=0).nonzero()[0].max()) + 1  # trim the padding-only tail
    position, active = position[:, :columns], active[:, :columns]
    scored = active & (position >= score[:, None])
    position = np.minimum(position, len(ids) - 2)  # padding reads a real token; it is never scored
    inputs = torch.from_numpy(np.asarray(ids[position], dtype=np.int64))
    targets = torch.from_numpy(np.asarray(ids[position + 1], dtype=np.int64))
    return inputs, targets, torch.from_numpy(scored)


def evaluate_loss(
    model, ids: np.ndarray, chars: int, words: int, batch: int = 16, bptt: int = 256, autocast=None,
    overlap: int = DEFAULT_OVERLAP, vocab_size: int | None = None,
) -> LossMetrics:
    """Loss metrics of the model on a token array whose text has `chars` characters and `words` words.

    Every token but the first (which has no context) is scored; character and word counts
    are scaled to that share.
    """
    total, scored = total_nll(model, ids, batch, bptt, autocast, overlap, vocab_size=vocab_size)
    share = scored / max(len(ids), 1)
    loss = total.item() / max(scored, 1)
    return LossMetrics(loss=loss, tokens=scored, chars=round(chars * share), words=round(words * share))


@dataclass
class EvalConfig:
    """How to evaluate. CLI flags share these names; the defaults live only here."""

    batch: int = 16  # parallel streams (1: the exact single stream)
    bptt: int = 256  # tokens per window
    overlap: int = DEFAULT_OVERLAP  # priming tokens per stream after the first
    max_words: int | None = None  # evaluate only the first N whitespace words
    keyboard: bool = True  # also measure top-k accuracy and keystroke savings
    keyboard_words: int = 2000  # keyboard metrics on the first N words (they are slow)
    split: str = "test"  # which split of an hf: dataset
    encoding: str = "utf-8"
    device: str = "auto"
    int8: bool = False  # int8 weights on the CPU, as lm suggest, generate and repl run them

    def validate(self) -> None:
        for name in ("batch", "bptt", "keyboard_words"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        if self.overlap < 0:
            raise ConfigError(f"--overlap must be 0 or more, not {self.overlap}")
        if self.max_words is not None and self.max_words <= 0:
            raise ConfigError(f"--max-words must be positive, not {self.max_words} — leave it out to evaluate everything")
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.int8 and self.device not in ("auto", "cpu"):
            raise ConfigError(f"--int8 runs on the CPU, not --device {self.device} — drop one of the two")


@dataclass
class EvalResult:
    """What `lm eval` reports: likelihood metrics, keyboard metrics and speed."""

    checkpoint: str
    sources: list[str]
    total_words: int  # whitespace words in the input, before --max-words
    loss: LossMetrics
    seconds: float  # time spent on the likelihood pass
    keyboard: KeyboardMetrics | None = None
    keyboard_seconds: float = 0.0
    device: str = "cpu"
    config: EvalConfig = field(default_factory=EvalConfig)

    @property
    def sampled(self) -> bool:
        return self.loss.words < self.total_words

    @property
    def words_per_s(self) -> float:
        return self.loss.words / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        keyboard = None
        if self.keyboard is not None:
            keyboard = {**self.keyboard.to_dict(), "seconds": self.keyboard_seconds}
        return {
            "checkpoint": self.checkpoint, "sources": self.sources, "device": self.device,
            "total_words": self.total_words, "sampled": self.sampled, **self.loss.to_dict(),
            "seconds": self.seconds, "words_per_s": self.words_per_s, "keyboard": keyboard,
            "config": asdict(self.config),
        }


class EvalProgress:
    """Receives evaluation events. This base class shows nothing: it is the quiet progress."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


def evaluate_paths(
    paths: list[str], checkpoint: str | Path | None = None, config: EvalConfig | None = None,
    progress: EvalProgress | None = None,
) -> EvalResult:
    """Evaluate a checkpoint (the newest when None) on text files, folders or hf:NAME[:CONFIG].

    Raises:
        CorpusError: a path is missing or holds no text.
        CheckpointError: the checkpoint is missing or damaged.
    """
    config = config or EvalConfig()
    config.validate()
    text, sources = read_eval_text(paths, config.encoding, config.split)
    ckpt = load_checkpoint(checkpoint, "cpu" if config.int8 else pick_device(config.device))
    model = quantize_int8(ckpt.model) if config.int8 else ckpt.model
    result = evaluate_text(model, ckpt.tokenizer, text, config, progress)
    result.checkpoint, result.sources = str(ckpt.path), sources
    return result


def evaluate_text(model, tokenizer, text: str, config: EvalConfig | None = None, progress: EvalProgress | None = None) -> EvalResult:
    """Likelihood metrics over the whole text (or its first max_words words) and keyboard metrics on a sample."""
    config = config or EvalConfig()
    config.validate()
    progress = progress or EvalProgress()
    total_words = count_words(text)
    if config.max_words is not None:
        text = leading_words(text, config.max_words)
    # Score the text's first token too: after a newline, the natural start-of-text context.
    context = tokenizer.encode("\n")
    ids = np.concatenate([np.asarray(context, dtype=np.int64), token_ids(text, tokenizer)])  # [context + text]
    progress.start("loss", len(ids) - len(context))
    started = time.perf_counter()  # speed counts the model, not the (cached) tokenization
    total, scored = total_nll(model, ids, config.batch, config.bptt, overlap=config.overlap,
                              first=len(context), advance=progress.advance, vocab_size=tokenizer.vocab_size)
    loss = LossMetrics(loss=total.item() / max(scored, 1), tokens=scored, chars=len(text), words=count_words(text))
    result = EvalResult("", [], total_words, loss, time.perf_counter() - started,
                        device=str(next(model.parameters()).device), config=config)
    if config.keyboard:
        started = time.perf_counter()
        result.keyboard = text_keyboard_metrics(model, tokenizer, leading_words(text, config.keyboard_words), progress)
        result.keyboard_seconds = time.perf_counter() - started
    return result


def text_keyboard_metrics(model, tokenizer, text: str, progress: EvalProgress) -> KeyboardMetrics:
    """Keyboard metrics of the model's own suggester, typed through an incremental session."""
    suggester = Suggester(model, tokenizer)
    progress.start("keyboard", count_words(text))
    return keyboard_metrics(suggester, text, session=SuggestionSession(suggester),
                            is_unknown=unknown_word_test(tokenizer), advance=progress.advance)


def unknown_word_test(tokenizer) -> Callable[[str], bool]:
    """Whether a word is <unk> to the tokenizer: the literal <unk> (as in WikiText) or encoded with it."""
    return lambda word: word == UNK or tokenizer.unk_id in tokenizer.encode(word)


def read_eval_text(paths: list[str], encoding: str = "utf-8", split: str = "test") -> tuple[str, list[str]]:
    """The whole text of files, folders (their text files) and hf:NAME[:CONFIG] datasets, and its sources."""
    if not paths:
        raise CorpusError("no text given — pass a text file, a folder or hf:NAME")
    parts, sources = [], []
    for raw in paths:
        if raw.startswith(HF_PREFIX):
            text = getattr(load_hf_dataset(raw), split)
            if not text.strip():
                raise CorpusError(f"{raw} has no {split} text — pick another --split")
            parts.append(text)
            sources.append(f"{raw} ({split})")
            continue
        for path in expand_paths([raw]):
            text = read_text(path, encoding)
            parts.append(text if text.endswith("\n") else text + "\n")
            sources.append(str(path))
    return "".join(parts), sources


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
