"""The service's settings, importable without loading the web stack (the CLI builds its flags from them)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# What a browser sends in its Origin header: a scheme and a host (and port), never a path.
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+", re.IGNORECASE)


@dataclass
class ServeSettings:
    """How the service behaves. The `lm serve` flags fill it by the same names."""

    name: str = "model"  # shown on the page and by /info
    api_key: str | None = None  # when set, every endpoint but /health and the page needs it
    max_body: int = 1_048_576  # bytes of a request body; more gets 413
    max_sessions: int = 1000  # keystroke sessions kept, least recently used dropped first
    session_idle: float = 600.0  # seconds after which an unused session is dropped
    session_memory: int = 512  # MB the sessions may hold at worst; lowers max_sessions if needed
    # Server processes, each with its own sessions; None: one per core on the CPU, one on a GPU.
    processes: int | None = None
    workers: int = 1  # requests doing model work at once in each process
    cache: bool = True  # suggestions use the checkpoint's continuous cache, one per session
    ngram: bool = True  # suggestions mix in a word model's n-gram (lm/mix/ngram.py), when the checkpoint has one
    correct: bool = True  # the keyboard's forgiveness: corrections on space, fixed slips, swipes (a request may say no)
    layout: str = "qwerty-en-us"  # the keyboard layout slips and swipes are weighed on (a name or a JSON file)
    words: tuple[str, ...] = ()  # a user dictionary: offered, and never corrected
    cors_origin: tuple[str, ...] = ()  # pages served from these origins may call the service ("*": any); none: CORS off
    about: dict = field(default_factory=dict)  # the model's figures for /info (checkpoint, metrics)

    def validate(self) -> None:
        for name in ("max_body", "max_sessions", "session_memory", "workers", "processes"):
            value = getattr(self, name)
            if value is None and name == "processes":
                continue
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, not {value!r}")
        if not self.session_idle > 0:
            raise ConfigError(f"--session-idle must be above 0 seconds, not {self.session_idle!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key must not be empty — pass a secret, or leave it out for no key")
        for origin in self.cors_origin:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ConfigError(f"--cors-origin must be * or an origin such as https://example.com:8080 (scheme "
                                  f"and host, no path or trailing slash), not {origin!r}")
