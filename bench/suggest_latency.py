"""Suggestion latency: what a keyboard built on `lm.suggest.engine` would feel like, per tokenizer kind.

For each kind, a model of the stated size is trained briefly on the corpus (or --checkpoint is
used), then in one warm process:
  - next word: suggestions after a context that ends with a space, the context already read
    (`SuggestionSession.read`), as a keyboard has it: the search alone;
  - half-typed word: the same, with the first letters of the next word typed;
  - keystroke: a `SuggestionSession` fed a passage one character at a time, suggestions after each
    (reading each finished word, and each group of words, as it comes);
  - fresh text: `Suggester.suggest` on a new 400-character text: reading it all, then the search;
and the wall time of a cold `lm suggest` command (a fresh Python process: imports, load, one answer);
each with float weights and with int8 weights (the CLI's default).
Contexts are taken from the held-out end of the corpus. Latencies are p50 / p99 in milliseconds.

    python bench/suggest_latency.py                        # 2×512 LSTM per kind on Tiny Shakespeare
    python bench/suggest_latency.py --checkpoint checkpoints/wiki
    python bench/suggest_latency.py --quick                # tiny models, well under a minute
    python bench/suggest_latency.py --quick --threads 1    # steadier on a busy machine

Prints a table and JSON (also written to bench/results/suggest_latency.json).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.suggest.engine import SuggestConfig, Suggester, SuggestionSession  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
KINDS = ["char", "unigram", "bpe", "word"]
CONTEXT_CHARS = 400  # text before the suggestion point, about what a message or a paragraph holds


def percentiles(times: list[float]) -> dict:
    """p50 and p99 of a list of seconds, in milliseconds."""
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2), "n": len(ordered)}


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def sample_points(text: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(context ending in a space, the next word) at random word starts of a text."""
    starts = [m.start() for m in re.finditer(r"(?<= )[A-Za-z]{2,}", text) if m.start() >= CONTEXT_CHARS]
    rng = random.Random(seed)
    points = []
    for at in rng.sample(starts, min(n, len(starts))):
        word = re.match(r"[A-Za-z]+", text[at:]).group()
        points.append((text[at - CONTEXT_CHARS: at], word))
    return points


def warm_latencies(suggester: Suggester, points, passage: str, warmup: int = 5) -> dict:
    for context, word in points[:warmup]:
        suggester.suggest(context)
    next_word, half_typed = [], []
    for context, word in points:
        session = SuggestionSession(suggester, context)
        session.read()  # a keyboard has read the context by now, word by word as it was typed
        next_word.append(timed(session.suggestions))
        session.type(word[: max(1, len(word) // 2)])
        half_typed.append(timed(session.suggestions))
    fresh_text = [timed(suggester.suggest, context) for context, _ in points]
    session = SuggestionSession(suggester, points[0][0])
    session.suggestions()
    keystrokes = []
    for ch in passage:
        start = time.perf_counter()
        session.type(ch)
        session.suggestions()
        keystrokes.append(time.perf_counter() - start)
    return {"next_word": percentiles(next_word), "half_typed": percentiles(half_typed),
            "keystroke": percentiles(keystrokes), "fresh_text": percentiles(fresh_text)}


def cold_command(checkpoint: Path, text: str, precision: str, runs: int) -> dict:
    """Wall time of `lm suggest TEXT -c CHECKPOINT --plain` in a fresh process (imports, load, answer)."""
    command = [sys.executable, str(ROOT / "cli.py"), "suggest", text, "-c", str(checkpoint), "--plain", f"--{precision}"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "runs": runs}


def train_model(corpus_path: Path, out: Path, kind: str, args) -> None:
    corpus = lm.load_corpus([str(corpus_path)])
    lm.train(
        corpus, out,
        model_config=lm.ModelConfig(layers=args.layers, hidden=args.hidden, emb=args.emb, dropout=0.0),
        tokenizer_config=lm.TokenizerConfig(kind=kind, vocab_size=args.vocab_size.get(kind)),
        config=lm.TrainConfig(batch=16, bptt=64, max_steps=args.steps, eval_every=0, patience=0,
                              log_every=max(args.steps // 4, 1), device="cpu"),
    )


def measure(checkpoint: Path, text: str, precision: str, args) -> dict:
    ckpt = lm.load_checkpoint(checkpoint)
    model = lm.model.int8.quantize_int8(ckpt.model) if precision == "int8" else ckpt.model
    # As `lm suggest` runs it: the checkpoint's lexicon, its tuned cache (unless --no-cache) and a
    # word model's n-gram (unless --no-ngram).
    cache = lm.load(checkpoint).cache if args.cache else None
    ngram = lm.load(checkpoint).ngram if args.ngram else None
    suggester = Suggester(model, ckpt.tokenizer, SuggestConfig(), lm.Lexicon.load(checkpoint), cache, ngram)
    held_out = text[int(len(text) * 0.9):]
    points = sample_points(held_out, args.samples)
    passage = held_out[-args.keystrokes:]
    return {
        "checkpoint": str(checkpoint), "tokenizer": ckpt.tokenizer.kind, "vocab_size": ckpt.tokenizer.vocab_size,
        "precision": precision, "model": {k: ckpt.model.config.to_dict()[k] for k in ("cell", "layers", "hidden", "emb")},
        "parameters": lm.model.network.count_parameters(ckpt.model),
        "cache": suggester.cache.to_dict() if suggester.cache is not None else None,
        "ngram_weight": suggester.ngram.weight if suggester.ngram is not None else None,
        **warm_latencies(suggester, points, passage),
        "cold_command": cold_command(checkpoint, points[0][0], precision, args.cold_runs),
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="text to train on and take contexts from")
    parser.add_argument("--checkpoint", action="append", help="measure this checkpoint instead of training (repeatable)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="tokenizer kinds to train, comma-separated")
    parser.add_argument("--layers", type=int, default=lm.ModelConfig.layers)
    parser.add_argument("--hidden", type=int, default=lm.ModelConfig.hidden)
    parser.add_argument("--emb", type=int, default=lm.ModelConfig.emb)
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    parser.add_argument("--samples", type=int, default=200, help="contexts per warm measurement")
    parser.add_argument("--keystrokes", type=int, default=400, help="characters typed into a session")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads in the warm process (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="tiny models, few samples: a smoke test")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="without the checkpoint's continuous cache")
    parser.add_argument("--no-ngram", dest="ngram", action="store_false", help="without a word checkpoint's n-gram")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "suggest_latency.json"))
    args = parser.parse_args()
    args.vocab_size = {"unigram": 4000, "bpe": 4000}
    if args.quick:
        args.layers, args.hidden, args.emb, args.steps = 1, 64, 32, 20
        args.samples, args.keystrokes, args.cold_runs = 20, 60, 1
        args.vocab_size = {"unigram": 500, "bpe": 500}
    return args


def main() -> None:
    args = parse_args()
    if args.threads:  # on a shared machine, spare threads spin while others' processes hold the cores
        torch.set_num_threads(args.threads)
    corpus_path = Path(args.corpus)
    if not corpus_path.exists():
        sys.exit(f"corpus {corpus_path} not found — pass --corpus (the shared corpora live beside the repository)")
    text = corpus_path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:  # a slice of the corpus keeps tokenizer training and caching quick
            text = text[:300_000]
            corpus_path = Path(tmp) / "corpus.txt"
            corpus_path.write_text(text, encoding="utf-8")
        checkpoints = [Path(c) for c in args.checkpoint or []]
        for kind in ([] if args.checkpoint else args.kinds.split(",")):
            checkpoints.append(Path(tmp) / kind)
            train_model(corpus_path, checkpoints[-1], kind, args)
        runs = [measure(checkpoint, text, precision, args) for checkpoint in checkpoints for precision in ("fp32", "int8")]
    report = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu"},
        "corpus": str(args.corpus), "trained_steps": None if args.checkpoint else args.steps,
        "context_chars": CONTEXT_CHARS, "suggest_config": SuggestConfig().__dict__, "runs": runs,
    }
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    shapes = sorted({f"{r['model']['layers']}×{r['model']['hidden']} {r['model']['cell']}, emb {r['model']['emb']}"
                     for r in report["runs"]})
    table = Table(title=f"lm suggest latency: {'; '.join(shapes)} on CPU ({report['machine']['threads']} threads)",
                  caption="warm: ms p50 / p99 per suggestion (next word, half-typed: context already read; "
                          "fresh: reading it too); cold: a fresh `lm suggest` process, median")
    for column in ("tokenizer", "weights", "vocab", "params", "next word", "half-typed", "keystroke",
                   f"fresh {report['context_chars']} chars", "cold"):
        table.add_column(column, justify="left" if column == "tokenizer" else "right")
    for run in report["runs"]:
        table.add_row(
            run["tokenizer"], run["precision"], f"{run['vocab_size']:,}", f"{run['parameters'] / 1e6:.2f}M",
            *(f"{run[key]['p50_ms']:.1f} / {run[key]['p99_ms']:.1f}"
              for key in ("next_word", "half_typed", "keystroke", "fresh_text")),
            f"{run['cold_command']['median_s']:.2f} s",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
