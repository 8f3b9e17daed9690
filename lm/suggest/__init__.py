"""The inference engine: suggestions, generation and the REPL's commands.

The suggestion engine: engine (the Suggester: reads the context, mixes in the cache and the
n-gram, lays out the strip, and scores given words for the noisy-channel decoder), session
(SuggestionSession, the one session type: the model's state at each word boundary as text is
typed), typed (what was typed and where decoding backs off to; the Suggestion), vocabulary
(word models: ranking the next-word row), pieces and search (char and subword models: what
each piece does to a word, and the beam search over pieces), spelling (char and subword
models: given words scored piece by piece). The keyboard's correction lives beside it
(layout, channel, index, correct, gesture). Also sampler (generation) and repl (the REPL's
commands). Every face (CLI, REPL, server, keyboard simulation, export runtime) asks this package.

May import: lm.checkpoint, lm.mix, lm.model, lm.data, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
