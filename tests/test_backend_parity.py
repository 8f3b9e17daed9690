"""The same answers on both backends: the suggestion engine, the keyboard and the sampler give
the same suggestions and log-probabilities on ONNX Runtime as on PyTorch (fp32: within 1e-4),
for char, unigram and word models; int8 weights agree as closely as bench/NOTES.md records."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lm
from lm.suggest.keyboard import Keyboard
from lm.suggest.sampler import GenerationConfig, Sampler

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

KINDS = ["char", "unigram", "word"]
TEXTS = ["the clouds are in the", "the clouds are in the s", "a dog sees the gre", "my friend ", "the old man kep"]


@pytest.fixture(scope="module")
def predictors(tiny_checkpoints):
    """kind -> (the torch predictor, the onnx predictor), fp32, with each checkpoint's cache settings."""
    def get(kind: str, int8: bool = False):
        folder = tiny_checkpoints(kind)
        return lm.load(folder, int8=int8, backend="torch"), lm.load(folder, int8=int8, backend="onnx")
    return get


@pytest.mark.parametrize("kind", KINDS)
def test_the_strip_is_the_same_on_both_backends(predictors, kind):
    on_torch, on_onnx = predictors(kind)
    assert (on_torch.backend.name, on_onnx.backend.name) == ("torch", "onnx")
    for text in TEXTS:
        expected = lm.Suggester.load(on_torch).suggest(text, k=5)
        found = lm.Suggester.load(on_onnx).suggest(text, k=5)
        assert [s.word for s in found] == [s.word for s in expected], text
        np.testing.assert_allclose([s.probability for s in found], [s.probability for s in expected], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_the_decoders_prior_is_the_same_on_both_backends(predictors, kind):
    on_torch, on_onnx = predictors(kind)
    words = ["sky", "see", "sea", "garden", "in the"]
    expected = lm.Suggester.load(on_torch).score_words("the clouds are in the s", words)
    found = lm.Suggester.load(on_onnx).score_words("the clouds are in the s", words)
    np.testing.assert_allclose(found, expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_correction_is_the_same_on_both_backends(predictors, kind):
    on_torch, on_onnx = predictors(kind)
    for text in ["the clouds are in the skt ", "the cat sees teh "]:
        expected, found = Keyboard.load(on_torch).suggest(text), Keyboard.load(on_onnx).suggest(text)
        assert found.text == expected.text, text
        assert [s.word for s in found.suggestions] == [s.word for s in expected.suggestions], text


@pytest.mark.parametrize("kind", KINDS)
def test_the_sampler_reads_and_generates_alike(predictors, kind):
    on_torch, on_onnx = predictors(kind)
    samplers = [Sampler(p.backend, p.tokenizer) for p in (on_torch, on_onnx)]
    logits = [s.feed("\nthe clouds are in the") for s in samplers]
    reference = on_torch.model(torch.tensor([on_torch.tokenizer.encode("\nthe clouds are in the")]))[0][0, -1]
    np.testing.assert_allclose(logits[0], reference.detach().numpy(), atol=1e-4)  # a plain PyTorch call
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)
    greedy = GenerationConfig(max_tokens=20, temperature=0, repetition_penalty=1.0)
    texts = [s.generate(greedy).run()[0].text for s in samplers]
    assert texts[1] == texts[0]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_int8_weights_agree_on_most_top_words(predictors, kind):
    """int8 on ONNX Runtime against the fp32 model: the top word of the strip, over the texts."""
    fp32, _ = predictors(kind)
    _, int8 = predictors(kind, int8=True)
    assert int8.int8 and int8.backend.int8
    top = lambda p, text: [s.word for s in lm.Suggester.load(p).suggest(text)][:1]  # noqa: E731
    same = [top(int8, text) == top(fp32, text) for text in TEXTS]
    assert sum(same) >= len(TEXTS) - 1


def test_auto_takes_onnx_runtime_on_the_cpu_and_pytorch_on_a_gpu(monkeypatch):
    from lm.backend import choose

    monkeypatch.setattr(choose, "gpu_present", lambda: False)
    assert choose.choose_backend("auto", "auto") == "onnx" and choose.choose_backend("auto", "cpu") == "onnx"
    assert choose.choose_backend("auto", "cuda") == "torch" and choose.choose_backend("torch", "cpu") == "torch"
    monkeypatch.setattr(choose, "gpu_present", lambda: True)
    assert choose.choose_backend("auto", "auto") == "torch" and choose.choose_backend("auto", "cpu") == "onnx"
    monkeypatch.setattr(choose, "onnx_installed", lambda: False)
    assert choose.choose_backend("auto", "cpu") == "torch"
    with pytest.raises(lm.ConfigError, match="--backend onnx runs on the CPU, not --device cuda"):
        choose.choose_backend("onnx", "cuda")
    with pytest.raises(lm.ConfigError, match="unknown backend 'tensorrt' — use auto, torch or onnx"):
        choose.choose_backend("tensorrt")
