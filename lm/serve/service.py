"""What the routes share: the loaded model, its suggester, the sessions and the worker limit.

It lives apart from the app factory so that the app and its routes both import it, and
neither imports the other's module first.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Callable

import anyio
import anyio.to_thread

from ..backend.base import as_backend
from ..suggest.channel import Point
from ..suggest.engine import SuggestConfig, Suggester
from ..suggest.keyboard import Keyboard, Strip
from ..suggest.typed import Suggestion
from .metrics import Metrics
from .sessions import SessionStore, session_limit
from .settings import ServeSettings

log = logging.getLogger("lm.serve")
# glibc keeps the memory worker threads free in per-thread arenas; without a trim the server's
# RSS grew 290 -> 1,174 MB under load while the sessions held ~100 MB (bench/NOTES.md).
TRIM_EVERY = 1000  # model requests between hand-backs


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Service:
    """The model and what the routes share: the keyboard (the suggester and the correction
    decoder), the sessions, the worker limit, the metrics."""

    def __init__(self, model, tokenizer, settings: ServeSettings, lexicon=None, cache=None, ngram=None):
        self.backend = as_backend(model, tokenizer.vocab_size)
        self.tokenizer = tokenizer
        self.settings = settings
        config = SuggestConfig(correct=settings.correct, layout=settings.layout)
        self.suggester = Suggester(self.backend, tokenizer, config, lexicon, cache, ngram)
        self.keyboard = Keyboard(self.suggester, lexicon, user_words=settings.words)
        share = settings.processes or 1  # each server process keeps its share of the sessions
        limit = session_limit(self.suggester, -(-settings.max_sessions // share), settings.session_memory * 2**20 // share)
        self.sessions = SessionStore(self.keyboard, limit, settings.session_idle)
        self.limiter = anyio.CapacityLimiter(settings.workers)
        self.requests = 0  # model requests so far, to hand memory back every TRIM_EVERY
        self.metrics = Metrics(live_sessions=lambda: len(self.sessions))

    def suggest(self, text: str, k: int, session: str | None, correct: bool = True,
                touches: list[Point] | None = None) -> Strip:
        """The keyboard's strip for `text` (`lm suggest`'s), each suggestion for `text` as sent; a
        session saves re-reading, remembers the last correction (so a text that puts the typed
        word back is an undo) and the words put back."""
        if session is None:
            strip = self.keyboard.suggest(text, k, correct, touches)
        else:
            strip = self.sessions.suggest(session, text, k, correct, touches)
        return Strip(strip.text, strip.correction, strip.as_typed(text))

    def swipe(self, text: str, points: list[Point], k: int, session: str | None) -> list[Suggestion]:
        """The words a swipe meant as the next word after `text`."""
        if session is None:
            return self.keyboard.session(text).swipe(points, k)
        return self.sessions.swipe(session, text, points, k)

    async def run(self, fn: Callable, *args):
        """Run blocking model work in a worker thread; every TRIM_EVERY calls, hand freed memory back."""
        self.requests += 1
        if self.requests % TRIM_EVERY == 0:
            await anyio.to_thread.run_sync(release_memory, limiter=self.limiter)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
