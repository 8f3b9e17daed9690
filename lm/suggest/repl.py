"""The REPL's session: one running text, written together by the user and the model.

What the user types is appended to the text and read once (the state is carried, never
recomputed); the model continues it, and what it wrote stays in the text for the next turn.
A typed line goes through the keyboard first (lm/suggest/keyboard.py, the engine `lm suggest`
and `lm serve` type through), so each of its words is kept or corrected as on a phone; :suggest
shows the same keyboard's strip. No terminal I/O here: the CLI reads lines, passes each to
`Repl.handle` and shows the reply.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from ..data.lexicon import WORD
from ..data.text import START_TEXT
from ..errors import ConfigError
from .config import STOP_AT, ReplConfig
from .correct import Action, Correction
from .sampler import Sampler

if TYPE_CHECKING:
    from .keyboard import KeyboardSession

SUGGESTIONS = 3


@dataclass
class Reply:
    """What the CLI shows for one input line."""

    text: str = ""  # a command's output
    stream: Iterator[str] | None = None  # the model's continuation, piece by piece
    quit: bool = False
    corrections: list[Correction] = field(default_factory=list)  # words of the typed line the keyboard changed

    @property
    def corrected(self) -> str:
        """The corrections as one line, "(corrected: teh → the, recieve → receive)"; "" when none."""
        if not self.corrections:
            return ""
        return "(corrected: " + ", ".join(f"{c.typed} → {c.word}" for c in self.corrections) + ")"


def _stop_at(value: str) -> str | None:
    if value in ("none", "off"):
        return None
    if value not in STOP_AT:
        raise ConfigError(f"{value!r} is not a place to stop — use sentence, paragraph or none")
    return value


def _number(kind: Callable) -> Callable:
    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not a number — type e.g. 0.8 or 20") from None
    return parse


def _optional_int(value: str) -> int | None:
    return None if value in ("none", "off") else _number(int)(value)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(f"{value!r} is neither on nor off — type :correct on or :correct off")
    return value == "on"


def _shown(value) -> str:
    """A setting's value as the user types it: on/off for a switch."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# :command -> (setting it changes, parser, help)
SETTINGS = {
    "temp": ("temperature", _number(float), "sampling temperature (0: greedy)"),
    "topk": ("top_k", _number(int), "keep the k most likely tokens (0: off)"),
    "topp": ("top_p", _number(float), "keep the most likely tokens holding this probability (1: off)"),
    "len": ("max_words", _optional_int, "most words the model writes per turn"),
    "until": ("stop_at", _stop_at, "end a turn at a sentence, paragraph or none"),
    "rep": ("repetition_penalty", _number(float), "repetition guard (1: off)"),
    "seed": ("seed", _optional_int, "random seed for every turn (none: fresh)"),
    "correct": ("correct", _on_off, "correct typed words as a phone keyboard does (on|off)"),
}
ACTIONS = {
    "reset": "forget the text and start again",
    "undo": "take back the last turn (or reset)",
    "context": "show the text so far",
    "suggest": "the keyboard's next words for the text so far",
    "settings": "show the generation settings",
    "help": "this list",
    "quit": "leave (also Ctrl-D)",
}


def help_text() -> str:
    lines = ["Type text and the model continues it; an empty line lets it go on. Commands:"]
    width = max(len(f"  :{name} VALUE") for name in SETTINGS) + 2
    lines += [f"  :{name} VALUE".ljust(width) + info for name, (_, _, info) in SETTINGS.items()]
    lines += [f"  :{name}".ljust(width) + info for name, info in ACTIONS.items()]
    lines.append("Start a line with '::' to type text that begins with ':'. Ctrl-C stops the model.")
    return "\n".join(lines)


class Repl:
    """A text written in turns, with the sampler's state carried from turn to turn.

    Attributes:
        context: the text so far (what the user typed and the model wrote).
        config: the generation settings for the next turn.
        sampler: positioned at the end of `context`, after the newline context.
    """

    def __init__(self, model, tokenizer, config: ReplConfig | None = None, lexicon=None, cache=None, ngram=None):
        """lexicon, cache and ngram: what the keyboard uses, for corrections and `:suggest` (a
        checkpoint's: lm.load(path) has them). Without a lexicon, nothing is corrected."""
        self.model, self.tokenizer, self.lexicon, self.cache, self.ngram = model, tokenizer, lexicon, cache, ngram
        self.config = config or ReplConfig()
        self.config.validate()
        if self.config.n != 1:
            raise ConfigError(f"a REPL writes one text, not n={self.config.n} — leave n at 1")
        self.context = ""
        self.sampler = self._fresh_sampler()
        self._undo: list[tuple[str, Sampler]] = []
        self._turn: Iterator[str] | None = None
        self._keys: KeyboardSession | None = None  # made when the keyboard is first needed
        self.corrections: list[Correction] = []  # what the keyboard changed in the last typed line

    @classmethod
    def load(cls, predictor, config: ReplConfig | None = None) -> "Repl":
        """A REPL over a loaded checkpoint (lm.load): its model, and for the keyboard its lexicon, cache and n-gram."""
        return cls(predictor.backend, predictor.tokenizer, config, predictor.lexicon, predictor.cache, predictor.ngram)

    def _fresh_sampler(self) -> Sampler:
        sampler = Sampler(self.model, self.tokenizer)
        sampler.feed(START_TEXT)
        return sampler

    def handle(self, line: str) -> Reply:
        """React to one input line: a :command, or text to continue."""
        line = line.rstrip("\r\n")
        if line.startswith("::"):
            line = line[1:]
        elif line.strip().startswith(":"):
            return self.command(line.strip()[1:])
        stream = self.turn(line)
        return Reply(stream=stream, corrections=self.corrections)

    def turn(self, text: str) -> Iterator[str]:
        """Append the user's text (read now) and return the model's continuation as a stream.

        A space is put between the text so far and the new text when neither has one, as a
        writer would. The text is typed on the keyboard first (with `config.correct`), and its
        corrections kept in `self.corrections`. Whatever the stream has produced stays in the
        context, even if the caller stops it early (see `stop`).
        """
        self.stop()
        self._undo.append((self.context, self.sampler.copy()))
        addition, self.corrections = self._typed(self._join(text))
        self.sampler.feed(addition)
        self.context += addition
        self._turn = self._continue()
        return self._turn

    def _join(self, text: str) -> str:
        if text and self.context and not self.context[-1].isspace() and not text[0].isspace():
            return " " + text
        return text

    def _typed(self, addition: str) -> tuple[str, list[Correction]]:
        """The addition as the keyboard leaves it, and the corrections it made.

        Its words are typed one at a time, each with the character after it, so each is kept or
        corrected when it is finished, as on a phone; the end of the line finishes the last one
        (a space typed, then dropped). The text so far was decided before: it is only read.
        """
        rest = addition.lstrip()
        if not self.config.correct or self.lexicon is None or not rest:
            return addition, []
        start = len(self.context)
        keys = self._keyboard_at(self.context + addition[: len(addition) - len(rest)])
        corrections, at = [], 0
        for word in WORD.finditer(rest):
            end = word.end() + 1  # the word and the character that finishes it
            corrections.append(keys.type(rest[at:end]))
            at = end
        ended = rest[-1].isspace()
        corrections.append(keys.type(rest[at:] + ("" if ended else " ")))
        line = keys.text[start:] if ended else keys.text[start:-1]
        return line, [c for c in corrections if c is not None and c.action is Action.CORRECT]

    def _keyboard_at(self, text: str) -> KeyboardSession:
        """The keyboard's session, moved to `text` without deciding any word on the way."""
        if self._keys is None:
            from .engine import Suggester  # the keyboard is only loaded when needed
            from .keyboard import Keyboard

            suggester = Suggester(self.model, self.tokenizer, lexicon=self.lexicon, cache=self.cache, ngram=self.ngram)
            self._keys = Keyboard(suggester, self.lexicon).session()
        # The session keeps the model's state at each word boundary: a turn reads only the new text.
        self._keys.correcting = False
        self._keys.set_text(text)
        self._keys.correcting = self.config.correct
        return self._keys

    def _continue(self) -> Iterator[str]:
        # The sampler follows each token as it is drawn, so the context and state agree
        # at every yield.
        for piece in self.sampler.generate(self.config):
            self.context += piece.text
            yield piece.text

    def stop(self) -> None:
        """Stop the running turn (Ctrl-C); what it wrote so far stays in the context."""
        if self._turn is not None:
            self._turn.close()
            self._turn = None

    def command(self, line: str) -> Reply:
        """Run a command line without its ':' (e.g. "temp 0.8")."""
        name, _, value = line.partition(" ")
        name, value = name.lower(), value.strip()
        try:
            if name in SETTINGS:
                return Reply(self.set(name, value))
            if name in ("quit", "q", "exit"):
                return Reply(quit=True)
            if name in ACTIONS:
                return Reply(getattr(self, f"_do_{name}")(value))
        except ConfigError as e:
            return Reply(f"Error: {e}")
        return Reply(f"Error: unknown command :{name} — type :help for the list")

    def set(self, name: str, value: str) -> str:
        """Change one setting by its command name; raises ConfigError for a bad value."""
        setting, parse, _ = SETTINGS[name]
        if value:
            config = dataclasses.replace(self.config, **{setting: parse(value)})
            config.validate()
            self.config = config
        return f"{name} = {_shown(getattr(self.config, setting))}"

    def reset(self) -> None:
        """Forget the text (undo brings it back)."""
        self.stop()
        self._undo.append((self.context, self.sampler))
        self.context, self.sampler = "", self._fresh_sampler()

    def undo(self) -> bool:
        """Go back to before the last turn or reset; False when there is nothing to undo."""
        self.stop()
        if not self._undo:
            return False
        self.context, self.sampler = self._undo.pop()
        return True

    def suggestions(self, k: int = SUGGESTIONS) -> list:
        """The keyboard's strip (lm.suggest.typed.Suggestion) for the text so far.

        The next line typed is joined with a space, so the suggestions are for a new word.
        """
        keys = self._keyboard_at(self.context + (" " if self.context and not self.context[-1].isspace() else ""))
        return keys.strip(k)

    def _do_reset(self, value: str) -> str:
        self.reset()
        return "(the text is empty; :undo brings it back)"

    def _do_undo(self, value: str) -> str:
        return self._tail() if self.undo() else "(nothing to undo)"

    def _do_context(self, value: str) -> str:
        return self.context if self.context.strip() else "(the text is empty)"

    def _do_suggest(self, value: str) -> str:
        k = _number(int)(value) if value else SUGGESTIONS
        found = self.suggestions(k)
        if not found:
            return "(no suggestions)"
        return "\n".join(f"{s.word}  {s.probability:.1%}" for s in found)

    def _do_settings(self, value: str) -> str:
        return "\n".join(f"{name} = {_shown(getattr(self.config, setting))}" for name, (setting, _, _) in SETTINGS.items())

    def _do_help(self, value: str) -> str:
        return help_text()

    def _tail(self, chars: int = 200) -> str:
        """The end of the text, to show where an undo went back to."""
        if not self.context.strip():
            return "(the text is empty)"
        return ("…" if len(self.context) > chars else "") + self.context[-chars:]
