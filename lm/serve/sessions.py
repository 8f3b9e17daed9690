"""Keystroke sessions: one `KeyboardSession` per client, bounded in count and idle time.

A client that sends a `session` id gets the model's state at every word boundary of its text
kept between requests, so a keystroke reads at most the last word, and its last correction and
the words it put back, so an undo is seen as one. The store drops the least
recently used session first, and any session idle for too long, so memory stays flat however
many clients come and go.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..mix.cache import CacheMemory
from ..suggest.channel import Point
from ..suggest.engine import Suggester
from ..suggest.keyboard import Keyboard, KeyboardSession, Strip
from ..suggest.session import MAX_MARKS
from ..suggest.typed import Suggestion


@dataclass
class _Entry:
    session: KeyboardSession
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request of a client at a time
    last_used: float = 0.0


class SessionStore:
    """Suggestion sessions by client id, least recently used first out.

    Thread-safe: requests run in worker threads. Two requests with the same id run one after
    the other; different ids run side by side.
    """

    def __init__(self, keyboard: Keyboard, max_sessions: int, idle_seconds: float, clock=time.monotonic):
        self.keyboard = keyboard
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._entries

    def suggest(self, session_id: str, text: str, k: int, correct: bool = True,
                touches: list[Point] | None = None) -> Strip:
        """The strip for `text` in this client's session (created when new)."""
        entry = self._entry(session_id)
        with entry.lock:
            session = entry.session
            session.correcting = correct
            correction = session.set_text(text, touches)  # marks before the first changed character are kept
            return Strip(session.text, correction, session.strip(k))

    def swipe(self, session_id: str, text: str, points: list[Point], k: int) -> list[Suggestion]:
        """The words a swipe meant after `text`, in this client's session."""
        entry = self._entry(session_id)
        with entry.lock:
            entry.session.set_text(text)
            return entry.session.swipe(points, k)

    def _entry(self, session_id: str) -> _Entry:
        with self._lock:
            now = self.clock()
            entry = self._entries.pop(session_id, None)
            self._drop_idle(now)
            if entry is None:
                while len(self._entries) >= self.max_sessions:
                    self._entries.popitem(last=False)
                entry = _Entry(self.keyboard.session())
            entry.last_used = now
            self._entries[session_id] = entry  # the most recently used goes last
            return entry

    def _drop_idle(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.last_used <= self.idle_seconds:
                return
            self._entries.popitem(last=False)


def session_bytes(suggester: Suggester) -> int:
    """The most memory one session can hold: a state and fp32 logits at each kept word boundary."""
    start = suggester.start()
    cache = 0
    if suggester.cache is not None:  # the cache's buffer of feature vectors (lm.mix.cache.CacheMemory)
        cache = CacheMemory.capacity(suggester.cache) * (start.feature.size + 1) * 4
    return MAX_MARKS * (_bytes(start.state) + start.logits.nbytes) + cache


def _bytes(state) -> int:
    """The bytes of a state: a tensor or array, or a tuple of them (numpy's and torch's both have nbytes)."""
    if isinstance(state, (tuple, list)):
        return sum(_bytes(part) for part in state)
    return 0 if state is None else state.nbytes


def session_limit(suggester: Suggester, max_sessions: int, memory_bytes: int) -> int:
    """How many sessions to keep: `max_sessions`, fewer when their worst case exceeds the memory budget."""
    return max(1, min(max_sessions, memory_bytes // session_bytes(suggester)))
