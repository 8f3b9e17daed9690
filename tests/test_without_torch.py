"""lm without PyTorch: with torch hidden (as in a `pip install 'lm[runtime]'` environment), lm
suggest and lm generate run on ONNX Runtime, the graph is built from the weights without torch,
the answers are PyTorch's, and a command that needs torch says how to install it in one line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lm
from lm.suggest.sampler import GenerationConfig, generate

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
# torch cannot be imported (importlib finds no spec for it either), as where it is not installed.
HIDE_TORCH = "import sys; sys.modules['torch'] = None\n"


def lm_without_torch(*args: str) -> subprocess.CompletedProcess:
    """The lm command line in a fresh interpreter where torch cannot be imported; its last line
    of stdout is the JSON list of the heavy packages it loaded."""
    code = (HIDE_TORCH + "from cli import cli\ntry:\n    cli(%r)\nexcept SystemExit as e:\n    code = e.code\n"
            "else:\n    code = 0\nimport json\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
            "and sys.modules[m] is not None)))\nsys.exit(code)\n") % (list(args),)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fresh_checkpoints(tiny_checkpoints, tmp_path_factory):
    """Copies of the tiny checkpoints without a cached graph: the first use without torch builds it."""
    def get(kind: str) -> Path:
        folder = tmp_path_factory.mktemp(f"no-torch-{kind}") / "model"
        shutil.copytree(tiny_checkpoints(kind), folder, ignore=shutil.ignore_patterns("onnx"))
        return folder
    return get


@pytest.mark.parametrize("kind", ["char", "word"])
def test_suggest_runs_without_torch_and_gives_the_torch_backends_strip(fresh_checkpoints, kind):
    folder = fresh_checkpoints(kind)
    text = "the clouds are in the s" if kind == "char" else "the clouds are in the"
    result = lm_without_torch("suggest", text, "-c", str(folder), "--fp32", "--json")
    assert result.returncode == 0, result.stderr
    *output, loaded = result.stdout.strip().splitlines()
    assert json.loads(loaded) == []  # no torch module was ever imported
    assert any((folder / "onnx").glob("*.onnx"))  # the graph was built without torch, and kept
    found = json.loads("\n".join(output))
    expected = lm.Suggester.load(lm.load(folder, backend="torch")).suggest(text)
    assert [s["word"] for s in found] == [s.word for s in expected]
    assert [s["probability"] for s in found] == pytest.approx([s.probability for s in expected], abs=1e-4)


def test_generate_runs_without_torch_and_writes_what_torch_writes(fresh_checkpoints):
    folder = fresh_checkpoints("char")
    result = lm_without_torch("generate", "the cat", "-c", str(folder), "--fp32", "--json", "--temperature", "0",
                              "--repetition-penalty", "1", "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    *output, loaded = result.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    predictor = lm.load(folder, backend="torch")
    greedy = GenerationConfig(max_tokens=30, temperature=0, repetition_penalty=1.0)
    expected = generate(predictor.model, predictor.tokenizer, "the cat", greedy).run()[0].text
    assert json.loads("\n".join(output))["samples"][0]["text"] == expected


def test_a_command_that_needs_torch_says_how_to_install_it(corpus_file, tmp_path):
    result = lm_without_torch("train", str(corpus_file), "--out", str(tmp_path / "run"), "--max-steps", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: this needs PyTorch, which is not installed — pip install 'lm[train]' (lm suggest, generate, repl and "
        "serve run without it on ONNX Runtime: pip install 'lm[runtime]')"]


def test_asking_for_the_torch_backend_without_torch_is_the_same_one_line(fresh_checkpoints):
    result = lm_without_torch("suggest", "the", "-c", str(fresh_checkpoints("char")), "--backend", "torch")
    assert result.returncode == 1 and "pip install 'lm[train]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
