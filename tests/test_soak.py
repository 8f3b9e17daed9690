"""Soak: a warm suggestion session under a long random typing session.

Not in the default suite (it takes minutes); run with `python -m pytest -m soak -s`.
The figures it prints are the ones quoted in the robustness notes.
"""
from __future__ import annotations

import ctypes
import gc
import os
import random
import statistics
import time

import pytest

import lm
from lm.suggest.engine import Suggester, SuggestionSession

KEYSTROKES = 100_000
WINDOW = 10_000  # keystrokes per latency sample, at the start and at the end
LETTERS = "etaoinshrdlucmfwypvbgkqjxz"


def current_rss_mb() -> float:
    """Resident memory now (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def held_rss_mb() -> float:
    """Resident memory the process holds: garbage collected and freed pages handed back first.

    glibc keeps freed memory for reuse, so plain RSS swings by tens of MB with the allocation
    pattern (354-404 MB over 200,000 edits of a char session whose held memory stayed 347 MB).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: plain RSS
        pass
    return current_rss_mb()


def random_edits(n: int, seed: int = 0):
    """Typing with mistakes: mostly letters and spaces, some punctuation, deletions and new lines."""
    rng = random.Random(seed)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.12:
            yield ("delete", rng.randint(1, 3))
        elif roll < 0.30:
            yield ("type", " ")
        elif roll < 0.33:
            yield ("type", rng.choice(".,!?'\n"))
        elif roll < 0.34:
            yield ("type", rng.choice("ÉüßЖ漢🙂\t"))
        else:
            yield ("type", rng.choice(LETTERS))


@pytest.mark.soak
@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_session_keeps_constant_memory_and_latency_over_100k_keystrokes(tiny_checkpoints, kind):
    loaded = lm.load(tiny_checkpoints(kind), int8=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    session = SuggestionSession(Suggester(model, tokenizer))
    latencies, rss = [], {}
    for i, (action, value) in enumerate(random_edits(KEYSTROKES)):
        start = time.perf_counter()
        session.type(value) if action == "type" else session.delete(value)
        session.suggestions()
        latencies.append(time.perf_counter() - start)
        if i + 1 in (WINDOW, KEYSTROKES):
            rss[i + 1] = held_rss_mb()
    early = sorted(latencies[WINDOW // 2: WINDOW + WINDOW // 2])
    late = sorted(latencies[-WINDOW:])
    p = lambda xs, q: xs[int(q * (len(xs) - 1))] * 1e3  # noqa: E731
    print(f"\nsoak {kind}: {KEYSTROKES:,} edits, text now {len(session.text):,} chars; "
          f"p50/p99 ms early {p(early, .5):.2f}/{p(early, .99):.2f}, late {p(late, .5):.2f}/{p(late, .99):.2f}; "
          f"RSS {rss[WINDOW]:.0f} MB after {WINDOW:,}, {rss[KEYSTROKES]:.0f} MB after {KEYSTROKES:,}")
    assert statistics.median(late) < 1.5 * statistics.median(early)
    assert rss[KEYSTROKES] - rss[WINDOW] < 20
