"""The runtime shipped in every export runs lm's own engine: the strip and the text `lm suggest` and
`lm generate` give for the checkpoint, with neither torch nor lm installed.

The runtime is loaded by its file path, as an app loads it. In this process lm is imported
already, so the runtime runs it; the subprocess tests run the runtime where only the export's
lm-engine.zip can provide lm (see ISOLATED). The references are the engine over the checkpoint
(lm.load(CHECKPOINT, backend="onnx")) and, where the answer can be worked out by hand, a plain
call of the PyTorch model.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import lm  # noqa: E402
from lm.checkpoint.store import load_checkpoint  # noqa: E402
from lm.export.onnx import export_checkpoint  # noqa: E402
from lm.mix.ngram import Ngram  # noqa: E402
from lm.suggest.config import GenerationConfig  # noqa: E402

RUNTIME = Path(__file__).resolve().parents[1] / "lm" / "export" / "runtime.py"
CONTEXT = "the clouds are in the"
# After a space, inside a word, and a finished word the keyboard corrects ("gren " -> "green ").
TEXTS = [CONTEXT, "the old man s", "her sister likes the gren "]
# Exports checked in a process without torch or lm: each kind of tokenizer, and int8 weights.
ISOLATED_EXPORTS = [("char", False), ("char", True), ("unigram", False), ("word", True)]


def load_runtime():
    spec = importlib.util.spec_from_file_location("lm_export_runtime", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime = load_runtime()


@pytest.fixture(scope="module")
def exported(tiny_checkpoints, tmp_path_factory):
    """(kind, int8) -> the export folder of the tiny checkpoint of that kind (built on first use)."""
    built = {}

    def get(kind: str, int8: bool = False) -> Path:
        if (kind, int8) not in built:
            out = tmp_path_factory.mktemp(f"runtime-{kind}") / ("int8" if int8 else "fp32")
            built[kind, int8] = export_checkpoint(tiny_checkpoints(kind), out, int8=int8).folder
        return built[kind, int8]

    return get


@pytest.fixture(scope="module")
def mixed(tiny_checkpoints, corpus_file, tmp_path_factory):
    """(checkpoint, export) of the tiny word model with a continuous cache and an n-gram switched on."""
    folder = tmp_path_factory.mktemp("mixed") / "model"
    shutil.copytree(tiny_checkpoints("word"), folder, ignore=shutil.ignore_patterns("onnx"))
    tokenizer = load_checkpoint(folder).tokenizer
    Ngram.build(tokenizer.encode(corpus_file.read_text()), tokenizer.vocab_size, order=3, min_count=1).save(folder)
    config = json.loads((folder / "config.json").read_text())
    config["cache"] = {"window": 100, "sharpness": 0.5, "weight": 0.3}
    config["ngram"] = {"order": 3, "min_count": 1, "weight": 0.4}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, export_checkpoint(folder, folder.parent / "export").folder


def engine_strip(checkpoint: Path, text: str, int8: bool = False) -> list[dict]:
    """The strip lm suggest shows for `text`, from the engine over the checkpoint itself."""
    strip = lm.Keyboard.load(lm.load(checkpoint, backend="onnx", int8=int8)).suggest(text)
    return [s.to_dict() for s in strip.as_typed(text)]


def assert_same_strip(found: list[dict], expected: list[dict]) -> None:
    assert [{**s, "probability": None} for s in found] == [{**s, "probability": None} for s in expected]
    assert [s["probability"] for s in found] == pytest.approx([s["probability"] for s in expected], rel=1e-6)


def torch_logits(model, tokenizer, text: str) -> np.ndarray:
    """The PyTorch model's next-token logits after a line start and `text`."""
    with torch.inference_mode():
        logits, _ = model(torch.tensor([tokenizer.encode("\n" + text)]))
    return logits[0, -1].numpy()


# --- the engine's answers, in this process ----------------------------------------------------

@pytest.mark.parametrize("kind", ["char", "unigram", "word"])
def test_the_strip_is_the_one_lm_suggest_gives_for_the_checkpoint(exported, tiny_checkpoints, kind):
    model = runtime.Model(exported(kind))
    for text in TEXTS:
        assert_same_strip([s.to_dict() for s in model.suggest(text)], engine_strip(tiny_checkpoints(kind), text))


def test_a_half_typed_word_is_completed_with_its_probability_given_the_typed_letters(exported, tiny_checkpoints):
    """Word model: each completion of "s" gets P(word) / P(a word starting with s), from the PyTorch model."""
    found = runtime.Model(exported("word")).suggest(CONTEXT + " s")
    ckpt = load_checkpoint(tiny_checkpoints("word"))
    probs = torch.softmax(torch.tensor(torch_logits(ckpt.model, ckpt.tokenizer, CONTEXT)), -1).numpy()
    pieces = ckpt.tokenizer.pieces
    starting = sum(float(p) for i, p in enumerate(probs) if pieces[i].startswith("s") and i > 1)
    assert found[0].word == "sky" and found[0].completion == "ky"
    for s in found:
        assert s.probability == pytest.approx(probs[pieces.index(s.word)] / starting, rel=1e-3)


def test_the_mixed_in_cache_and_ngram_travel_with_the_export(mixed):
    checkpoint, folder = mixed
    predictor = lm.load(folder)
    assert predictor.backend.name == "onnx" and predictor.ngram is not None and predictor.cache.weight == 0.3
    model = runtime.Model(folder)
    text = "the cat sees the river by the sea . the cat sees the"
    assert_same_strip([s.to_dict() for s in model.suggest(text)], engine_strip(checkpoint, text))
    plain = lm.Keyboard.load(lm.load(checkpoint, cache=False, ngram=False)).suggest(text).as_typed(text)
    assert [s.probability for s in model.suggest(text)] != pytest.approx([s.probability for s in plain], rel=1e-3)


def test_a_stream_reads_each_text_once_and_answers_as_the_whole_text_would(exported, tiny_checkpoints):
    checkpoint = tiny_checkpoints("char")
    stream = runtime.Model(exported("char")).stream("the old man")
    stream.feed(" s")
    assert_same_strip([s.to_dict() for s in stream.suggest()], engine_strip(checkpoint, "the old man s"))
    assert stream.feed("ees the gren ").word == "green"  # the finished word, corrected as lm suggest would
    assert stream.text == "the old man sees the green "
    stream = runtime.Model(exported("char")).stream()
    predictor = lm.load(checkpoint)
    for text in ("the old man sees the green ", " and the"):  # the second continues from the sampler's state
        before = stream.text
        stream.feed(text)
        written = stream.generate(12, seed=4)
        fresh = lm.generate(predictor.backend, predictor.tokenizer, before + text, GenerationConfig(max_tokens=12, seed=4))
        assert written == fresh.run()[0].text and stream.text == before + text + written
    assert_same_strip([s.to_dict() for s in stream.suggest()], engine_strip(checkpoint, stream.text))


def test_the_graph_keeps_the_models_contract(exported, tiny_checkpoints):
    model = runtime.Model(exported("unigram"))
    ckpt = load_checkpoint(tiny_checkpoints("unigram"))
    ids = ckpt.tokenizer.encode("\nthe old man sees the river")
    logits, state = model.step([ids[:4]], model.zero_state())
    logits, state = model.step([ids[4:]], state)
    np.testing.assert_allclose(logits[0, -1], torch_logits(ckpt.model, ckpt.tokenizer, "the old man sees the river"),
                               atol=1e-4)
    threads = runtime.Model(exported("unigram"), threads=2).backend.session.get_session_options()
    assert threads.intra_op_num_threads == 2


def torch_greedy(model, tokenizer, text: str, tokens: int) -> list[int]:
    """The ids the PyTorch model writes after a line start and `text`, taking the argmax each step."""
    expected, state = [], None
    ids = torch.tensor([tokenizer.encode("\n" + text)])
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(ids, state)
            expected.append(int(logits[0, -1].argmax()))
            ids = torch.tensor([[expected[-1]]])
    return expected


def test_greedy_generation_is_the_pytorch_argmax_loop(exported, tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints("word"))
    written = runtime.Model(exported("word")).generate(CONTEXT, 12, temperature=0, repetition_penalty=1.0)
    assert written == " " + ckpt.tokenizer.decode(torch_greedy(ckpt.model, ckpt.tokenizer, CONTEXT, 12))


# --- lm.load of an export ---------------------------------------------------------------------

def test_an_export_has_no_pytorch_weights_to_run_on_torch(exported):
    folder = exported("char")
    with pytest.raises(lm.ConfigError) as error:
        lm.load(folder, backend="torch")
    assert str(error.value) == (f"{folder} is an lm export: an ONNX graph, without the PyTorch weights that PyTorch "
                                "or a GPU would run — use ONNX Runtime on the CPU (--backend onnx), or the checkpoint "
                                "it was exported from")
    with pytest.raises(lm.ConfigError, match="is an lm export: an ONNX graph, without the PyTorch weights"):
        lm.load(folder, device="cuda")
    with pytest.raises(lm.ConfigError, match="is an lm export: it has no PyTorch weights to score or train"):
        lm.load(folder).model


def test_lm_suggest_runs_on_an_export_folder(exported):
    from click.testing import CliRunner

    from cli import cli

    folder = exported("char")
    result = CliRunner().invoke(cli, ["suggest", "the old man s", "-c", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert_same_strip(json.loads(result.stdout), [s.to_dict() for s in runtime.Model(folder).suggest("the old man s")])
    result = CliRunner().invoke(cli, ["suggest", "the", "-c", str(folder), "--backend", "torch"])
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {folder} is an lm export")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_export_of_an_earlier_lm_or_a_newer_one_says_what_to_do(exported, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(exported("char"), old)
    (old / "config.json").unlink()
    with pytest.raises(lm.CheckpointError, match="is an export from an earlier lm .* run it with its own runtime.py"):
        lm.load(old)
    newer = tmp_path / "newer"
    shutil.copytree(exported("char"), newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(lm.CheckpointError, match="is a lm-onnx 99 export, which this lm does not read"):
        lm.load(newer)


# --- without torch and without lm -------------------------------------------------------------

# How "neither torch nor lm installed" is simulated: python -I (no current folder, PYTHONPATH or
# user site on sys.path); torch set to None in sys.modules, so importing it fails as where it is
# not installed; and what finds this repository's lm removed: the editable install's finder on
# sys.meta_path and any sys.path entry that holds an lm folder. The prelude then checks that
# importlib finds no lm at all, so the only lm the runtime can import is the export's zip.
ISOLATED = textwrap.dedent("""
    import importlib.util, json, os, runpy, sys
    sys.modules["torch"] = None
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "lm"))]
    if importlib.util.find_spec("lm") is not None:
        sys.exit("lm is still importable here: the test could not show that the export carries it")
""")


def run_isolated(code: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-I", "-c", ISOLATED + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("kind, int8", ISOLATED_EXPORTS)
def test_without_torch_or_lm_the_export_gives_the_engines_strip_and_text(exported, tiny_checkpoints, tmp_path,
                                                                         kind, int8):
    folder = exported(kind, int8)
    done = run_isolated(f"""
        runtime = runpy.run_path({str(folder / "runtime.py")!r})
        model = runtime["Model"]({str(folder)!r})
        report = {{"strips": [[s.to_dict() for s in model.suggest(text)] for text in {TEXTS!r}],
                  "text": model.generate("the cat", 16, seed=5),
                  "engine": sys.modules["lm.suggest.engine"].__file__,
                  "torch": sorted(m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None)}}
        print(json.dumps(report))
    """, tmp_path)
    report = json.loads(done.stdout)
    assert report["torch"] == []
    assert report["engine"] == str(folder / "lm-engine.zip" / "lm" / "suggest" / "engine.pyc")  # the zip's bytecode
    for text, found in zip(TEXTS, report["strips"]):
        assert_same_strip(found, engine_strip(tiny_checkpoints(kind), text, int8))
    predictor = lm.load(tiny_checkpoints(kind), backend="onnx", int8=int8)
    expected = lm.generate(predictor.backend, predictor.tokenizer, "the cat", GenerationConfig(max_tokens=16, seed=5))
    assert report["text"] == expected.run()[0].text


def test_the_command_prints_the_strip_and_continues_a_text(exported, tiny_checkpoints, tmp_path):
    folder = exported("char")
    script = str(folder / "runtime.py")

    def command(*args: str) -> str:
        code = f"sys.argv = {[script, str(folder), *args]!r}; runpy.run_path({script!r}, run_name='__main__')"
        return run_isolated(code, tmp_path).stdout

    expected = engine_strip(tiny_checkpoints("char"), "the old man k")
    assert command("the old man k") == "".join(f"{s['word']}\t{s['probability']:.4f}\n" for s in expected)
    assert expected[0]["word"] == "keeps" and expected[0]["completion"] == "eeps"
    assert_same_strip(json.loads(command("the old man k", "--json", "-k", "2")), expected[:2])
    predictor = lm.load(tiny_checkpoints("char"), backend="onnx")
    config = GenerationConfig(max_tokens=20, temperature=1.0, seed=7)
    written = lm.generate(predictor.backend, predictor.tokenizer, "the cat", config).run()[0].text
    assert command("the cat", "--generate", "20", "--temperature", "1", "--seed", "7") == "the cat" + written + "\n"


def test_the_command_says_in_one_line_when_the_folder_is_not_an_export(tmp_path):
    done = subprocess.run([sys.executable, "-I", str(RUNTIME), str(tmp_path), "the"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"Error: {tmp_path} is not an lm export with its engine (FileNotFoundError")
    assert len(done.stderr.splitlines()) == 1


def test_another_python_compiles_the_engine_from_its_sources(exported, tiny_checkpoints, tmp_path):
    """A .pyc another Python wrote (its magic number differs) is passed over for the source."""
    folder = tmp_path / "export"
    shutil.copytree(exported("char"), folder)
    with zipfile.ZipFile(exported("char") / "lm-engine.zip") as source, \
            zipfile.ZipFile(folder / "lm-engine.zip", "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            target.writestr(entry, b"\0\0\r\n" + data[4:] if entry.filename.endswith(".pyc") else data)
    done = run_isolated(f"""
        runtime = runpy.run_path({str(folder / "runtime.py")!r})
        words = [s.word for s in runtime["Model"]({str(folder)!r}).suggest("the old man k")]
        print(json.dumps([words, sys.modules["lm.suggest.engine"].__file__]))
    """, tmp_path)
    words, engine = json.loads(done.stdout)
    assert engine.endswith("lm-engine.zip/lm/suggest/engine.py")
    assert words == [s["word"] for s in engine_strip(tiny_checkpoints("char"), "the old man k")]
