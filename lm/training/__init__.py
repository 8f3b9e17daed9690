"""The training stage: truncated BPTT with the state carried between windows.

trainer (`train()` and the loop), setup (a new, resumed or fine-tuned run), run (the run's
bookkeeping in named parts), step (one training step: the model, precision, optimizer),
averaging (the EMA and ASGD weight averages), saving (the run's resume state in its checkpoint),
speed (tokens/s for `--size auto`), presets (the sizes and the budget rule), config
(TrainConfig and the CLI's choices) and progress (Progress, TrainResult), both torch-free,
distributed (torchrun workers over the same loop), tensorboard (an optional progress sink).

May import: lm.checkpoint, lm.mix, lm.model, lm.data, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
