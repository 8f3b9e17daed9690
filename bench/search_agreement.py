"""Does the beam search find the model's own best words? Its top 3 against exhaustive scoring.

At each keystroke of held-out text (the start of each word and each lower-case prefix of it),
the char or subword model's beam search (lm/suggest/search.py) proposes words of the lexicon;
`Suggester.score_after` scores every word of the lexicon that fits the typed prefix (the
lexicon's words, and capitalised too before the first letter) by the same definition. The two
top-3 lists over those words are compared, without the typed word itself (the strip never
shows it):

- same top 3: the same three words (in any order), the figure issue 31 targets (>= 95 %);
- same order: the same three in the same order;
- best found: the exhaustive best word is among the beam's three;
- same visible: the same words among those with at least 0.1 % of the candidates' mass
  (the third slot is often a word with 1e-8 of it, which no user would see or miss).

Word models rank their whole vocabulary row exactly, so they always agree; this is for char
and subword checkpoints.

    python bench/search_agreement.py -c CKPT --text held-out.txt --keys 300 --widths 8,16,32,64

Run it alone: timings on two shared cores swing with the load.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lm  # noqa: E402
from lm.suggest.engine import Suggester, SuggestConfig  # noqa: E402
from lm.suggest.session import SuggestionSession  # noqa: E402
from lm.suggest.typed import split_typed  # noqa: E402

TOP = 3
VISIBLE = 1e-3  # share of the candidates' probability a word needs to count in "same visible"


def keystrokes(text: str, keys: int) -> list[str]:
    """Texts typed up to each keystroke that starts or continues a lower-case word."""
    typed, start = [], 0
    for word in text.split(" "):
        stem = word.rstrip(".,;:!?'\"")
        for j in range(len(stem)):
            if stem[:j].islower() or j == 0:
                typed.append(text[:start] + stem[:j])
        start += len(word) + 1
        if len(typed) >= keys:
            break
    return typed[:keys]


def candidates(lexicon: list[str], partial: str) -> list[str]:
    """The words both sides rank: the lexicon's words with the typed prefix, capitalised too
    before the first letter (a tiny model's beam also spells odd casings, "whaT": left out)."""
    if partial:
        return [w for w in lexicon if w.startswith(partial)]
    return sorted(set(lexicon) | {w[:1].upper() + w[1:] for w in lexicon})


def beam_top(suggester: Suggester, session: SuggestionSession, lexicon: list[str]) -> list[str]:
    """The beam search's best words for the typed prefix, as the strip ranks them."""
    typed = split_typed(session.text)
    mark = session._sync(typed.context_end)
    allowed = suggester._pieces.allowed(session.learned())
    words = suggester._conditional(suggester._with_view(mark, session._view(mark)), typed, TOP + 1, allowed)
    ranked = set(candidates(lexicon, typed.partial))
    return _top({w: p for w, p in words.items() if w in ranked}, typed.partial)


def exhaustive_top(session: SuggestionSession, lexicon: list[str]) -> tuple[list[str], dict[str, float]]:
    """The best words for the typed prefix by `score_after` over all the candidates, and each
    candidate's share of their probability."""
    partial = split_typed(session.text).partial
    words = candidates(lexicon, partial)
    scores = dict(zip(words, session.score_words(words))) if words else {}
    top = max(scores.values(), default=0.0)
    total = sum(math.exp(v - top) for v in scores.values())
    return _top(scores, partial), {w: math.exp(v - top) / total for w, v in scores.items()}


def _top(scores: dict[str, float], partial: str) -> list[str]:
    kept = {w: s for w, s in scores.items() if not (partial and len(w) == len(partial))}
    return sorted(kept, key=lambda w: (-kept[w], w))[:TOP]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", required=True)
    parser.add_argument("--text", required=True, help="the text to type (its last --tail share)")
    parser.add_argument("--tail", type=float, default=0.1)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--widths", default="8,16,32,64", help="beam widths to compare")
    parser.add_argument("--fp32", action="store_true", help="float weights (default: int8, as lm serve)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = lm.load(args.checkpoint, "cpu", int8=not args.fp32)
    if loaded.tokenizer.word_level or loaded.lexicon is None:
        sys.exit("a char or subword checkpoint with a lexicon is needed (word models rank their row exactly)")
    raw = Path(args.text).read_text(encoding="utf-8")
    text = " ".join(raw[int(len(raw) * (1 - args.tail)):].split())
    typed = keystrokes(text, args.keys)
    lexicon = sorted(loaded.lexicon.counts)
    suggester = Suggester.load(loaded)
    session, reference, seconds = SuggestionSession(suggester), [], []
    for t in typed:
        session.set_text(t)
        started = time.perf_counter()
        reference.append(exhaustive_top(session, lexicon))
        seconds.append(time.perf_counter() - started)
    print(f"{args.checkpoint}: {len(typed)} keystrokes, {len(lexicon)} lexicon words; "
          f"exhaustive scoring {statistics.median(seconds) * 1000:.0f} ms median per keystroke")
    print(f"{'width':>5}  {'same top 3':>10}  {'same order':>10}  {'best found':>10}  {'same visible':>12}  "
          f"{'search ms p50':>13}")
    for width in [int(w) for w in args.widths.split(",")]:
        searcher = Suggester.load(loaded, SuggestConfig(beam_width=width))
        session, same, ordered, best, visible, times = SuggestionSession(searcher), 0, 0, 0, 0, []
        for t, (ref, share) in zip(typed, reference):
            session.set_text(t)
            session.read()
            started = time.perf_counter()
            found = beam_top(searcher, session, lexicon)
            times.append(time.perf_counter() - started)
            same += set(found) == set(ref)
            ordered += found == ref
            best += not ref or ref[0] in found
            visible += {w for w in found if share[w] >= VISIBLE} == {w for w in ref if share[w] >= VISIBLE}
        n = len(typed)
        print(f"{width:>5}  {same / n:>10.1%}  {ordered / n:>10.1%}  {best / n:>10.1%}  {visible / n:>12.1%}  {statistics.median(times) * 1000:>13.1f}")


if __name__ == "__main__":
    main()
