"""Per-keystroke latency of `lm export --web`'s page, measured in the browser, and its agreement
with the Python engine.

For each checkpoint, the web folder is exported (int8, as shipped, and fp32) to a temporary
folder, served on the loopback, and opened in headless Chromium (Debian's, driven by
Playwright, one thread of WebAssembly). In the page, one typing session is fed a passage of
held-out text one character at a time; performance.now() around each keystroke's
`session.suggest(text)` gives the time the strip costs in the page (reading each finished word,
and the search). Every keystroke's strip is compared with `Suggester.suggest` in Python on the
same text (PyTorch fp32 weights, without the cache and the n-gram, which the page leaves out):
the share of keystrokes whose top-3 words are the same, in order.

    python bench/web_latency.py                       # the two checkpoints under checkpoints/
    python bench/web_latency.py --keystrokes 100      # quicker
    python bench/web_latency.py --screenshot docs/web.png

Prints a table and writes JSON to bench/results/web_latency.json. The checkpoints are only read
(the Python reference runs on PyTorch, so no ONNX graph is cached into them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import lm  # noqa: E402
from lm.export.web import export_web  # noqa: E402
from lm.suggest.engine import Suggester  # noqa: E402
from lm.suggest.session import SuggestionSession  # noqa: E402
from test_export_web import opened, shown  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
CASES = [  # checkpoint, held-out text, where the passage starts
    ("checkpoints/shakespeare-char", CORPORA / "tinyshakespeare" / "input.txt", 0.95),
    ("checkpoints/wiki-word", CORPORA / "wikitext-2-raw" / "wiki.valid.raw", 0.5),
]
SCREENSHOT_TEXT = "ROMEO: I will k"
TYPE_PASSAGE = """async ([text, k]) => {
    const typing = window.lmEngine.session(), times = [], strips = [];
    for (let i = 1; i <= text.length; i++) {
        const started = performance.now();
        const strip = await typing.suggest(text.slice(0, i), k);
        times.push(performance.now() - started);
        strips.push(strip.map((s) => s.word));
    }
    return { times, strips };
}"""


def passage(path: Path, start: float, chars: int) -> str:
    """`chars` characters of a text from the first line start after `start` (a fraction of it)."""
    text = path.read_text(encoding="utf-8")
    at = text.index("\n", int(len(text) * start)) + 1
    while not text[at:at + 1].strip():  # skip blank lines and WikiText's heading lines' padding
        at += 1
    return text[at:at + chars]


def percentiles(times: list[float]) -> dict:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2), "mean_ms": round(sum(times) / len(times), 2),
            "n": len(times)}


def python_strips(suggester: Suggester, text: str) -> list[list[str]]:
    """The Python engine's top-3 words after each keystroke (a session typed keystroke by keystroke
    gives the numbers of a fresh `Suggester.suggest`)."""
    typing, strips = SuggestionSession(suggester), []
    for i in range(1, len(text) + 1):
        typing.set_text(text[:i])
        strips.append([s.word for s in typing.suggestions(3)])
    return strips


def measure(browser, folder: Path, text: str, reference: list[list[str]]) -> dict:
    started = time.perf_counter()
    with opened(browser, folder) as (page, requests):
        load_s = time.perf_counter() - started
        page.evaluate(TYPE_PASSAGE, [text[:20], 3])  # warm: the wasm's first calls, the lexicon's first rows
        found = page.evaluate(TYPE_PASSAGE, [text, 3])
        assert requests == [], requests
    agree = sum(a == b for a, b in zip(found["strips"], reference))
    return {**percentiles(found["times"]), "load_s": round(load_s, 2), "top3_same": round(agree / len(reference), 4)}


def screenshot(browser, folder: Path, path: Path) -> None:
    with opened(browser, folder) as (page, _):
        page.locator("#text").press_sequentially(SCREENSHOT_TEXT, delay=30)
        shown(page, SCREENSHOT_TEXT)
        page.screenshot(path=str(path), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keystrokes", type=int, default=400, help="characters of held-out text typed per model")
    parser.add_argument("--screenshot", type=Path, help="write a screenshot of the char model's page here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from test_serve_page import CHROMIUM, CHROMIUM_ARGS

    results = []
    with tempfile.TemporaryDirectory(prefix="lm-web-bench-") as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for checkpoint, corpus, start in CASES:
            text = passage(corpus, start, args.keystrokes)
            suggester = Suggester.load(lm.load(ROOT / checkpoint, backend="torch", cache=False, ngram=False))
            reference = python_strips(suggester, text)
            for int8 in (True, False):
                folder = export_web(ROOT / checkpoint, Path(tmp) / f"{Path(checkpoint).name}-{int8}", int8=int8).folder
                row = {"checkpoint": checkpoint, "weights": "int8" if int8 else "fp32", "corpus": corpus.name,
                       **measure(browser, folder, text, reference)}
                results.append(row)
                print(json.dumps(row), flush=True)
                if args.screenshot and int8 and "char" in checkpoint:
                    screenshot(browser, folder, args.screenshot)
        browser.close()
    print(f"\n{'checkpoint':32} {'weights':7} {'p50 ms':>7} {'p99 ms':>7} {'mean':>6} {'top-3 same':>10} {'load s':>6}")
    for r in results:
        print(f"{r['checkpoint']:32} {r['weights']:7} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['mean_ms']:6.2f} "
              f"{r['top3_same']:10.1%} {r['load_s']:6.2f}")
    out = ROOT / "bench" / "results" / "web_latency.json"
    out.write_text(json.dumps({"browser": "chromium (headless, 1 wasm thread)", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
