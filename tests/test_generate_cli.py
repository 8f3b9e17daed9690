import json
import shutil

import pytest
from click.testing import CliRunner

import lm
from cli import cli
from lm.suggest.sampler import GenerationConfig, generate


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints) -> str:
    return str(tiny_checkpoints("char"))


def run(*args, **kwargs):
    return CliRunner().invoke(cli, ["generate", *args], **kwargs)


@pytest.mark.parametrize("precision", ["--int8", "--fp32"])
def test_greedy_output_is_the_prompt_and_the_librarys_continuation(checkpoint, precision):
    result = run("the clouds", "-c", checkpoint, "--temperature", "0", "--max-tokens", "30", precision)
    assert result.exit_code == 0, result.output
    loaded = lm.load(checkpoint, int8=precision == "--int8")
    model, tokenizer = loaded.model, loaded.tokenizer
    sample = generate(model, tokenizer, "the clouds", GenerationConfig(temperature=0, max_tokens=30)).run()[0]
    assert result.output == "the clouds" + sample.text + ("" if sample.text.endswith("\n") else "\n")


def test_the_same_seed_gives_the_same_text(checkpoint):
    outputs = [run("a", "-c", checkpoint, "--seed", seed, "--max-tokens", "40").output for seed in ("3", "3", "4")]
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


def test_json_has_the_settings_the_seed_and_every_sample(checkpoint):
    result = run("my friend", "-c", checkpoint, "--n", "3", "--max-words", "4", "--top-k", "5", "--stop", "xyz", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prompt"] == "my friend" and isinstance(data["seed"], int)
    assert data["config"]["n"] == 3 and data["config"]["top_k"] == 5 and data["config"]["stop"] == ["xyz"]
    assert len(data["samples"]) == 3
    for sample in data["samples"]:
        assert sample["words"] == 4 and sample["finish_reason"] == "max_words"  # "xyz" never comes; 128 tokens hold 4 words
    again = json.loads(run("my friend", "-c", checkpoint, "--n", "3", "--max-words", "4", "--top-k", "5",
                           "--stop", "xyz", "--json", "--seed", str(data["seed"])).output)
    assert again["samples"] == data["samples"]  # the reported seed reproduces the run


def test_several_samples_are_shown_one_after_another(checkpoint):
    result = run("the", "-c", checkpoint, "--n", "2", "--seed", "1", "--max-tokens", "10")
    assert result.exit_code == 0, result.output
    data = json.loads(run("the", "-c", checkpoint, "--n", "2", "--seed", "1", "--max-tokens", "10", "--json").output)
    assert "sample 1" in result.output and "sample 2" in result.output
    for sample in data["samples"]:
        assert ("the" + sample["text"]).split("\n")[0].strip() in result.output


def test_stop_at_sentence_ends_the_text_at_a_sentence_end(checkpoint):
    data = json.loads(run("-c", checkpoint, "--stop-at", "sentence", "--seed", "2", "--n", "4", "--max-tokens", "400", "--json").output)
    for sample in data["samples"]:
        assert sample["finish_reason"] == "sentence"
        assert sample["text"].rstrip(" \n").endswith((".", "!", "?")) or sample["text"].endswith("\n")


def test_the_newest_checkpoint_is_the_default(checkpoint, tmp_path, monkeypatch):
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / "tiny")
    monkeypatch.chdir(tmp_path)
    assert run("the", "--seed", "5", "--max-tokens", "20").output == run("the", "-c", checkpoint, "--seed", "5", "--max-tokens", "20").output


@pytest.mark.parametrize("args, message", [
    ([], "Error: no checkpoint found under checkpoints/ — train one first with `lm train CORPUS`, or pass --checkpoint PATH\n"),
    (["-c", "nowhere"], "Error: checkpoint nowhere does not exist — check the path, or train one with `lm train`\n"),
    (["--top-p", "0"], "Error: --top-p must be in (0, 1], not 0.0 — 1 switches it off, 0.9 is usual\n"),
    (["--max-tokens", "0"], "Error: --max-tokens must be a positive integer, not 0 — pass 1 or more\n"),
])
def test_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run("hello", *args)
    assert (result.exit_code, result.output) == (1, message)


@pytest.mark.parametrize("command", ["generate", "repl"])
def test_help_ends_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and f"lm {command}" in result.output


def test_dash_reads_the_prompt_from_stdin_and_prints_only_the_continuation(checkpoint):
    from_argument = run("the clouds", "-c", checkpoint, "--temperature", "0", "--max-tokens", "20")
    from_stdin = run("-", "-c", checkpoint, "--temperature", "0", "--max-tokens", "20", input="the clouds")
    assert from_stdin.exit_code == 0, from_stdin.output
    assert "the clouds" + from_stdin.output == from_argument.output
