import json
import os
import shutil

import pytest
import torch

import lm
from lm.checkpoint.folder import CONFIG_FILE, WEIGHTS_FILE, newest_checkpoint, resolve_checkpoint
from lm.checkpoint.store import load_checkpoint


@pytest.fixture
def checkpoint(tmp_path, tiny_checkpoints):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("char"), folder)
    return folder


def test_round_trip_gives_identical_logits(tmp_path, checkpoint):
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = torch.tensor([tokenizer.encode("the clouds are in the sky")])
    before, _ = model(ids)
    again = tmp_path / "again"
    lm.save_checkpoint(again, model, tokenizer, {"tokenizer": {"kind": tokenizer.kind}})
    loaded = lm.load(again)
    model2, tokenizer2 = loaded.model, loaded.tokenizer
    after, _ = model2(ids)
    assert torch.equal(before, after)
    assert tokenizer2.pieces == tokenizer.pieces
    assert model2.decoder.weight is model2.embedding.weight


def test_folder_holds_config_weights_tokenizer_metrics_and_resume_state(checkpoint, corpus_file):
    names = set(os.listdir(checkpoint))
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "resume.safetensors", "resume.json"} <= names
    config = json.loads((checkpoint / CONFIG_FILE).read_text())
    assert config["format_version"] == 1
    assert {"model", "tokenizer", "training", "corpus", "metrics"} <= set(config)
    assert config["corpus"]["fingerprint"] == lm.load_corpus([str(corpus_file)]).fingerprint()
    records = [json.loads(line) for line in (checkpoint / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]  # TINY_TRAIN: 150 steps, an evaluation every 75 and at an epoch's end
    assert steps == sorted(set(steps)) and 75 in steps and steps[-1] == 150
    assert config["metrics"]["valid_loss"] == min(r["valid_loss"] for r in records)  # the saved weights are the best


def test_newest_checkpoint_is_the_default(tmp_path, checkpoint, monkeypatch):
    root = tmp_path / "checkpoints"
    root.mkdir()
    for name in ("old", "new"):
        shutil.copytree(checkpoint, root / name)
        os.utime(root / name / CONFIG_FILE, None)
    os.utime(root / "old" / CONFIG_FILE, (1, 1))
    assert newest_checkpoint(root) == root / "new"
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(None).name == "new"


def test_no_checkpoint_anywhere_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(lm.NoCheckpointError, match="lm train"):
        lm.load()


def corrupt_weights(folder):
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def drop_config(folder):
    (folder / CONFIG_FILE).unlink()


def newer_format(folder):
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def foreign_tokenizer(folder):
    (folder / "tokenizer.json").write_text(json.dumps({"kind": "char", "chars": list("abc")}))


def wrong_shape(folder):
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model"]["hidden"] += 1
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def absurd_size(folder):
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model"]["hidden"] = 10**9
    (folder / CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, message",
    [
        (corrupt_weights, "cannot be read .* damaged"),
        (drop_config, "no config.json"),
        (newer_format, "format 99, newer .* upgrade lm"),
        (foreign_tokenizer, "tokenizer has 4 tokens but the model expects"),
        (wrong_shape, "does not match the weights"),
        (absurd_size, "beyond the supported"),
    ],
)
def test_damaged_checkpoints_give_clear_errors(checkpoint, damage, message):
    damage(checkpoint)
    with pytest.raises(lm.CheckpointError, match=message):
        load_checkpoint(checkpoint)


def test_a_swap_interrupted_between_renames_recovers_the_previous_folder(checkpoint):
    old = checkpoint.with_name(checkpoint.name + ".old")
    ids = torch.tensor([[1, 2, 3]])
    expected = lm.load(checkpoint).model(ids)[0]
    os.replace(checkpoint, old)  # the state after the first rename of a save
    model = lm.load(checkpoint).model
    assert checkpoint.is_dir() and not old.exists()
    torch.testing.assert_close(model(ids)[0], expected, rtol=0, atol=0)
