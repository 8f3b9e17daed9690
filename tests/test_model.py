import lm
import pytest
import torch
import torch.nn.functional as F

from lm.model.config import ModelConfig, expected_shapes
from lm.model.int8 import quantize_int8
from lm.model.loss import mean_loss, token_nll
from lm.model.network import LanguageModel, count_parameters
from lm.model.state import detach_state, map_state


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_two_windows_with_carried_state_equal_one_joined_window(cell):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, cell=cell, layers=2, hidden=24, emb=16, dropout=0.3)).eval()
    ids = torch.randint(0, 50, (3, 20))
    whole, _ = model(ids)
    first, state = model(ids[:, :8])
    second, _ = model(ids[:, 8:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_logits_and_state_shapes():
    model = LanguageModel(ModelConfig(vocab_size=30, layers=3, hidden=20, emb=12))
    logits, (h, c) = model(torch.zeros(4, 9, dtype=torch.long))
    assert logits.shape == (4, 9, 30)
    assert h.shape == c.shape == (3, 4, 20)  # [layers, batch, hidden] even with batch_first
    gru = LanguageModel(ModelConfig(vocab_size=30, cell="gru", layers=2, hidden=20, emb=20))
    _, h = gru(torch.zeros(2, 5, dtype=torch.long))
    assert h.shape == (2, 2, 20)


def test_none_state_means_zeros():
    model = LanguageModel(ModelConfig(vocab_size=30, hidden=16, emb=8)).eval()
    ids = torch.randint(0, 30, (2, 6))
    torch.testing.assert_close(model(ids)[0], model(ids, model.init_state(2))[0])


def test_output_layer_is_tied_to_the_embedding():
    model = LanguageModel(ModelConfig(vocab_size=100, hidden=32, emb=16))
    assert model.decoder.weight is model.embedding.weight
    assert model.projection.weight.shape == (16, 32)
    # hidden == emb: still projected, unless asked not to; a config saved before the choice
    # existed had a projection exactly when the sizes differed.
    assert LanguageModel(ModelConfig(vocab_size=100, hidden=16, emb=16)).projection.weight.shape == (16, 16)
    assert LanguageModel(ModelConfig(vocab_size=100, hidden=16, emb=16, projection=False)).projection is None
    assert ModelConfig.from_dict({"vocab_size": 100, "hidden": 16, "emb": 16}).projection is False
    assert ModelConfig.from_dict({"vocab_size": 100, "hidden": 32, "emb": 16}).projection is True
    with pytest.raises(lm.errors.ConfigError, match="--no-projection"):
        ModelConfig(vocab_size=100, hidden=32, emb=16, projection=False).validate()
    untied_count = count_parameters(model) + 100 * 16
    assert sum(p.numel() for p in model.state_dict().values()) == untied_count


@pytest.mark.parametrize("bad", [dict(cell="transformer"), dict(hidden=0), dict(layers=-1), dict(dropout=1.0)])
def test_invalid_config_is_refused(bad):
    with pytest.raises(lm.ConfigError):
        LanguageModel(ModelConfig(vocab_size=10, **bad))


@pytest.mark.parametrize("cell, hidden", [("lstm", 24), ("gru", 16), ("rnn", 24)])
def test_expected_shapes_match_the_built_model(cell, hidden):
    config = ModelConfig(vocab_size=40, cell=cell, layers=3, hidden=hidden, emb=16)
    built = {k: tuple(v.shape) for k, v in LanguageModel(config).state_dict().items()}
    assert expected_shapes(config) == built


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inference_step_loop_equals_the_whole_rnn(cell, monkeypatch):
    """Short inference calls run the cells step by step; the maths must be nn.LSTM's."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, cell=cell, layers=3, hidden=24, emb=16)).eval()
    ids = torch.randint(0, 50, (2, 3))
    with torch.no_grad():
        stepped, stepped_state = model(ids[:, :1], None)
        stepped2, stepped_state = model(ids[:, 1:], stepped_state)
        monkeypatch.setattr("lm.model.network.STEP_LOOP_MAX_TIME", 0)  # force nn.LSTM
        whole, whole_state = model(ids, None)
    torch.testing.assert_close(torch.cat([stepped, stepped2], 1), whole)
    for a, b in zip(map_state(stepped_state, lambda t: t), map_state(whole_state, lambda t: t)):
        torch.testing.assert_close(a, b)


def plain_torch_stack(model: LanguageModel) -> torch.nn.Module:
    """The model's recurrent weights copied into a fresh torch.nn.LSTM / GRU / RNN: an independent computation."""
    config = model.config
    rnn = getattr(torch.nn, config.cell.upper())(config.emb, config.hidden, config.layers, batch_first=True,
                                                 dropout=config.dropout)
    rnn.load_state_dict(model.rnn.state_dict())
    return rnn.train(model.training)


def plain_torch_logits(model: LanguageModel, rnn: torch.nn.Module, ids: torch.Tensor, state, p: float = 0.0):
    """Logits and state by hand: embedding rows, dropout p, the stack, dropout p, projection, tied decoder."""
    x = F.dropout(model.embedding.weight[ids], p)  # [batch, time, emb]
    out, state = rnn(x, state)  # [batch, time, hidden]
    features = F.dropout(out, p) @ model.projection.weight.T  # [batch, time, emb]
    return features @ model.embedding.weight.T + model.decoder.bias, state  # [batch, time, vocab]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inference_logits_equal_a_plain_torch_stack_for_short_and_long_windows(cell):
    """Windows of 1 and 3 tokens run the cells step by step, 12 tokens one nn.LSTM call: all are nn.LSTM's maths."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, cell=cell, layers=3, hidden=24, emb=16, dropout=0.3)).eval()
    rnn = plain_torch_stack(model)
    ids = torch.randint(0, 50, (2, 16))
    state = expected_state = None
    with torch.no_grad():
        for window in (ids[:, :1], ids[:, 1:4], ids[:, 4:]):
            logits, state = model(window, state)
            expected, expected_state = plain_torch_logits(model, rnn, window, expected_state)
            torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
            for got, want in zip(map_state(state, lambda t: t), map_state(expected_state, lambda t: t)):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_logits_equal_a_plain_torch_stack_with_the_same_dropout_masks(cell, monkeypatch):
    """In training the whole stack runs as one nn.LSTM call, and the layer loop the regularizers
    need gives the same logits, dropout masks and gradients from the same seed."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, cell=cell, layers=3, hidden=24, emb=16, dropout=0.3)).train()
    rnn = plain_torch_stack(model)
    ids = torch.randint(0, 50, (2, 9))
    torch.manual_seed(5)
    expected, _ = plain_torch_logits(model, rnn, ids, None, p=0.3)
    torch.manual_seed(5)
    whole, _ = model(ids)
    torch.testing.assert_close(whole, expected, atol=1e-6, rtol=0)
    whole.pow(2).mean().backward()
    whole_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(LanguageModel, "_whole_stack_at_once", lambda self, x: False)
    torch.manual_seed(5)
    by_layer, _ = model(ids)
    torch.testing.assert_close(by_layer, expected, atol=1e-6, rtol=0)
    by_layer.pow(2).mean().backward()
    for got, want in zip([p.grad for p in model.parameters()], whole_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_int8_model_keeps_the_contract_and_stays_close(cell):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=60, cell=cell, layers=2, hidden=32, emb=16)).eval()
    quantized = quantize_int8(model)
    ids = torch.randint(0, 60, (2, 7))
    with torch.no_grad():
        exact, _ = model(ids)
        logits, state = quantized(ids[:, :5])
        more, _ = quantized(ids[:, 5:], state)
    approx = torch.cat([logits, more], 1)
    assert approx.shape == exact.shape
    gap = (approx.softmax(-1) - exact.softmax(-1)).abs().max().item()
    assert gap < 0.02
    assert isinstance(model.rnn.weight_ih_l0, torch.Tensor)  # the float model is left as it was


def test_auto_softmax_is_adaptive_for_large_vocabularies_only():
    assert LanguageModel(ModelConfig(vocab_size=1000, hidden=16, emb=8)).config.softmax == "full"
    big = LanguageModel(ModelConfig(vocab_size=40_000, hidden=16, emb=16)).config
    assert big.softmax == "adaptive" and big.cutoffs == [2000, 10000]
    assert ModelConfig(vocab_size=40_000, emb=8).resolved().cutoffs == [2000]  # a tail is emb / 4^i wide
    with pytest.raises(lm.ConfigError, match="cutoffs must rise"):
        ModelConfig(vocab_size=100, softmax="adaptive", cutoffs=[50, 20]).validate()
    assert ModelConfig.from_dict({"vocab_size": 40_000}).softmax == "full"  # saved before the adaptive softmax


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_loss_is_the_cross_entropy_of_the_logits(softmax):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=300, layers=1, hidden=24, emb=16, softmax=softmax,
                                      cutoffs=[20, 100] if softmax == "adaptive" else None)).eval()
    ids, targets = torch.randint(0, 300, (3, 6)), torch.randint(0, 300, (3, 6))
    logits, state = model(ids)
    loss, loss_state = mean_loss(model, ids, targets)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    nll, _ = token_nll(model, ids, targets)  # [batch, time]: each target's own term
    torch.testing.assert_close(nll, -logits.log_softmax(-1).gather(2, targets[..., None])[..., 0])
    torch.testing.assert_close(logits.logsumexp(-1), torch.zeros(3, 6), atol=1e-5, rtol=0) if softmax == "adaptive" else None
    torch.testing.assert_close(state, loss_state)
    assert expected_shapes(model.config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_adaptive_model_quantizes_and_stays_close():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=300, layers=1, hidden=32, emb=32, softmax="adaptive", cutoffs=[20, 100])).eval()
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        gap = (quantize_int8(model)(ids)[0].exp() - model(ids)[0].exp()).abs().max().item()
    assert gap < 0.02
