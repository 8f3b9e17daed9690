"""Speed of the keyboard simulation (`lm eval`'s keyboard metrics): the session path against the fast one.

For each checkpoint, types the first words of WikiText-2 test through
  - old: `keyboard_metrics(..., session=SuggestionSession(suggester))`, a suggestion per keystroke;
  - new: `lm.evaluate.fast_keyboard.fast_keyboard_metrics` (chunked reads for word models),
and reports words/s of each, and whether both give the same metrics on the old path's words.

    python bench/keyboard_speed.py --checkpoint /tmp/kb-word --checkpoint /tmp/kb-unigram
    python bench/keyboard_speed.py --checkpoint /tmp/kb-word --old-words 1000 --new-words 20000

Run it alone on the machine (flock -x /tmp/lm-cpu.lock ...). Prints a table and JSON (also
written to bench/results/keyboard_speed.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.evaluate.evaluation import unknown_word_test  # noqa: E402
from lm.evaluate.fast_keyboard import fast_keyboard_metrics  # noqa: E402
from lm.evaluate.keyboard import keyboard_metrics, leading_words  # noqa: E402
from lm.suggest.engine import Suggester, SuggestionSession  # noqa: E402

WIKITEXT_TEST = ROOT.parent / "shared" / "corpora" / "wikitext-2" / "test.txt"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def measure(checkpoint: str, text: str, old_words: int, new_words: int) -> dict:
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer, lexicon=loaded.lexicon)
    unknown = unknown_word_test(tokenizer)
    old_text, new_text = leading_words(text, old_words), leading_words(text, new_words)
    old, old_s = timed(lambda: keyboard_metrics(suggester, old_text, session=SuggestionSession(suggester), is_unknown=unknown))
    same, _ = timed(lambda: fast_keyboard_metrics(suggester, old_text, is_unknown=unknown))
    new, new_s = timed(lambda: fast_keyboard_metrics(suggester, new_text, is_unknown=unknown))
    old_rate, new_rate = old_words / old_s, new_words / new_s
    return {"checkpoint": checkpoint, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
            "model": {k: model.config.to_dict()[k] for k in ("layers", "hidden", "emb", "softmax")},
            "old_words": old_words, "old_words_per_s": round(old_rate, 1),
            "new_words": new_words, "new_words_per_s": round(new_rate, 1), "speedup": round(new_rate / old_rate, 1),
            "same_metrics": asdict(same) == asdict(old), "old_metrics": old.to_dict(), "new_metrics": new.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="checkpoint folder (repeatable)")
    parser.add_argument("--text", type=Path, default=WIKITEXT_TEST)
    parser.add_argument("--old-words", type=int, default=1000, help="words typed through the session path")
    parser.add_argument("--new-words", type=int, default=20000, help="words typed through the fast path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = args.text.read_text(encoding="utf-8")
    rows = [measure(c, text, args.old_words, args.new_words) for c in args.checkpoint]
    print(f"{'tokenizer':<10} {'vocab':>7} {'old words/s':>12} {'new words/s':>12} {'speed-up':>9}  same metrics")
    for r in rows:
        print(f"{r['tokenizer']:<10} {r['vocab_size']:>7} {r['old_words_per_s']:>12} {r['new_words_per_s']:>12} "
              f"{r['speedup']:>8}x  {r['same_metrics']}")
    report = {"threads": torch.get_num_threads(), "text": str(args.text), "rows": rows}
    out = ROOT / "bench" / "results" / "keyboard_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
