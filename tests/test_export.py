"""`lm export`: the ONNX graph against the PyTorch model, int8, every model kind, bad input.

The reference is always a plain call of the PyTorch model, `model(ids, state)`, on the same ids.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pkgutil
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import lm  # noqa: E402
from cli import cli  # noqa: E402
from conftest import make_text  # noqa: E402
from lm.backend.graph_cache import cached_graph  # noqa: E402
from lm.checkpoint.store import load_checkpoint, save_checkpoint  # noqa: E402
from lm.export.onnx import export_checkpoint  # noqa: E402
from lm.model.config import ModelConfig  # noqa: E402
from lm.model.network import LanguageModel  # noqa: E402

KINDS = ["char", "word", "unigram", "bpe"]
# An export of a tiny checkpoint (no n-gram): a checkpoint for inference, without the PyTorch weights.
EXPORT_FILES = ["config.json", "lexicon.txt", "lm-engine.zip", "manifest.json", "model.onnx", "runtime.py",
                "tokenizer.json"]
TOLERANCE = 1e-4
SPLITS = (1, 3, 16, 80, 100)  # a 200-token text in five calls: single steps and long reads


@pytest.fixture(scope="module")
def exports(tiny_checkpoints, tmp_path_factory):
    """(kind, int8) -> folder of the tiny trained model's export (built on first use)."""
    built = {}

    def get(kind: str, int8: bool = False):
        if (kind, int8) not in built:
            out = tmp_path_factory.mktemp(f"export-{kind}") / ("int8" if int8 else "fp32")
            built[kind, int8] = export_checkpoint(tiny_checkpoints(kind), out, int8=int8).folder
        return built[kind, int8]

    return get


def session(folder):
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def run_graph(sess, ids: torch.Tensor, state: list[np.ndarray]):
    """One call of the exported step function; returns logits and the state as numpy."""
    names = [i.name for i in sess.get_inputs()][1:]
    out = sess.run(["logits", *(name + "_out" for name in names)], {"ids": ids.numpy(), **dict(zip(names, state))})
    return out[0], out[1:]


def read_both(model, sess, ids: torch.Tensor, splits=SPLITS) -> tuple[float, float]:
    """Read ids [batch, time] in calls of `splits` tokens on the model and on the graph, each
    carrying its own state; the largest logits and state differences over all calls."""
    config = model.config
    graph_state = [np.zeros((config.layers, ids.shape[0], config.hidden), np.float32)
                   for _ in range(2 if config.cell == "lstm" else 1)]
    state, at, logits_diff, state_diff = None, 0, 0.0, 0.0
    assert sum(splits) == ids.shape[1]
    for size in splits:
        chunk = ids[:, at: at + size]
        at += size
        with torch.inference_mode():
            expected, state = model(chunk, state)
        found, graph_state = run_graph(sess, chunk, graph_state)
        assert found.shape == tuple(expected.shape)
        logits_diff = max(logits_diff, float(np.abs(found - expected.numpy()).max()))
        expected_state = state if isinstance(state, tuple) else (state,)
        state_diff = max([state_diff] + [float(np.abs(g - e.numpy()).max()) for g, e in zip(graph_state, expected_state)])
    return logits_diff, state_diff


def text_ids(tokenizer, batch: int, tokens: int = 200) -> torch.Tensor:
    """`batch` different held-out texts of `tokens` tokens each: [batch, tokens]."""
    rows = [tokenizer.encode(make_text(60, seed=10 + b))[:tokens] for b in range(batch)]
    assert all(len(r) == tokens for r in rows)
    return torch.tensor(rows)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 4])
def test_fp32_graph_matches_the_model_over_carried_calls(exports, tiny_checkpoints, kind, batch):
    ckpt = load_checkpoint(tiny_checkpoints(kind))
    logits_diff, state_diff = read_both(ckpt.model, session(exports(kind)), text_ids(ckpt.tokenizer, batch))
    assert logits_diff <= TOLERANCE and state_diff <= TOLERANCE


MODEL_KINDS = {
    "tied": dict(hidden=32, emb=32),  # the decoder is the embedding matrix
    "projected": dict(hidden=48, emb=32),  # hidden -> emb projection before the tied decoder
    "adaptive": dict(hidden=48, emb=32, softmax="adaptive", cutoffs=[10, 20]),
}


@pytest.fixture(scope="module")
def random_checkpoint(tiny_checkpoints, tmp_path_factory):
    """(cell, output) -> a checkpoint of a 2-layer model with random weights and the tiny word vocabulary."""
    tokenizer = load_checkpoint(tiny_checkpoints("word")).tokenizer

    def make(cell: str, output: str):
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, dropout=0.0, **MODEL_KINDS[output])
        folder = tmp_path_factory.mktemp(f"{cell}-{output}") / "ckpt"
        return save_checkpoint(folder, LanguageModel(config), tokenizer, {})

    return make


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("output", list(MODEL_KINDS))
def test_every_model_kind_exports_and_matches(random_checkpoint, tmp_path, cell, output):
    folder = random_checkpoint(cell, output)
    result = export_checkpoint(folder, tmp_path / "out")
    model = load_checkpoint(folder).model
    assert (model.config.cell, model.config.softmax) == (cell, "adaptive" if output == "adaptive" else "full")
    ids = torch.randint(model.config.vocab_size, (4, 60), generator=torch.Generator().manual_seed(1))
    logits_diff, state_diff = read_both(model, session(result.folder), ids, splits=(2, 8, 50))
    assert logits_diff <= TOLERANCE and state_diff <= TOLERANCE
    recurrent = {n.op_type for n in onnx.load(str(result.folder / "model.onnx")).graph.node} & {"LSTM", "GRU", "RNN"}
    assert recurrent == {cell.upper()}  # the fused node, not a traced step loop


def test_adaptive_softmax_exports_full_log_probabilities(random_checkpoint, tmp_path):
    result = export_checkpoint(random_checkpoint("lstm", "adaptive"), tmp_path / "out")
    config = result.manifest["model"]
    ids = torch.randint(config["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(2))
    state = [np.zeros((2, 2, config["hidden"]), np.float32)] * 2
    log_probs, _ = run_graph(session(result.folder), ids, state)
    assert result.manifest["graph"]["logits"] == "log_probs"
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)


def perplexity(folder, tokenizer, text: str) -> float:
    """Perplexity of the exported graph on a text, read in calls of 256 tokens with the state carried."""
    sess = session(folder)
    ids = torch.tensor([tokenizer.encode("\n" + text)])
    state = [np.zeros(tuple(s["shape"][:1]) + (1, s["shape"][2]), np.float32)
             for s in json.loads((folder / "manifest.json").read_text())["graph"]["state"]]
    nll, count = 0.0, 0
    for at in range(0, ids.shape[1] - 1, 256):
        chunk, targets = ids[:, at: at + 256], ids[0, at + 1: at + 257]
        logits, state = run_graph(sess, chunk[:, : len(targets)], state)
        logits = logits[0].astype(np.float64)
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll -= float((logits[np.arange(len(targets)), targets.numpy()] - log_z).sum())
        count += len(targets)
    return float(np.exp(nll / count))


@pytest.mark.parametrize("kind", KINDS)
def test_int8_perplexity_is_within_two_percent_of_fp32(exports, tiny_checkpoints, kind):
    tokenizer = load_checkpoint(tiny_checkpoints(kind)).tokenizer
    held_out = make_text(150, seed=1)
    fp32, int8 = perplexity(exports(kind), tokenizer, held_out), perplexity(exports(kind, int8=True), tokenizer, held_out)
    assert abs(int8 / fp32 - 1) < 0.02
    assert int8 != fp32  # the weights really changed


def test_int8_graph_holds_quantized_lstm_and_matmul_nodes(exports):
    graph = onnx.load(str(exports("char", int8=True) / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    initializers = {i.name: i for i in graph.initializer}
    transposed = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Transpose"}  # folded at load
    assert "LSTM" not in ops and ops.count("DynamicQuantizeLSTM") == 1  # the tiny model has one layer
    assert ops.count("DynamicQuantizeMatMul") == 2  # the projection and the output layer
    assert "MatMul" not in ops and "Gemm" not in ops
    int8_types = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    for node in graph.node:
        if node.op_type in ("DynamicQuantizeLSTM", "DynamicQuantizeMatMul"):
            inputs = node.input[1:3] if node.op_type == "DynamicQuantizeLSTM" else node.input[1:2]  # W, R or B
            weights = [initializers[transposed.get(name, name)] for name in inputs if transposed.get(name, name) in initializers]
            assert weights and all(w.data_type in int8_types for w in weights)
    fp32_bytes = (exports("char") / "model.onnx").stat().st_size
    assert (exports("char", int8=True) / "model.onnx").stat().st_size < fp32_bytes / 2.5


@pytest.mark.parametrize("int8", [False, True])
def test_the_tied_matrix_is_stored_once(random_checkpoint, tmp_path, int8):
    result = export_checkpoint(random_checkpoint("lstm", "tied"), tmp_path / "out", int8=int8)
    vocab, emb = result.manifest["model"]["vocab_size"], result.manifest["model"]["emb"]
    graph = onnx.load(str(result.folder / "model.onnx")).graph
    assert [list(i.dims) for i in graph.initializer].count([vocab, emb]) == 1
    assert not any(list(i.dims) == [emb, vocab] for i in graph.initializer)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_int8_refuses_cells_onnx_runtime_cannot_quantize(random_checkpoint, tmp_path, cell):
    with pytest.raises(lm.LMError, match=f"--int8 supports LSTM models only: ONNX Runtime has no int8 {cell.upper()}"):
        export_checkpoint(random_checkpoint(cell, "tied"), tmp_path / "out", int8=True)
    assert list(tmp_path.iterdir()) == []


def test_manifest_describes_the_graph_and_its_files(exports, tiny_checkpoints):
    folder = exports("word")
    manifest = json.loads((folder / "manifest.json").read_text())
    tokenizer = load_checkpoint(tiny_checkpoints("word")).tokenizer
    model = onnx.load(str(folder / "model.onnx"))
    assert sorted(p.name for p in folder.iterdir()) == EXPORT_FILES
    assert manifest["tokenizer"] | {"files": None} == {
        "kind": "word", "files": None, "vocab_size": tokenizer.vocab_size, "special_ids": {"unk": 0, "eos": 1},
        "start_text": "\n"}
    assert manifest["graph"]["state"] == [
        {"input": "h", "output": "h_out", "shape": [1, "batch", 64], "dtype": "float32"},
        {"input": "c", "output": "c_out", "shape": [1, "batch", 64], "dtype": "float32"}]
    assert manifest["graph"]["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {"ids": ["batch", "time"], "h": [1, "batch", 64], "c": [1, "batch", 64], "logits_from": [1]}
    assert [(i["name"], i["shape"]) for i in manifest["graph"]["inputs"]] == [(k, v) for k, v in inputs.items()]
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outputs == {"logits": ["batch", "positions", tokenizer.vocab_size], "h_out": [1, "batch", 64],
                       "c_out": [1, "batch", 64], "features": ["batch", "time", 32]}
    assert [(o["name"], o["shape"]) for o in manifest["graph"]["outputs"]] == [(k, v) for k, v in outputs.items()]
    for name, info in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(manifest["files"]) == sorted(set(EXPORT_FILES) - {"manifest.json"})
    assert manifest["cache"] is None and manifest["model"]["weights"] == "fp32"
    assert (folder / "runtime.py").read_bytes() == Path(lm.export.onnx.__file__).with_name("runtime.py").read_bytes()
    for name in ("config.json", "lexicon.txt", "tokenizer.json"):  # as the checkpoint holds them
        assert (folder / name).read_bytes() == (tiny_checkpoints("word") / name).read_bytes()
    assert manifest["engine"]["file"] == "lm-engine.zip"


def test_the_engine_zip_holds_every_module_of_lm_and_its_layouts(exports):
    with zipfile.ZipFile(exports("char") / "lm-engine.zip") as engine:
        names = set(engine.namelist())
    for module in pkgutil.walk_packages(lm.__path__, "lm."):
        path = module.name.replace(".", "/") + ("/__init__.py" if module.ispkg else ".py")
        assert {path, path + "c"} <= names
    assert {"lm/__init__.py", "lm/suggest/layouts/qwerty-en-us.json"} <= names
    assert not any("__pycache__" in name for name in names)


@pytest.mark.parametrize("int8", [False, True])
def test_the_graph_is_the_one_the_onnx_backend_builds_for_the_checkpoint(exports, tiny_checkpoints, int8):
    checkpoint = tiny_checkpoints("unigram")
    graph = cached_graph(checkpoint, load_checkpoint(checkpoint).model.config, int8)
    graph = graph if isinstance(graph, bytes) else graph.read_bytes()
    assert (exports("unigram", int8) / "model.onnx").read_bytes() == graph


# --- the command and bad input ---------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli, ["export", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


def test_command_writes_the_export_and_shows_a_summary(tiny_checkpoints, tmp_path):
    result = invoke(str(tmp_path / "phone"), "-c", str(tiny_checkpoints("char")), "--int8")
    assert result.exit_code == 0, result.output
    assert "int8, 1 DynamicQuantizeLSTM, 2 DynamicQuantizeMatMul" in result.stdout
    assert f"python {tmp_path / 'phone'}/runtime.py" in result.stdout
    assert json.loads((tmp_path / "phone" / "manifest.json").read_text())["model"]["weights"] == "int8"
    assert [p.name for p in tmp_path.iterdir()] == ["phone"]  # no staging folder left
    assert sorted(p.name for p in (tmp_path / "phone").iterdir()) == EXPORT_FILES


def test_missing_checkpoint_is_one_line(tmp_path):
    line = one_error_line(invoke(str(tmp_path / "out"), "-c", str(tmp_path / "nope")))
    assert line == f"Error: checkpoint {tmp_path / 'nope'} does not exist — check the path, or train one with `lm train`"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]), "damaged"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json cannot be read"),
])
def test_damaged_checkpoint_is_one_line(tiny_checkpoints, tmp_path, damage, message):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), checkpoint)
    damage(checkpoint)
    assert message in one_error_line(invoke(str(tmp_path / "out"), "-c", str(checkpoint)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_existing_folder_needs_overwrite_and_is_left_alone(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = one_error_line(invoke(str(out), "-c", str(tiny_checkpoints("char"))))
    assert line == f"Error: {out} already exists — pass --overwrite to replace it, or choose another folder"
    line = one_error_line(invoke(str(out), "-c", str(tiny_checkpoints("char")), "--overwrite"))
    assert "is not an lm export" in line  # --overwrite never deletes a folder of something else
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_an_earlier_export(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    assert invoke(str(out), "-c", str(tiny_checkpoints("char"))).exit_code == 0
    result = invoke(str(out), "-c", str(tiny_checkpoints("word")), "--int8", "--overwrite")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["tokenizer"]["kind"], manifest["model"]["weights"]) == ("word", "int8")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: read-only for a user; /sys for root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        return folder
    try:
        tempfile.mkdtemp(dir="/sys")
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses root")


def test_unwritable_folder_is_one_line(tiny_checkpoints, tmp_path):
    out = unwritable_folder(tmp_path) / "lm-export"
    line = one_error_line(invoke(str(out), "-c", str(tiny_checkpoints("char"))))
    assert line.startswith(f"Error: cannot write the export to {out}: ")
    assert line.endswith("choose a writable folder with free space; nothing was written")
    assert not out.exists()


def test_a_file_in_the_way_is_one_line(tiny_checkpoints, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    line = one_error_line(invoke(str(tmp_path / "file" / "out"), "-c", str(tiny_checkpoints("char"))))
    assert line == f"Error: {tmp_path / 'file'} is a file, not a folder — choose an export folder outside it"


def test_a_failure_while_writing_leaves_nothing_half_written(tiny_checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert invoke(str(out), "-c", str(tiny_checkpoints("char"))).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lm.export.onnx.shutil, "copyfile", disk_full)  # config.json's copy, after the graph
    line = one_error_line(invoke(str(out), "-c", str(tiny_checkpoints("word")), "--overwrite"))
    assert "No space left on device" in line
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export is intact
