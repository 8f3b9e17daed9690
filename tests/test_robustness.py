"""Nothing lost: atomic saves under SIGKILL, no pickled code on load, clear errors on write failures."""
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import time

import pytest
import torch

import lm
from lm.checkpoint import WEIGHTS_FILE, save_checkpoint


def save_forever(folder, model, tokenizer, ready):
    """Child process: save the checkpoint again and again with changing weights."""
    ready.set()
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            model.decoder.bias.fill_(step)
        save_checkpoint(folder, model, tokenizer, {"step": step})


@pytest.mark.parametrize("kills", [12])
def test_sigkill_at_any_moment_of_a_save_leaves_a_loadable_checkpoint(tmp_path, tiny_checkpoints, kills):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    model, tokenizer = lm.load(folder)
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    good = 0
    for _ in range(kills):
        ready = context.Event()
        child = context.Process(target=save_forever, args=(folder, model, tokenizer, ready))
        child.start()
        ready.wait(10)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        loaded, _ = lm.load(folder)
        bias = loaded.decoder.bias
        assert torch.all(bias == bias[0])  # one consistent save, never a mix
        good += 1
    assert good == kills


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
             lm.TokenizerConfig(kind="char", min_count=1), lm.TrainConfig(max_steps=1, batch=8, bptt=32, device="cpu"),
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


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_gives_a_clear_error_and_keeps_the_checkpoint(tmp_path, tiny_checkpoints):
    parent = tmp_path / "ro"
    parent.mkdir()
    folder = parent / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    model, tokenizer = lm.load(folder)
    parent.chmod(0o500)
    try:
        with pytest.raises(lm.CheckpointError, match="cannot write checkpoint .* intact"):
            save_checkpoint(folder, model, tokenizer, {})
    finally:
        parent.chmod(0o700)
    lm.load(folder)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, tiny_checkpoints, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    model, tokenizer = lm.load(folder)
    before = (folder / WEIGHTS_FILE).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lm.checkpoint._write_text", disk_full)
    with pytest.raises(lm.CheckpointError, match="No space left on device — free some disk space"):
        save_checkpoint(folder, model, tokenizer, {})
    assert (folder / WEIGHTS_FILE).read_bytes() == before
    assert not folder.with_name("ckpt.staging").exists()
    lm.load(folder)
