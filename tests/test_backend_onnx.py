"""The onnx backend: the graph built from a checkpoint's weights against the PyTorch model, int8,
the tied matrix stored once, and the graph cached in the checkpoint folder.

The reference is always a plain call of the PyTorch model, `model(ids, state)` and `model.features`.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import make_text  # noqa: E402
from lm.backend import graph_cache  # noqa: E402
from lm.backend.graph import build_graph  # noqa: E402
from lm.backend.onnx_backend import OnnxBackend  # noqa: E402
from lm.checkpoint.store import load_checkpoint  # noqa: E402
from lm.errors import ConfigError  # noqa: E402
from lm.export.onnx import export_checkpoint  # noqa: E402
from lm.model.config import ModelConfig  # noqa: E402
from lm.model.network import LanguageModel  # noqa: E402

TOLERANCE = 1e-4
VOCAB, EMB = 40, 16
OUTPUTS = {
    "tied": dict(hidden=16, projection=False),  # the decoder is the embedding matrix, read as it is
    "projected": dict(hidden=24),  # hidden -> emb projection before the tied decoder
    "adaptive": dict(hidden=24, softmax="adaptive", cutoffs=[10, 20]),
    "adaptive_unprojected": dict(hidden=16, projection=False, softmax="adaptive", cutoffs=[10, 20]),
}
SPLITS = (1, 4, 15)  # three calls with the state carried: cell steps (time <= 4) and a whole nn.LSTM call


def random_model(cell: str, output: str) -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=VOCAB, emb=EMB, cell=cell, layers=2, dropout=0.0, **OUTPUTS[output]))
    if model.config.softmax == "full":
        torch.nn.init.normal_(model.decoder.bias)  # zeros at init: a bias read wrong would go unseen
    return model.eval()


def save_weights(model: LanguageModel, folder, tied_name: str = "embedding.weight"):
    """model.safetensors as a checkpoint holds it: a tied matrix under one name (save_checkpoint keeps either)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    if model.config.softmax == "full":
        del weights[({"embedding.weight", "decoder.weight"} - {tied_name}).pop()]
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def numpy_weights(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("output", list(OUTPUTS))
def test_fp32_graph_matches_the_model_over_carried_calls(tmp_path, cell, output):
    model = random_model(cell, output)
    backend = OnnxBackend.from_checkpoint(save_weights(model, tmp_path / "ckpt"), model.config)
    ids = torch.randint(VOCAB, (3, sum(SPLITS)), generator=torch.Generator().manual_seed(1))
    state, graph_state, at = None, None, 0
    for size in SPLITS:
        chunk = ids[:, at: at + size]
        at += size
        with torch.inference_mode():
            features, _ = model.features(chunk, state)
            logits, state = model(chunk, state)
        found, run_state = backend.run(chunk.numpy(), graph_state)
        last, found_features, graph_state = backend.run_features(chunk.numpy(), graph_state, last_only=True)
        np.testing.assert_allclose(found, logits.numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(last, logits[:, -1].numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(found_features, features.numpy(), atol=TOLERANCE, rtol=0)
        expected_state = state if isinstance(state, tuple) else (state,)
        assert len(graph_state) == len(expected_state)
        for found_state, other, expected in zip(graph_state, run_state, expected_state):
            np.testing.assert_allclose(found_state, expected.numpy(), atol=TOLERANCE, rtol=0)
            np.testing.assert_array_equal(other, found_state)


def test_a_tied_matrix_saved_as_the_decoder_reads_the_same(tmp_path):
    model = random_model("lstm", "projected")
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 6))
    for name in ("embedding.weight", "decoder.weight"):
        backend = OnnxBackend.from_checkpoint(save_weights(model, tmp_path / name, name), model.config)
        with torch.inference_mode():
            expected, _ = model(torch.from_numpy(ids), None)
        np.testing.assert_allclose(backend.run(ids, None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)


def test_last_only_runs_the_output_layer_once(tmp_path):
    """ONNX Runtime runs every node whatever the outputs asked for; logits_from keeps reading cheap."""
    model = random_model("lstm", "adaptive")
    backend = OnnxBackend.from_checkpoint(save_weights(model, tmp_path / "ckpt"), model.config)
    assert backend.reads_last_alone
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 9))
    feed = backend._feed(ids, None)
    every = backend.session.run(["logits"], feed)[0]
    last = backend.session.run(["logits"], {**feed, "logits_from": np.array([-1])})[0]
    assert every.shape == (2, 9, VOCAB) and last.shape == (2, 1, VOCAB)
    np.testing.assert_allclose(last[:, 0], every[:, -1], atol=1e-6, rtol=0)
    run, fed = backend.session.run, []
    backend.session.run = lambda outputs, feed: fed.append(feed.get("logits_from")) or run(outputs, feed)
    _, read_last = backend.read(list(ids[0]), None)
    assert fed == [[-1]]  # reading asks for the last position alone
    np.testing.assert_allclose(read_last, every[0, -1], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("output", ["tied", "projected"])
@pytest.mark.parametrize("int8", [False, True])
def test_the_tied_matrix_is_stored_once(tmp_path, output, int8):
    model = random_model("lstm", output)
    graph = build_graph(model.config, numpy_weights(save_weights(model, tmp_path)), int8=int8).graph
    shapes = [list(i.dims) for i in graph.initializer]
    assert shapes.count([VOCAB, EMB]) == 1 and [EMB, VOCAB] not in shapes
    (tied,) = [i for i in graph.initializer if list(i.dims) == [VOCAB, EMB]]
    assert tied.data_type == (onnx.TensorProto.INT8 if int8 else onnx.TensorProto.FLOAT)
    readers = {n.op_type for n in graph.node if tied.name in n.input}
    assert readers == {"Gather", "Transpose"}  # the embedding, and the output layer through a folded Transpose


def text_ids(tokenizer, tokens: int = 400) -> np.ndarray:
    return np.array([tokenizer.encode(make_text(100, seed=7))[:tokens]])


def test_int8_graph_agrees_with_the_fp32_model(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints("char"))
    backend = OnnxBackend.from_checkpoint(ckpt.path, ckpt.model.config, int8=True)
    ops = {n.op_type for n in onnx.load_model_from_string(
        graph_cache.build_graph_bytes(ckpt.path, ckpt.model.config, int8=True)).graph.node}
    assert {"DynamicQuantizeLSTM", "DynamicQuantizeMatMul"} <= ops and not ops & {"LSTM", "MatMul"}
    ids = text_ids(ckpt.tokenizer)
    with torch.inference_mode():
        expected = torch.log_softmax(ckpt.model(torch.from_numpy(ids), None)[0], -1).numpy()[0]
    found, _ = backend.run(ids, None)
    found = torch.log_softmax(torch.from_numpy(found), -1).numpy()[0]
    # Measured on this model: 99.25 % top-1 agreement, log-probabilities within 0.22, 0.03 on average
    # (the fp32 graph: 100 % and 8e-6; the tiny word model: 98.25 % and 0.27).
    assert (found.argmax(-1) == expected.argmax(-1)).mean() >= 0.97
    assert 1e-3 < np.abs(found - expected).max() < 0.5  # int8, and close


# --- the cache in the checkpoint folder ------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    model = random_model("lstm", "projected")
    return save_weights(model, tmp_path / "ckpt"), model


def graphs(folder) -> list[str]:
    return sorted(p.name for p in (folder / "onnx").iterdir() if p.suffix == ".onnx")


@pytest.fixture
def builds(monkeypatch):
    """How many graphs were built."""
    count = []
    build = graph_cache.build_graph_bytes
    monkeypatch.setattr(graph_cache, "build_graph_bytes", lambda *a: count.append(1) or build(*a))
    return count


def test_first_use_writes_the_graph_and_the_next_load_reads_it(checkpoint, builds, monkeypatch):
    folder, model = checkpoint
    OnnxBackend.from_checkpoint(folder, model.config)
    (name,) = graphs(folder)
    digest = json.loads((folder / "onnx" / "weights.json").read_text())["sha256"]
    assert name == f"model-{digest[:16]}-fp32-g{graph_cache.GRAPH_VERSION}.onnx"
    assert digest == __import__("hashlib").sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    written = (folder / "onnx" / name).stat().st_mtime_ns
    hashed = []
    monkeypatch.setattr(graph_cache, "_sha256", lambda path: hashed.append(path) or "0" * 64)
    backend = OnnxBackend.from_checkpoint(folder, model.config)
    assert len(builds) == 1 and hashed == []  # neither built nor hashed again
    assert (folder / "onnx" / name).stat().st_mtime_ns == written
    assert backend.run(np.array([[1, 2]]), None)[0].shape == (1, 2, VOCAB)


def test_new_weights_rebuild_and_remove_the_old_graph(checkpoint, builds):
    folder, model = checkpoint
    OnnxBackend.from_checkpoint(folder, model.config)
    OnnxBackend.from_checkpoint(folder, model.config, int8=True)
    old = graphs(folder)
    assert [n.split("-")[2] for n in old] == ["fp32", "int8"]  # the two forms of the same weights stay side by side
    with torch.no_grad():
        model.projection.weight.mul_(2)
    save_weights(model, folder)
    backend = OnnxBackend.from_checkpoint(folder, model.config)
    (new,) = graphs(folder)
    assert new not in old and len(builds) == 3
    with torch.inference_mode():
        expected, _ = model(torch.tensor([[3, 4, 5]]), None)
    np.testing.assert_allclose(backend.run(np.array([[3, 4, 5]]), None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)


def test_a_folder_that_cannot_be_written_builds_in_memory(checkpoint, monkeypatch):
    folder, model = checkpoint

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(graph_cache, "write_atomically", read_only)
    backend = OnnxBackend.from_checkpoint(folder, model.config)
    assert not (folder / "onnx").exists()
    with torch.inference_mode():
        expected, _ = model(torch.tensor([[1, 2]]), None)
    np.testing.assert_allclose(backend.run(np.array([[1, 2]]), None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_works(checkpoint):
    folder, model = checkpoint
    folder.chmod(0o555)
    try:
        backend = OnnxBackend.from_checkpoint(folder, model.config)
    finally:
        folder.chmod(0o755)
    assert not (folder / "onnx").exists() and backend.run(np.array([[1]]), None)[0].shape == (1, 1, VOCAB)


class Killed(BaseException):
    """The process dies here: no except clause runs."""


class HalfWriter:
    """A file that takes half of what it is given, then the process is killed."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data: bytes):
        self.file.write(data[: len(data) // 2])
        raise Killed


def test_a_graph_cut_short_by_a_kill_is_never_read(checkpoint, monkeypatch):
    folder, model = checkpoint
    OnnxBackend.from_checkpoint(folder, model.config, int8=True)  # weights.json is written: the next write is the graph's
    fdopen = os.fdopen
    with monkeypatch.context() as patch:
        patch.setattr(graph_cache.os, "fdopen", lambda fd, mode: HalfWriter(fdopen(fd, mode)))
        patch.setattr(graph_cache.os, "unlink", lambda path: None)  # killed: nothing is cleaned up
        with pytest.raises(Killed):
            OnnxBackend.from_checkpoint(folder, model.config)
    (partial,) = [p for p in (folder / "onnx").iterdir() if p.name.endswith(graph_cache.PARTIAL)]
    assert graphs(folder) == [n for n in graphs(folder) if "-int8-" in n]  # no fp32 graph under its name
    backend = OnnxBackend.from_checkpoint(folder, model.config)
    with torch.inference_mode():
        expected, _ = model(torch.tensor([[1, 2]]), None)
    np.testing.assert_allclose(backend.run(np.array([[1, 2]]), None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)
    assert partial.exists()  # a writer may still be at work on it: removed only when an hour old


def test_a_failed_write_leaves_no_file(checkpoint, monkeypatch):
    folder, model = checkpoint
    OnnxBackend.from_checkpoint(folder, model.config, int8=True)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(graph_cache.os, "replace", disk_full)
        backend = OnnxBackend.from_checkpoint(folder, model.config)  # from memory
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == [*graphs(folder), "weights.json"]
    assert len(graphs(folder)) == 1
    with torch.inference_mode():
        expected, _ = model(torch.tensor([[1, 2]]), None)
    np.testing.assert_allclose(backend.run(np.array([[1, 2]]), None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)


def test_weights_are_hashed_again_only_when_their_size_or_mtime_change(checkpoint, builds, monkeypatch):
    folder, model = checkpoint
    OnnxBackend.from_checkpoint(folder, model.config)
    hashed = []
    sha256 = graph_cache._sha256
    monkeypatch.setattr(graph_cache, "_sha256", lambda path: hashed.append(path) or sha256(path))
    OnnxBackend.from_checkpoint(folder, model.config)
    assert hashed == []
    os.utime(folder / "model.safetensors", ns=(1, 1))  # touched, not changed
    OnnxBackend.from_checkpoint(folder, model.config)
    OnnxBackend.from_checkpoint(folder, model.config)
    assert len(hashed) == 1 and len(builds) == 1  # hashed once more, and the same weights keep their graph
    assert json.loads((folder / "onnx" / "weights.json").read_text())["mtime_ns"] == 1


def test_damaged_weights_are_one_line(checkpoint):
    folder, model = checkpoint
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(Exception, match=r"model.safetensors cannot be read \(.*\) — the checkpoint is damaged"):
        OnnxBackend.from_checkpoint(folder, model.config)


def test_missing_onnxruntime_is_one_line(checkpoint, monkeypatch):
    folder, model = checkpoint
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ConfigError, match=r"^the onnx backend needs onnxruntime — pip install 'lm\[runtime\]'"):
        OnnxBackend.from_checkpoint(folder, model.config)


def test_an_export_runs_through_the_backend(tiny_checkpoints, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoints("word"))
    backend = OnnxBackend.from_export(export_checkpoint(ckpt.path, tmp_path / "out").folder)
    ids = text_ids(ckpt.tokenizer, 50)
    with torch.inference_mode():
        expected, _ = ckpt.model(torch.from_numpy(ids), None)
    np.testing.assert_allclose(backend.run(ids, None)[0], expected.numpy(), atol=TOLERANCE, rtol=0)
    assert backend.reads_last_alone  # an export's graph has the logits_from input, as a checkpoint's
    _, last = backend.read(list(ids[0]), None)
    np.testing.assert_allclose(last, expected[0, -1].numpy(), atol=TOLERANCE, rtol=0)


def test_builds_and_runs_where_torch_cannot_be_imported(checkpoint):
    folder, model = checkpoint
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Blocked())
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import numpy as np
        from lm.backend.onnx_backend import OnnxBackend
        from lm.model.config import ModelConfig
        backend = OnnxBackend.from_checkpoint({str(folder)!r}, ModelConfig.from_dict({model.config.to_dict()!r}))
        print(json.dumps(backend.run(np.array([[1, 2, 3]]), None)[0].tolist()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with torch.inference_mode():
        expected, _ = model(torch.tensor([[1, 2, 3]]), None)
    np.testing.assert_allclose(json.loads(done.stdout), expected.numpy(), atol=TOLERANCE, rtol=0)
