import lm
import pytest
import torch

from lm.model.network import LanguageModel, ModelConfig, count_parameters, detach_state, quantize_int8, map_state


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
    assert LanguageModel.expected_shapes(config) == built


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
    loss, loss_state = model.loss(ids, targets)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    nll, _ = model.token_nll(ids, targets)  # [batch, time]: each target's own term
    torch.testing.assert_close(nll, -logits.log_softmax(-1).gather(2, targets[..., None])[..., 0])
    torch.testing.assert_close(logits.logsumexp(-1), torch.zeros(3, 6), atol=1e-5, rtol=0) if softmax == "adaptive" else None
    torch.testing.assert_close(state, loss_state)
    assert LanguageModel.expected_shapes(model.config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_adaptive_model_quantizes_and_stays_close():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=300, layers=1, hidden=32, emb=32, softmax="adaptive", cutoffs=[20, 100])).eval()
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        gap = (quantize_int8(model)(ids)[0].exp() - model(ids)[0].exp()).abs().max().item()
    assert gap < 0.02
