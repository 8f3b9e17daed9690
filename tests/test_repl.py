import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import lm
from cli import cli
from lm.suggest.repl import Repl, ReplConfig
from lm.suggest.sampler import START_TEXT, Sampler
from lm.suggest.engine import Suggester

GREEDY = dict(temperature=0.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def char_predictor(tiny_checkpoints):
    return lm.load(tiny_checkpoints("char"))


@pytest.fixture(scope="module")
def char_model(char_predictor):
    return char_predictor.model, char_predictor.tokenizer


def reread(model, tokenizer, context: str) -> torch.Tensor:
    """The logits a fresh sampler gives after reading the whole context at once."""
    return torch.from_numpy(Sampler(model, tokenizer).feed(START_TEXT + context))


def take(stream, n: int | None = None) -> str:
    return "".join(piece for _, piece in zip(range(n or 10**9), stream))


def assert_state_matches_context(session: Repl, model=None):
    model = model or session.model
    torch.testing.assert_close(torch.from_numpy(session.sampler.logits), reread(model, session.tokenizer, session.context))


# The session as a library class.

def test_the_context_carries_over_between_turns(char_model):
    session = Repl(*char_model, ReplConfig(max_words=4, seed=0))
    first = take(session.handle("the clouds").stream)
    assert session.context == "the clouds" + first and first
    assert_state_matches_context(session)
    second = take(session.handle("my friend").stream)
    joint = "" if first[-1].isspace() else " "  # a space joins the turns unless the text ends in one
    assert session.context == "the clouds" + first + joint + "my friend" + second
    assert_state_matches_context(session)


def test_an_empty_line_lets_the_model_go_on(char_model):
    session = Repl(*char_model, ReplConfig(max_words=3, seed=1))
    first = take(session.handle("the cat").stream)
    more = take(session.handle("").stream)
    assert more and session.context == "the cat" + first + more
    assert_state_matches_context(session)


def test_undo_takes_back_the_last_turn_and_its_state(char_model):
    session = Repl(*char_model, ReplConfig(max_words=3, seed=2))
    take(session.handle("the dog").stream)
    after_first = session.context
    logits = session.sampler.logits.copy()
    take(session.handle("a bird").stream)
    assert session.undo() and session.context == after_first
    assert np.array_equal(session.sampler.logits, logits)
    assert session.undo() and session.context == ""
    assert not session.undo()
    assert session.handle(":undo").text == "(nothing to undo)"


def test_reset_forgets_the_text_and_undo_brings_it_back(char_model):
    session = Repl(*char_model, ReplConfig(max_words=3, seed=2))
    take(session.handle("the dog").stream)
    before = session.context
    assert session.handle(":reset").text.startswith("(the text is empty")
    assert session.context == "" and session.handle(":context").text == "(the text is empty)"
    assert_state_matches_context(session)
    session.handle(":undo")
    assert session.context == before
    assert_state_matches_context(session)


def test_stopping_a_turn_keeps_what_was_shown(char_model):
    session = Repl(*char_model, ReplConfig(max_words=50, stop_at=None, seed=3))
    shown = take(session.handle("the old man").stream, 5)
    session.stop()
    assert session.context == "the old man" + shown
    assert_state_matches_context(session)


class InterruptAt(nn.Module):
    """The real model, except that its `at`-th call raises KeyboardInterrupt (a Ctrl-C mid-step)."""

    def __init__(self, model, at: int):
        super().__init__()
        self.model, self.calls, self.at = model, 0, at

    def forward(self, ids, state=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.model(ids, state)


def test_ctrl_c_inside_a_model_step_stops_the_turn_but_not_the_session(char_model):
    model, tokenizer = char_model
    session = Repl(InterruptAt(model, at=8), tokenizer, ReplConfig(max_words=50, stop_at=None, seed=4))
    shown = []
    with pytest.raises(KeyboardInterrupt):
        for piece in session.handle("the cat").stream:
            shown.append(piece)
    session.stop()
    assert len(shown) == 5  # calls: the start context, the typed text, then one per token
    assert session.context == "the cat" + "".join(shown)
    assert_state_matches_context(session, model)
    more = take(session.handle("and").stream)  # the session goes on
    assert session.context.endswith(" and" + more)
    assert_state_matches_context(session, model)


def test_settings_commands_change_the_next_turn(char_model):
    session = Repl(*char_model)
    assert session.handle(":temp 0.5").text == "temp = 0.5" and session.config.temperature == 0.5
    assert session.handle(":topk 5").text == "topk = 5" and session.config.top_k == 5
    assert session.handle(":topp 0.9").text == "topp = 0.9" and session.config.top_p == 0.9
    assert session.handle(":until paragraph").text == "until = paragraph"
    assert session.handle(":until none").text == "until = None" and session.config.stop_at is None
    assert session.handle(":len 2").text == "len = 2"
    take(session.handle("the").stream)
    assert session.context.split()[1:] and len(session.context.split()) <= 3
    assert "temp = 0.5" in session.handle(":settings").text


@pytest.mark.parametrize("line, message", [
    (":temp -1", "Error: --temperature must be 0 or more, not -1.0 — 0 is greedy, 1 samples as trained"),
    (":topp x", "Error: 'x' is not a number — type e.g. 0.8 or 20"),
    (":until page", "Error: 'page' is not a place to stop — use sentence, paragraph or none"),
    (":frobnicate", "Error: unknown command :frobnicate — type :help for the list"),
])
def test_bad_commands_explain_themselves_and_change_nothing(char_model, line, message):
    session = Repl(*char_model)
    before = session.config
    assert session.handle(line).text == message
    assert session.config == before


def test_the_same_seed_gives_the_same_turns(char_model):
    runs = []
    for _ in range(2):
        session = Repl(*char_model, ReplConfig(seed=9, max_words=5))
        runs.append([take(session.handle(line).stream) for line in ("the clouds", "a dog")])
    assert runs[0] == runs[1]


HELP = """\
Type text and the model continues it; an empty line lets it go on. Commands:
  :temp VALUE     sampling temperature (0: greedy)
  :topk VALUE     keep the k most likely tokens (0: off)
  :topp VALUE     keep the most likely tokens holding this probability (1: off)
  :len VALUE      most words the model writes per turn
  :until VALUE    end a turn at a sentence, paragraph or none
  :rep VALUE      repetition guard (1: off)
  :seed VALUE     random seed for every turn (none: fresh)
  :correct VALUE  correct typed words as a phone keyboard does (on|off)
  :reset          forget the text and start again
  :undo           take back the last turn (or reset)
  :context        show the text so far
  :suggest        the keyboard's next words for the text so far
  :settings       show the generation settings
  :help           this list
  :quit           leave (also Ctrl-D)
Start a line with '::' to type text that begins with ':'. Ctrl-C stops the model."""


def test_help_quit_and_a_literal_colon(char_model):
    session = Repl(*char_model, ReplConfig(max_words=2, seed=0))
    text = session.handle(":help").text
    assert text == HELP
    for command in re.findall(r"^  :(\w+)", text, flags=re.M):  # every command listed is one the REPL runs
        assert not session.handle(f":{command}").text.startswith("Error: unknown command"), command
    session = Repl(*char_model, ReplConfig(max_words=2, seed=0))
    assert session.handle(":quit").quit and session.handle(":q").quit
    take(session.handle("::) smile").stream)
    assert session.context.startswith(":) smile")


def test_suggest_shows_the_suggesters_next_words(char_predictor):
    session = Repl.load(char_predictor, ReplConfig(max_words=3, seed=0))
    session.handle("the clouds are in the")
    session.stop()  # before the model writes: the text ends in a word, and the next line starts a new one
    expected = Suggester.load(char_predictor).suggest("the clouds are in the ", 2)  # nothing to correct: the engine's strip
    assert session.handle(":suggest 2").text == "\n".join(f"{s.word}  {s.probability:.1%}" for s in expected)
    assert session.suggestions(2) == expected and expected  # the same numbers, unrounded


# Typing forgiven: the line goes through the keyboard (lm/suggest/keyboard.py) before the model reads it.

def test_a_typed_line_is_corrected_before_the_model_reads_it(char_predictor):
    session = Repl.load(char_predictor, ReplConfig(max_words=2, seed=0))
    reply = session.handle("the clouds are in teh")
    assert reply.corrected == "(corrected: teh → the)"
    shown = take(reply.stream)
    assert session.context == "the clouds are in the" + shown
    assert_state_matches_context(session)
    assert session.undo() and session.context == ""  # :undo takes the whole corrected turn back


def test_correct_off_appends_the_line_as_typed(char_predictor):
    session = Repl.load(char_predictor, ReplConfig(max_words=2, seed=0))
    assert session.handle(":correct off").text == "correct = off"
    reply = session.handle("the clouds are in teh")
    shown = take(reply.stream)
    assert reply.corrected == "" and session.context == "the clouds are in teh" + shown
    assert session.handle(":correct maybe").text == "Error: 'maybe' is neither on nor off — type :correct on or :correct off"


def test_a_repl_writes_one_text():
    with pytest.raises(lm.ConfigError, match="a REPL writes one text"):
        Repl(nn.Linear(1, 1), None, ReplConfig(n=2))


# The CLI, driven through its stdin.

def test_the_cli_repl_carries_the_context_and_runs_commands(tiny_checkpoints, char_predictor):
    lines = ["the clouds are in teh", ":context", "my friend", ":context", ":undo", ":context", ":temp 0.3", ":settings", ":quit", "ignored"]
    result = CliRunner().invoke(cli, ["repl", "-c", str(tiny_checkpoints("char")), "--temperature", "0", "--max-words", "4", "--fp32"],
                                input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    session = Repl.load(char_predictor, ReplConfig(temperature=0, max_words=4))
    shown = ["(corrected: teh → the)", take(session.handle(lines[0]).stream), session.context]  # the correction first
    shown += [take(session.handle(lines[2]).stream), session.context]
    session.undo()
    shown += [session.context, session.context, session.handle(":temp 0.3").text, session.handle(":settings").text]
    assert result.output == "".join(text if text.endswith("\n") else text + "\n" for text in shown)
    assert "ignored" not in result.output and "until = sentence" in result.output


def test_the_cli_repl_ends_at_the_end_of_stdin(tiny_checkpoints):
    result = CliRunner().invoke(cli, ["repl", "-c", str(tiny_checkpoints("char")), "--seed", "1"], input=":temp 0\n:context")
    assert (result.exit_code, result.output) == (0, "temp = 0.0\n(the text is empty)\n")


def test_the_cli_repl_no_correct_switches_the_keyboard_off(tiny_checkpoints):
    result = CliRunner().invoke(cli, ["repl", "-c", str(tiny_checkpoints("char")), "--no-correct"], input=":correct\n")
    assert (result.exit_code, result.output) == (0, "correct = off\n")


def test_the_cli_repl_without_a_checkpoint_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["repl"], input="hello\n")
    assert result.exit_code == 1
    assert result.output == ("Error: no checkpoint found under checkpoints/ — train one first with `lm train CORPUS`, "
                             "or pass --checkpoint PATH\n")


def test_the_repl_help_names_every_command_of_the_repl():
    import re

    import lm.suggest.repl

    shown = " ".join(CliRunner().invoke(cli, ["repl", "--help"]).output.split())
    for command in [*lm.suggest.repl.SETTINGS, *lm.suggest.repl.ACTIONS]:
        assert re.search(rf":{command}\b", shown), f":{command} is missing from `lm repl --help`"
