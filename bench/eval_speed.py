"""Evaluation on WikiText-2: perplexity, keyboard metrics and evaluation speed of a word model.

Evaluates a checkpoint, or first trains a word-level model with `lm.train` on
../shared/corpora/wikitext-2/train.txt (validated on valid.txt) for a stated time, then reports:
  - valid and test perplexity per token (the published WikiText-2 figure: one <eos> per line)
    and per whitespace word, and bits per character;
  - top-1 / top-3 next-word accuracy and keystroke savings on the first --keyboard-words words
    of the test file;
  - evaluation speed in words/s (likelihood pass; the keyboard pass separately).

    python bench/eval_speed.py --train-time 30m                  # train, then evaluate (long)
    python bench/eval_speed.py --checkpoint checkpoints/wiki     # evaluate an existing model
    python bench/eval_speed.py --quick                           # about a minute, a smoke test

Prints a table and JSON (also written to bench/results/eval_speed.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.evaluate.evaluation import EvalConfig, evaluate_paths  # noqa: E402
from lm.evaluate.keyboard import leading_words  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2"


class Lines(lm.Progress):
    """One line per validation during training."""

    def start(self, info):
        print(f"training {info['parameters']:,} parameters on {info['train_tokens']:,} tokens (vocab {info['vocab_size']:,})")

    def evaluated(self, record):
        print(f"  step {record['step']:>6}  {record['elapsed']:>7.0f} s  valid ppl {record['valid_perplexity']:.1f}")


def train_model(args) -> tuple[Path, dict]:
    """A word model trained on WikiText-2 for args.train_time seconds; returns its folder and the run."""
    corpus = lm.load_corpus([str(args.corpora / "train.txt")], valid=str(args.corpora / "valid.txt"))
    if args.quick:  # validating on all of valid.txt takes longer than the quick training itself
        corpus.valid = leading_words(corpus.valid, args.max_words)
    model_config = lm.ModelConfig(layers=args.layers, hidden=args.hidden, emb=args.emb, dropout=args.dropout)
    config = lm.TrainConfig(batch=args.batch, bptt=args.bptt, max_time=args.train_time, epochs=1000,
                            eval_every=args.eval_every, patience=0, device=args.device)
    out = ROOT / "bench" / "results" / ("eval_speed-quick-model" if args.quick else "eval_speed-model")
    result = lm.train(corpus, out, model_config, lm.TokenizerConfig(kind="word"), config, Lines(), overwrite=True)
    run = {"train_seconds": round(result.elapsed, 1), "steps": result.step, "stop_reason": result.stop_reason,
           "train_tokens_per_s": round(result.tokens_per_s), "best_valid_step": result.best.get("step"),
           "model": model_config.to_dict(), "batch": args.batch, "bptt": args.bptt}
    return out, run


def evaluate(checkpoint: Path, path: Path, args, keyboard: bool) -> dict:
    config = EvalConfig(max_words=args.max_words, keyboard=keyboard, keyboard_words=args.keyboard_words, device=args.device)
    started = time.perf_counter()
    result = evaluate_paths([str(path)], checkpoint, config).to_dict()
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="evaluate this checkpoint instead of training one")
    parser.add_argument("--corpora", type=Path, default=WIKITEXT, help="folder with train.txt, valid.txt, test.txt")
    parser.add_argument("--train-time", type=float, default=1800, help="seconds of training (default 30 minutes)")
    parser.add_argument("--layers", type=int, default=lm.ModelConfig.layers)
    parser.add_argument("--hidden", type=int, default=lm.ModelConfig.hidden)
    parser.add_argument("--emb", type=int, default=lm.ModelConfig.emb)
    parser.add_argument("--dropout", type=float, default=lm.ModelConfig.dropout)
    parser.add_argument("--batch", type=int, default=lm.TrainConfig.batch)
    parser.add_argument("--bptt", type=int, default=lm.TrainConfig.bptt)
    parser.add_argument("--eval-every", type=int, default=500, help="validate every N training steps")
    parser.add_argument("--max-words", type=int, help="evaluate only the first N words of valid and test")
    parser.add_argument("--keyboard-words", type=int, default=EvalConfig.keyboard_words)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, 20 s of training, 10,000-word samples of the texts")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "eval_speed.json")
    args = parser.parse_args()
    if args.quick:
        args.train_time, args.layers, args.hidden, args.emb, args.eval_every = 20, 1, 64, 64, 10**9
        args.max_words, args.keyboard_words = args.max_words or 10_000, min(args.keyboard_words, 100)
    for name in ("train.txt", "valid.txt", "test.txt"):
        if not (args.corpora / name).exists():
            sys.exit(f"{args.corpora / name} not found — pass --corpora (the shared corpora live beside the repository)")

    run = {}
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, run = train_model(args)
    report = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device},
        "checkpoint": str(checkpoint), "training": run,
        "valid": evaluate(checkpoint, args.corpora / "valid.txt", args, keyboard=False),
        "test": evaluate(checkpoint, args.corpora / "test.txt", args, keyboard=True),
    }
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lm eval on WikiText-2 (word model)")
    table.add_column("measure")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    valid, test = report["valid"], report["test"]
    sample = lambda r: f"first {r['words']:,} words" if r["sampled"] else f"all {r['words']:,} words"  # noqa: E731
    rows = [
        ("evaluated", sample(valid), sample(test)),
        ("perplexity / token", f"{valid['perplexity']:.2f}", f"{test['perplexity']:.2f}"),
        ("perplexity / word", f"{valid['word_perplexity']:.2f}", f"{test['word_perplexity']:.2f}"),
        ("bits / char", f"{valid['bits_per_char']:.4f}", f"{test['bits_per_char']:.4f}"),
        ("speed (words/s)", f"{valid['words_per_s']:,.0f}", f"{test['words_per_s']:,.0f}"),
    ]
    keyboard = test["keyboard"]
    rows += [
        ("keyboard sample", "", f"first {keyboard['words'] + keyboard['unknown_words']:,} words ({keyboard['unknown_words']} <unk>)"),
        ("top-1 accuracy", "", f"{keyboard['top1_accuracy']:.1%}"),
        ("top-3 accuracy", "", f"{keyboard['top3_accuracy']:.1%}"),
        ("keystroke savings", "", f"{keyboard['keystroke_savings']:.1%}"),
        ("keyboard speed (words/s)", "", f"{(keyboard['words'] + keyboard['unknown_words']) / max(keyboard['seconds'], 1e-9):,.0f}"),
    ]
    training = report["training"]
    if training:
        rows.append(("training", f"{training['train_seconds']:,.0f} s, {training['steps']:,} steps", ""))
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
