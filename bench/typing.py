"""The typing benchmark: a simulated typist types held-out text; keyboards predict, complete,
correct and decode swipes, side by side.

The typist (lm/evaluate/typist.py, a noise model that is not the decoder's own) types each
word of the held-out sentences once by taps (with slips: neighbouring keys, letters left out
or doubled, swaps, missed spaces) and once by a swipe. Before each word, and while it is
typed, three keyboards answer. The typist, the keyboards (a), (b), lm's (c) and the counting are
the library's (lm/evaluate/typing.py, which `lm eval --typing` runs on a user's text); this
script adds the WikiText-2 set-up, the decoder over a frequency prior, the sweep, the table
and the JSON.

  (a) none: a plain keyboard. Completes a prefix with the most frequent words that start with
      it exactly; never corrects; no next-word strip, no swipes.
  (b) spell checker: (a), plus a context-free correction of every finished word it does not
      know: the nearest known word within two edits, the most frequent among equals
      (pyspellchecker's rule, computed by symspellpy), over the same word counts.
  (c) lm: with -c CHECKPOINT, lm's keyboard as users get it (lm/suggest/keyboard.py: the
      engine's strip with slips fixed, the correction on space, swipes; the model's prior with
      its cache and n-gram), given the touch points. Without a checkpoint, the same decoder
      (lm/suggest/correct.py, gesture.py) over a context-free prior, word frequency.

By default the lexicon is the words of WikiText-2's training split and the typed text its raw
test split, where the rare words the tokenized split turned into <unk> (names, mostly) are
still there: about 7 % of the typed words are outside the lexicon, as a user's names would be, so
correcting them is an error the benchmark sees. The figures (next-word, completion from clean
and noisy prefixes, auto-correction precision / recall / F(0.9) and clean words changed,
swipes, ms per call) are those of `lm eval --typing`, defined in lm/evaluate/typing.py, whose
simulation this script runs; it adds the frequency-prior decoder, the sweep and the JSON.

    python bench/typing.py                             # WikiText-2 (raw test), frequency prior
    python bench/typing.py -c checkpoints/wiki --int8  # lm's prior from a word checkpoint
    python bench/typing.py --words 500 --threshold 0.8

Prints a table and JSON (also written to bench/results/typing.json).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file shares its name with the standard library's typing: its folder goes to the end of the
# path, or `import typing` anywhere after this point would load this script again.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(ROOT))

import lm.evaluate.typing as typing_eval
from lm.data.lexicon import Lexicon
from lm.evaluate.typing import FIGURES, K, Plain, SpellChecker, Tally, held_out_lines, simulate
from lm.evaluate.typing import tally_correction as _tally_correction  # the name tests/test_typing_bench.py counts with
from lm.evaluate.typist import NoiseConfig, Typist
from lm.suggest.channel import Channel, ChannelConfig
from lm.suggest.correct import CorrectConfig, Correction, Decoder, frequency_prior
from lm.suggest.gesture import GestureConfig, GestureDecoder
from lm.suggest.index import CandidateIndex
from lm.suggest.layout import Layout, load_layout

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2"
WIKITEXT_RAW = ROOT.parent / "shared" / "corpora" / "wikitext-2-raw"
SWEEP_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SWEEP_UNKNOWN = (-12.0, -16.0, -20.0, -24.0, -28.0, -32.0, -40.0)
SWEEP_WEIGHTS = (0.6, 0.8, 1.0, 1.2, 1.5)


class NoisyChannel(Plain):
    """(c) lm's decoder: channel with touch points, candidates from the index, a prior."""

    swipes = True

    def __init__(self, index: CandidateIndex, layout: Layout, correct: CorrectConfig, channel: ChannelConfig,
                 gesture: GestureConfig, prior_source):
        super().__init__(index)
        self.decoder = Decoder(index, Channel(channel, layout), correct)
        self.gestures = GestureDecoder(index, layout, gesture)
        self.prior_source = prior_source
        self.name = f"lm ({prior_source.name})"
        self.records: list[tuple[str, Correction, bool]] = []  # (truth, decision, typed word known)
        self._last: Correction | None = None

    def next_words(self, context: str) -> list[str]:
        return self.prior_source.next_words(context)

    def complete(self, context: str, prefix: str, touches) -> list[str]:
        prior = self.prior_source.prior(context, prefix)
        return [c.word for c in self.decoder.complete(prefix, prior, K, touches)]

    def finish(self, context: str, typed: str, touches) -> str:
        self._last = self.decoder.correct(typed, self.prior_source.prior(context, typed), touches)
        return self._last.word

    def record(self, truth: str) -> None:
        self.records.append((truth, self._last, self._last.typed.casefold() in self.index))

    def swipe(self, context: str, points) -> list[str]:
        return [c.word for c in self.gestures.decode(points, self.prior_source.prior(context, ""), K)]


class FrequencyPrior:
    """log P(w) from the word counts, whatever the context."""

    name = "frequency prior"

    def __init__(self, index: CandidateIndex):
        self.score = frequency_prior(index)
        self.top = [w for w, _ in index.counts.most_common(50) if w.isalpha()][:K]

    def prior(self, context: str, typed: str):
        return self.score

    def next_words(self, context: str) -> list[str]:
        return self.top


class EngineKeyboard(typing_eval.EngineKeyboard):
    """(c) with a checkpoint: lm's keyboard as users get it (lm/evaluate/typing.py), the model's prior
    with its cache and n-gram, the decoder's settings given here."""

    def __init__(self, checkpoint: str, int8: bool, correct: CorrectConfig):
        import lm
        from lm.suggest.keyboard import Keyboard

        keyboard = Keyboard.load(lm.load(checkpoint, int8=int8), correct=correct)
        super().__init__(keyboard, f"lm ({Path(checkpoint).name}{' int8' if int8 else ''})")


def sweep(records: list[tuple[str, Correction, bool]], thresholds, unknown_priors, prior_weights) -> list[dict]:
    """The decisions again under other settings, from the evidence kept (channel and prior of
    each candidate do not depend on them): precision, recall, F and clean words changed."""
    results = []
    for weight in prior_weights:
        for unknown in unknown_priors:
            decided = [(truth, result.typed, *_best(result, known, unknown, weight)) for truth, result, known in records]
            for threshold in thresholds:
                tally = Tally()
                for truth, typed, word, posterior in decided:
                    out = word if word is not None and posterior >= threshold else typed
                    _tally_correction(tally, truth, typed, out)
                summary = tally.summary()
                results.append({"prior_weight": weight, "unknown_prior": unknown, "threshold": threshold,
                                **{k: summary[k] for k in ("correction_precision", "correction_recall", "correction_f",
                                                           "clean_changed")}})
    return results


def misses(records: list[tuple[str, Correction, bool]]) -> dict[str, int]:
    """Why typos were not put right: the word was protected, its truth was no candidate, or another ranked first."""
    why = {"protected": 0, "not a candidate": 0, "ranked below": 0, "below threshold or typed word first": 0}
    for truth, result, _ in records:
        if result.typed.casefold() == truth.casefold() or result.word.casefold() == truth.casefold():
            continue
        words = [c.word.casefold() for c in result.candidates]
        if not result.candidates:
            why["protected"] += 1
        elif truth.casefold() not in words:
            why["not a candidate"] += 1
        elif words[0] != truth.casefold() and not result.candidates[0].typed:
            why["ranked below"] += 1
        else:
            why["below threshold or typed word first"] += 1
    return why


def _best(result: Correction, known: bool, unknown: float, weight: float) -> tuple[str | None, float]:
    """The best candidate other than the typed word, and its posterior (None when the typed word wins)."""
    if not result.candidates:
        return None, 0.0
    name = CorrectConfig.unknown_name_prior  # a capitalised unknown word keeps the decoder's own prior
    own = name if result.typed[:1].isupper() else unknown
    totals = [c.channel + weight * (own if c.typed and not known else c.prior) for c in result.candidates]
    top = max(totals)
    norm = top + math.log(sum(math.exp(t - top) for t in totals))
    best = max(range(len(totals)), key=lambda i: (totals[i], result.candidates[i].typed))
    chosen = result.candidates[best]
    return (None, 0.0) if chosen.typed else (chosen.word, math.exp(totals[best] - norm))


def run(train_text: str, test_text: str, max_words: int = 2000, seed: int = 0, checkpoint: str | None = None,
        int8: bool = False, correct: CorrectConfig | None = None, channel: ChannelConfig | None = None,
        gesture: GestureConfig | None = None, noise: NoiseConfig | None = None, spell_checker: bool = True) -> dict:
    """The benchmark over a training text (the word counts) and a held-out text (the lines typed)."""
    layout = load_layout()
    index = CandidateIndex.from_lexicon(Lexicon.from_text(train_text))
    keyboards = [Plain(index)] + ([SpellChecker(index)] if spell_checker else [])
    if checkpoint:
        keyboards.append(EngineKeyboard(checkpoint, int8, correct or CorrectConfig()))
    else:
        keyboards.append(NoisyChannel(index, layout, correct or CorrectConfig(), channel or ChannelConfig(),
                                      gesture or GestureConfig(), FrequencyPrior(index)))
    lines = held_out_lines(test_text)
    start = time.perf_counter()
    out = simulate(keyboards, lines, Typist(layout, noise, seed), layout, max_words)
    seconds = time.perf_counter() - start
    return {"words": out["words"], "typed_wrong": out["typed_wrong"], "words_per_s": out["words"] / max(seconds, 1e-9),
            "seed": seed, "correct": asdict(correct or CorrectConfig()), "prior": keyboards[-1].name,
            "keyboards": {name: t.summary() for name, t in out["tallies"].items()},
            "records": keyboards[-1].records}


def table(result: dict) -> str:
    names = list(result["keyboards"])
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in FIGURES:
        cells = [result["keyboards"][n][key] for n in names]
        lines.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells) + " |")
    for kind in ("finish", "complete", "swipe"):
        cells = [result["keyboards"][n]["ms"].get(kind) for n in names]
        lines.append(f"| ms per {kind}, p50 / p99 | " + " | ".join(
            "—" if v is None else f"{v['p50']:.2f} / {v['p99']:.2f}" for v in cells) + " |")
    return "\n".join(lines)


def sweep_table(results: list[dict], most_changed: float = 0.02, rows: int = 12) -> str:
    """The best settings by F among those that change at most `most_changed` of the clean words."""
    fit = sorted((r for r in results if r["clean_changed"] <= most_changed), key=lambda r: -r["correction_f"])
    lines = [f"Best settings with clean words changed <= {most_changed:.0%}:",
             "| threshold | unknown prior | prior weight | precision | recall | F | clean changed |", "|---" * 7 + "|"]
    lines += [f"| {r['threshold']} | {r['unknown_prior']} | {r['prior_weight']} | {r['correction_precision']:.3f} | "
              f"{r['correction_recall']:.3f} | {r['correction_f']:.3f} | {r['clean_changed']:.3f} |" for r in fit[:rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=WIKITEXT / "train.txt", help="text whose words are the lexicon")
    parser.add_argument("--test", type=Path, default=WIKITEXT_RAW / "wiki.test.raw",
                        help="held-out text to type (default: WikiText-2's raw test split, whose rare words and "
                             "names are still there, outside the lexicon, as a user's would be)")
    parser.add_argument("-c", "--checkpoint", help="lm's prior from this checkpoint (default: word frequency)")
    parser.add_argument("--int8", action="store_true", help="the checkpoint with int8 weights")
    parser.add_argument("--words", type=int, default=2000, help="words to type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=CorrectConfig.threshold)
    parser.add_argument("--unknown-prior", type=float, default=CorrectConfig.unknown_prior)
    parser.add_argument("--max-edits", type=int, default=CorrectConfig.max_edits)
    parser.add_argument("--prior-weight", type=float, default=CorrectConfig.prior_weight)
    parser.add_argument("--slip-shortlist", type=int, default=CorrectConfig.slip_shortlist,
                        help="completions that fix a slip: how many the prior scores")
    parser.add_argument("--sweep", action="store_true",
                        help="also re-decide the finished words over a grid of threshold, unknown prior and prior weight")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "typing.json")
    args = parser.parse_args(argv)
    for path in (args.train, args.test):
        if not path.is_file():
            parser.error(f"{path} does not exist — give --train and --test, or put the shared corpora beside the repository")
    correct = CorrectConfig(threshold=args.threshold, unknown_prior=args.unknown_prior, max_edits=args.max_edits,
                            slip_shortlist=args.slip_shortlist,
                            prior_weight=args.prior_weight)
    result = run(args.train.read_text(encoding="utf-8"), args.test.read_text(encoding="utf-8"), args.words,
                 args.seed, args.checkpoint, args.int8, correct)
    print(f"{result['words']} words typed, {result['typed_wrong']:.1%} of them with a slip; "
          f"prior: {result['prior']}; {result['words_per_s']:.0f} words/s")
    print(table(result))
    records = result.pop("records")
    result["misses"] = misses(records)
    print("typos lm left wrong:", ", ".join(f"{n} {why}" for why, n in result["misses"].items()))
    if args.sweep:
        result["sweep"] = sweep(records, SWEEP_THRESHOLDS, SWEEP_UNKNOWN, SWEEP_WEIGHTS)
        print(sweep_table(result["sweep"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
