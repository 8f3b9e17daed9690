"""`lm suggest` through CliRunner: the table, --json, --plain, and errors as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lm
from cli import cli
from lm.suggest.engine import Suggester

CLOUDS = "the clouds are in the "


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints) -> str:
    return str(tiny_checkpoints("word"))


@pytest.fixture(scope="module")
def expected(checkpoint):
    """What the library suggests with the command's defaults (int8 model, the checkpoint's cache and
    n-gram), for comparing with."""
    loaded = lm.load(checkpoint, int8=True)
    suggester = Suggester(loaded.backend, loaded.tokenizer, cache=loaded.cache, ngram=loaded.ngram)
    return lambda text, k=3: suggester.suggest(text, k)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["suggest", *args])


def test_table_shows_each_word_and_its_probability(checkpoint, expected):
    result = invoke(CLOUDS, "-c", checkpoint)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["word", "┃", "probability"]
    rows = [line.replace("│", " ").split() for line in lines[2:]]
    assert rows == [[s.word, f"{s.probability:.1%}"] for s in expected(CLOUDS)]
    assert rows[0][0] == "sky"


def test_fp32_flag_gives_the_exact_model(checkpoint):
    result = invoke(CLOUDS, "-c", checkpoint, "--fp32", "--json")
    assert result.exit_code == 0, result.output
    loaded = lm.load(checkpoint)
    exact = Suggester(loaded.backend, loaded.tokenizer, cache=loaded.cache, ngram=loaded.ngram).suggest(CLOUDS)
    assert json.loads(result.stdout) == [s.to_dict() for s in exact]


def test_json_lists_word_probability_and_completion(checkpoint, expected):
    result = invoke(CLOUDS.rstrip(), "-c", checkpoint, "--json", "-k", "4")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found == [s.to_dict() for s in expected(CLOUDS.rstrip(), 4)]
    assert {"word": "sky", "completion": " sky"}.items() <= found[0].items()  # the typed "the" takes no slot
    assert all(item["word"] != "the" for item in found)


def test_plain_prints_one_word_per_line(checkpoint, expected):
    result = invoke(CLOUDS + "s", "-c", checkpoint, "--plain", "-k", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(s.word + "\n" for s in expected(CLOUDS + "s", 2))
    assert result.stdout.startswith("sky\n")


def test_k_and_search_options_reach_the_library(checkpoint):
    result = invoke(CLOUDS, "-c", checkpoint, "--plain", "-k", "5", "--punctuation-min", "1", "--beam-width", "2")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 5


def test_no_match_prints_a_note_and_empty_json(checkpoint):
    table = invoke(CLOUDS + "qzx", "-c", checkpoint)
    assert table.exit_code == 0 and table.stdout == ""
    assert table.stderr == "No suggestions: no word the model knows starts with the typed letters.\n"
    as_json = invoke(CLOUDS + "qzx", "-c", checkpoint, "--json")
    assert as_json.exit_code == 0 and as_json.stdout == "[]\n"


def test_empty_text_suggests_words_that_start_a_text(checkpoint, expected):
    result = invoke("-c", checkpoint, "--plain")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(s.word + "\n" for s in expected(""))
    assert result.stdout.startswith("The\n")  # "the" starts 4 lines in 7 of the corpus


def test_missing_checkpoint_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(CLOUDS)
    assert result.exit_code == 1
    assert result.output == (
        "Error: no checkpoint found under checkpoints/ — train one first with `lm train CORPUS`, "
        "or pass --checkpoint PATH\n"
    )
    result = invoke(CLOUDS, "-c", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert result.output == f"Error: checkpoint {tmp_path / 'nowhere'} does not exist — check the path, or train one with `lm train`\n"


def test_bad_k_is_one_error_line(checkpoint):
    result = invoke(CLOUDS, "-c", checkpoint, "-k", "0")
    assert result.exit_code == 1
    assert result.output == "Error: -k must be a positive integer, not 0 — pass 1 or more\n"


def test_help_ends_with_an_example():
    result = CliRunner().invoke(cli, ["suggest", "--help"])
    assert result.exit_code == 0
    assert 'lm suggest "the clouds are in the" -k 5' in result.output
    assert "--json" in result.output and "--plain" in result.output and "[default: 3]" in result.output


def test_the_command_does_not_import_datasets(checkpoint):
    code = (
        "import sys; from click.testing import CliRunner; from cli import cli; "
        f"r = CliRunner().invoke(cli, ['suggest', 'the ', '-c', {checkpoint!r}, '--plain']); "
        "assert r.exit_code == 0, r.output; print('datasets' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dash_reads_the_text_from_stdin(checkpoint, expected):
    long_text = "the cat sees the ball in the garden .\n" * 4000 + CLOUDS  # 150 kB: too long for an argument
    result = CliRunner().invoke(cli, ["suggest", "-", "-c", checkpoint, "--json"], input=long_text.encode())
    assert result.exit_code == 0, result.output
    assert [s["word"] for s in json.loads(result.output)] == [s.word for s in expected(long_text)]
    bad = CliRunner().invoke(cli, ["suggest", "-", "-c", checkpoint], input=b"caf\xe9 ")
    assert bad.exit_code == 2 and "stdin is not UTF-8: byte 0xe9 at offset 3" in bad.output


def test_a_word_just_finished_is_shown_corrected(checkpoint):
    typed = "the clouds are in teh "
    table = invoke(typed, "-c", checkpoint)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0] == "Corrected teh to the (--no-correct keeps typed words)"
    found = json.loads(invoke(typed, "-c", checkpoint, "--json").stdout)
    assert [(item["word"], item["slot"]) for item in found[:2]] == [("teh", "typed"), ("the", "correction")]
    picked = found[1]  # the correction, for the text as given: "teh " becomes "the "
    assert typed[: len(typed) - picked["delete"]] + picked["completion"] == CLOUDS


def test_no_correct_keeps_the_typed_word_and_predicts_after_it(checkpoint, expected):
    typed = "the clouds are in teh "
    found = json.loads(invoke(typed, "-c", checkpoint, "--json", "--no-correct").stdout)
    assert found == [s.to_dict() for s in expected(typed)]
    assert all(item["slot"] == "prediction" for item in found)
