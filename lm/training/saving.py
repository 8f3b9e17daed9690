"""A run's state in its checkpoint, written and read in one place: `save` and `restore`.

Besides the weights, the tokenizer and config.json (lm/checkpoint/store.py), a run saves what
resuming needs bit for bit: the optimizer's moments, the average, the random generator, the
counters and the state carried into the next window.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checkpoint.store import WEIGHTS_FILE, read_resume, save_checkpoint
from ..errors import CheckpointError
from ..model.network import LanguageModel, count_parameters
from . import distributed

if TYPE_CHECKING:
    from .run import Run


def save(run: Run) -> None:
    """Write the checkpoint: the weights, the best weights, config.json, metrics and the resume state."""
    state = distributed.gather_rows(run.state)  # every worker takes part; the first writes
    if not distributed.is_writer():
        return
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    tensors.update(_optimizer_tensors(run.optimizer))
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"state.{name}": t for name, t in _state_tensors(state).items()})
    tensors.update(run.average.tensors())
    meta = {**run.counters.to_dict(), "optimizer": _optimizer_meta(run.optimizer)}
    folder = run.folder
    config = {**folder.saved_config, "training": run.config.to_dict(), "parameters": count_parameters(run.model),
              "metrics": run.counters.best_record}
    save_checkpoint(folder.out, run.model, folder.tokenizer, config, run.counters.metrics_log,
                    resume=(tensors, meta), best_weights=folder.best_weights, lexicon=folder.lexicon, ngram=folder.ngram)


def restore(run: Run) -> None:
    """Load the latest weights, average, optimizer moments, RNG, counters and carried state saved in the run's folder."""
    out = run.folder.out
    tensors, meta = read_resume(out)
    load_weights(run.model, tensors, "model.", out)
    run.average.restore(run.model, tensors, out)
    _restore_optimizer(run.optimizer, tensors, meta["optimizer"], run.device)
    torch.set_rng_state(tensors["rng.torch"])
    if "position" not in meta:  # saved before variable windows: a window index
        meta = {**meta, "position": meta.get("window", 0) * run.config.bptt}
    run.counters.restore(meta)
    run.state = None
    if "state.h" in tensors:
        h = tensors["state.h"].to(run.device)
        run.state = (h, tensors["state.c"].to(run.device)) if "state.c" in tensors else h
        run.state = distributed.local_rows(run.state, run.texts.streams.shape[0])


def load_weights(model: LanguageModel, tensors: dict[str, torch.Tensor], prefix: str, out: Path) -> None:
    """Load the tensors named `prefix` + a parameter's name into the model (a tied matrix may be there once).

    Raises:
        CheckpointError: they do not fit the model.
    """
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"embedding.weight", "decoder.weight"}  # saved once
    if unexpected or not set(missing) <= tied or tied <= set(missing):
        raise CheckpointError(f"--resume: the weights in {out} do not fit the model — start a new run")


def read_weights(out: Path) -> dict[str, torch.Tensor]:
    """The saved (best) weights of a checkpoint folder."""
    from safetensors.torch import load_file

    return load_file(str(out / WEIGHTS_FILE))


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict,
                       device: torch.device) -> None:
    state = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = t.to(device) if name != "step" else t
    for index, scalars in saved["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"optim.{i}.{k}": v for i, s in state.items() for k, v in s.items() if isinstance(v, torch.Tensor)}


def _optimizer_meta(optimizer: torch.optim.Optimizer) -> dict:
    sd = optimizer.state_dict()
    scalars = {str(i): {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)} for i, s in sd["state"].items()}
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _state_tensors(state) -> dict[str, torch.Tensor]:
    if state is None:
        return {}
    if isinstance(state, torch.Tensor):
        return {"h": state}
    return {"h": state[0], "c": state[1]}
