"""Small helpers shared by several stages."""
from __future__ import annotations

import hashlib


def hash_text(text: str) -> str:
    """sha256 of a text (lone surrogates allowed), as hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
