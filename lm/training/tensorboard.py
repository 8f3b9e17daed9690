"""TensorBoard logging: a Progress that writes the run's scalars as event files.

It watches the same events the CLI draws (a log line, an evaluation), so the trainer does not
know it is there; `Tee` hands every event to several progress objects.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .progress import Progress

INSTALL_HINT = "pip install 'lm[tensorboard]'"


def summary_writer_class():
    """torch's SummaryWriter (needs the tensorboard package), else tensorboardX's."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed — {INSTALL_HINT}") from None
    return SummaryWriter


class TensorBoardProgress(Progress):
    """train/loss, train/lr and train/tokens_per_s at log lines; valid/* at evaluations; x = step.

    Raises:
        ConfigError: neither tensorboard nor tensorboardX is installed.
    """

    TRAIN = ("loss", "perplexity", "lr", "tokens_per_s")
    VALID = ("loss", "perplexity", "word_perplexity", "bits_per_char")

    def __init__(self, logdir: str | Path):
        self.writer = summary_writer_class()(log_dir=str(logdir))

    def step(self, stats: dict) -> None:
        for name in self.TRAIN:
            self.writer.add_scalar(f"train/{name}", stats[name], stats["step"])

    def evaluated(self, record: dict) -> None:
        for name in self.VALID:
            if f"valid_{name}" in record:
                self.writer.add_scalar(f"valid/{name}", record[f"valid_{name}"], record["step"])
        self.writer.flush()  # an evaluation is rare: show it in TensorBoard now

    def end(self, result) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file (again is harmless): also when training raised."""
        self.writer.close()


class Tee(Progress):
    """Hands every training event to each of several progress objects, in order."""

    def __init__(self, *receivers: Progress):
        self.receivers = receivers

    def start(self, info: dict) -> None:
        for r in self.receivers:
            r.start(info)

    def step(self, stats: dict) -> None:
        for r in self.receivers:
            r.step(stats)

    def evaluated(self, record: dict) -> None:
        for r in self.receivers:
            r.evaluated(record)

    def message(self, text: str) -> None:
        for r in self.receivers:
            r.message(text)

    def end(self, result) -> None:
        for r in self.receivers:
            r.end(result)
