"""Training: truncated backpropagation through time with the state carried between windows.

`train` sets a run up (lm/training/setup.py) and hands it to `_loop`, which reads top to
bottom: set the learning rate, take a step (forward, backward, clip, step:
lm/training/step.py), log, evaluate and save, decide whether to stop. Around it sit small
helpers: the learning-rate schedule, logging, evaluation, roll-back and the tuning at the end.
Progress leaves through a `Progress` object; losses are summed on the device and read only at
log intervals, so a step never waits on the host.

The rest of the stage: config.py (TrainConfig), run.py (the run's bookkeeping), averaging.py
(the averaged weights), saving.py (the checkpoint's resume state), speed.py (`--size auto`'s
timing), distributed.py (several workers over this same loop).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..data.batching import window_at
from ..data.corpus import Corpus
from ..data.tokenizer import TokenizerConfig
from ..errors import ConfigError, TrainingDiverged
from ..mix.tune import tune
from ..model.config import ModelConfig
from ..model.likelihood import evaluate_loss
from ..model.network import LanguageModel, count_parameters
from ..checkpoint.store import CONFIG_FILE, snapshot
from . import distributed
from .config import Stop, TrainConfig
from .progress import Progress, TrainResult
from .run import LossWindow, Run
from .saving import load_weights, restore, save
from .setup import fine_tune_run, new_run, resumed_run
from .step import autocast_for, train_step

MAX_ROLLBACKS = 3  # roll-backs from a non-finite loss before the run gives up
PLATEAU_FACTOR = 4.0  # the plateau schedule divides the rate by this when validation stalls
# Variable BPTT (Merity et al. 2017): most windows near --bptt, one in twenty near half of it,
# so a token does not always sit at the same place in its window.
VARY_FULL_SHARE, VARY_STD, VARY_MIN = 0.95, 5.0, 5


def train(
    corpus: Corpus,
    out: Path | None = None,
    model_config: ModelConfig | None = None,
    tokenizer_config: TokenizerConfig | None = None,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    overwrite: bool = False,
    cache_dir: Path | None = None,
    init_from: str | Path | None = None,
    new_corpus: bool = False,
    given: set[str] | None = None,
) -> TrainResult:
    """Train a language model on a corpus and save it as a checkpoint folder.

    Args:
        out: checkpoint folder; a new one under checkpoints/ when None (with `resume`: the
            newest checkpoint).
        resume: continue the run saved in `out` with its tokenizer, weights, optimizer and
            settings; a setting given here with a value other than its default replaces the
            saved one (a different model or tokenizer is an error).
        overwrite: allow replacing a checkpoint folder from another run.
        init_from: a checkpoint to fine-tune: its model and tokenizer, a fresh optimizer and
            run (warm-up and schedule from the start), the default learning rate unless
            `config.lr` is set (a tenth of it adapted slower: bench/NOTES.md).
        new_corpus: with `resume`, accept a corpus other than the one the run started on.
        given: the model and training settings the caller chose; with `config.size` they win
            over the preset. None: those whose values differ from the defaults.
    Returns:
        TrainResult; on Ctrl-C or SIGTERM the state is saved and stop_reason is Stop.INTERRUPTED.
    Raises:
        ConfigError: a bad setting, or a resume that does not fit the saved run.
        CheckpointError: `init_from` or the resumed checkpoint cannot be read.
    """
    model_config = model_config or ModelConfig()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    config = config or TrainConfig()
    progress = progress if distributed.is_writer() and progress else Progress()  # only the first worker reports
    config.validate()
    tokenizer_config.validate()
    torch.manual_seed(config.seed)  # before the model is built: its initial weights follow the seed
    if resume and init_from is not None:
        raise ConfigError("--resume and --init-from exclude each other — resume a run, or start a new one from a checkpoint")
    progress.message("Preparing the tokenizer and token cache…")
    if resume:
        run = resumed_run(corpus, out, model_config, tokenizer_config, config, new_corpus, cache_dir)
    elif init_from is not None:
        run = fine_tune_run(corpus, out, Path(init_from), model_config, config, overwrite, cache_dir)
    else:
        run = new_run(corpus, out, model_config, tokenizer_config, config, cache_dir, overwrite, given, progress)
    run.folder.out = distributed.from_writer(run.folder.out)  # a default folder is named by the clock
    run.progress, run.training_loss = progress, distributed.training_loss(run.model)
    return _loop(run)


def _loop(run: Run) -> TrainResult:
    """The training loop: one window of every stream per step, until a reason to stop."""
    config, counters, streams = run.config, run.counters, run.texts.streams
    autocast = autocast_for(run.device, config.precision)
    run.progress.start(_info(run))
    started = time.perf_counter() - counters.elapsed
    losses = LossWindow(run.device, counters.tokens)
    stop = Stop.DONE if counters.epoch >= config.epochs else None
    run.model.train()
    with _stop_on_signals(run):
        while stop is None:
            # A pass over the streams starts from zero state; the windows after carry it.
            if counters.position == 0:
                run.state = None
            length = _window_length(run)
            inputs, targets = window_at(streams, counters.position, length, run.device)
            # Learning rate from how far the run has come (and, with variable windows, their length).
            counters.elapsed = distributed.from_writer(time.perf_counter() - started)  # one clock, one schedule
            # Once, early in a timed run: is it going at the speed it was planned for?
            if run.forecast and (replanned := run.forecast.check(counters.elapsed, counters.tokens)):
                _replan(run, replanned)
            _set_lr(run.optimizer, _lr_at(run) * (length / config.bptt if config.vary_bptt else 1))
            # Forward, backward, clip and step over one window; the state enters detached.
            loss, run.state = train_step(run.model, run.training_loss, run.optimizer, inputs, targets, run.state,
                                         config.clip_norm, autocast)
            run.average.update(run.model)
            losses.add(loss)
            counters.advance(length, targets.numel() * distributed.world_size(), streams.shape[1])
            # Log: the only place the loss is read back from the device.
            if counters.step % config.log_every == 0 and not _log(run, losses):
                _roll_back(run, "training loss", losses)
                continue
            # Evaluate and save at the end of each epoch, or every eval_every steps.
            if counters.position == 0 or config.eval_every and counters.step % config.eval_every == 0:
                if not _evaluate_and_save(run, autocast, losses):
                    continue
            # Stop: every worker takes the same decision.
            stop = distributed.decide(_should_stop(run, started), (None, *Stop), urgent=Stop.INTERRUPTED)
        if losses.count:  # the steps since the last log line
            _log(run, losses)
        if not _just_evaluated(run):
            _evaluate_and_save(run, autocast, losses)
    counters.elapsed = time.perf_counter() - started
    if config.tune_cache and stop is not Stop.INTERRUPTED and run.folder.best_weights is not None:
        _tune(run)
    result = _result(run, stop)
    run.progress.end(result)
    return result


def _should_stop(run: Run, started: float) -> Stop | None:
    config, counters = run.config, run.counters
    if run.stop_requested:
        return Stop.INTERRUPTED
    if config.patience and counters.bad_evals >= config.patience:
        return Stop.EARLY_STOP
    if config.max_steps and counters.step >= config.max_steps:
        return Stop.MAX_STEPS
    if config.max_time and time.perf_counter() - started >= config.max_time:
        return Stop.MAX_TIME
    if counters.epoch >= config.epochs:
        return Stop.DONE
    return None


def _window_length(run: Run) -> int:
    """--bptt, or with --vary-bptt a length drawn from the seed and step (so a resume draws the same)."""
    config = run.config
    if not config.vary_bptt:
        return config.bptt
    draw = np.random.default_rng((config.seed, run.counters.step))
    base = config.bptt if draw.random() < VARY_FULL_SHARE else config.bptt / 2
    return int(min(max(VARY_MIN, round(draw.normal(base, VARY_STD))), 2 * config.bptt))


def _lr_at(run: Run) -> float:
    """Linear warm-up, then constant, a cosine decay to 10 % over the run, or the plateau divisions."""
    config, lr = run.config, run.config.learning_rate * run.rollbacks.lr_scale
    if config.schedule == "cosine":
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * run.fraction_done()))
    if config.schedule == "plateau":
        lr *= run.counters.plateau_scale
    if config.warmup and run.counters.step < config.warmup:
        lr *= (run.counters.step + 1) / config.warmup
    return lr


def _replan(run: Run, plan) -> None:
    """The run goes at another speed than planned: re-plan its epochs and dropout, and say so."""
    timed = run.forecast.plan
    dropout = run.forecast.dropout(plan, run.model.config.dropout)
    change = f", dropout {run.model.config.dropout:g} → {dropout:g}" if dropout != run.model.config.dropout else ""
    run.model.set_dropout(dropout)
    run.folder.saved_config["plan"] = {**timed.to_dict(), "replanned": {"after_s": round(run.counters.elapsed, 1), **plan.to_dict(),
                                                                     "dropout": dropout}}
    run.progress.message(f"Re-planned: the run goes at {plan.tokens_per_s:,.0f} tokens/s, not the {timed.tokens_per_s:,.0f} "
                         f"timed, so ≈ {plan.epochs:.1f} epochs{change}; the rate's schedule follows the clock.")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _log(run: Run, losses: LossWindow) -> bool:
    """Report the mean loss since the last log line; False when it is not finite."""
    counters, now = run.counters, time.perf_counter()
    loss = distributed.mean(losses.total).item() / losses.count
    run.progress.step({
        "step": counters.step,
        "total_steps": run.length.total_steps,
        "epoch": counters.epoch + (1 if counters.position else 0),  # at position 0 an epoch has just ended
        "epochs": run.config.epochs,
        "loss": loss,
        "perplexity": math.exp(min(loss, 700)),
        "bits_per_token": loss / math.log(2),
        "tokens_per_s": (counters.tokens - losses.tokens_at) / max(now - losses.time_at, 1e-9),
        "lr": run.optimizer.param_groups[0]["lr"],
        "elapsed": counters.elapsed,
        "fraction": run.fraction_done(),
    })
    losses.reset(counters.tokens)
    return math.isfinite(loss)


def _just_evaluated(run: Run) -> bool:
    log = run.counters.metrics_log
    return bool(log) and log[-1]["step"] == run.counters.step


def _evaluate_and_save(run: Run, autocast, losses: LossWindow) -> bool:
    """Evaluate on the validation ids, keep the best weights, save; False after a roll-back.

    With weight averaging both the weights and their average are evaluated; the better one
    is this evaluation's figure and, when it beats the best so far, the saved weights.
    """
    counters, started = run.counters, time.perf_counter()
    metrics = _validate(run, run.model, autocast)
    if not math.isfinite(metrics.loss):  # never save non-finite weights over a good checkpoint
        _roll_back(run, "validation loss", losses)
        return False
    averaged = _validate(run, run.average.module, autocast) if run.average.module is not None else None
    use_average = averaged is not None and averaged.loss < metrics.loss
    chosen = averaged if use_average else metrics
    record = {"step": counters.step, "epoch": counters.epoch, "elapsed": round(counters.elapsed, 2), "tokens": counters.tokens,
              **{f"valid_{k}": v for k, v in chosen.to_dict().items() if k not in ("tokens", "chars", "words")},
              "train_loss": losses.take_since_eval()}
    if averaged is not None:
        record["averaged"] = use_average
    counters.metrics_log.append(record)
    improved = chosen.loss < counters.best_loss
    if improved:
        counters.best_loss, counters.best_record, counters.bad_evals = chosen.loss, record, 0
        run.folder.best_weights = snapshot(run.average.module if use_average else run.model)
    else:
        counters.bad_evals += 1
        _on_plateau(run)
    run.progress.evaluated({**record, "improved": improved})
    save(run)
    losses.pause(time.perf_counter() - started)
    return True


def _validate(run: Run, model, autocast):
    evaluate = distributed.evaluate_loss if distributed.active() else evaluate_loss  # workers score a part each
    texts = run.texts
    return evaluate(
        model, texts.valid, texts.valid_chars, texts.valid_words, batch=run.config.batch,
        bptt=max(run.config.bptt, 128), autocast=autocast, vocab_size=run.model.config.vocab_size,
    )


def _on_plateau(run: Run) -> None:
    """Validation stalled: the plateau schedule lowers the rate; asgd starts averaging."""
    if run.config.schedule == "plateau":
        run.counters.plateau_scale /= PLATEAU_FACTOR
    if run.average.start_on_stall(run.model):
        run.progress.message(f"Validation stopped improving: averaging the weights from step {run.counters.step} on.")


def _roll_back(run: Run, what: str, losses: LossWindow) -> None:
    """A non-finite loss: reload the last good checkpoint and halve the learning rate."""
    step, out = run.counters.step, run.folder.out
    saved = (out / CONFIG_FILE).exists()
    run.rollbacks.count += 1
    if run.rollbacks.count > MAX_ROLLBACKS or not saved:
        raise TrainingDiverged(
            f"the {what} became NaN or infinite at step {step} — lower --lr or --clip; "
            + (f"the last good checkpoint in {out} is intact" if saved else "nothing was saved")
        )
    restore(run)
    run.rollbacks.lr_scale /= 2
    run.progress.message(f"The {what} became NaN or infinite at step {step}: rolled back to step "
                         f"{run.counters.step} and halved the learning rate.")
    losses.reset(run.counters.tokens)


def _tune(run: Run) -> None:
    """Tune the cache (and a word model's n-gram) for the best weights on the validation text, and save them."""
    folder = run.folder
    model = LanguageModel(run.model.config).to(run.device)
    load_weights(model, folder.best_weights, "", folder.out)  # as saved: a tied matrix may be there once
    tuned = tune(model.eval(), folder.tokenizer, run.texts.valid, lambda: run.texts.train, run.progress.message)
    folder.saved_config["cache"] = tuned.cache_settings
    if tuned.ngram_settings is not None:
        folder.saved_config["ngram"], folder.ngram = tuned.ngram_settings, tuned.ngram
    save(run)


@contextmanager
def _stop_on_signals(run: Run):
    """Ctrl-C and SIGTERM ask the loop to stop after the current step, then it saves.

    A signal the process was started to ignore (a job run with nohup or in the background)
    stays ignored, and every handler is put back as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if run.stop_requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        run.stop_requested = True
        run.progress.message("Stopping after this step and saving… (Ctrl-C again to abort)")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, request_stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _info(run: Run) -> dict:
    return {
        "out": str(run.folder.out), "device": str(run.device), "precision": run.config.precision,
        "parameters": count_parameters(run.model), "vocab_size": run.model.config.vocab_size,
        "tokenizer": run.folder.tokenizer.kind, "train_tokens": int(run.texts.streams.size) * distributed.world_size(),
        "valid_tokens": int(len(run.texts.valid)), "steps_per_epoch": run.length.steps_per_epoch,
        "total_steps": run.length.total_steps, "max_time": run.config.max_time,
        "resumed_at": run.counters.step, "init_from": run.folder.saved_config.get("init_from"),
    }


def _result(run: Run, stop: Stop) -> TrainResult:
    counters = run.counters
    return TrainResult(
        checkpoint=run.folder.out, step=counters.step, epoch=counters.epoch, elapsed=counters.elapsed, stop_reason=stop,
        best=counters.best_record, last=counters.metrics_log[-1] if counters.metrics_log else {},
        tokens_per_s=counters.tokens / max(counters.elapsed, 1e-9),
    )
