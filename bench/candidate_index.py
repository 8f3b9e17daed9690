"""Which library finds a typed word's candidates: symspellpy against rapidfuzz (lm/suggest/index.py).

The keyboard's index must find the words within two edits of a typed word among tens of
thousands, take new words cheaply (a user dictionary, words learned in a session) and start
fast. For WikiText-2's training words, typed with the slips of bench/typing_noise.py (words
drawn by frequency; only those typed wrong are looked up), this measures each candidate's
build time, memory, cost of adding one word, lookup time p50 / p99 and recall (the share of
lookups whose candidates hold the intended word) at edit bound 2:

  - symspellpy: a SymSpell index of deletions (prefix length 7), Verbosity.ALL;
  - rapidfuzz, lengths: the words grouped by length, the OSA distance to those of the typed
    length ± 2 computed in C++ (process.cdist) — lm/suggest/index.py's way;
  - rapidfuzz, all words: the same over every word at once.

    python bench/candidate_index.py              # 2,000 typos
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.append(str(BENCH))
from typing_noise import Typist  # noqa: E402

from lm.data.lexicon import Lexicon  # noqa: E402
from lm.suggest.index import CandidateIndex  # noqa: E402
from lm.suggest.layout import load_layout  # noqa: E402

WIKITEXT = BENCH.parent.parent / "shared" / "corpora" / "wikitext-2"


def typos(counts: dict[str, int], n: int, seed: int) -> list[tuple[str, str]]:
    """(typed, intended) for words drawn by frequency and typed with at least one slip."""
    layout, rng = load_layout(), random.Random(seed)
    typist = Typist(layout, seed=seed)
    words = [w for w in counts if w.isalpha() and all(layout.key(c) for c in w)]
    weights = [counts[w] for w in words]
    pairs = []
    while len(pairs) < n:
        word = rng.choices(words, weights)[0]
        typed = typist.tap(word)[0]
        if typed != word and typed:
            pairs.append((typed, word))
    return pairs


def measure(name: str, build, lookup, add, pairs) -> dict:
    tracemalloc.start()
    start = time.perf_counter()
    index = build()
    built = time.perf_counter() - start
    memory = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    start = time.perf_counter()
    add(index, "qzxwordly")
    added = time.perf_counter() - start
    times, hits = [], 0
    for typed, word in pairs:
        start = time.perf_counter()
        found = lookup(index, typed)
        times.append((time.perf_counter() - start) * 1000)
        hits += word in found
    times.sort()
    return {"index": name, "build_s": built, "memory_mb": memory, "add_ms": added * 1000,
            "lookup_p50_ms": times[len(times) // 2], "lookup_p99_ms": times[int(0.99 * len(times))],
            "recall": hits / len(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=WIKITEXT / "train.txt")
    parser.add_argument("--typos", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = dict(Lexicon.from_text(args.train.read_text(encoding="utf-8")).counts)
    pairs = typos(counts, args.typos, args.seed)

    def symspell():
        from symspellpy import SymSpell

        index = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for word, n in counts.items():
            index.create_dictionary_entry(word, n)
        return index

    def symspell_lookup(index, typed):
        from symspellpy import Verbosity

        return {s.term for s in index.lookup(typed, Verbosity.ALL, 2, transfer_casing=False)}

    def all_words():
        return list(counts)

    def all_lookup(words, typed):
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        return {w for w, _, _ in process.extract(typed, words, scorer=OSA.distance, score_cutoff=2, limit=None)}

    rows = [
        measure("symspellpy", symspell, symspell_lookup, lambda i, w: i.create_dictionary_entry(w, 1), pairs),
        measure("rapidfuzz, lengths", lambda: CandidateIndex(counts), lambda i, t: set(i.near(t, 2)),
                lambda i, w: i.add([w]), pairs),
        measure("rapidfuzz, all words", all_words, all_lookup, lambda i, w: i.append(w), pairs),
    ]
    print(f"{len(counts):,} words, {len(pairs):,} typos (seed {args.seed})")
    print("| index | build s | memory MB | add one word ms | lookup p50 / p99 ms | recall at 2 edits |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['build_s']:.2f} | {r['memory_mb']:.0f} | {r['add_ms']:.3f} | "
              f"{r['lookup_p50_ms']:.2f} / {r['lookup_p99_ms']:.2f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
