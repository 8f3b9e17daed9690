"""The model stage: embedding -> stacked RNN -> tied output layer, and the one contract.

Every other stage calls `model(ids, state) -> (logits, state)`.
- config.py: ModelConfig and the names the CLI offers (imports no torch)
- network.py: LanguageModel, its forward stage by stage over one recurrent path
- state.py: zero state, detach, select, map: the carried state in any of its forms
- loss.py: token NLL and the training objective, functions of the model
- likelihood.py: the NLL of a whole text read in primed streams, in comparable units
- int8.py: int8 dynamic quantization for CPU inference

May import: lm.errors, lm._util. Nothing else of the project, like nanoGPT's model.py.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
