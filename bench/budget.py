"""Quality per minute: train named settings for the same wall-clock budget, keep the curves.

Each run is `lm train` (the library call) with `--max-time`, evaluated once an epoch as a user's
run is, then scored on the test text. The curves (valid perplexity against minutes) and the test
figures go to bench/results/budget-<corpus>.json and a PNG beside it.

    python bench/budget.py --corpus wt1m --minutes 15 classic defaults    # the 1 M-word, 10k-vocab corpus
    python bench/budget.py --corpus wikitext-2 --minutes 15 defaults
    python bench/budget.py --corpus shakespeare --minutes 5 defaults
    python bench/budget.py --corpus wt100k --minutes 5 classic auto       # 100 k words of WikiText-2
    python bench/budget.py --list                                          # the named settings
    python bench/budget.py --grid docs/budget-grid.png                     # issue 33's grid, every corpus
    python bench/budget.py --corpus wt1m --plot classic-ema medium-d01-ema # redraw with only these runs

wt1m is built from WikiText-2's training text (the first 1 M words, its 10,000 most frequent
words kept and the rest mapped to <unk>, as Penn Treebank is) with WikiText-2's valid and test
text mapped to the same vocabulary; it is written under --work, never into the repository.
Run it alone: every figure is a wall-clock race.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lm  # noqa: E402
from lm.evaluate.evaluation import EvalConfig, evaluate_text  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora"
WIKITEXT = SHARED / "wikitext-2"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
RESULTS = ROOT / "bench" / "results"

CLASSIC = (dict(layers=2, hidden=200, emb=200, dropout=0.2),
           dict(optimizer="sgd", lr=20.0, batch=20, bptt=35, schedule="plateau"))

# Named settings: the flags of `lm train` as (model, train) fields. "defaults" sets nothing.
SETTINGS = {
    "defaults": ({}, {}),  # lm train's defaults before the budget rule: the medium size
    # `lm train` with the classic example's flags; it gets lm's default weight average as any run
    # does. classic-no-average is the example's own loop, as the runs before 2026-11-30 were.
    "classic": CLASSIC,
    "classic-no-average": (CLASSIC[0], {**CLASSIC[1], "average": "none"}),
    "small": ({}, dict(size="small")),
    "tiny": ({}, dict(size="tiny")),
    "auto": ({}, dict(size="auto")),  # the budget rule's choice
    "defaults-awd": (dict(locked_dropout=True, embedding_dropout=0.1, weight_drop=0.3, ar=2.0, tar=1.0), {}),
    "defaults-no-average": ({}, dict(average="none")),
}


def first_words(words: int) -> list[str]:
    """WikiText-2's training lines from the start, until they hold `words` words."""
    lines, count = [], 0
    for line in (WIKITEXT / "train.txt").read_text(encoding="utf-8").splitlines():
        if count >= words:
            break
        lines.append(line)
        count += len(line.split())
    return lines


def build_wt1m(work: Path, words: int = 1_000_000, vocab: int = 10_000) -> Path:
    """The 1 M-word, 10k-vocabulary corpus: train/valid/test files under work/wt1m."""
    folder = work / "wt1m"
    if (folder / "test.txt").exists():
        return folder
    lines = first_words(words)
    counts = Counter(word for line in lines for word in line.split())
    counts.pop("<unk>", None)
    kept = {word for word, _ in counts.most_common(vocab - 1)}  # and <unk>

    def closed(text_lines):
        return "".join(" ".join(w if w in kept else "<unk>" for w in line.split()) + "\n" for line in text_lines)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(closed(lines), encoding="utf-8")
    for split in ("valid", "test"):
        text = (WIKITEXT / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        (folder / f"{split}.txt").write_text(closed(text), encoding="utf-8")
    return folder


def build_wt100k(work: Path, words: int = 100_000) -> Path:
    """A small corpus: the first 100 k words of WikiText-2's training text, its own vocabulary
    (the word tokenizer's), and WikiText-2's valid and test text, under work/wt100k."""
    folder = work / "wt100k"
    if (folder / "test.txt").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("".join(line + "\n" for line in first_words(words)), encoding="utf-8")
    for split in ("valid", "test"):
        (folder / f"{split}.txt").write_text((WIKITEXT / f"{split}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def corpus_for(name: str, work: Path):
    """(corpus, test text, tokenizer kind)."""
    if name == "wt1m":
        folder = build_wt1m(work)
        return lm.load_corpus([str(folder)]), (folder / "test.txt").read_text(encoding="utf-8"), "word"
    if name == "wt100k":
        folder = build_wt100k(work)
        return lm.load_corpus([str(folder)]), (folder / "test.txt").read_text(encoding="utf-8"), "word"
    if name == "wikitext-2":
        return lm.load_corpus([str(WIKITEXT)]), (WIKITEXT / "test.txt").read_text(encoding="utf-8"), "word"
    if name == "shakespeare":  # lm train's own split of one file: valid and test text from the last 10 %
        corpus = lm.load_corpus([str(SHAKESPEARE)])
        return corpus, corpus.test, "char"
    raise SystemExit(f"unknown corpus {name!r} — wt1m, wt100k, wikitext-2 or shakespeare")


class Curve(lm.Progress):
    """Keeps (minutes, valid loss) at each evaluation and prints a line."""

    def __init__(self):
        self.points, self.info = [], {}

    def start(self, info):
        self.info = info

    def evaluated(self, record):
        self.points.append({"minutes": record["elapsed"] / 60, "step": record["step"], "valid_loss": record["valid_loss"],
                            "valid_perplexity": record["valid_perplexity"], "train_loss": record.get("train_loss")})
        print(f"  {record['elapsed'] / 60:5.1f} min  step {record['step']:>6}  valid ppl {record['valid_perplexity']:8.2f}"
              f"  loss {record['valid_loss']:.4f}", flush=True)

    def message(self, text):
        print(f"  {text}", flush=True)


def run(name: str, corpus, test_text: str, kind: str, minutes: float, out: Path, extra_model: dict, extra_train: dict) -> dict:
    model_fields, train_fields = SETTINGS[name]
    model_config = lm.ModelConfig(**{**model_fields, **extra_model})
    train_config = lm.TrainConfig(**{**train_fields, **extra_train}, max_time=minutes * 60, tune_cache=False)
    curve = Curve()
    started = time.perf_counter()
    result = lm.train(corpus, out, model_config, lm.TokenizerConfig(kind=kind), train_config, curve, overwrite=True)
    wall = time.perf_counter() - started
    checkpoint = lm.load_checkpoint(out)
    test = evaluate_text(checkpoint.model, checkpoint.tokenizer, test_text, EvalConfig(keyboard=False, cache=False, device="cpu"))
    return {
        "settings": name, "model": checkpoint.config["model"], "training": checkpoint.config["training"],
        "parameters": curve.info.get("parameters"), "train_tokens": curve.info.get("train_tokens"),
        "steps": result.step, "epochs": result.step / max(1, curve.info.get("steps_per_epoch", 0) or 1),
        "tokens_per_s": result.tokens_per_s, "wall_minutes": wall / 60, "curve": curve.points,
        "best_valid_perplexity": result.best.get("valid_perplexity"),
        "test_loss": test.loss.loss, "test_perplexity": test.loss.perplexity,
        "test_word_perplexity": test.loss.word_perplexity, "test_bits_per_char": test.loss.bits_per_char,
    }


def plot(report: dict, path: Path, names: list[str] | None = None) -> None:
    """Valid perplexity against minutes for every run in the report, or only those named."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, row in report["runs"].items():
        if names and name not in names:
            continue
        points = row["curve"]
        axis.plot([p["minutes"] for p in points], [p["valid_perplexity"] for p in points], marker="o", label=name)
    axis.set_xlabel("minutes")
    axis.set_ylabel("valid perplexity")
    axis.set_yscale("log")
    axis.set_title(f"{report['corpus']}: validation during each run")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_grid(path: Path) -> None:
    """Issue 33's grid in one picture: per corpus, valid perplexity against minutes for the
    runs named classic-M (dashed) and auto-M (solid, `lm train`'s defaults), one colour per budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    corpora = [name for name in ("wt1m", "wikitext-2", "wt100k", "shakespeare") if (RESULTS / f"budget-{name}.json").exists()]
    figure, axes = plt.subplots(1, len(corpora), figsize=(4.2 * len(corpora), 4.2), squeeze=False)
    colours = {2: "tab:blue", 5: "tab:orange", 15: "tab:green", 60: "tab:red"}
    for axis, corpus in zip(axes[0], corpora):
        runs = json.loads((RESULTS / f"budget-{corpus}.json").read_text())["runs"]
        for minutes, colour in colours.items():
            for setting, style in (("classic", "--"), ("auto", "-")):
                row = runs.get(f"{setting}-{minutes}")
                if row is None:
                    continue
                points = row["curve"]
                label = f"{'defaults' if setting == 'auto' else 'classic flags'}, {minutes} min"
                axis.plot([p["minutes"] for p in points], [p["valid_perplexity"] for p in points], style, marker="o",
                          markersize=3, color=colour, label=label)
        axis.set_title(corpus)
        axis.set_xlabel("minutes")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("valid perplexity (per token)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="names from --list")
    parser.add_argument("--corpus", default="wt1m", choices=["wt1m", "wt100k", "wikitext-2", "shakespeare"])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lm-budget"), help="where the corpus and checkpoints go")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="extra model or training field for every run, e.g. --set dropout=0.2 (JSON values)")
    parser.add_argument("--tag", default="", help="suffix for the run's name in the report")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--grid", type=Path, metavar="PNG", help="draw the runs named classic-M and auto-M of every "
                        "corpus's report into one picture and stop")
    parser.add_argument("--plot", nargs="+", metavar="RUN", help="draw only these runs of the report "
                        "(without settings to run: redraw the picture and stop)")
    args = parser.parse_args()
    if args.list:
        for name, (model_fields, train_fields) in SETTINGS.items():
            print(f"{name:10} {model_fields} {train_fields}")
        return
    if args.grid:
        plot_grid(args.grid)
        return
    if not WIKITEXT.exists():
        sys.exit(f"{WIKITEXT} not found — the shared corpora live beside the repository")
    model_names = {f.name for f in lm.ModelConfig.__dataclass_fields__.values()}
    extra_model, extra_train = {}, {}
    for item in args.set:
        key, value = item.split("=", 1)
        (extra_model if key in model_names else extra_train)[key] = json.loads(value)
    report_path = RESULTS / f"budget-{args.corpus}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"corpus": args.corpus, "runs": {}}
    if not args.settings and args.plot:
        plot(report, report_path.with_suffix(".png"), args.plot)
        return
    corpus, test_text, kind = corpus_for(args.corpus, args.work)
    report["minutes"] = args.minutes
    for name in args.settings:
        label = name + args.tag
        print(f"{label}: {args.minutes:g} min on {args.corpus}", flush=True)
        row = run(name, corpus, test_text, kind, args.minutes, args.work / f"{args.corpus}-{label}", extra_model, extra_train)
        row["extra"], row["minutes"] = {**extra_model, **extra_train}, args.minutes
        report["runs"][label] = row
        print(f"{label}: test perplexity {row['test_perplexity']:.2f}, bits/char {row['test_bits_per_char']:.4f}, "
              f"{row['tokens_per_s']:,.0f} tokens/s, {row['steps']} steps", flush=True)
        RESULTS.mkdir(exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
        plot(report, report_path.with_suffix(".png"), args.plot)


if __name__ == "__main__":
    main()
