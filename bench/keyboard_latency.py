"""Per-keystroke latency of the forgiving keyboard against the engine's plain strip, side by side.

A typist with slips (lm/evaluate/typist.py) types held-out text; each keystroke goes, in one
warm process, to
  - a `KeyboardSession` (lm/suggest/keyboard.py): the key, then the strip — a word finished by
    the key is kept or corrected first, a prefix gets completions that fix a slip;
  - a `SuggestionSession` (lm/suggest/session.py): the key, then the engine's strip alone,
and both are timed per keystroke (p50 / p90 / p99 ms). The machine's own ceiling is timed in the
same run: one step of a bare `torch.nn.LSTM` of the model's layers and width (int8 models: the
quantized module) and one [1 x emb] @ [emb x vocab] product, the output layer's work.

    python bench/keyboard_latency.py -c checkpoints/wiki-word --threads 1
    python bench/keyboard_latency.py -c checkpoints/shakespeare-char --text ../shared/corpora/tinyshakespeare/input.txt

Prints a table and writes JSON to bench/results/keyboard_latency.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.evaluate.typist import NoiseConfig, Typist  # noqa: E402
from lm.suggest.keyboard import Keyboard  # noqa: E402
from lm.suggest.session import SuggestionSession  # noqa: E402

WIKITEXT_RAW_TEST = ROOT.parent / "shared" / "corpora" / "wikitext-2-raw" / "wiki.test.raw"


def typed_stream(text: str, keyboard: Keyboard, words: int, seed: int) -> str:
    """The text as the typist types it: its words with slips, joined by spaces."""
    typist = Typist(keyboard.layout, NoiseConfig(), seed)
    out = []
    for word in text.split()[:words]:
        typed = typist.tap(word)[0] if word.isalpha() and all(keyboard.layout.key(c) for c in word) else word
        out.append(typed)
    return " ".join(out) + " "


def per_key_ms(session, keys: str, strip) -> list[float]:
    times = []
    for ch in keys:
        start = time.perf_counter()
        session.type(ch)
        strip(session)
        times.append((time.perf_counter() - start) * 1000)
    return times


def ceiling(model, repeats: int = 200) -> dict:
    """One step of a bare nn.LSTM of the model's shape, and the output layer's product, in ms (median)."""
    config = model.config if hasattr(model, "config") else None
    layers, hidden, emb, vocab = config.layers, config.hidden, config.emb, config.vocab_size
    lstm = torch.nn.LSTM(emb, hidden, layers, batch_first=True).eval()
    quantized = any("quantized" in type(m).__module__ for m in model.modules())
    if quantized:
        lstm = torch.ao.quantization.quantize_dynamic(lstm, {torch.nn.LSTM}, dtype=torch.qint8)
    x, weight = torch.randn(1, 1, emb), torch.randn(emb, vocab)
    step, output = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            lstm(x)
            step.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            x[0] @ weight
            output.append((time.perf_counter() - start) * 1000)
    return {"lstm_step_ms": statistics.median(step), "output_matmul_ms": statistics.median(output),
            "shape": f"{layers}x{hidden} LSTM, emb {emb}, vocab {vocab}{', int8' if quantized else ''}"}


def percentiles(ms: list[float]) -> dict:
    ordered = sorted(ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "keys": len(ordered)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--text", type=Path, default=WIKITEXT_RAW_TEST, help="held-out text to type")
    parser.add_argument("--words", type=int, default=600)
    parser.add_argument("--skip-words", type=int, default=200, help="start this many words into the text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="float weights (default: int8, as lm suggest runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "keyboard_latency.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = lm.load(args.checkpoint, int8=not args.fp32)
    keyboard = Keyboard.load(predictor)
    words = " ".join(args.text.read_text(encoding="utf-8").split()[args.skip_words:])
    keys = typed_stream(words, keyboard, args.words, args.seed)
    forgiving = per_key_ms(keyboard.session(), keys, lambda s: s.strip())
    plain = per_key_ms(SuggestionSession(keyboard.suggester), keys, lambda s: s.suggestions())
    result = {"checkpoint": args.checkpoint, "threads": args.threads, "int8": not args.fp32, "words": args.words,
              "keyboard": percentiles(forgiving), "engine_alone": percentiles(plain),
              "ceiling": ceiling(predictor.model)}
    print(f"{args.checkpoint} ({result['ceiling']['shape']}), {args.threads} thread(s), {len(keys)} keystrokes")
    print("| per keystroke, ms | p50 | p90 | p99 |\n|---|---|---|---|")
    for name, key in (("forgiving keyboard (KeyboardSession)", "keyboard"), ("engine alone (SuggestionSession)", "engine_alone")):
        r = result[key]
        print(f"| {name} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} |")
    c = result["ceiling"]
    print(f"ceiling: bare LSTM step {c['lstm_step_ms']:.3f} ms, output product {c['output_matmul_ms']:.3f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
