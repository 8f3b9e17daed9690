"""ONNX Runtime against PyTorch as the inference backend, side by side in one run.

For one checkpoint, each backend (int8 weights, as lm suggest runs by default; --fp32 for both
float) is timed on the same work, in this order:
  - per keystroke: a typist with slips (lm/evaluate/typist.py) types held-out text into a
    `KeyboardSession`, key then strip (p50 / p99 ms);
  - generation: one stream sampled for --tokens tokens (tokens/s, median of --repeats);
  - cold start: `lm suggest TEXT` in a fresh interpreter, wall time from launch to exit (median
    of --repeats, after one untimed run that builds the checkpoint's cached graph);
and the machine's ceiling in the same run: one step of a bare torch.nn.LSTM of the model's shape
(quantized like the model) and its [1 x emb] @ [emb x vocab] output product. The strips of the
two backends are compared key by key (top-1 and top-3 words the same).

    python bench/backends.py -c checkpoints/shakespeare-char --text ../shared/corpora/tinyshakespeare/input.txt
    python bench/backends.py -c checkpoints/wiki-word

Prints a table and writes JSON to bench/results/backends-<checkpoint name>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import lm  # noqa: E402
from keyboard_latency import WIKITEXT_RAW_TEST, ceiling, percentiles, typed_stream  # noqa: E402
from lm.suggest.keyboard import Keyboard  # noqa: E402
from lm.suggest.sampler import GenerationConfig, Sampler  # noqa: E402

BACKENDS = ("torch", "onnx")


def keystrokes(keyboard: Keyboard, keys: str) -> tuple[list[float], list[list[str]]]:
    """ms per keystroke (key, then strip) and each strip's words."""
    session, times, strips = keyboard.session(), [], []
    for ch in keys:
        start = time.perf_counter()
        session.type(ch)
        strip = session.strip()
        times.append((time.perf_counter() - start) * 1000)
        strips.append([s.word for s in strip])
    return times, strips


def tokens_per_second(predictor, tokens: int, repeats: int) -> float:
    rates = []
    for seed in range(repeats):
        sampler = Sampler(predictor.backend, predictor.tokenizer)
        sampler.feed("\nThe ")
        start = time.perf_counter()
        samples = sampler.generate(GenerationConfig(max_tokens=tokens, temperature=1.0, seed=seed)).run()
        rates.append(len(samples[0].ids) / (time.perf_counter() - start))
    return statistics.median(rates)


def cold_start(checkpoint: str, backend: str, int8: bool, text: str, repeats: int) -> float:
    """Median seconds of `lm suggest TEXT` in a fresh interpreter, after one untimed run."""
    command = [sys.executable, str(ROOT / "cli.py"), "suggest", text, "-c", checkpoint, "--backend", backend,
               "--int8" if int8 else "--fp32"]
    times = []
    for n in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        if n:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(a: list[list[str]], b: list[list[str]]) -> dict:
    same_top1 = sum(x[:1] == y[:1] for x, y in zip(a, b)) / len(a)
    same_top3 = sum(x[:3] == y[:3] for x, y in zip(a, b)) / len(a)
    return {"top1_same": same_top1, "top3_same": same_top3}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--text", type=Path, default=WIKITEXT_RAW_TEST, help="held-out text to type")
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--skip-words", type=int, default=200, help="start this many words into the text")
    parser.add_argument("--tokens", type=int, default=200, help="tokens generated per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--suggest-text", default="the clouds are in the")
    parser.add_argument("--fp32", action="store_true", help="float weights on both (default: int8, as lm suggest runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # ONNX Runtime's session runs one thread too
    int8 = not args.fp32
    words = " ".join(args.text.read_text(encoding="utf-8").split()[args.skip_words:])
    result = {"checkpoint": args.checkpoint, "int8": int8, "threads": 1, "backends": {}}
    strips = {}
    for backend in BACKENDS:
        start = time.perf_counter()
        predictor = lm.load(args.checkpoint, int8=int8, backend=backend)
        loaded = time.perf_counter() - start
        keyboard = Keyboard.load(predictor)
        keys = typed_stream(words, keyboard, args.words, args.seed)
        times, strips[backend] = keystrokes(keyboard, keys)
        result["backends"][backend] = {
            "load_s_warm": loaded, "keystroke_ms": percentiles(times),
            "tokens_per_s": tokens_per_second(predictor, args.tokens, args.repeats),
            "cold_suggest_s": cold_start(args.checkpoint, backend, int8, args.suggest_text, args.repeats),
        }
        if backend == "torch":
            result["ceiling"] = ceiling(predictor.model)
    result["agreement"] = agreement(strips["torch"], strips["onnx"])
    show(result, len(keys))
    out = args.out or Path(__file__).resolve().parent / "results" / f"backends-{Path(args.checkpoint).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def show(result: dict, keys: int) -> None:
    c = result["ceiling"]
    print(f"{result['checkpoint']} ({c['shape']}), one thread, {keys} keystrokes, "
          f"{'int8' if result['int8'] else 'fp32'} weights")
    print("| backend | keystroke p50 ms | p99 ms | generation tokens/s | cold `lm suggest` s |\n|---|---|---|---|---|")
    for name, r in result["backends"].items():
        k = r["keystroke_ms"]
        print(f"| {name} | {k['p50']:.2f} | {k['p99']:.2f} | {r['tokens_per_s']:.0f} | {r['cold_suggest_s']:.2f} |")
    torch_r, onnx_r = result["backends"]["torch"], result["backends"]["onnx"]
    print(f"onnx / torch: keystroke p99 {onnx_r['keystroke_ms']['p99'] / torch_r['keystroke_ms']['p99']:.2f}x, "
          f"tokens/s {onnx_r['tokens_per_s'] / torch_r['tokens_per_s']:.2f}x; strips agree: "
          f"top-1 {result['agreement']['top1_same']:.3f}, top-3 {result['agreement']['top3_same']:.3f}")
    print(f"ceiling: bare LSTM step {c['lstm_step_ms']:.3f} ms, output product {c['output_matmul_ms']:.3f} ms")


if __name__ == "__main__":
    main()
