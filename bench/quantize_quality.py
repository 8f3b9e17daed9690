"""int8 against fp32: what quantizing a trained model costs in quality and buys in speed, on the CPU.

For each checkpoint, on the same text, with the float weights and with int8 dynamic
quantization (the default of `lm suggest`, `lm generate` and `lm repl`):
  - perplexity per token and per word, bits per character (the whole text, state carried);
  - top-1 / top-3 next-word accuracy and keystroke savings on the first --keyboard-words words;
  - one-stream generation speed (tokens/s, median of --repeats runs) and the likelihood pass speed.

    python bench/quantize_quality.py -c checkpoints/wiki --text ../shared/corpora/wikitext-2/test.txt
    python bench/quantize_quality.py -c checkpoints/shakespeare --text held_out.txt
    python bench/quantize_quality.py --quick          # trains a tiny char model first: a smoke test

Prints a table and JSON (also written to bench/results/quantize_quality.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.evaluate.evaluation import EvalConfig, evaluate_text, read_eval_text  # noqa: E402
from lm.model.int8 import quantize_int8  # noqa: E402
from lm.suggest.sampler import GenerationConfig, generate  # noqa: E402

TINY_SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"


def generation_tokens_per_s(model, tokenizer, tokens: int, repeats: int) -> float:
    """One stream, sampled, after a short prompt; median over repeats."""
    rates = []
    for seed in range(repeats):
        generation = generate(model, tokenizer, "The ", GenerationConfig(max_tokens=tokens, seed=seed))
        start = time.perf_counter()
        samples = generation.run()
        rates.append(len(samples[0].ids) / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(checkpoint: Path, text: str, args) -> dict:
    ckpt = lm.load_checkpoint(checkpoint, "cpu")
    config = EvalConfig(max_words=args.max_words, keyboard_words=args.keyboard_words, device="cpu")
    rows = {}
    for name, model in (("fp32", ckpt.model), ("int8", quantize_int8(ckpt.model))):
        result = evaluate_text(model, ckpt.tokenizer, text, config)
        rows[name] = {
            **{k: v for k, v in result.loss.to_dict().items() if k in ("perplexity", "word_perplexity", "bits_per_char")},
            **{k: v for k, v in result.keyboard.to_dict().items() if k in ("top1_accuracy", "top3_accuracy", "keystroke_savings")},
            "likelihood_words_per_s": result.words_per_s,
            "generate_tokens_per_s": generation_tokens_per_s(model, ckpt.tokenizer, args.tokens, args.repeats),
        }
    fp32, int8 = rows["fp32"], rows["int8"]
    return {
        "checkpoint": str(checkpoint), "tokenizer": ckpt.tokenizer.kind, "parameters": ckpt.config.get("parameters"),
        "words": result.loss.words, "keyboard_words": result.keyboard.words, **rows,
        "perplexity_change": int8["perplexity"] / fp32["perplexity"] - 1,
        "generate_speedup": int8["generate_tokens_per_s"] / fp32["generate_tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", action="append", type=Path, help="checkpoint to measure (repeatable)")
    parser.add_argument("--text", action="append", help="held-out text for each checkpoint, in the same order")
    parser.add_argument("--max-words", type=int, help="evaluate only the first N words of each text")
    parser.add_argument("--keyboard-words", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=300, help="tokens generated per speed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one stream decodes fastest on one)")
    parser.add_argument("--quick", action="store_true", help="train a tiny char model and measure it: a smoke test")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "quantize_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.checkpoint, args.text = [quick_model(Path(tmp) / "m")], [str(TINY_SHAKESPEARE)]
            args.max_words, args.keyboard_words, args.tokens, args.repeats = 2000, 50, 50, 2
        if not args.checkpoint or len(args.text or []) != len(args.checkpoint):
            sys.exit("give --checkpoint and --text once for each model (or --quick)")
        report = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
                  "models": [measure(c, read_eval_text([t])[0], args) for c, t in zip(args.checkpoint, args.text)]}
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def quick_model(out: Path) -> Path:
    if not TINY_SHAKESPEARE.exists():
        sys.exit(f"{TINY_SHAKESPEARE} not found — the shared corpora live beside the repository")
    corpus = lm.load_corpus([str(TINY_SHAKESPEARE)])
    lm.train(corpus, out, lm.ModelConfig(layers=1, hidden=128, emb=64), lm.TokenizerConfig(kind="char"),
             lm.TrainConfig(max_steps=60, eval_every=0, device="cpu"))
    return out


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="int8 against fp32 (CPU)")
    for column in ("model", "measure", "fp32", "int8"):
        table.add_column(column, justify="left" if column in ("model", "measure") else "right")
    for m in report["models"]:
        name = f"{Path(m['checkpoint']).name} ({m['tokenizer']})"
        fp32, int8 = m["fp32"], m["int8"]
        rows = [
            ("perplexity / token", f"{fp32['perplexity']:.2f}", f"{int8['perplexity']:.2f} ({m['perplexity_change']:+.2%})"),
            ("perplexity / word", f"{fp32['word_perplexity']:.2f}", f"{int8['word_perplexity']:.2f}"),
            ("bits / char", f"{fp32['bits_per_char']:.4f}", f"{int8['bits_per_char']:.4f}"),
            ("top-1 / top-3", f"{fp32['top1_accuracy']:.1%} / {fp32['top3_accuracy']:.1%}",
             f"{int8['top1_accuracy']:.1%} / {int8['top3_accuracy']:.1%}"),
            ("keystroke savings", f"{fp32['keystroke_savings']:.1%}", f"{int8['keystroke_savings']:.1%}"),
            ("generation (1 stream)", f"{fp32['generate_tokens_per_s']:,.0f} tok/s",
             f"{int8['generate_tokens_per_s']:,.0f} tok/s ({m['generate_speedup']:.2f}×)"),
            ("likelihood pass", f"{fp32['likelihood_words_per_s']:,.0f} words/s", f"{int8['likelihood_words_per_s']:,.0f} words/s"),
        ]
        for i, row in enumerate(rows):
            table.add_row(name if i == 0 else "", *row)
    Console().print(table)


if __name__ == "__main__":
    main()
