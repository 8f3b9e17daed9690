"""A picture of the run: curves.png in each checkpoint, `lm info`, and `lm train --tensorboard`."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import lm
from cli import cli
from conftest import train_tiny
from lm.checkpoint.curves import CURVES_FILE, CurvesWarning, terminal_chart, write_curves

KINDS = ("char", "unigram", "bpe", "word")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def made_up_log(perplexities, minutes_per_eval=0.5, steps_per_eval=100) -> list[dict]:
    return [{"step": (i + 1) * steps_per_eval, "elapsed": (i + 1) * minutes_per_eval * 60, "valid_loss": math.log(p),
             "valid_perplexity": p, "train_loss": math.log(p) - 0.1} for i, p in enumerate(perplexities)]


# The PNG.

def test_training_leaves_a_curves_png_that_opens(tiny_checkpoints):
    from PIL import Image

    folder = tiny_checkpoints("char")
    with Image.open(folder / CURVES_FILE) as image:
        image.verify()
    with Image.open(folder / CURVES_FILE) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    records = read_jsonl(folder / "metrics.jsonl")
    assert len(records) >= 2
    # Each evaluation carries the mean training loss since the one before; this text is learnt fast.
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_the_png_follows_the_metrics(tmp_path):
    log = made_up_log([40, 20, 12, 9, 8])
    assert write_curves(log, tmp_path / "a.png", "run")
    assert write_curves(log, tmp_path / "same.png", "run")
    changed = [dict(r) for r in log]
    changed[-1]["valid_perplexity"] = 30.0
    assert write_curves(changed, tmp_path / "b.png", "run")
    a, same, b = pixels(tmp_path / "a.png"), pixels(tmp_path / "same.png"), pixels(tmp_path / "b.png")
    assert np.array_equal(a, same)
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_a_picture_that_cannot_be_drawn_is_a_warning_and_training_goes_on(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were missing
    with pytest.warns(CurvesWarning, match=r"cannot draw curves\.png .*pip install matplotlib"):
        result = train_tiny(corpus_file, tmp_path / "m", max_steps=20, eval_every=10)
    assert result.step == 20
    assert (tmp_path / "m" / "config.json").exists() and not (tmp_path / "m" / CURVES_FILE).exists()


def test_importing_lm_and_the_cli_loads_no_plotting_library():
    code = "import sys, lm, cli; lm.checkpoint.store; print(sorted(m for m in ('matplotlib', 'plotext') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


# The terminal chart.

def chart_marks(chart: str) -> tuple[list[str], dict[int, list[int]]]:
    """The chart's y labels (top to bottom) and, per row of the plot area, the columns of its braille dots."""
    rows = [line for line in chart.splitlines() if "┤" in line or line.lstrip().startswith("│")]
    labels = [line.split("┤")[0].strip() for line in rows if "┤" in line]
    marks = {}
    for index, line in enumerate(rows):
        body = re.split(r"[┤│]", line, maxsplit=1)[1]
        body = re.sub(r"[⠀-⣿]+ (valid|train)", lambda m: " " * len(m.group()), body)  # the legend
        columns = [i for i, ch in enumerate(body) if "\u2800" <= ch <= "\u28ff"]
        if columns:
            marks[index] = columns
    return labels, marks


@pytest.mark.parametrize("shape", ["decreasing", "increasing"])
def test_the_terminal_chart_puts_the_points_where_they_belong(shape):
    perplexities = [50, 30, 20, 14, 11, 9, 8, 7.5]
    if shape == "increasing":
        perplexities = perplexities[::-1]
    log = [{k: v for k, v in r.items() if k != "train_loss"} for r in made_up_log(perplexities)]
    labels, marks = chart_marks(terminal_chart(log, width=60, height=16))
    last_column = max(max(columns) for columns in marks.values())
    row_of_last = next(row for row, columns in marks.items() if last_column in columns)
    lowest, highest = max(marks), min(marks)
    assert row_of_last == (lowest if shape == "decreasing" else highest)
    # The y axis spans the values: the top label is the highest perplexity, the bottom one the lowest.
    assert float(labels[0]) == pytest.approx(50, rel=0.02) and float(labels[-1]) == pytest.approx(7.5, rel=0.02)


# lm info.

def count_parameters(folder: Path) -> int:
    model = lm.load(folder).model
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter


@pytest.mark.parametrize("kind", KINDS)
def test_info_reports_the_checkpoints_own_figures(tiny_checkpoints, kind):
    folder = tiny_checkpoints(kind)
    config = json.loads((folder / "config.json").read_text())
    records = read_jsonl(folder / "metrics.jsonl")
    best = min(records, key=lambda r: r["valid_loss"])
    tokenizer = lm.load(folder).tokenizer

    result = CliRunner().invoke(cli, ["info", "-c", str(folder)], terminal_width=120)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"{count_parameters(folder):,} parameters" in text
    assert f"{kind}, vocab {tokenizer.vocab_size:,}" in text
    assert f"perplexity {best['valid_perplexity']:.2f}, {best['valid_bits_per_char']:.4f} bits/char at step {best['step']:,}" in text
    assert f"{records[-1]['step']:,} steps ({records[-1]['epoch']} full epochs), {records[-1]['tokens']:,} tokens" in text
    assert f"evaluations    │ {len(records)} " in text
    assert f"1×{config['model']['hidden']} LSTM, emb {config['model']['emb']}" in text
    assert f"batch {config['training']['batch']} × bptt {config['training']['bptt']}" in text
    assert "perplexity per token" in text  # the chart's title

    summary = json.loads(CliRunner().invoke(cli, ["info", "-c", str(folder), "--json"]).output)
    assert summary["tokenizer"] == {**summary["tokenizer"], "kind": kind, "vocab_size": tokenizer.vocab_size}
    assert summary["model"]["parameters"] == count_parameters(folder)
    assert summary["size"]["weights_bytes"] == (folder / "model.safetensors").stat().st_size
    assert summary["best"]["valid_perplexity"] == best["valid_perplexity"] and summary["best"]["step"] == best["step"]
    assert summary["best"]["minutes"] == pytest.approx(best["elapsed"] / 60)
    assert summary["trained"]["evaluations"] == len(records)
    assert summary["corpus"]["train_tokens"] == config["corpus"]["train_tokens"]
    assert summary["fine_tuned_from"] is None and summary["resumed_at"] == []


def test_info_tells_a_resumed_and_a_fine_tuned_run(tmp_path, corpus_file):
    train_tiny(corpus_file, tmp_path / "run", hidden=32, emb=16, max_steps=10, eval_every=5)
    lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "run", config=lm.TrainConfig(max_steps=15, device="cpu", tune_cache=False),
             resume=True)
    lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "tuned", init_from=tmp_path / "run",
             config=lm.TrainConfig(max_steps=5, batch=8, bptt=32, device="cpu", tune_cache=False))
    resumed = json.loads(CliRunner().invoke(cli, ["info", "-c", str(tmp_path / "run"), "--json"]).output)
    assert resumed["resumed_at"] == [10] and resumed["trained"]["steps"] == 15
    tuned = json.loads(CliRunner().invoke(cli, ["info", "-c", str(tmp_path / "tuned"), "--json"]).output)
    assert tuned["fine_tuned_from"] == str(tmp_path / "run") and tuned["resumed_at"] == []
    assert "resumed at step │ 10 " in CliRunner().invoke(cli, ["info", "-c", str(tmp_path / "run")]).output
    assert "fine-tuned from │" in CliRunner().invoke(cli, ["info", "-c", str(tmp_path / "tuned")]).output


def test_info_without_a_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["info", "-c", "missing"])
    assert result.exit_code == 1
    assert result.output == "Error: checkpoint missing does not exist — check the path, or train one with `lm train`\n"
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: no checkpoint found under checkpoints/")


# --tensorboard.

def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class Recorder(lm.Progress):
    def __init__(self):
        self.steps, self.records = [], []

    def step(self, stats):
        self.steps.append(dict(stats))

    def evaluated(self, record):
        self.records.append(dict(record))


def test_tensorboard_events_hold_the_logged_values(tmp_path, corpus_file):
    from lm.training.tensorboard import TensorBoardProgress, Tee

    recorder, board = Recorder(), TensorBoardProgress(tmp_path / "tb")
    corpus = lm.load_corpus([str(corpus_file)])
    lm.train(corpus, tmp_path / "m", model_config=lm.ModelConfig(layers=1, hidden=32, emb=16),
             tokenizer_config=lm.TokenizerConfig(kind="char"), progress=Tee(recorder, board),
             config=lm.TrainConfig(batch=8, bptt=32, max_steps=40, eval_every=20, log_every=10, device="cpu",
                                             tune_cache=False))
    scalars = read_scalars(tmp_path / "tb")
    for name in ("loss", "lr", "tokens_per_s"):
        expected = [(s["step"], s[name]) for s in recorder.steps]
        assert [step for step, _ in scalars[f"train/{name}"]] == [step for step, _ in expected]
        assert [v for _, v in scalars[f"train/{name}"]] == pytest.approx([v for _, v in expected], rel=1e-6)
    for name in ("loss", "perplexity", "bits_per_char"):
        expected = [(r["step"], r[f"valid_{name}"]) for r in recorder.records]
        assert [step for step, _ in scalars[f"valid/{name}"]] == [step for step, _ in expected] == [20, 40]
        assert [v for _, v in scalars[f"valid/{name}"]] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_train_tensorboard_flag_writes_event_files(tmp_path, corpus_file):
    args = ["train", str(corpus_file), "--out", str(tmp_path / "m"), "--tokenizer", "char", "--layers", "1",
            "--hidden", "32", "--emb", "16", "--batch", "8", "--bptt", "32", "--max-steps", "30",
            "--eval-every", "15", "--device", "cpu", "--no-tune-cache", "--quiet", "--tensorboard", str(tmp_path / "tb")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    records = read_jsonl(tmp_path / "m" / "metrics.jsonl")
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["valid/loss"]] == [r["step"] for r in records]
    assert [v for _, v in scalars["valid/loss"]] == pytest.approx([r["valid_loss"] for r in records], rel=1e-6)


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    result = CliRunner().invoke(cli, ["train", str(corpus_file), "--out", str(tmp_path / "m"),
                                      "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 1
    assert result.output == ("Error: --tensorboard needs the tensorboard package, which is not installed — "
                             "pip install 'lm[tensorboard]'\n")
    assert not (tmp_path / "m").exists()
