"""Weight averaging (EMA, NT-ASGD), the plateau schedule and variable BPTT windows in the trainer."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import lm
import lm.training.trainer as trainer
from conftest import InterruptAt, train_tiny
from lm.checkpoint.store import read_resume
from lm.model.likelihood import LossMetrics

STEADY = dict(schedule="constant", warmup=0, eval_every=0, patience=0, dropout=0.0, batch=4, bptt=16)


def raw_weights(folder) -> dict[str, torch.Tensor]:
    tensors, _ = read_resume(folder)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def averaged_weights(folder) -> dict[str, torch.Tensor]:
    tensors, _ = read_resume(folder)
    return {k[len("average."):]: v for k, v in tensors.items() if k.startswith("average.")}


def test_ema_is_the_moving_average_of_the_weights_after_each_step(tmp_path, corpus_file):
    decay, steps = 0.5, 4
    # The weights after step k, from runs without averaging (the same seed takes the same steps).
    after = [raw_weights(train_tiny(corpus_file, tmp_path / f"k{k}", max_steps=k, average="none", **STEADY).checkpoint)
             for k in range(1, steps + 1)]
    expected = {name: t.clone() for name, t in after[0].items()}  # the first update copies
    for weights in after[1:]:
        for name in expected:
            expected[name] = decay * expected[name] + (1 - decay) * weights[name]
    run = train_tiny(corpus_file, tmp_path / "ema", max_steps=steps, average="ema", ema_decay=decay, **STEADY)
    got = averaged_weights(run.checkpoint)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(got["rnn.weight_hh_l0"], after[-1]["rnn.weight_hh_l0"])


def test_a_run_with_the_defaults_keeps_an_ema_of_the_last_200_steps_or_so(tmp_path, corpus_file):
    first = raw_weights(train_tiny(corpus_file, tmp_path / "one", max_steps=1, average="none", **STEADY).checkpoint)
    run = train_tiny(corpus_file, tmp_path / "two", max_steps=2, **STEADY)  # no --average given
    second, got = raw_weights(run.checkpoint), averaged_weights(run.checkpoint)
    assert got.keys() == second.keys()
    for name in got:  # the first update copies the weights; the second keeps 0.995 of them
        torch.testing.assert_close(got[name], 0.995 * first[name] + 0.005 * second[name], rtol=1e-5, atol=1e-6)


def _fake_validation(average_loss: float, raw_loss: float):
    def validate(run, model, autocast):
        loss = average_loss if model is run.average.module else raw_loss
        return LossMetrics(loss=loss, tokens=100, chars=100, words=20)
    return validate


@pytest.mark.parametrize("average_better", [True, False])
def test_the_better_of_the_weights_and_their_average_is_saved(tmp_path, corpus_file, monkeypatch, average_better):
    monkeypatch.setattr(trainer, "_validate", _fake_validation(1.0 if average_better else 3.0, 2.0))
    run = train_tiny(corpus_file, tmp_path / "run", max_steps=6, average="ema", ema_decay=0.5, **STEADY)
    saved = load_file(str(run.checkpoint / "model.safetensors"))
    wanted = averaged_weights(run.checkpoint) if average_better else raw_weights(run.checkpoint)
    other = raw_weights(run.checkpoint) if average_better else averaged_weights(run.checkpoint)
    assert torch.equal(saved["rnn.weight_hh_l0"], wanted["rnn.weight_hh_l0"])
    assert not torch.equal(saved["rnn.weight_hh_l0"], other["rnn.weight_hh_l0"])
    assert run.best["averaged"] is average_better
    assert run.best["valid_loss"] == (1.0 if average_better else 2.0)


class Rates(lm.Progress):
    def __init__(self):
        self.lr, self.messages = {}, []

    def step(self, stats):
        self.lr[stats["step"]] = stats["lr"]

    def message(self, text):
        self.messages.append(text)


def test_plateau_divides_the_rate_by_four_and_asgd_starts_averaging_when_validation_stalls(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setattr(trainer, "_validate", _fake_validation(5.0, 2.0))  # never improves after the first
    rates = Rates()
    corpus = lm.load_corpus([str(corpus_file)])
    config = lm.TrainConfig(batch=4, bptt=16, lr=0.5, optimizer="sgd", schedule="plateau", average="asgd", warmup=0,
                            max_steps=30, eval_every=10, patience=0, log_every=10, device="cpu",
                            tune_cache=False)
    lm.train(corpus, tmp_path / "run", lm.ModelConfig(layers=1, hidden=32, emb=16, dropout=0.0),
             lm.TokenizerConfig(kind="char"), config, progress=rates)
    # Evaluations at steps 10 (the first: an improvement), 20 and 30 (none); the rate logged at a
    # step is the one that step used, before its evaluation.
    assert rates.lr == {10: 0.5, 20: 0.5, 30: 0.5 / 4}
    assert any("from step 20" in m for m in rates.messages)
    tensors, _ = read_resume(tmp_path / "run")
    assert int(tensors["average_count"]) == 10  # steps 21 to 30


def test_variable_windows_cover_each_epoch_once_and_scale_the_rate(tmp_path, corpus_file, monkeypatch):
    starts, rates = [], []
    real_window_at, real_set_lr = trainer.window_at, trainer._set_lr
    monkeypatch.setattr(trainer, "window_at", lambda s, start, length, d: (starts.append((start, length)),
                                                                             real_window_at(s, start, length, d))[1])
    monkeypatch.setattr(trainer, "_set_lr", lambda opt, lr: (rates.append(lr), real_set_lr(opt, lr))[1])
    run = train_tiny(corpus_file, tmp_path / "run", max_steps=400, vary_bptt=True, lr=1e-2, **STEADY)
    lengths = [n for _, n in starts]
    assert min(lengths) >= 5 and max(lengths) <= 32 and len(set(lengths)) > 5
    assert sum(n < 12 for n in lengths) > 0  # the occasional half-length window
    # Within an epoch each window starts where the last one ended; a new epoch starts at 0.
    epochs = [0] + [i for i, (s, _) in enumerate(starts) if s == 0 and i > 0]
    assert len(epochs) >= 2
    stream = lm.data.batching.batchify(lm.data.corpus.token_ids(lm.load_corpus([str(corpus_file)]).train,
                                                  lm.load(run.checkpoint).tokenizer), 4).shape[1]
    for i in range(epochs[1]):
        start, length = starts[i]
        assert start == sum(n for _, n in starts[:i])
    assert starts[epochs[1] - 1][0] + starts[epochs[1] - 1][1] >= stream - 1
    assert rates == pytest.approx([1e-2 * n / 16 for n in lengths])


def test_resume_restores_the_average_and_the_windows_bit_for_bit(tmp_path, corpus_file, default_sigint):
    settings = dict(max_steps=60, eval_every=20, patience=0, log_every=5, dropout=0.2, batch=4, bptt=16,
                    average="ema", ema_decay=0.9, vary_bptt=True, tune_cache=False)
    train_tiny(corpus_file, tmp_path / "straight", **settings)
    corpus = lm.load_corpus([str(corpus_file)])
    model_config = lm.ModelConfig(layers=1, hidden=64, emb=32, dropout=0.2)
    tok_config = lm.TokenizerConfig(kind="char", min_count=1)
    train_config = lm.TrainConfig(**{k: v for k, v in settings.items() if k != "dropout"}, lr=1e-2, warmup=0, device="cpu")
    first = lm.train(corpus, tmp_path / "resumed", model_config, tok_config, train_config, progress=InterruptAt(25))
    assert first.interrupted and first.step == 25
    lm.train(corpus, tmp_path / "resumed", model_config, tok_config, train_config, resume=True)
    for read in (raw_weights, averaged_weights):
        straight, resumed = read(tmp_path / "straight"), read(tmp_path / "resumed")
        assert straight.keys() == resumed.keys() and straight
        for name in straight:
            assert torch.equal(straight[name], resumed[name]), (read.__name__, name)
    counts = [read_resume(tmp_path / run)[0]["average_count"] for run in ("straight", "resumed")]
    assert torch.equal(*counts) and int(counts[0]) == 60
