"""The torch-free runtime shipped in every export: tokenizers, carried state, suggestions, generation.

The runtime is loaded by its file path (importing it as `lm.export.runtime` would run lm/__init__.py,
which imports torch); the subprocess tests also make `import torch` and `import lm` fail.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("onnxruntime")

from lm.checkpoint.store import load_checkpoint  # noqa: E402
from lm.export.onnx import export_checkpoint  # noqa: E402
from lm.suggest.engine import Suggester, SuggestConfig  # noqa: E402

RUNTIME = Path(__file__).resolve().parents[1] / "lm" / "export" / "runtime.py"
KINDS = ["char", "word", "unigram", "bpe"]
CONTEXT = "the clouds are in the"


def load_runtime():
    spec = importlib.util.spec_from_file_location("lm_export_runtime", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime = load_runtime()


@pytest.fixture(scope="module")
def exported(tiny_checkpoints, tmp_path_factory):
    """kind -> (export folder, the checkpoint's model, tokenizer) of the tiny fp32 model."""
    built = {}

    def get(kind: str):
        if kind not in built:
            out = tmp_path_factory.mktemp(f"runtime-{kind}") / "export"
            ckpt = load_checkpoint(tiny_checkpoints(kind))
            built[kind] = (export_checkpoint(ckpt.path, out).folder, ckpt.model, ckpt.tokenizer)
        return built[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("the cat sky.\n\u2581é猫 \t"), max_size=40) | st.text(max_size=20))
def test_runtime_tokenizer_encodes_and_decodes_like_lm(exported, kind, text):
    folder, _, tokenizer = exported(kind)
    mine = runtime.Tokenizer(folder, json.loads((folder / "manifest.json").read_text())["tokenizer"])
    ids = tokenizer.encode(text)
    assert mine.encode(text) == ids
    assert mine.decode(ids) == tokenizer.decode(ids)


def torch_logits(model, tokenizer, text: str) -> np.ndarray:
    """The PyTorch model's next-token logits after a line start and `text`."""
    with torch.inference_mode():
        logits, _ = model(torch.tensor([tokenizer.encode("\n" + text)]))
    return logits[0, -1].numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_stream_carries_the_state_across_feeds(exported, kind):
    folder, model, tokenizer = exported(kind)
    stream = runtime.Model(folder).stream("the old man")
    stream.feed(" sees")
    stream.feed(" the river")
    assert stream.text == "the old man sees the river"
    np.testing.assert_allclose(stream.logits, torch_logits(model, tokenizer, stream.text), atol=1e-4)


def test_word_suggestions_equal_lm_suggest(exported):
    folder, model, tokenizer = exported("word")
    expected = Suggester(model, tokenizer, SuggestConfig(k=3, punctuation_min=0.0)).suggest(CONTEXT + " ")
    found = runtime.Model(folder).stream(CONTEXT).suggest(3)
    assert [w for w, _ in found] == [s.word for s in expected] and found[0][0] == "sky"
    np.testing.assert_allclose([p for _, p in found], [s.probability for s in expected], atol=1e-4)


def test_char_suggestions_carry_the_probability_of_the_word(exported):
    """P(word) = P(" " + word) times the probability that a non-letter follows, from the PyTorch model."""
    folder, model, tokenizer = exported("char")
    found = runtime.Model(folder).stream(CONTEXT).suggest(3, prefix="s")
    assert len(found) == 3 and [p for _, p in found] == sorted((p for _, p in found), reverse=True)
    index = {piece: i for i, piece in enumerate(tokenizer.pieces)}
    boundary = [i for piece, i in index.items() if piece and not (piece.isalnum() or piece in "'’")]
    for word, p in found:
        chain, text = 0.0, CONTEXT
        for ch in " " + word:
            chain += torch.log_softmax(torch.tensor(torch_logits(model, tokenizer, text)), -1)[index[ch]].item()
            text += ch
        ends = torch.softmax(torch.tensor(torch_logits(model, tokenizer, text)), -1)[boundary].sum().item()
        assert p == pytest.approx(math.exp(chain) * ends, rel=1e-3)


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_subword_suggestions_count_every_piece_that_ends_the_word(exported, kind):
    """A word spelt by one piece gets at least that piece's probability times the probability, from
    the PyTorch model, that the next piece starts with a non-letter (other spellings add more)."""
    folder, model, tokenizer = exported(kind)
    found = runtime.Model(folder).stream(CONTEXT).suggest(5)
    ends = [i for i, piece in enumerate(tokenizer.pieces) if piece and not (piece[0].isalnum() or piece[0] in "'’")]
    checked = 0
    for word, p in found:
        if " " + word not in tokenizer.pieces:
            continue
        piece = tokenizer.pieces.index(" " + word)
        first = torch.softmax(torch.tensor(torch_logits(model, tokenizer, CONTEXT)), -1)[piece].item()
        ended = torch.softmax(torch.tensor(torch_logits(model, tokenizer, CONTEXT + " " + word)), -1)[ends].sum().item()
        assert p >= first * ended * 0.999
        checked += 1
    assert checked


@pytest.mark.parametrize("kind", ["char", "unigram"])
def test_subword_suggestions_are_whole_words(exported, kind):
    found = runtime.Model(exported(kind)[0]).stream("the old man sees").suggest(5)
    assert len(found) == 5
    assert all(word.isalpha() and 0 < p <= 1 for word, p in found)
    assert [p for _, p in found] == sorted((p for _, p in found), reverse=True)


def torch_greedy(model, tokenizer, text: str, tokens: int) -> list[int]:
    """The ids the PyTorch model writes after a line start and `text`, taking the argmax but <unk>."""
    expected, state = [], None
    ids = torch.tensor([tokenizer.encode("\n" + text)])
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(ids, state)
            logits[0, -1, tokenizer.unk_id] = -math.inf
            expected.append(int(logits[0, -1].argmax()))
            ids = torch.tensor([[expected[-1]]])
    return expected


def test_greedy_generation_equals_the_pytorch_argmax_loop(exported):
    folder, model, tokenizer = exported("word")
    expected = torch_greedy(model, tokenizer, CONTEXT, 12)
    stream = runtime.Model(folder).stream(CONTEXT)
    assert stream.generate(12, temperature=0) == " " + tokenizer.decode(expected)
    assert stream.text == CONTEXT + " " + tokenizer.decode(expected)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_never_writes_unk(exported, temperature):
    folder, _, tokenizer = exported("word")
    stream = runtime.Model(folder).stream(CONTEXT)
    stream.logits = np.full_like(stream.logits, -50.0)
    stream.logits[[tokenizer.unk_id, tokenizer.pieces.index("sky")]] = [50.0, 0.0]  # <unk> all but certain
    assert stream.generate(1, temperature=temperature, seed=0) == " sky"


def test_sampling_is_reproducible_with_a_seed(exported):
    model = runtime.Model(exported("char")[0])
    first, second = (model.stream("the ").generate(30, temperature=1.0, top_k=5, seed=3) for _ in range(2))
    assert first == second and len(first) == 30


# --- without torch ---------------------------------------------------------------------------

BLOCKER = textwrap.dedent("""
    import importlib.abc, json, runpy, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "lm"):
                raise ImportError(f"{name} is blocked: the runtime must work without it")

    sys.meta_path.insert(0, Blocked())
    try:
        import torch
        sys.exit("the blocker let torch in")
    except ImportError:
        pass
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("kind", ["word", "unigram"])
def test_runtime_runs_where_torch_cannot_be_imported(exported, kind):
    folder, model, tokenizer = exported(kind)
    done = run_without_torch(f"""
        sys.argv = ["runtime.py"]
        runtime = runpy.run_path({str(folder / "runtime.py")!r})
        model = runtime["Model"]({str(folder)!r}, threads=1)
        stream = model.stream({CONTEXT!r})
        report = {{"logits": stream.logits.tolist(), "suggestions": stream.suggest(3),
                  "text": stream.generate(8, temperature=0), "torch": "torch" in sys.modules}}
        print(json.dumps(report))
    """)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"] is False
    np.testing.assert_allclose(report["logits"], torch_logits(model, tokenizer, CONTEXT), atol=1e-4)
    if kind == "word":  # against PyTorch: lm's own strip, and the argmax loop
        expected = Suggester(model, tokenizer, SuggestConfig(k=3, punctuation_min=0.0)).suggest(CONTEXT + " ")
        assert [word for word, _ in report["suggestions"]] == [s.word for s in expected]
        np.testing.assert_allclose([p for _, p in report["suggestions"]], [s.probability for s in expected], atol=1e-4)
        assert report["text"] == " " + tokenizer.decode(torch_greedy(model, tokenizer, CONTEXT, 8))
    else:  # the same runtime, in this process beside torch
        here = runtime.Model(folder).stream(CONTEXT)
        suggestions = here.suggest(3)
        assert [word for word, _ in report["suggestions"]] == [word for word, _ in suggestions]
        np.testing.assert_allclose([p for _, p in report["suggestions"]], [p for _, p in suggestions], rtol=1e-5)
        assert report["text"] == here.generate(8, temperature=0) and report["text"].strip()


def test_runtime_command_suggests_and_generates_without_torch(exported):
    folder = exported("word")[0]
    script = str(folder / "runtime.py")
    suggest = run_without_torch(f"sys.argv = [{script!r}, {str(folder)!r}, {CONTEXT!r}]; runpy.run_path({script!r}, run_name='__main__')")
    assert suggest.returncode == 0, suggest.stderr
    first = suggest.stdout.splitlines()[0].split("\t")
    assert first[0] == "sky" and 0.5 < float(first[1]) <= 1
    generate = run_without_torch(f"sys.argv = [{script!r}, {str(folder)!r}, 'the old man', '--generate', '6', '--seed', '1']; "
                                 f"runpy.run_path({script!r}, run_name='__main__')")
    assert generate.returncode == 0, generate.stderr
    assert generate.stdout.startswith("the old man ") and len(generate.stdout.split()) == 3 + 6
