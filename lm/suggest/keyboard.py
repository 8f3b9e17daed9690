"""The forgiving keyboard: the engine's strip, with corrections, slip-tolerant completions and swipes.

A `Keyboard` joins the Suggester (the model, its cache and n-gram: the prior P(w | context)) to
the noisy-channel decoder (lm/suggest/correct.py: the keyboard's geometry and the slips fingers
make, P(typed | w)) and the gesture decoder (lm/suggest/gesture.py). A `KeyboardSession` follows
a text as it is typed, as a phone keyboard does:

  - inside a word, the strip holds the engine's completions and next words, and completions
    that assume a slip in the typed letters ("recie" -> received) when they are likelier;
  - when a word is finished (a space or punctuation typed after it), the word is kept or
    corrected ("teh " -> "the "). The strip then shows the typed word, the correction and the
    alternatives, and one backspace puts the typed word back (and it stays kept);
  - a swipe over the layout gives the words it most likely meant.

The prior is the strip's own: `SuggestionSession.score_words`, the model's probability of each
candidate in the place of the typed word. The decoder asks for case-folded words; a word model's
vocabulary keeps case ("The", "the"), so a candidate's prior is the sum over its case variants.
The CLI, the REPL and the server all type through a KeyboardSession.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.lexicon import WORD, Lexicon
from ..data.text import JOINERS, START_TEXT
from .channel import Channel, ChannelConfig, Point
from .config import SuggestConfig
from .correct import Action, CorrectConfig, Correction, Decoder, Prior, present
from .engine import Suggester
from .gesture import GestureDecoder
from .index import CandidateIndex
from .layout import load_layout
from .session import SuggestionSession
from .typed import Slot, Suggestion, Typed, split_typed

MAX_VARIANTS = 4  # case variants of each word of a candidate that the prior sums


class Keyboard:
    """The suggestion engine with the keyboard's forgiveness (see the module's docstring)."""

    def __init__(self, suggester: Suggester, lexicon: Lexicon | None, correct: CorrectConfig | None = None,
                 user_words: Sequence[str] = ()):
        """
        Args:
            lexicon: the words that may be meant (a checkpoint's: lm.load(path).lexicon); None
                (a checkpoint without one), or `suggester.config.correct` off: no corrections,
                no slips, no swipes: the engine's strip alone.
            correct: the decoder's settings (CorrectConfig's defaults, tuned in bench/NOTES.md).
            user_words: a user dictionary: offered, and never corrected.
        """
        self.suggester = suggester
        self.config = suggester.config
        self.layout = load_layout(self.config.layout)
        self.decoder: Decoder | None = None
        self.gestures: GestureDecoder | None = None
        if self.config.correct and lexicon is not None and len(lexicon):
            index = CandidateIndex.from_lexicon(lexicon)
            self.decoder = Decoder(index, Channel(ChannelConfig(), self.layout), correct, user_words)
            self.gestures = GestureDecoder(index, self.layout)
        self._variants: dict[str, list[str]] = {}
        self._unknown: dict[str, float] = {}  # word models: lexicon words outside the vocabulary -> log share of <unk>
        if suggester.tokenizer.word_level:
            for piece in suggester.tokenizer.pieces:
                self._variants.setdefault(piece.casefold(), []).append(piece)
            if self.decoder is not None:
                outside = {w: n + 1 for w, n in self.decoder.index.counts.items() if w not in self._variants}
                norm = math.log(sum(outside.values()) or 1)
                self._unknown = {w: math.log(n) - norm for w, n in outside.items()}

    @classmethod
    def load(cls, predictor, config: SuggestConfig | None = None, correct: CorrectConfig | None = None,
             user_words: Sequence[str] = ()) -> Keyboard:
        """The keyboard over a loaded checkpoint (lm.load): its model, lexicon, cache and n-gram."""
        return cls(Suggester.load(predictor, config), predictor.lexicon, correct, user_words)

    @property
    def forgiving(self) -> bool:
        """Whether the keyboard corrects (a lexicon, and correction not switched off)."""
        return self.decoder is not None

    def session(self, text: str = "") -> KeyboardSession:
        return KeyboardSession(self, text)

    def suggest(self, text: str, k: int | None = None, correct: bool = True,
                touches: Sequence[Point] | None = None) -> Strip:
        """What the keyboard shows once `text` is typed: its last word corrected when it was just
        finished, and the strip for the text that results.

        Args:
            correct: False: the engine's strip alone, the text as typed.
            touches: the touch points of the text's last word, one per letter.
        """
        session = KeyboardSession(self)
        session.correcting = correct
        correction = session.set_text(text, touches)
        return Strip(session.text, correction, session.strip(k))

    def prior(self, session: SuggestionSession, typed: str, known: dict[str, float] | None = None) -> Prior:
        """log P(w | context) for case-folded candidates of the word at the end of the session's
        text, each summed over the spellings the model tells apart (see the module's docstring).

        Args:
            known: spellings already scored in this context, filled as more are scored.
        """
        known = {} if known is None else known

        def score(words: list[str]) -> list[float]:
            spellings = [self._spellings(w, typed) for w in words]
            new = list(dict.fromkeys(s for each in spellings for s in each if s not in known))
            known.update(zip(new, session.score_words(new)) if new else ())
            flat = [known[s] for each in spellings for s in each]
            scores, at = [], 0
            for word, each in zip(words, spellings):
                # A word the vocabulary lacks is scored as <unk>: it gets its share of <unk>'s
                # probability, by its count among the lexicon's words outside the vocabulary.
                unknown = sum(self._unknown.get(part, 0.0) for part in word.split(" "))
                scores.append(_logsumexp(flat[at: at + len(each)]) + unknown)
                at += len(each)
            return scores

        return score

    def _spellings(self, word: str, typed: str) -> list[str]:
        """A word model's case variants of a folded candidate (of each word of "in the"); for char
        and subword models, the candidate as typed ("The" after "Teh") and in lower case."""
        if not self._variants:
            return list(dict.fromkeys([present(word, typed), word]))
        parts = [self._variants.get(p, [p])[:MAX_VARIANTS] for p in word.split(" ")]
        spelled = [""]
        for variants in parts:
            spelled = [f"{a} {b}" if a else b for a in spelled for b in variants]
        return spelled


@dataclass
class Strip:
    """What `Keyboard.suggest` answers: the text after a correction, the decision, the strip."""

    text: str
    correction: Correction | None  # the just-finished word's decision (None: no word was just finished)
    suggestions: list[Suggestion]

    @property
    def corrected(self) -> bool:
        return self.correction is not None and self.correction.action is Action.CORRECT

    def as_typed(self, typed: str) -> list[Suggestion]:
        """The suggestions for the text as it was typed (before the correction): each pick then
        replaces the typed word where it picks a correction or the typed word."""
        return [s.rebased(self.text, typed) for s in self.suggestions]


@dataclass
class _Finished:
    """A word just finished: where it stands in the text, the decision on it, what followed it."""

    start: int  # where the word starts in the session's text
    end: int  # where the word the text holds now ends
    correction: Correction
    after: str  # what follows the word: the separator typed

    def undone_by(self, text: str, before: str) -> bool:
        """Whether `text` puts the typed word back (with or without its separator)."""
        typed = self.correction.typed
        return self.correction.action is Action.CORRECT and text in (before + typed, before + typed + self.after)


class KeyboardSession:
    """A text typed on the keyboard, corrections applied (see the module's docstring)."""

    def __init__(self, keyboard: Keyboard, text: str = ""):
        self.keyboard = keyboard
        self.session = SuggestionSession(keyboard.suggester)
        self.finished: _Finished | None = None  # the last finished word, until the text moves on
        self.kept: set[str] = set()  # words put back by an undo: never corrected again here (case-folded)
        self.touches: list[Point] | None = None  # touch points of the word at the end of the text
        self.correcting = True  # False: no corrections and no fixed slips, the engine's strip alone
        self._context: tuple[str, str] | None = None  # the context the known scores are for
        self._known: dict[str, float] = {}  # spellings scored in that context -> log P
        self.set_text(text)

    @property
    def text(self) -> str:
        return self.session.text

    @property
    def forgiving(self) -> bool:
        return self.correcting and self.keyboard.forgiving

    @property
    def correction(self) -> Correction | None:
        """The decision on the word just finished (None when the text has moved on)."""
        return self.finished.correction if self.finished is not None else None

    def type(self, chars: str, touches: Sequence[Point] | None = None) -> Correction | None:
        """Append typed characters; `touches`, one point per character, say where they fell
        (x, y in key widths). Returns the decision when they finish a word."""
        if touches is not None and len(touches) != len(chars):
            raise ValueError(f"one touch point per typed character: {len(chars)} characters, {len(touches)} points")
        kept = list(self.touches or []) if _word_at_end(self.text) else []
        correction = self.set_text(self.text + chars)
        if touches is not None:
            word = _word_at_end(self.text)
            self.touches = (kept + list(touches))[-len(word):] if word else None
        return correction

    def delete(self, n: int = 1) -> None:
        """Delete the last `n` characters. Right after a correction, one backspace undoes it instead:
        the typed word comes back (without the separator) and is not corrected again."""
        if n == 1 and self.undo():
            return
        self.set_text(self.text[: max(len(self.text) - max(n, 0), 0)])

    def undo(self) -> bool:
        """Put the typed word back in place of its correction; False when there is none to undo."""
        done = self.finished
        if done is None or done.correction.action is not Action.CORRECT:
            return False
        self.set_text(self.text[: done.start] + done.correction.typed)
        return True

    def set_text(self, text: str, touches: Sequence[Point] | None = None) -> Correction | None:
        """Replace the text. When the new text finishes its last word (a separator typed after it,
        the old text a prefix of the new), that word is kept or corrected and the decision
        returned. A text that puts back the typed word of the last correction is an undo.

        Args:
            touches: the touch points of the text's last word, one per letter (replaces any kept).
        """
        old, done = self.text, self.finished
        if touches is not None:
            self.touches = list(touches)
        elif not text.startswith(old) or not _word_at_end(old):
            self.touches = None
        self.finished = None
        self.session.set_text(text)
        if done is not None and done.undone_by(text, old[: done.start]):
            self.kept.add(done.correction.typed.casefold())
            return None
        word = _last_word(text)
        if not self.forgiving or word is None or not text.startswith(old) or len(old) > word.end() \
                or word.end() == len(text) or text[word.end()] in JOINERS:
            return None  # no word was just finished ("don'" may go on)
        return self._finish(word.start(), word.end())

    def strip(self, k: int | None = None) -> list[Suggestion]:
        """The suggestion strip for the text as it is now.

        Right after a finished word: its decision (the typed word, the correction, alternatives);
        else the engine's next words and completions, with completions that assume a slip in
        the typed letters when their posterior ranks them in.
        """
        k = self.keyboard.config.k if k is None else k
        if self.finished is not None and self.finished.correction.action is Action.CORRECT:
            return self._decision_strip(k)
        found = self.session.suggestions(k)
        typed = split_typed(self.text, self.keyboard.suggester.by_whitespace)
        if not typed.partial or typed.too_long:
            return found
        if self.forgiving:
            found = self._with_slips(found, typed.partial, k)
        return self._with_learned(found, typed, k)

    def swipe(self, points: Sequence[Point], k: int | None = None) -> list[Suggestion]:
        """The words a swipe over the layout meant, as the next word of the text, best first."""
        gestures = self.keyboard.gestures
        if gestures is None:
            return []
        k = self.keyboard.config.k if k is None else k
        text = self.text
        space = " " if text and not text[-1].isspace() else ""
        self.session.set_text(text + space)  # the swiped word is the next one
        try:
            found = gestures.decode(points, self._prior(""), k)
        finally:
            self.session.set_text(text)
        sentence = split_typed(text + space).sentence_start
        shown = [c.word[:1].upper() + c.word[1:] if sentence else c.word for c in found]
        return [Suggestion(w, c.posterior, space + w) for w, c in zip(shown, found)]

    def _prior(self, typed: str) -> Prior:
        """The keyboard's prior for the word at the end of the text. A candidate's score depends on
        the context alone, not on the typed letters, so the scores are kept while the context
        stays: each keystroke of a word (and its finish) scores only candidates new to it."""
        split = split_typed(self.session.text, self.keyboard.suggester.by_whitespace)
        context = (self.session.text[: split.context_end], split.lead)
        if context != self._context:
            self._context, self._known = context, {}
        return self.keyboard.prior(self.session, typed, self._known)

    def _touches_of(self, word: str) -> list[Point] | None:
        """The touch points of the word at the end of the text, when there is one per letter."""
        return self.touches if self.touches is not None and len(self.touches) == len(word) else None

    # --- a finished word

    def _finish(self, start: int, end: int) -> Correction:
        """Keep or correct the word text[start:end], and apply the decision to the text."""
        text, decoder = self.text, self.keyboard.decoder
        token_start = start
        while token_start > 0 and not text[token_start - 1].isspace():
            token_start -= 1
        typed, token = text[start:end], text[token_start:end]
        reason = decoder.protection(token) if token != typed else None  # "example.com", "a@b.org"
        if reason is not None:
            correction = Correction(typed, Action.KEEP, reason)
        else:
            touches = self._touches_of(typed)
            self.session.set_text(text[:end])
            keep = frozenset(self.kept) | self.session.learned()
            correction = decoder.correct(typed, self._prior(typed), touches, keep)
        self.session.set_text(text[:start] + correction.word + text[end:])
        self.touches = None
        self.finished = _Finished(start, start + len(correction.word), correction, text[end:])
        return correction

    def _decision_strip(self, k: int) -> list[Suggestion]:
        """The strip after a finished word, laid out as `Correction.strip`; each slot puts its
        word in the place of the one the text holds now."""
        done, text = self.finished, self.text
        after = done.after
        posterior = {c.word: c.posterior for c in done.correction.candidates}
        posterior.setdefault(done.correction.typed, 0.0)
        strip = []
        for word, slot in done.correction.strip(k):
            delete = len(text) - done.start
            if word == text[done.start: done.end]:
                strip.append(Suggestion(word, posterior.get(word, 0.0), "", slot, 0))
            else:
                strip.append(Suggestion(word, posterior.get(word, 0.0), word + after, slot, delete))
        return strip

    # --- completions with a slip

    def _with_slips(self, found: list[Suggestion], partial: str, k: int) -> list[Suggestion]:
        """The engine's strip joined by completions that assume a slip in `partial`.

        Each intended word w is weighed by log P(partial | w) + weight * log P(w | context). The
        engine's entries are the words for which the typed letters are right; together they hold
        P(partial typed right | context), which one of them tells: its prior over its
        probability on the strip. The slipped words share the rest by their own weights. The
        engine's strip is kept as it is unless a slipped word ranks into its k slots.
        """
        decoder = self.keyboard.decoder
        touches = self._touches_of(partial)
        folded = partial.casefold()
        exact = [s for s in found if s.word.casefold().startswith(folded) and not s.completion[:1].isspace()]
        slipped = decoder.slipped(partial, touches, stuck=not exact)
        if not slipped:
            return found
        asked = list(slipped) + [s.word.casefold() for s in exact[:1]]
        priors = dict(zip(asked, self._prior(partial)(asked)))
        weight = decoder.config.prior_weight
        totals = {w: c + weight * priors[w] for w, c in slipped.items() if priors[w] > -math.inf}
        if not totals:
            return found
        typed_right = -math.inf  # log weight of "the typed letters are right"
        if exact and priors[exact[0].word.casefold()] > -math.inf:
            reached = priors[exact[0].word.casefold()] - math.log(exact[0].probability)
            typed_right = decoder.channel.log_prob_prefix(partial, folded) + weight * reached
        elif found:
            return found  # next words only, with no measure of their weight: the engine's strip
        norm = _logsumexp(list(totals.values()) + [typed_right])
        share = math.exp(typed_right - norm)
        merged = [Suggestion(s.word, s.probability * share, s.completion, s.slot, s.delete) for s in found]
        merged += [Suggestion(present(w, partial), math.exp(t - norm), present(w, partial), Slot.PREDICTION, len(partial))
                   for w, t in totals.items()]
        best: dict[str, Suggestion] = {}
        for s in sorted(merged, key=lambda s: (-s.probability, s.word)):
            best.setdefault(s.word.casefold(), s)
        strip = list(best.values())[:k]
        return strip if any(s.delete for s in strip) else found

    # --- words learned in the session

    def _with_learned(self, found: list[Suggestion], typed: Typed, k: int) -> list[Suggestion]:
        """Words the session learned (typed and finished twice, outside the lexicon: a new name)
        that complete the typed letters, offered at no less than their share of the words typed
        so far. The model may not spell them at all (a letter its training text never had) or
        give them next to nothing, while a name typed twice in a short text is a likely third
        word; the share falls as the text grows."""
        counts = self.session.learned_counts()
        folded = typed.partial.casefold()
        matching = {w: n for w, n in counts.items() if w.startswith(folded) and w != folded}
        if not matching:
            return found
        total = max(self.session.words_read, 1)
        strip = {s.word.casefold(): s for s in found}
        for word, n in matching.items():
            shown = typed.present(word)
            share = min(n / total, 1.0)
            if word not in strip or strip[word].probability < share:
                strip[word] = Suggestion(shown, share, shown[len(typed.partial):])
        return sorted(strip.values(), key=lambda s: (-s.probability, s.word))[:k]


def _word_at_end(text: str) -> str:
    """The word the text ends in ("" after a space or punctuation)."""
    word = _last_word(text)
    return word.group() if word is not None and word.end() == len(text) else ""


def _last_word(text: str):
    """The last word of a text (a match of lm.data.lexicon.WORD), or None."""
    last = None
    for last in WORD.finditer(text, max(0, len(text) - 256)):
        pass
    return last


def _logsumexp(values: list[float]) -> float:
    top = max(values) if values else -math.inf
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def suggest_text(text: str, checkpoint=None, config: SuggestConfig | None = None, device: str = "cpu",
                 int8: bool = False, words: Sequence[str] = (), cache: bool = True, adapt=None,
                 ngram: bool = True, backend: str = "auto") -> Strip:
    """Load a checkpoint (the newest under checkpoints/ when None) and show the keyboard's strip for
    a text typed on it: a word just finished (a space after it) is kept or corrected first.

    int8=True runs the model quantized on the CPU: faster, very slightly different odds.
    words: a user dictionary added to the checkpoint's lexicon (offered, never corrected).
    cache: use the continuous cache tuned for the checkpoint (when it has one) over the text.
    ngram: mix in the checkpoint's n-gram (word models, when it has one).
    adapt: an lm.mix.adapt.AdaptConfig: first adapt the weights to the text by dynamic evaluation
        (which trains the PyTorch model: the torch backend).
    backend: "auto" (ONNX Runtime on the CPU when it is installed), "torch" or "onnx" (lm.load).
    """
    from ..checkpoint.loader import load

    config = config or SuggestConfig()
    config.validate()
    predictor = load(checkpoint, device, int8=int8 and adapt is None, cache=cache, ngram=ngram, words=words,
                     backend="torch" if adapt is not None else backend)
    if adapt is not None:
        from ..mix.adapt import adapt_to

        adapt_to(predictor.model, predictor.tokenizer.encode(START_TEXT + text), adapt)
        predictor = predictor.to_int8() if int8 else predictor
    return Keyboard.load(predictor, config, user_words=words).suggest(text)


def suggest_words(text: str, checkpoint=None, config: SuggestConfig | None = None, **options) -> list[Suggestion]:
    """The strip of `suggest_text` for a text, each suggestion for the text as given (a correction
    of its last word is a suggestion that replaces it)."""
    strip = suggest_text(text, checkpoint, config, **options)
    return strip.as_typed(text)
