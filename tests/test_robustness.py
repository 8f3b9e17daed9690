"""Nothing lost: atomic saves under SIGKILL, signals during training, no pickled code on load, clear
errors on write failures; and no input, however odd or large, makes generation or evaluation fail."""
import json
import math
import multiprocessing
import os
import pickle
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

import lm
from cli import cli
from lm.checkpoint.store import WEIGHTS_FILE, save_checkpoint
from lm.evaluate.evaluation import EvalConfig, evaluate_text
from lm.suggest.sampler import GenerationConfig, generate
from lm.suggest.engine import Suggester


def save_forever(folder, model, tokenizer, ready):
    """Child process: save the checkpoint again and again with changing weights."""
    ready.set()
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            model.decoder.bias.fill_(step)
        save_checkpoint(folder, model, tokenizer, {"step": step})


@pytest.mark.parametrize("kills", [12, pytest.param(300, marks=pytest.mark.soak)])
def test_sigkill_at_any_moment_of_a_save_leaves_a_loadable_checkpoint(tmp_path, tiny_checkpoints, kills):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    original = model.decoder.bias.detach().clone()
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    saves_seen = 0
    for _ in range(kills):
        ready = context.Event()
        child = context.Process(target=save_forever, args=(folder, model, tokenizer, ready))
        child.start()
        ready.wait(10)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        bias = lm.load(folder).model.decoder.bias
        step = json.loads((folder / "config.json").read_text()).get("step")
        if step is None:  # killed before its first save finished: the copied checkpoint, untouched
            assert torch.equal(bias, original)
        else:  # one whole save: the weights and the config.json of the same step, never a mix
            assert torch.all(bias == step), (step, bias[:3])
            saves_seen += 1
    print(f"\n{kills} SIGKILLs at random moments of a save: every checkpoint loaded whole, {saves_seen} of them the child's")
    assert saves_seen > 0  # the kills fell among the child's saves, not all before its first


class Exploit:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_runs_pickled_code_planted_in_a_checkpoint(tmp_path, tiny_checkpoints, corpus_file):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    marker = tmp_path / "pwned"
    for name in ("model.pt", "optimizer.pt", "resume.pt", "tokenizer.pkl", "pytorch_model.bin"):
        (folder / name).write_bytes(pickle.dumps(Exploit(str(marker))))
    lm.load(folder)
    lm.train(lm.load_corpus([str(corpus_file)]), folder, lm.ModelConfig(layers=1, hidden=64, emb=32, dropout=0.0),
             lm.TokenizerConfig(kind="char", min_count=1), lm.TrainConfig(max_steps=1, batch=8, bptt=32, device="cpu", tune_cache=False),
             resume=True)
    assert not marker.exists()


def test_weights_replaced_by_a_pickle_are_refused_not_executed(tmp_path, tiny_checkpoints):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    marker = tmp_path / "pwned"
    (folder / WEIGHTS_FILE).write_bytes(pickle.dumps(Exploit(str(marker))))
    with pytest.raises(lm.CheckpointError, match="damaged"):
        lm.load(folder)
    assert not marker.exists()


def test_a_read_only_folder_gives_a_clear_error_and_keeps_the_checkpoint(tmp_path, tiny_checkpoints, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    before = (folder / WEIGHTS_FILE).read_bytes()
    mkdir = Path.mkdir

    def read_only(path, *args, **kwargs):  # what a folder without write permission answers, even to root
        if path.parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(lm.CheckpointError, match="cannot write checkpoint .*: Permission denied — .* intact"):
        save_checkpoint(folder, model, tokenizer, {})
    monkeypatch.undo()
    assert (folder / WEIGHTS_FILE).read_bytes() == before
    lm.load(folder)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, tiny_checkpoints, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    before = (folder / WEIGHTS_FILE).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lm.checkpoint.store._write_text", disk_full)
    with pytest.raises(lm.CheckpointError, match="No space left on device — free some disk space"):
        save_checkpoint(folder, model, tokenizer, {})
    assert (folder / WEIGHTS_FILE).read_bytes() == before
    assert not folder.with_name("ckpt.staging").exists()
    lm.load(folder)


# Interrupted by a signal, `lm train` saves, says how to resume, and the resumed run goes on.

TINY_FLAGS = ["--layers", "1", "--hidden", "32", "--emb", "16", "--batch", "4", "--bptt", "16", "--dropout", "0",
              "--eval-every", "10", "--no-tune-cache", "-q"]


def _python_sigint() -> None:
    """In the child: SIGINT as Python expects it, even when the suite runs with it ignored (nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_lm_train_saves_a_checkpoint_that_resumes(tmp_path, corpus_file, signum):
    corpus, valid, out = tmp_path / "my corpus.txt", tmp_path / "held out.txt", tmp_path / "the run"
    text = corpus_file.read_text()
    corpus.write_text(text, encoding="latin-1")
    valid.write_text(text[:2000], encoding="latin-1")
    arguments = ["train", str(corpus), "--valid", str(valid), "--encoding", "latin-1", "--out", str(out),
                 "--max-steps", "1000000", *TINY_FLAGS]
    child = subprocess.Popen([sys.executable, "-m", "cli", *arguments], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_python_sigint)
    deadline = time.monotonic() + 120
    while not (out / "config.json").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first evaluation (step 10) has saved
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    command = shlex.split(stderr.split("Resume with: ")[1].strip())
    # Every argument of the run, quoted for a shell, in the command's own order, then --out and --resume.
    assert command == ["lm", "train", str(corpus), "--valid", str(valid), "--encoding", "latin-1", "--layers", "1",
                       "--hidden", "32", "--emb", "16", "--dropout", "0.0", "--batch", "4", "--bptt", "16",
                       "--no-tune-cache", "--max-steps", "1000000", "--eval-every", "10", "--quiet", "--out", str(out),
                       "--resume"]
    saved = json.loads((out / "resume.json").read_text())["step"]
    assert saved >= 10
    lm.load(out)
    resumed = CliRunner().invoke(cli, [*command[1:], "--max-steps", str(saved + 3)])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == saved + 3


# Any prompt, any text: generation and evaluation never raise and stay finite.

@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    """kind -> (model, tokenizer) of the shared tiny checkpoints, loaded once."""
    loaded = {}

    def get(kind):
        if kind not in loaded:
            predictor = lm.load(tiny_checkpoints(kind))
            loaded[kind] = predictor.model, predictor.tokenizer
        return loaded[kind]

    return get


@pytest.mark.parametrize("kind", ["char", "unigram", "word"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=40))
def test_generation_never_raises_on_any_unicode(models, kind, prompt):
    model, tokenizer = models(kind)
    sample = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=5, seed=0)).run()[0]
    assert (len(sample.ids), sample.stop_reason) == (5, "max_tokens")  # nothing else may end it


@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_megabyte_prompt_of_unseen_and_control_characters_generates_and_suggests(models, kind):
    model, tokenizer = models(kind)
    rng = random.Random(0)
    alphabet = "the clouds are in sky .\n\t\r\x00\x07\x1b\u200b\u2028日本😀é"
    prompt = "".join(rng.choice(alphabet) for _ in range(1_000_000)) + " the clouds are in the "
    sample = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=5, seed=0)).run()[0]
    assert (len(sample.ids), sample.stop_reason) == (5, "max_tokens")
    strip = Suggester(model, tokenizer).suggest(prompt)
    assert len(strip) == 3 and all(s.word.strip() == s.word and s.word for s in strip), strip
    if kind == "word":  # a word model finds its way back within the last five words
        assert strip[0].word == "sky", strip


@pytest.mark.parametrize("kind", ["char", "unigram", "word"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=60))
def test_evaluation_metrics_stay_finite_on_any_text(models, kind, text):
    model, tokenizer = models(kind)
    result = evaluate_text(model, tokenizer, text, EvalConfig(keyboard=True, batch=4, bptt=16))
    figures = result.loss.to_dict()
    assert all(math.isfinite(figures[k]) for k in ("loss", "perplexity", "word_perplexity", "bits_per_char"))
    keys = result.keyboard.to_dict()
    assert keys["top1"] <= keys["top3"] <= keys["words"] and keys["taps"] <= keys["keystrokes"]
