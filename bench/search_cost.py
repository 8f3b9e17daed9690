"""What a keystroke's suggestion search costs, in process: the work `lm serve` does per request.

One `SuggestionSession` types held-out text key by key (a new session every --document-chars
characters, as the load benchmark's typists do) and asks for the strip after each key, back to
back on one torch thread: no HTTP, no pauses, no other client. Reported: latency p50 / p99 /
mean, model steps and the hypotheses they carry per keystroke, and the same split by what the
key was (a letter, a space, other) and how many searches it ran (a letter that may end a word
runs one more, for the words after it; a capitalised one, one per case).

    python bench/search_cost.py -c checkpoints/shakespeare-setup --text ../shared/corpora/tinyshakespeare/input.txt
    python bench/search_cost.py -c CKPT --answers before.json     # keep every strip...
    python bench/search_cost.py -c CKPT --compare before.json     # ...and check a change keeps them

Run it alone: on two cores another busy process changes every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lm  # noqa: E402
from lm.suggest.engine import Suggester, SuggestConfig, SuggestionSession  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def held_out(path: Path, tail: float) -> str:
    text = path.read_text(encoding="utf-8")
    return " ".join(line.strip() for line in text[int(len(text) * (1 - tail)):].splitlines() if line.strip())


class Counting(Suggester):
    """A suggester that counts its searches and model steps."""

    counts: Counter

    def _find(self, *args, **kwargs):
        self.counts["searches"] += 1
        return super()._find(*args, **kwargs)

    def _step(self, ids, state, mark):
        self.counts["model steps"] += 1
        self.counts["hypotheses stepped"] += len(ids)
        return super()._step(ids, state, mark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", required=True)
    parser.add_argument("--text", required=True, help="the text to type")
    parser.add_argument("--tail", type=float, default=0.1, help="type from the last share of --text (held out)")
    parser.add_argument("--keys", type=int, default=1500)
    parser.add_argument("--document-chars", type=int, default=300, help="characters typed per session")
    parser.add_argument("--fp32", action="store_true", help="float weights (default: int8, as lm serve)")
    parser.add_argument("--answers", type=Path, help="write every strip here (JSON)")
    parser.add_argument("--compare", type=Path, help="count the strips that differ from these (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    loaded = lm.load(args.checkpoint, "cpu", int8=not args.fp32)

    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Counting(model, tokenizer, SuggestConfig(), loaded.lexicon, loaded.cache)
    suggester.counts = Counter()
    text = held_out(Path(args.text), args.tail)
    warm = SuggestionSession(suggester)
    for ch in text[:200]:  # imports, caches, the first allocations
        warm.type(ch)
        warm.suggestions()

    times, by_kind, strips, totals = [], defaultdict(list), [], Counter()
    session = None
    for i, ch in enumerate(text[1000:1000 + args.keys]):
        if i % args.document_chars == 0:
            session = SuggestionSession(suggester)
        suggester.counts.clear()
        start = time.perf_counter()
        session.type(ch)
        strip = session.suggestions()
        times.append((time.perf_counter() - start) * 1000)
        key = "space" if ch == " " else "letter" if ch.isalpha() else "other"
        by_kind[f"{key}, {suggester.counts['searches']} searches"].append(times[-1])
        totals.update(suggester.counts)
        strips.append([[s.word, s.probability, s.completion] for s in strip])

    print(f"{args.checkpoint}: {len(times)} keystrokes, one thread, back to back")
    print(f"  latency ms: p50 {percentile(times, .5):.2f}  p99 {percentile(times, .99):.2f}  "
          f"mean {statistics.fmean(times):.2f}")
    print("  per keystroke: " + ", ".join(f"{name} {n / len(times):.2f}" for name, n in totals.items()))
    for kind, values in sorted(by_kind.items()):
        print(f"  {kind:22s} {len(values):5d} keys  {sum(values) / sum(times):5.1%} of the time  "
              f"p50 {percentile(values, .5):6.2f}  p99 {percentile(values, .99):6.2f}")
    if args.answers:
        args.answers.write_text(json.dumps(strips))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [i for i, (a, b) in enumerate(zip(before, strips)) if a != b]
        words = sum([w for w, _, _ in before[i]] != [w for w, _, _ in strips[i]] for i in differ)
        print(f"  strips that differ from {args.compare}: {len(differ)} of {min(len(before), len(strips))} "
              f"({words} in their words)")


if __name__ == "__main__":
    main()
