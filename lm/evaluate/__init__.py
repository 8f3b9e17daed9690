"""Measuring a model: perplexity per token and per word, bits per character, keyboard metrics.

evaluation (`lm eval`: the loss over a text, with the cache, n-gram and dynamic evaluation),
keyboard (the suggestion strip's metrics), fast_keyboard (the same simulation, batched),
typing and typist (`lm eval --typing`: a typist with slips types the text through the
forgiving keyboard, lm/suggest/keyboard.py, beside a plain keyboard and a spell checker).

May import: lm.suggest, lm.checkpoint, lm.mix, lm.model, lm.data, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
