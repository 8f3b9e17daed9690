"""Typing with slips: a simulated typist types a text; keyboards predict, complete, correct and
decode swipes, side by side (`lm eval --typing`, and bench/typing.py on WikiText-2).

The typist (lm/evaluate/typist.py, a noise model that is not the decoder's own) types each word
of the text once by taps (with slips: neighbouring keys, letters left out or doubled, swaps,
missed spaces) and once by a swipe. Before each word, and while it is typed, the keyboards answer:

  (a) none: a plain keyboard. Completes a prefix with the most frequent words that start with
      it exactly; never corrects; no next-word strip, no swipes.
  (b) spell checker (when symspellpy is installed): (a), plus a context-free correction of every
      finished word it does not know: the nearest known word within two edits, the most frequent
      among equals (pyspellchecker's rule, computed by symspellpy), over the same word counts.
  (c) lm: lm's keyboard as users get it (lm/suggest/keyboard.py: the engine's strip with slips
      fixed, the correction on space, swipes; the model's prior with its cache and n-gram),
      given the touch points.

Measured over the words made of letters the layout has keys for (punctuation is context only;
the context is the true text before the word):
  - next-word top-1 / top-3: the word is on the strip before its first letter;
  - completion top-3 from clean and from noisy prefixes: for words of 4 letters or more,
    after the first half of the word (the typist's letters, slips included, for noisy);
  - auto-correction: precision (of the words changed, the share changed to the right word),
    recall (of the words typed wrong, the share that end right), F(beta=0.9) of the two, and
    the share of clean words wrongly changed;
  - swipe top-1 / top-3 for words of 2 letters or more;
  - ms per call, p50 / p99: a finished word's decision, a completion, a swipe (prior included).

This module imports no torch: the lm keyboard comes in loaded (`run_typing`), or `typing_paths`
loads it from a checkpoint as `lm eval` does.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..suggest.correct import Action, Correction
from ..suggest.index import CandidateIndex
from ..suggest.layout import Layout
from .config import EvalConfig
from .typist import NoiseConfig, Typist

BETA = 0.9  # F-beta: precision weighs a little more than recall (a clean word changed is the error users hate most)
K = 3  # strip slots
SEED = 0  # the typist's: the same text gives the same slips, run after run
# The figures of a keyboard, in the order tables show them: label, key of `Tally.summary()`.
FIGURES = [("next-word top-1", "next_top1"), ("next-word top-3", "next_top3"),
           ("completion top-3, clean prefix", "completion_top3_clean"),
           ("completion top-3, noisy prefix", "completion_top3_noisy"),
           ("auto-correction precision", "correction_precision"), ("auto-correction recall", "correction_recall"),
           (f"auto-correction F({BETA})", "correction_f"), ("clean words wrongly changed", "clean_changed"),
           ("swipe top-1", "swipe_top1"), ("swipe top-3", "swipe_top3")]


class Plain:
    """(a) A keyboard without correction: exact-prefix completion by frequency."""

    name = "none"
    swipes = False

    def __init__(self, index: CandidateIndex):
        self.index = index

    def next_words(self, context: str) -> list[str]:
        return []

    def complete(self, context: str, prefix: str, touches) -> list[str]:
        folded = prefix.casefold()
        return [w for w in self.index.most_frequent(folded, K + 1) if w != folded][:K]

    def finish(self, context: str, typed: str, touches) -> str:
        return typed

    def swipe(self, context: str, points) -> list[str]:
        return []

    def record(self, truth: str) -> None:
        """The true word of the last finished one (lm's keyboard keeps its decisions for bench's sweep)."""


class SpellChecker(Plain):
    """(b) A context-free spell checker over the same counts: an unknown word becomes the known
    word nearest to it (at most two edits), the most frequent one among equals. That is
    pyspellchecker's rule (Norvig's: known edits of one, else of two, by frequency), computed
    with symspellpy, which answers in a millisecond where pyspellchecker's generated edits take
    seconds for a long word."""

    name = "spell checker"

    def __init__(self, index: CandidateIndex):
        from symspellpy import SymSpell

        super().__init__(index)
        self.checker = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for word, count in index.counts.items():
            self.checker.create_dictionary_entry(word, count)

    def finish(self, context: str, typed: str, touches) -> str:
        from symspellpy import Verbosity

        if typed.casefold() in self.index:
            return typed
        found = self.checker.lookup(typed.casefold(), Verbosity.TOP, 2, transfer_casing=False)
        return found[0].term if found else typed


def spell_checker_installed() -> bool:
    """Whether symspellpy (a bench dependency: pip install 'lm[bench]') can be imported."""
    try:
        import symspellpy  # noqa: F401
    except ImportError:
        return False
    return True


class EngineKeyboard(Plain):
    """(c) lm's keyboard as users get it: a KeyboardSession of an lm.suggest.keyboard.Keyboard
    (the strip with fixed slips, the correction on space, swipes)."""

    swipes = True

    def __init__(self, keyboard, name: str = "lm"):
        """keyboard: a forgiving lm.suggest.keyboard.Keyboard (one with a lexicon)."""
        super().__init__(keyboard.decoder.index)
        self.session = keyboard.session()
        self.name = name
        self.records: list[tuple[str, Correction, bool]] = []  # (truth, decision, typed word known)
        self._last: Correction | None = None

    def _context(self, context: str) -> None:
        """The true text before the word, read without deciding on its last word."""
        self.session.correcting = False
        self.session.set_text(f"{context} " if context else "")
        self.session.correcting = True

    def next_words(self, context: str) -> list[str]:
        self._context(context)
        return [s.word for s in self.session.strip(K)]

    def complete(self, context: str, prefix: str, touches) -> list[str]:
        self._context(context)
        self.session.set_text(self.session.text + prefix, touches)
        return [s.word for s in self.session.strip(K) if not s.completion[:1].isspace()]

    def finish(self, context: str, typed: str, touches) -> str:
        self._context(context)
        self.session.set_text(self.session.text + typed, touches)
        # A word whose every letter was left out finishes nothing: there is no word to decide on.
        self._last = self.session.type(" ") or Correction(typed, Action.KEEP, "nothing typed")
        return self._last.word

    def record(self, truth: str) -> None:
        self.records.append((truth, self._last, self._last.typed.casefold() in self.index))

    def swipe(self, context: str, points) -> list[str]:
        self._context(context)
        return [s.word for s in self.session.swipe(points, K)]


@dataclass
class Tally:
    """Counts and timings of one keyboard."""

    next1: int = 0
    next3: int = 0
    words: int = 0
    clean_hits: int = 0
    noisy_hits: int = 0
    completions: int = 0
    changed: int = 0
    changed_right: int = 0
    typos: int = 0
    typos_fixed: int = 0
    clean: int = 0
    clean_changed: int = 0
    swipe1: int = 0
    swipe3: int = 0
    swipes: int = 0
    ms: dict = field(default_factory=lambda: {"finish": [], "complete": [], "swipe": []})

    def summary(self) -> dict:
        precision = _share(self.changed_right, self.changed)
        recall = _share(self.typos_fixed, self.typos)
        f = (1 + BETA**2) * precision * recall / (BETA**2 * precision + recall) if precision + recall else 0.0
        return {"next_top1": _share(self.next1, self.words), "next_top3": _share(self.next3, self.words),
                "completion_top3_clean": _share(self.clean_hits, self.completions),
                "completion_top3_noisy": _share(self.noisy_hits, self.completions),
                "correction_precision": precision, "correction_recall": recall, "correction_f": f,
                "clean_changed": _share(self.clean_changed, self.clean),
                "swipe_top1": _share(self.swipe1, self.swipes) if self.swipes else None,
                "swipe_top3": _share(self.swipe3, self.swipes) if self.swipes else None,
                "ms": {k: _percentiles(v) for k, v in self.ms.items() if v}}


def _share(n: int, total: int) -> float:
    return n / total if total else 0.0


def _percentiles(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"p50": ordered[len(ordered) // 2], "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def timed(tally: Tally, kind: str, call, *args):
    start = time.perf_counter()
    result = call(*args)
    tally.ms[kind].append((time.perf_counter() - start) * 1000)
    return result


def held_out_lines(text: str) -> list[list[str]]:
    """The tokens of each line of the held-out text (WikiText's headings left out)."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.strip().startswith("=")]


def typeable(token: str, layout: Layout) -> bool:
    return token.isalpha() and all(layout.key(ch) is not None and ch != " " for ch in token)


def _ignore(n: int) -> None:
    """No progress to show."""


def simulate(keyboards: list, lines: list[list[str]], typist: Typist, layout: Layout, max_words: int,
             advance: Callable[[int], None] = _ignore) -> dict:
    """Type the lines word by word through every keyboard; return the tallies and the typist's error rates.

    advance: called with 1 after each word typed (a progress bar's).
    """
    tallies = {kb.name: Tally() for kb in keyboards}
    typed_wrong = 0
    done = 0
    for tokens in lines:
        i = 0
        while i < len(tokens) and done < max_words:
            word = tokens[i]
            context = " ".join(tokens[:i])
            if not typeable(word, layout):
                i += 1
                continue
            truth, typed, touches = word, *typist.tap(word)
            if i + 1 < len(tokens) and typeable(tokens[i + 1], layout) and typist.misses_space():
                second, more = typist.tap(tokens[i + 1])
                truth, typed, touches = f"{word} {tokens[i + 1]}", typed + second, touches + more
            points = typist.swipe(word)
            typed_wrong += typed != truth
            for kb in keyboards:
                _score_word(kb, tallies[kb.name], context, word, truth, typed, touches, points)
            done += 1
            advance(1)
            i += 1 + truth.count(" ")
        if done >= max_words:
            break
    return {"tallies": tallies, "words": done, "typed_wrong": _share(typed_wrong, done)}


def _score_word(kb, tally: Tally, context: str, word: str, truth: str, typed: str, touches, points) -> None:
    # Before the word: the next-word strip.
    tally.words += 1
    strip = [w.casefold() for w in kb.next_words(context)]
    tally.next1 += strip[:1] == [word.casefold()]
    tally.next3 += word.casefold() in strip[:K]
    # Halfway through a long word: completions of the clean and of the typed letters.
    if len(word) >= 4:
        half = len(word) // 2
        tally.completions += 1
        clean = timed(tally, "complete", kb.complete, context, word[:half], None)
        noisy = timed(tally, "complete", kb.complete, context, typed[:half], touches[:half])
        tally.clean_hits += word.casefold() in [w.casefold() for w in clean]
        tally.noisy_hits += word.casefold() in [w.casefold() for w in noisy]
    # The word finished by a space: kept or corrected.
    result = timed(tally, "finish", kb.finish, context, typed, touches)
    kb.record(truth)
    tally_correction(tally, truth, typed, result)
    # The same word swiped.
    if kb.swipes and len(word) >= 2:
        decoded = [w.casefold() for w in timed(tally, "swipe", kb.swipe, context, points)]
        tally.swipes += 1
        tally.swipe1 += decoded[:1] == [word.casefold()]
        tally.swipe3 += word.casefold() in decoded[:K]


def tally_correction(tally: Tally, truth: str, typed: str, result: str) -> None:
    """Count one finished word: typed as `typed`, meant as `truth`, left by the keyboard as `result`."""
    changed, right = result.casefold() != typed.casefold(), result.casefold() == truth.casefold()
    tally.changed += changed
    tally.changed_right += changed and right
    if typed.casefold() != truth.casefold():
        tally.typos += 1
        tally.typos_fixed += right
    else:
        tally.clean += 1
        tally.clean_changed += changed


@dataclass
class TypingResult:
    """What `lm eval --typing` reports: each keyboard's figures (Tally.summary) on the same typed words."""

    words: int  # words typed (a missed space makes two words one)
    typed_wrong: float  # share of them typed with a slip
    seconds: float
    seed: int
    keyboards: dict[str, dict]  # keyboard name -> Tally.summary(), in the order of the columns

    @property
    def words_per_s(self) -> float:
        return self.words / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return {"words": self.words, "typed_wrong": self.typed_wrong, "seconds": self.seconds,
                "words_per_s": self.words_per_s, "seed": self.seed, "keyboards": self.keyboards}


def run_typing(keyboard, text: str, words: int = EvalConfig.typing_words, seed: int = SEED,
               noise: NoiseConfig | None = None, typist: Typist | None = None,
               advance: Callable[[int], None] = _ignore) -> TypingResult:
    """Type the first `words` words of a text with slips, through lm's keyboard beside a plain
    keyboard and (when symspellpy is installed) a spell checker over the keyboard's own lexicon.

    Args:
        keyboard: an lm.suggest.keyboard.Keyboard (Keyboard.load(lm.load(path))).
        noise, seed: the typist's slips and its seed; or `typist`, one made already.
        advance: called with 1 after each word typed.

    Raises:
        ConfigError: the keyboard has no lexicon, so it cannot correct.
    """
    if not keyboard.forgiving:
        raise ConfigError("this keyboard does not correct (its checkpoint has no lexicon, or correction is off), "
                          "so there is nothing to measure — train the checkpoint again with this lm, or drop --typing")
    index = keyboard.decoder.index
    keyboards = [Plain(index)] + ([SpellChecker(index)] if spell_checker_installed() else [])
    keyboards.append(EngineKeyboard(keyboard))
    typist = typist or Typist(keyboard.layout, noise, seed)
    start = time.perf_counter()
    out = simulate(keyboards, held_out_lines(text), typist, keyboard.layout, words, advance)
    return TypingResult(out["words"], out["typed_wrong"], time.perf_counter() - start, seed,
                        {name: tally.summary() for name, tally in out["tallies"].items()})


def typing_paths(paths: list[str], checkpoint: str | Path | None = None, config: EvalConfig | None = None,
                 progress=None) -> TypingResult:
    """`lm eval --typing`: type the first `config.typing_words` words of text files, folders or
    hf:NAME[:CONFIG] on a checkpoint's keyboard (the newest checkpoint when None), loaded with
    the evaluation's --int8, --cache and --ngram.

    progress: an lm.evaluate.evaluation.EvalProgress (a phase "typing", counted in words).
    """
    from ..checkpoint.loader import load
    from ..data.corpus import count_words
    from ..suggest.keyboard import Keyboard
    from .config import EvalProgress
    from .evaluation import read_eval_text

    config = config or EvalConfig()
    config.validate()
    progress = progress or EvalProgress()
    text, _ = read_eval_text(paths, config.encoding, config.split)
    predictor = load(checkpoint, "cpu" if config.int8 else config.device, int8=config.int8, cache=config.cache,
                     ngram=config.ngram)
    keyboard = Keyboard.load(predictor)
    progress.start("typing", min(config.typing_words, count_words(text)))
    return run_typing(keyboard, text, config.typing_words, advance=progress.advance)
