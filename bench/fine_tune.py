"""Fine-tuning: what `lm train NEW_TEXT --init-from BASE` buys on held-out text of the new kind.

Three models, measured on the held-out test part of the new text (the last 5 % of one file,
or the test file of a train/valid/test folder), which none of them trained on:
  - the base model as it is;
  - the base fine-tuned on the new text for --steps steps (`--init-from`, its defaults);
  - a model of the same size trained from scratch on the new text for the same steps, with a
    tokenizer of the same kind and size trained on the new text: what you get without a base.

    python bench/fine_tune.py -c checkpoints/wiki-base --text ../shared/corpora/tinyshakespeare/input.txt
    python bench/fine_tune.py --quick       # tiny models on generated text: a smoke test

Prints a table and JSON (also written to bench/results/fine_tune.json).
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
from lm.evaluate.evaluation import EvalConfig, evaluate_text  # noqa: E402


def measure(checkpoint: Path, text: str, args) -> dict:
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    result = evaluate_text(model, tokenizer, text, EvalConfig(keyboard_words=args.keyboard_words, device="cpu"))
    return {
        **{k: v for k, v in result.loss.to_dict().items() if k in ("perplexity", "word_perplexity", "bits_per_char")},
        **{k: v for k, v in result.keyboard.to_dict().items() if k in ("top1_accuracy", "top3_accuracy", "keystroke_savings")},
    }


def train_on(corpus, out: Path, args, lr: float | None = None, **kwargs) -> float:
    started = time.perf_counter()
    config = lm.TrainConfig(max_steps=args.steps, eval_every=args.steps, patience=0, device="cpu", lr=lr)
    lm.train(corpus, out, config=config, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--checkpoint", type=Path, help="the base model")
    parser.add_argument("--text", help="the new text: a file or a train/valid/test folder")
    parser.add_argument("--steps", type=int, default=300, help="training steps for both the fine-tuned and the scratch model")
    parser.add_argument("--keyboard-words", type=int, default=2000)
    parser.add_argument("--lr", type=float, help="the fine-tuning learning rate (default: --init-from's own)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "fine_tune.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fine_tune-"))
    if args.quick:
        from conftest import make_text, train_tiny

        (work / "base.txt").write_text(make_text(400, seed=0))
        (work / "new.txt").write_text(make_text(400, seed=1).replace("the", "thy"))
        train_tiny(work / "base.txt", work / "base", "unigram", max_steps=40)
        args.checkpoint, args.text, args.steps, args.keyboard_words = work / "base", str(work / "new.txt"), 20, 200
    corpus = lm.load_corpus([args.text])
    base = lm.load_checkpoint(args.checkpoint)
    shape = lm.ModelConfig.from_dict({k: v for k, v in base.model.config.to_dict().items() if k != "vocab_size"})
    tokenizer = lm.TokenizerConfig.from_dict(base.config["tokenizer"])  # kind and size; trained anew on the text
    seconds = {
        "fine-tuned": train_on(corpus, work / "tuned", args, lr=args.lr, init_from=args.checkpoint),
        "from scratch": train_on(corpus, work / "scratch", args, model_config=shape, tokenizer_config=tokenizer),
    }
    rows = {"base": measure(args.checkpoint, corpus.test, args),
            "fine-tuned": measure(work / "tuned", corpus.test, args),
            "from scratch": measure(work / "scratch", corpus.test, args)}
    print(f"held-out: {len(corpus.test.split()):,} words of {args.text}; {args.steps} steps each "
          f"(fine-tuned {seconds['fine-tuned']:.0f} s, from scratch {seconds['from scratch']:.0f} s)")
    print(f"{'model':<14}{'ppl/token':>10}{'ppl/word':>10}{'bits/char':>10}{'top-1':>8}{'top-3':>8}{'keys saved':>11}")
    for name, row in rows.items():
        print(f"{name:<14}{row['perplexity']:>10.2f}{row['word_perplexity']:>10.1f}{row['bits_per_char']:>10.4f}"
              f"{row['top1_accuracy']:>8.1%}{row['top3_accuracy']:>8.1%}{row['keystroke_savings']:>11.1%}")
    report = {"base": str(args.checkpoint), "text": args.text, "steps": args.steps, "lr": args.lr, "seconds": seconds, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
