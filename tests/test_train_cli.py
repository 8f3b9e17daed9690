import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli

from conftest import make_text

TINY = ["--layers", "1", "--hidden", "32", "--emb", "16", "--batch", "4", "--bptt", "16", "--max-steps", "20",
        "--no-tune-cache"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(make_text(200))
    return CliRunner()


def test_train_writes_a_checkpoint_under_checkpoints_and_prints_a_summary(runner):
    result = runner.invoke(cli, ["train", "corpus.txt", *TINY])
    assert result.exit_code == 0, result.output
    assert "Training finished" in result.output and "bits / char" in result.output
    folders = list(Path("checkpoints").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"corpus-char-\d{8}-\d{6}", folders[0].name)
    config = json.loads((folders[0] / "config.json").read_text())
    assert config["model"]["hidden"] == 32 and config["training"]["max_steps"] == 20


def test_progress_lines_when_not_a_terminal_and_silence_with_quiet(runner):
    result = runner.invoke(cli, ["train", "corpus.txt", *TINY, "--out", "m"])
    assert "step     20  loss" in result.output and "valid  step 20" in result.output
    quiet = runner.invoke(cli, ["train", "corpus.txt", *TINY, "--out", "q", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_resume_continues_the_saved_run(runner):
    assert runner.invoke(cli, ["train", "corpus.txt", *TINY, "--out", "m", "-q"]).exit_code == 0
    more = runner.invoke(cli, ["train", "corpus.txt", "--out", "m", "--resume", "--max-steps", "30", "--no-tune-cache", "-q"])
    assert more.exit_code == 0, more.output
    steps = [json.loads(x)["step"] for x in Path("m/metrics.jsonl").read_text().splitlines()]
    assert steps == [20, 30]
    config = json.loads(Path("m/config.json").read_text())
    assert config["model"]["hidden"] == 32  # the saved model, not the default


def test_tokenizer_and_max_time_flags(runner):
    result = runner.invoke(cli, ["train", "corpus.txt", *TINY, "--tokenizer", "word", "--min-count", "1", "--max-time", "30s", "-o", "w", "-q"])
    assert result.exit_code == 0, result.output
    config = json.loads(Path("w/config.json").read_text())
    assert config["tokenizer"]["kind"] == "word" and config["training"]["max_time"] == 30


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.txt"], "Error: missing.txt does not exist — check the path\n"),
        (["train", "empty.txt"], "Error: empty.txt is empty or only whitespace — give a file with some text\n"),
        (["train", "corpus.txt", "--batch", "0"], "Error: --batch must be positive, not 0 — pass a number above 0, or leave it out for the default 32\n"),
        (["train", "corpus.txt", "--hidden", "-4", "-q"], "Error: --hidden must be a positive integer, not -4 — pass 1 or more\n"),
        (["train", "corpus.txt", "--resume", "-q"], "Error: --resume: no checkpoint under checkpoints/ — pass --out DIR\n"),
    ],
)
def test_bad_input_gets_one_error_line(runner, args, message):
    Path("empty.txt").write_text("")
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert result.output == message


def test_bad_duration_is_a_usage_error(runner):
    result = runner.invoke(cli, ["train", "corpus.txt", "--max-time", "soon"])
    assert result.exit_code == 2 and "not a duration" in result.output


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help and "Example" in command.help, name


def test_readme_commands_exist():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    used = set(re.findall(r"^\s*(?:\$ )?lm (\w+)", readme, flags=re.M))
    assert used, "the README shows no lm commands"
    assert used <= set(cli.commands), used - set(cli.commands)


def test_a_vocabulary_the_text_cannot_fill_is_one_error_line(runner):
    result = runner.invoke(cli, ["train", "corpus.txt", *TINY, "--vocab-size", "500", "-q"])
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: --vocab-size 500 is more than this text supports \(\d+: \d+ distinct characters and <unk>\) "
                        r"— use --vocab-size \d+ or less, or leave it out\n", result.output), result.output
