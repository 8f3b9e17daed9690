"""What composes with the model's log-probabilities at inference time.

The continuous cache (cache), the training text's n-gram (ngram) and dynamic evaluation
(adapt): each is a mixture or a wrapper over the model's output through the one contract, so
the trainer never knows them. tune fits the cache and the n-gram to validation text, for the
end of `lm train` and `lm eval --tune-cache` alike.

May import: lm.model, lm.data, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
