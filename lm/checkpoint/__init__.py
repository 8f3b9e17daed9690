"""The checkpoint folder: what is saved, how it is written atomically, how it is read.

store (the folder's files, atomic saves, config.json), report (curves and `lm info`'s summary).

May import: lm.model, lm.data, lm.mix, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
