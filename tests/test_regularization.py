"""The AWD-LSTM regularizers: on in training, off at inference, never in the saved weights."""
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

import lm
from cli import cli
from conftest import TINY_MODEL, TINY_TRAIN, make_text, train_tiny
from lm.model.config import CELLS, ModelConfig
from lm.model.int8 import quantize_int8
from lm.model.loss import mean_loss, token_nll, training_loss
from lm.model.network import CELL_MODULES, LanguageModel, locked_dropout

ALL_ON = dict(dropout=0.3, locked_dropout=True, embedding_dropout=0.3, weight_drop=0.5, ar=2.0, tar=1.0)


def tiny(cell="lstm", layers=2, hidden=24, emb=16, **regularizers) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=40, cell=cell, layers=layers, hidden=hidden, emb=emb, **regularizers))


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("time", [3, 12])  # the inference step loop, and the whole nn.LSTM call
def test_inference_ignores_the_regularizers(cell, time):
    plain, regularized = tiny(cell, dropout=0.0).eval(), tiny(cell, **ALL_ON).eval()
    ids = torch.randint(0, 40, (3, time))
    with torch.no_grad():
        expected, _ = plain(ids)
        first, _ = regularized(ids)
        second, _ = regularized(ids)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    nll, _ = token_nll(regularized, ids, ids)
    torch.testing.assert_close(nll, F.cross_entropy(first.flatten(0, 1), ids.flatten(), reduction="none").view(3, time))


@pytest.mark.parametrize("regularizer", [dict(locked_dropout=True, dropout=0.3), dict(embedding_dropout=0.3),
                                         dict(weight_drop=0.5)])
def test_each_random_regularizer_acts_in_training(regularizer):
    model = tiny(**{"dropout": 0.0, **regularizer}).train()
    ids = torch.randint(0, 40, (3, 10))
    first, second = model(ids)[0], model(ids)[0]
    assert not torch.equal(first, second)


def test_locked_dropout_draws_one_mask_per_sequence():
    dropped = locked_dropout(torch.ones(4, 9, 50), 0.5)  # [batch, time, features]
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same at every step


def fused_by_layer(model: LanguageModel, layer: int, w_hh=None):
    """One layer of the model's RNN as its own nn module: an independent computation."""
    config = model.config
    single = CELL_MODULES[config.cell](config.emb if layer == 0 else config.hidden, config.hidden, 1, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").copy_(getattr(model.rnn, f"{name}_l{layer}"))
        if w_hh is not None:
            single.weight_hh_l0.copy_(w_hh)
    return single


@pytest.mark.parametrize("cell", list(CELLS))
def test_locked_dropout_masks_embeddings_layers_and_output_once_per_sequence(cell):
    model = tiny(cell, hidden=16, emb=16, dropout=0.5, locked_dropout=True).train()
    ids = torch.randint(0, 40, (3, 10))
    torch.manual_seed(1)
    logits, _ = model(ids)
    torch.manual_seed(1)  # the same draws, in the same order: embedding output, between layers, output
    masks = [torch.empty(3, 1, 16).bernoulli_(0.5) / 0.5 for _ in range(3)]
    with torch.no_grad():
        x = model.embedding(ids) * masks[0]
        x = fused_by_layer(model, 0)(x)[0] * masks[1]
        x = fused_by_layer(model, 1)(x)[0] * masks[2]
        expected = model.decoder(model.projection(x))
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_drop_masks_the_recurrent_weights_of_the_fused_kernel(cell, monkeypatch):
    model = tiny(cell, layers=1, dropout=0.0, weight_drop=0.5).train()
    calls = []
    fused = lm.model.network.FUSED_CELLS[cell]
    monkeypatch.setitem(lm.model.network.FUSED_CELLS, cell, lambda *args: calls.append(1) or fused(*args))
    ids = torch.randint(0, 40, (3, 10))
    raw = model.rnn.weight_hh_l0.detach().clone()
    torch.manual_seed(1)
    logits, _ = model(ids)
    torch.manual_seed(1)
    masked = F.dropout(raw, 0.5, training=True)
    with torch.no_grad():
        expected = model.decoder(model.projection(fused_by_layer(model, 0, masked)(model.embedding(ids))[0]))
    torch.testing.assert_close(logits, expected)
    assert calls == [1]  # one fused call per layer, not a step loop
    assert torch.equal(model.rnn.weight_hh_l0, raw)  # the parameter itself is never masked
    logits.sum().backward()
    dropped = masked == 0
    assert dropped.any() and (model.rnn.weight_hh_l0.grad[dropped] == 0).all()  # a dropped weight learns nothing


def test_embedding_dropout_drops_whole_word_types():
    model = tiny(dropout=0.0, embedding_dropout=0.5).train()
    ids = torch.arange(40).repeat(4, 3)  # [4, 120]: every word type 12 times
    rows = model.embed(ids)  # [batch, time, emb]
    weight = model.embedding.weight[ids]
    kept = rows.ne(0).any(-1)  # [batch, time]
    for word in range(40):
        occurrences = kept[ids == word]
        assert occurrences.all() or not occurrences.any(), word  # dropped everywhere or nowhere
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(rows[kept], weight[kept] * 2)  # kept rows scaled by 1 / (1 - p)


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_ar_and_tar_add_their_penalties_to_the_objective(softmax):
    model = tiny(layers=1, dropout=0.0, ar=2.0, tar=3.0, softmax=softmax,
                 cutoffs=[10, 20] if softmax == "adaptive" else None).train()
    ids, targets = torch.randint(0, 40, (3, 10)), torch.randint(0, 40, (3, 10))
    objective, loss, _ = training_loss(model, ids, targets)
    h = model.rnn(model.embedding(ids))[0]  # [batch, time, hidden]: the last layer's output
    torch.testing.assert_close(loss, mean_loss(model, ids, targets)[0])
    ar = 2.0 * h.pow(2).mean()
    tar = 3.0 * (h[:, 1:] - h[:, :-1]).pow(2).mean()
    torch.testing.assert_close(objective, loss + ar + tar)


def test_ar_reads_the_dropped_output_and_tar_the_raw_one():
    """Merity et al. 2017 (4.6) and their code: AR on the output after dropout, TAR before."""
    model = tiny(layers=1, hidden=16, emb=16, dropout=0.5, locked_dropout=True, ar=2.0, tar=3.0).train()
    ids, targets = torch.randint(0, 40, (3, 10)), torch.randint(0, 40, (3, 10))
    torch.manual_seed(1)
    objective, loss, _ = training_loss(model, ids, targets)
    torch.manual_seed(1)
    masks = [torch.empty(3, 1, 16).bernoulli_(0.5) / 0.5 for _ in range(2)]
    h = model.rnn(model.embedding(ids) * masks[0])[0]
    expected = 2.0 * (h * masks[1]).pow(2).mean() + 3.0 * (h[:, 1:] - h[:, :-1]).pow(2).mean()
    torch.testing.assert_close(objective - loss, expected)


def test_int8_inference_works_with_the_regularizers_on():
    model = tiny(**ALL_ON).eval()
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        gap = (quantize_int8(model)(ids)[0].softmax(-1) - model(ids)[0].softmax(-1)).abs().max().item()
    assert gap < 0.02


@pytest.mark.parametrize("bad, message", [
    (dict(weight_drop=1.0), r"--weight-drop must be in \[0, 1\), not 1.0"),
    (dict(embedding_dropout=-0.1), r"--embedding-dropout must be in \[0, 1\)"),
    (dict(ar=-1.0), "--ar cannot be negative"),
    (dict(tar=float("nan")), "--tar cannot be negative"),
    (dict(locked_dropout="yes"), "--locked-dropout is on or off"),
])
def test_bad_values_name_the_flag(bad, message):
    with pytest.raises(lm.ConfigError, match=message):
        ModelConfig(vocab_size=10, **bad).validate()


def test_the_cli_refuses_a_bad_value_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(make_text(50))
    result = CliRunner().invoke(cli, ["train", "corpus.txt", "--weight-drop", "1.5"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "Error: --weight-drop must be in [0, 1), not 1.5 — 0 switches it off"


def test_training_with_every_regularizer_saves_them_and_unmasked_weights(tmp_path, corpus_file):
    out = tmp_path / "m"
    result = train_tiny(corpus_file, out, max_steps=20, eval_every=10, **ALL_ON)
    saved = json.loads((out / "config.json").read_text())["model"]
    assert {k: saved[k] for k in ALL_ON} == ALL_ON
    model = lm.load(out, int8=False).model
    assert {k: getattr(model.config, k) for k in ALL_ON} == ALL_ON
    latest = load_file(str(out / "resume.safetensors"))["model.rnn.weight_hh_l0"]
    assert (latest != 0).all()  # a weight-drop mask never reaches the checkpoint (p=0.5 would zero half)
    assert result.step == 20
    changed = lm.ModelConfig(**{**TINY_MODEL, **ALL_ON, "weight_drop": 0.2})
    resumed = lm.train(lm.load_corpus([str(corpus_file)]), out, changed,
                       config=lm.TrainConfig(**{**TINY_TRAIN, "max_steps": 30, "eval_every": 10}), resume=True)
    assert resumed.step == 30  # a regularizer may change on resume: it is not the model's shape
    assert json.loads((out / "config.json").read_text())["model"]["weight_drop"] == 0.2


def test_a_checkpoint_from_before_the_regularizers_loads(tmp_path, corpus_file):
    old = tmp_path / "old"
    train_tiny(corpus_file, old, max_steps=5, eval_every=5)
    config = json.loads((old / "config.json").read_text())
    for name in ("locked_dropout", "embedding_dropout", "weight_drop", "ar", "tar"):
        del config["model"][name]
    (old / "config.json").write_text(json.dumps(config))
    model = lm.load(old, int8=False).model
    assert model.config == ModelConfig.from_dict({**config["model"]})
    assert (model.config.locked_dropout, model.config.embedding_dropout, model.config.weight_drop) == (False, 0.0, 0.0)
    assert (model.config.ar, model.config.tar) == (0.0, 0.0)


def test_the_trainer_minimizes_the_objective_and_logs_the_plain_loss(tmp_path, corpus_file, monkeypatch):
    backward_calls, logged = [], []
    objective_of = lm.model.loss.training_loss

    def with_penalty(model, *args):
        objective, loss, state = objective_of(model, *args)
        objective = objective + 100.0  # a penalty the log must leave out
        objective.register_hook(lambda grad: backward_calls.append(1))
        return objective, loss, state

    class Steps(lm.Progress):
        def step(self, stats):
            logged.append(stats["loss"])

    monkeypatch.setattr(lm.model.loss, "training_loss", with_penalty)
    lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "m", lm.ModelConfig(**TINY_MODEL),
             config=lm.TrainConfig(**{**TINY_TRAIN, "max_steps": 10, "log_every": 5}), progress=Steps())
    assert len(backward_calls) == 10
    assert len(logged) == 2 and all(loss < 50 for loss in logged)
