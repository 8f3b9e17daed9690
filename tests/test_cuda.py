"""The CUDA path: runs wherever a GPU exists, skips elsewhere."""
import pytest
import torch

import lm

from conftest import train_tiny

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_training_on_cuda_saves_a_checkpoint_that_loads_on_cpu(tmp_path, corpus_file):
    result = train_tiny(corpus_file, tmp_path / "m", device="cuda", max_steps=40)
    assert result.best["valid_loss"] < 3.0
    loaded = lm.load(tmp_path / "m", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert next(model.parameters()).device.type == "cpu"


@cuda
def test_cuda_and_cpu_logits_agree(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("char"), device="cpu")
    cpu_model, tokenizer = loaded.model, loaded.tokenizer
    gpu_model = lm.load(tiny_checkpoints("char"), device="cuda").model
    ids = torch.tensor([tokenizer.encode("the clouds are in the sky")])
    cpu_logits, _ = cpu_model(ids)
    gpu_logits, _ = gpu_model(ids.cuda())
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4)


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(lm.ConfigError, match="no CUDA GPU is available — use --device cpu"):
        lm._util.pick_device("cuda")
    assert lm._util.pick_device("auto").type == "cpu"


@cuda
def test_the_engine_on_a_gpu_gives_the_cpus_strip(tiny_checkpoints):
    """On a GPU the torch backend steps the model there and the numpy engine reads its logits."""
    folder = tiny_checkpoints("char")
    on_gpu = lm.load(folder, device="auto")  # a GPU is present: auto picks PyTorch on it
    assert on_gpu.backend.name == "torch" and on_gpu.device.startswith("cuda")
    on_cpu = lm.load(folder, backend="torch")
    for text in ("the clouds are in the", "a dog sees the gre"):
        gpu, cpu = lm.Suggester.load(on_gpu).suggest(text), lm.Suggester.load(on_cpu).suggest(text)
        assert [s.word for s in gpu] == [s.word for s in cpu]
        assert [s.probability for s in gpu] == pytest.approx([s.probability for s in cpu], abs=1e-4)
