"""The data stage: text in, token ids out.

text (character classes, the start-of-text mark), tokenizer (char, subword, word), corpus
(files, folders and `datasets` datasets, tokenized once and cached), batching (streams as
columns, windows down them) and lexicon (the words of the training text).

May import: lm.errors, lm._util. Never torch-heavy stages above it.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
