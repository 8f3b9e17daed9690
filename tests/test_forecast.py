"""The budget rule's forecast checks itself once and re-plans when the run goes at another speed."""
from __future__ import annotations

import json
import types

import pytest
from click.testing import CliRunner

import lm
import lm.training.setup
import lm.training.trainer
from cli import cli
from lm.training.forecast import Forecast
from lm.training.presets import Plan


def plan_at(tokens_per_s: float, seconds: float = 300, train_tokens: int = 1_000_000) -> Plan:
    return Plan("small", tokens_per_s, tokens_per_s * seconds, tokens_per_s * seconds / train_tokens, train_tokens)


def test_the_forecast_is_checked_once_after_a_tenth_of_the_budget_or_a_minute():
    assert Forecast(plan_at(10_000), 300, 0.3).check_at == 30  # a tenth of 5 minutes
    assert Forecast(plan_at(10_000, 3600), 3600, 0.3).check_at == 60  # a minute of an hour
    forecast = Forecast(plan_at(10_000), 300, 0.3)
    assert forecast.check(29.9, 29.9 * 5_000) is None  # too early to tell, and not used up
    replanned = forecast.check(30, 30 * 7_000)  # 30 % slow
    assert replanned.tokens_per_s == pytest.approx(7_000)
    assert replanned.epochs == pytest.approx(7_000 * 300 / 1_000_000)  # 2.1 passes, not 3
    assert forecast.check(60, 60 * 1_000) is None  # once only


def test_a_forecast_within_the_margin_stands():
    assert Forecast(plan_at(10_000), 300, 0.3).check(30, 30 * 8_100) is None  # 19 % slow
    assert Forecast(plan_at(10_000), 300, 0.3).check(30, 30 * 11_900) is None  # 19 % fast
    assert Forecast(plan_at(10_000), 300, 0.3).check(30, 30 * 12_100) is not None  # 21 % fast


def test_the_re_plan_lowers_the_dropout_for_fewer_epochs_unless_it_was_given():
    # Planned: 20,000 tokens/s for 5 minutes of 1 M tokens, 6 epochs: the preset's 0.3.
    forecast = Forecast(plan_at(20_000), 300, 0.3)
    replanned = forecast.check(30, 30 * 10_000)  # 3 epochs: a short run's 0.1
    assert forecast.dropout(replanned, 0.3) == 0.1
    assert Forecast(plan_at(20_000), 300, None).dropout(replanned, 0.25) == 0.25  # --dropout given


class FakeClock:
    """perf_counter for the training loop: time moves only with the tokens trained, at `rate`."""

    def __init__(self, rate: float):
        self.rate, self.now = rate, 1000.0

    def perf_counter(self) -> float:
        return self.now

    def step(self, real_step):
        def step(model, training_loss, optimizer, inputs, *args):
            self.now += inputs.numel() / self.rate
            return real_step(model, training_loss, optimizer, inputs, *args)
        return step


def timed_run(tmp_path, monkeypatch, planned: float, runs_at: float):
    """A 5-second run (on the fake clock) planned at `planned` tokens/s that goes at `runs_at`."""
    clock = FakeClock(runs_at)
    monkeypatch.setattr(lm.training.trainer, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(lm.training.trainer, "train_step", clock.step(lm.training.trainer.train_step))
    monkeypatch.setattr(lm.training.setup, "measure_speed", lambda *args, **kwargs: planned)
    corpus_path = tmp_path / "text.txt"
    corpus_path.write_text("the cat sat on the mat and the dog ran to the park\n" * 2_000, encoding="utf-8")
    messages = []

    class Listen(lm.Progress):
        def message(self, text):
            messages.append(text)

    out = tmp_path / "run"
    lm.train(lm.load_corpus([str(corpus_path)]), out, lm.ModelConfig(hidden=32, emb=16),
             lm.TokenizerConfig(kind="char"), lm.TrainConfig(size="auto", max_time=5, epochs=50, batch=4, bptt=16,
                                                             tune_cache=False),
             Listen(), given={"hidden", "emb", "batch", "bptt", "epochs"})
    return json.loads((out / "config.json").read_text()), messages


def test_a_run_slower_than_its_forecast_re_plans_once_and_says_so(tmp_path, monkeypatch):
    saved, messages = timed_run(tmp_path, monkeypatch, planned=400_000, runs_at=2_000)
    replans = [m for m in messages if m.startswith("Re-planned")]
    assert len(replans) == 1 and "2,000 tokens/s, not the 400,000 timed" in replans[0]
    # Planned: 5 s at 400,000 tokens/s over the ~94k training characters, 21 epochs (enough to
    # feed small), so the preset's own dropout; measured: 2,000 tokens/s, a tenth of an epoch: 0.1.
    train_tokens = saved["corpus"]["train_tokens"]
    assert saved["plan"]["epochs"] == pytest.approx(400_000 * 5 / train_tokens) and saved["plan"]["epochs"] > 4
    preset_dropout = lm.training.presets.SIZES[saved["plan"]["size"]]["model"]["dropout"]
    assert preset_dropout > 0.1 and f"dropout {preset_dropout:g} → 0.1" in replans[0]
    assert saved["plan"]["replanned"]["epochs"] == pytest.approx(2_000 * 5 / train_tokens)
    assert saved["plan"]["replanned"]["after_s"] == pytest.approx(0.5, abs=0.05)  # a tenth of the budget
    assert saved["model"]["dropout"] == saved["plan"]["replanned"]["dropout"] == 0.1
    info = CliRunner().invoke(cli, ["info", "-c", str(tmp_path / "run")])
    assert "re-planned" in info.output and "2,000 tokens/s" in info.output


def test_a_run_on_its_forecast_does_not_re_plan(tmp_path, monkeypatch):
    saved, messages = timed_run(tmp_path, monkeypatch, planned=2_000, runs_at=2_000)
    assert not [m for m in messages if m.startswith("Re-planned")]
    assert "replanned" not in saved["plan"]
