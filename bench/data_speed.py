"""Data path: a large corpus tokenized once into the cache, peak memory, and how soon a second run trains.

Builds a corpus of --size-mb megabytes from WikiText-2's training text (copies with their lines
shuffled differently), then runs `lm.train` on it twice in fresh processes with one empty cache:

  - first run: read, train the tokenizer, tokenize into the cache, and train --steps steps;
  - second run: the same command; tokenizer and token ids come from the cache.

For each run: seconds until the first training step, the tokenizer and tokenization part of
that, training tokens, and the peak resident memory of the whole process.

    python bench/data_speed.py                          # 100 MB, word tokenizer
    python bench/data_speed.py --tokenizer unigram
    python bench/data_speed.py --quick                  # 10 MB, a smoke test

Prints a table and JSON (also written to bench/results/data_speed[_KIND].json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT_TRAIN = ROOT.parent / "shared" / "corpora" / "wikitext-2" / "train.txt"


def build_corpus(path: Path, size_mb: int) -> int:
    """Write about size_mb MB of text built from WikiText-2; returns its size in bytes."""
    lines = WIKITEXT_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_mb * 2**20:
            rng.shuffle(lines)
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    return written


def child(args) -> None:
    """One `lm.train` run in this process; prints its timings as JSON on the last line."""
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    import lm

    class Clock(lm.Progress):
        def start(self, info):
            self.first_step_at = time.perf_counter() - started
            self.info = info

    clock = Clock()
    corpus = lm.load_corpus([args.corpus])
    read_s = time.perf_counter() - started
    config = lm.TrainConfig(max_steps=args.steps, eval_every=0, patience=0, device="cpu")
    model = lm.ModelConfig(layers=1, hidden=256, emb=128)  # small: this measures the data path
    lm.train(corpus, Path(args.out), model, lm.TokenizerConfig(kind=args.tokenizer), config, clock, overwrite=True)
    print(json.dumps({
        "read_s": round(read_s, 2), "start_training_s": round(clock.first_step_at, 2),
        "train_tokens": clock.info["train_tokens"], "vocab_size": clock.info["vocab_size"],
        "total_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def run_child(args, cache: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--corpus", str(args.corpus), "--tokenizer", args.tokenizer,
               "--steps", str(args.steps), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "LM_CACHE_DIR": str(cache)})
    if done.returncode:
        sys.exit(f"the training run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--tokenizer", default="word", choices=["char", "unigram", "bpe", "word"])
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--quick", action="store_true", help="10 MB, a smoke test")
    parser.add_argument("--json", help="where to write the JSON (default: bench/results/data_speed[_KIND].json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.size_mb, args.steps = 10, 5
    if not WIKITEXT_TRAIN.exists():
        sys.exit(f"{WIKITEXT_TRAIN} not found — the shared corpora live beside the repository")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args.corpus = tmp / "corpus.txt"
        size = build_corpus(args.corpus, args.size_mb)
        first = run_child(args, tmp / "cache", tmp / "run1")
        second = run_child(args, tmp / "cache", tmp / "run2")
        cache_mb = sum(p.stat().st_size for p in (tmp / "cache").rglob("*") if p.is_file()) / 2**20
    report = {
        "corpus_mb": round(size / 2**20, 1), "tokenizer": args.tokenizer, "steps": args.steps,
        "first_run": first, "second_run": second, "cache_mb": round(cache_mb, 1),
        "tokenize_mb_per_s": round(size / 2**20 / max(first["start_training_s"] - first["read_s"], 1e-9), 1),
    }
    print_table(report)
    path = Path(args.json or ROOT / "bench" / "results" / f"data_speed_{args.tokenizer}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data path: {report['corpus_mb']} MB corpus, {report['tokenizer']} tokenizer")
    table.add_column("measure")
    table.add_column("first run", justify="right")
    table.add_column("second run (cached)", justify="right")
    first, second = report["first_run"], report["second_run"]
    rows = [
        ("read the text", f"{first['read_s']:.1f} s", f"{second['read_s']:.1f} s"),
        ("start of training", f"{first['start_training_s']:.1f} s", f"{second['start_training_s']:.1f} s"),
        ("training tokens", f"{first['train_tokens']:,}", f"{second['train_tokens']:,}"),
        ("peak memory (RSS)", f"{first['peak_rss_mb']:,} MB", f"{second['peak_rss_mb']:,} MB"),
        ("tokenizer + tokenization speed", f"{report['tokenize_mb_per_s']} MB/s", ""),
        ("cache on disk", f"{report['cache_mb']} MB", ""),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
