"""Data-parallel training: several worker processes, one run (PyTorch DistributedDataParallel).

The training loop does not know how many workers run. It asks this module a few questions:
am I the writer (`is_writer`), what do we all decide (`decide`, `from_writer`), and it gets
its data shard, its device and its loss function from here. With one process every helper is
the identity, so the single-process trainer pays nothing.

How a run is split
------------------
The training ids are cut into `--batch` streams as always (lm/data/batching.py); worker r of w
trains rows r*b .. (r+1)*b-1 of that [batch, length] array, b = batch / w, each with its own
carried state. The streams, and so the global state [layers, batch, hidden], are the same
for any number of workers: a checkpoint saves the whole state, and a resume with another
number of workers takes its rows of it. DDP averages the gradients, and the mean of the
workers' mean losses is the mean loss of one process over the whole batch, so one step of w
workers is one step of a single process with the same --batch.

Workers are started by torchrun (or `lm train --nproc N`, which drives torchrun's launcher
API), which sets RANK, WORLD_SIZE and LOCAL_RANK. The backend is gloo for CPU tensors and
NCCL for CUDA tensors. The small per-step decisions (the clock, whether to stop) are CPU
tensors, so on GPUs they never wait on the device.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import NoReturn, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, DistributedError
from ..model.likelihood import DEFAULT_OVERLAP, LossMetrics, evaluate_loss as evaluate_loss_alone, total_nll
from ..model import loss as model_loss

WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# A dead worker closes its sockets and the others fail at once; the timeout bounds a worker
# that hangs alive. It must cover the longest time one worker works alone: the first
# building the tokenizer and token cache of a large corpus while the others wait.
DEFAULT_TIMEOUT_S = 900
INTERRUPTED_EXIT = 130  # what `lm train` exits with after Ctrl-C (128 + SIGINT)


# Who am I?

def launched_as_worker() -> bool:
    """True in a process that torchrun started as one of several workers."""
    return all(name in os.environ for name in WORKER_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def active() -> bool:
    """True while this process is one worker of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """The first worker writes checkpoints, metrics and progress; the others only train."""
    return rank() == 0


# Joining and leaving the group.

@contextmanager
def session():
    """Join the workers' process group when torchrun started this process; leave it at the end.

    A collective that fails because another worker died or timed out becomes one
    DistributedError. Outside torchrun this does nothing.
    """
    if not launched_as_worker() or dist.is_initialized():
        yield
        return
    if int(os.environ["LOCAL_RANK"]) < torch.cuda.device_count():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # before NCCL starts: one GPU per worker
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    timeout = timedelta(seconds=float(os.environ.get("LM_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend, timeout=timeout)
    failed = False
    try:
        yield
    except (dist.DistError, RuntimeError) as e:
        if not _is_collective_failure(e):
            raise
        failed = True
        raise DistributedError(
            f"worker {rank()} of {world_size()}: another worker stopped or stopped answering ({_first_line(e)}) — "
            "the last saved checkpoint is whole: run the same command with --resume"
        ) from None
    finally:
        if not failed:  # after a peer's death the group cannot be torn down politely
            _leave_together()


def _leave_together() -> None:
    """Tear the group down with every worker at the same point: a worker that destroys its group
    while a peer still tears down or exits is sometimes aborted by gloo (SIGABRT)."""
    try:
        dist.barrier()
    except (dist.DistError, RuntimeError) as e:
        if not _is_collective_failure(e):
            raise
    dist.destroy_process_group()


def leave(code: int = 0) -> NoReturn:
    """End a worker's process now, its work done and its output flushed, skipping the interpreter's
    teardown: there gloo's threads abort (SIGABRT) about one finished worker in six on torch 2.13,
    which turns a good run into a failed one (bench/NOTES.md, "Leaving a process group")."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _is_collective_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    text = str(e)
    return any(mark in text for mark in ("gloo", "Connection closed", "Connection reset", "NCCL", "Timed out", "timed out"))


def _first_line(e: BaseException) -> str:
    line = next((s for s in str(e).splitlines() if s.strip()), type(e).__name__)
    return line.split("] ", 1)[-1][:160]  # gloo prefixes its source position


# The device and the data shard.

def device_for(device: torch.device) -> torch.device:
    """A worker on GPUs uses the GPU of its local rank."""
    if active() and device.type == "cuda":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= gpus:
            raise ConfigError(f"worker {local_rank} on this machine has no GPU of its own ({gpus} here) — "
                              f"start at most {gpus} workers per machine, or train with --device cpu")
        return torch.device("cuda", local_rank)
    return device


def shard_rows(streams: np.ndarray) -> np.ndarray:
    """This worker's contiguous block of the [batch, length] streams (a view, no copy).

    Raises:
        ConfigError: the batch does not split evenly between the workers.
    """
    workers = world_size()
    if streams.shape[0] % workers:
        batch = streams.shape[0]
        raise ConfigError(f"--batch {batch} does not split evenly between {workers} workers — "
                          f"use a multiple of {workers}, e.g. --batch {(batch // workers + 1) * workers}")
    rows = streams.shape[0] // workers
    return streams[rank() * rows : (rank() + 1) * rows]  # [batch / workers, length]


def local_rows(state, local_batch: int):
    """This worker's rows of a saved state [layers, batch, hidden] (or h and c); None when it
    was saved with another batch, so the run starts those streams from zero."""
    if state is None:
        return None
    parts = state if isinstance(state, tuple) else (state,)
    if parts[0].shape[1] != local_batch * world_size():
        return None
    start = rank() * local_batch
    rows = tuple(p[:, start : start + local_batch].contiguous() for p in parts)
    return rows if isinstance(state, tuple) else rows[0]


def gather_rows(state):
    """The whole carried state, every worker's rows in order: [layers, batch, hidden] (or h and c).

    Every worker must call this at the same point (the save): it is a collective.
    """
    if state is None or not active():
        return state
    parts = state if isinstance(state, tuple) else (state,)
    whole = []
    for part in parts:
        pieces = [torch.empty_like(part) for _ in range(world_size())]
        dist.all_gather(pieces, part.contiguous())
        whole.append(torch.cat(pieces, dim=1))
    return tuple(whole) if isinstance(state, tuple) else whole[0]


# The loss through DDP.

class _TrainingLoss(nn.Module):
    """DDP hooks only `forward`; this forward is the model's training loss, so its backward
    pass is the one DDP synchronises."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, state):
        return model_loss.training_loss(self.model, inputs, targets, state)


def training_loss(model: nn.Module):
    """The model's training loss (lm.model.loss.training_loss) as a function of (inputs, targets,
    state), wrapped in DistributedDataParallel when several workers run.

    The wrapper broadcasts the first worker's weights at once, so every worker starts equal.
    Only the adaptive softmax can leave parameters without a gradient (a tail cluster no
    target fell in), and only then does DDP search for them (that search costs every step).
    """
    if not active():
        return functools.partial(model_loss.training_loss, model)
    device = next(model.parameters()).device
    adaptive = getattr(model, "config", None) is not None and model.config.softmax == "adaptive"
    return nn.parallel.DistributedDataParallel(
        _TrainingLoss(model), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=adaptive,
    )


# One run, one set of decisions.

def decide(choice, options: Sequence, urgent=None):
    """One decision for every worker: the first worker's `choice`, unless some worker chose `urgent`.

    `options` lists every possible choice with None first (the others contribute index 0).
    A signal reaches one worker (urgent: stop now); the clock and the counters are the
    first worker's. One small CPU all-reduce.
    """
    if not active():
        return choice
    flags = torch.tensor([options.index(choice) if is_writer() else 0, int(urgent is not None and choice == urgent)])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return urgent if flags[1] else options[int(flags[0])]


def from_writer(value):
    """The first worker's value of a float (a clock reading) or of any small picklable object."""
    if not active():
        return value
    if isinstance(value, float):
        number = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(number, src=0)
        return float(number[0])
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the workers (a logged loss), on its own device."""
    if not active():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()


@contextmanager
def writer_first():
    """The first worker runs the block (it builds the tokenizer and token cache); the others
    wait, then run it reading what it built. Should the first fail, the others raise."""
    if not active():
        yield
        return
    ok = torch.zeros(1, dtype=torch.int64)
    if is_writer():
        try:
            yield
            ok += 1
        finally:
            dist.broadcast(ok, src=0)  # tell the others, success or not
        return
    dist.broadcast(ok, src=0)
    if not ok.item():
        raise DistributedError(f"worker {rank()}: the first worker could not set the run up — see its error")
    yield


def barrier() -> None:
    if active():
        dist.barrier()


# Evaluation split between the workers.

def evaluate_loss(model, ids: np.ndarray, chars: int, words: int, batch: int = 16, bptt: int = 256,
                  autocast=None, vocab_size: int | None = None) -> LossMetrics:
    """lm.model.likelihood.evaluate_loss, each worker scoring a contiguous part of the ids.

    Part r scores ids[cut_r : cut_r+1] after priming on the DEFAULT_OVERLAP ids before its
    cut, exactly as a primed stream of one process does; the NLL sums and token counts are
    added up over the workers, so every token is scored once.
    """
    if not active():
        return evaluate_loss_alone(model, ids, chars, words, batch=batch, bptt=bptt, autocast=autocast,
                                   vocab_size=vocab_size)
    cuts = [1 + (len(ids) - 1) * r // world_size() for r in range(world_size() + 1)]
    start, stop = cuts[rank()], cuts[rank() + 1]
    low = max(start - DEFAULT_OVERLAP, 0)
    streams = max(1, -(-batch // world_size()))
    total = torch.zeros(2, dtype=torch.float64)
    if stop > start:
        nll, scored = total_nll(model, ids[low:stop], streams, bptt, autocast, first=start - low, vocab_size=vocab_size)
        total += torch.tensor([nll.item(), scored], dtype=torch.float64)
    dist.all_reduce(total)
    nll, scored = float(total[0]), int(total[1])
    share = scored / max(len(ids), 1)
    return LossMetrics(loss=nll / max(scored, 1), tokens=scored, chars=round(chars * share), words=round(words * share))


# Launching workers on this machine.

def launch(command: Sequence[str], nproc: int) -> int:
    """Run `command` as `nproc` workers on this machine through torchrun's launcher; wait for them.

    Each worker gets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its
    environment, and the CPU threads shared out (OMP_NUM_THREADS) unless already set. Ctrl-C
    and SIGTERM reach the workers once: they stop together at the next step and save.

    Returns:
        0 when every worker finished, INTERRUPTED_EXIT when they were interrupted and saved.
    Raises:
        DistributedError: a worker failed; the message names it and how it ended.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ConfigError(f"--nproc must be 1 or more, not {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # failures are reported below
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint=command[0])(*command[1:])
    except SignalException:
        return INTERRUPTED_EXIT
    except ChildFailedError as e:
        codes = {failure.exitcode for failure in e.failures.values()}
        if codes == {INTERRUPTED_EXIT}:  # every worker saved after a signal one of them got
            return INTERRUPTED_EXIT
        raise DistributedError(_failure_text(e, nproc)) from None
    return 0


def _failure_text(e, nproc: int) -> str:
    """The worker that failed first, and how: an exit code or the signal that killed it."""
    first_rank, failure = min(e.failures.items(), key=lambda item: item[1].timestamp)
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
    return (f"worker {first_rank} of {nproc} {how}; the others were stopped — the last saved checkpoint is whole: "
            "run the same command with --resume")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_command(args: Sequence[str]) -> list[str]:
    """The command that starts one worker of `lm` with these arguments (`lm` itself, through Python)."""
    return [sys.executable, "-m", "cli", *args]
