"""Training: truncated backpropagation through time with the state carried between windows.

`train` sets a run up (a new model, a resumed run, or a trained model to fine-tune) and hands
it to `_loop`, which reads top to bottom: set the learning rate, forward, backward, clip, step,
log, evaluate and save, decide whether to stop. Progress leaves through a `Progress` object;
losses are summed on the device and read only at log intervals, so a step never waits on the
host.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .._util import ConfigBase, pick_device
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..data.batching import batchify, count_windows, window_at
from ..mix.cache import tune_on
from ..mix.ngram import Ngram, NgramConfig, fit as fit_ngram
from ..checkpoint.store import (CONFIG_FILE, DEFAULT_ROOT, WEIGHTS_FILE, load_checkpoint, newest_checkpoint, read_config,
                         read_resume, recover_interrupted_save, save_checkpoint, snapshot)
from ..data.corpus import Corpus, count_words, prepare_tokenizer, token_ids
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..data.lexicon import Lexicon
from ..model.likelihood import evaluate_loss
from ..model.config import REGULARIZERS, ModelConfig
from ..model.loss import training_loss
from ..model.network import LanguageModel, count_parameters
from ..model.state import detach_state
from .config import (AVERAGES, DEFAULT_CLIP, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, PRECISIONS, SCHEDULES,
                     Stop, TrainConfig)
from .presets import AUTO_SIZES, apply_size, choose_size, recurrent_weights
from .progress import Progress, TrainResult
from ..data.tokenizer import Tokenizer, TokenizerConfig, load_tokenizer

MAX_ROLLBACKS = 3
PLATEAU_FACTOR = 4.0  # the plateau schedule divides the rate by this when validation stalls
# Variable BPTT (Merity et al. 2017): most windows near --bptt, one in twenty near half of it,
# so a token does not always sit at the same place in its window.
VARY_FULL_SHARE, VARY_STD, VARY_MIN = 0.95, 5.0, 5


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX): there it is 2-4x fp32."""
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a private probe: absent means we cannot tell
        return False


def pick_precision(name: str, device: torch.device) -> str:
    """The precision a run uses: bf16 autocast on GPUs and bf16-capable CPUs unless told otherwise."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_fast_bf16() else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        raise ConfigError("--precision bf16 was asked for but this CPU has no fast bf16 — use --precision fp32")
    return name


def autocast_for(device: torch.device, precision: str):
    """Matrix products in bf16, weights, optimizer state and the loss in fp32."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def default_out(corpus: Corpus, kind: str, root: Path = DEFAULT_ROOT) -> Path:
    """checkpoints/<corpus>-<tokenizer>-<time>: a new folder per run."""
    return Path(root) / f"{corpus.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    with distributed.writer_first():  # the tokenizer and token cache are built once
        if resume:
            run = _resumed_run(corpus, out, model_config, tokenizer_config, config, new_corpus, cache_dir)
        elif init_from is not None:
            run = _fine_tune_run(corpus, out, Path(init_from), model_config, config, overwrite, cache_dir)
        else:
            out = Path(out) if out is not None else default_out(corpus, tokenizer_config.kind)
            _refuse_clobber(out, overwrite)
            tokenizer = prepare_tokenizer(corpus, tokenizer_config, cache_dir)
            train_ids = token_ids(corpus.train, tokenizer, cache_dir)
            token_ids(corpus.valid, tokenizer, cache_dir)
    if not resume and init_from is None:
        model_config, config, plan = _sized(model_config, config, tokenizer, train_ids, given, progress)
        torch.manual_seed(config.seed)  # timing the sizes drew from the generator
        run = _new_run(corpus, out, tokenizer, model_config, tokenizer_config, config, cache_dir, plan)
    run.out = distributed.from_writer(run.out)  # a default folder is named by the clock
    run.progress, run.training_loss = progress, distributed.training_loss(run.model)
    return _loop(run)


@dataclass
class _Counters(ConfigBase):
    """How far a run has come; saved with every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # where the next window starts within the epoch's streams
    elapsed: float = 0.0  # seconds of this run, resumed parts included
    tokens: int = 0
    best_loss: float = math.inf
    bad_evals: int = 0  # evaluations since the last improvement
    metrics_log: list = field(default_factory=list)
    best_record: dict = field(default_factory=dict)
    plateau_scale: float = 1.0  # the plateau schedule's divisions so far


@dataclass
class _Run:
    """Everything one training run works with."""

    model: LanguageModel
    optimizer: torch.optim.Optimizer
    tokenizer: Tokenizer
    streams: np.ndarray  # [batch, length] training ids
    valid: np.ndarray  # validation ids
    valid_chars: int
    valid_words: int
    config: TrainConfig  # precision resolved
    device: torch.device
    out: Path
    saved_config: dict  # what config.json records besides the model and the training settings
    lexicon: Lexicon  # the words suggestions may offer, saved with the checkpoint
    counters: _Counters = field(default_factory=_Counters)
    state: object = None  # the hidden state carried from window to window
    best_weights: dict | None = None
    average: AveragedModel | None = None  # the averaged weights (config.average), once started
    progress: Progress = field(default_factory=Progress)
    lr_scale: float = 1.0  # halved after each roll-back from a non-finite loss
    rollbacks: int = 0
    stop_requested: bool = False
    training_loss: object = None  # the model's training_loss, through DDP with several workers
    train_ids: np.ndarray | None = None  # the whole training text's ids (the n-gram counts them)
    ngram: Ngram | None = None  # mixed into suggestions when it pays (word models; lm/mix/ngram.py)

    @property
    def steps_per_epoch(self) -> int:
        return count_windows(self.streams.shape[1], self.config.bptt)

    @property
    def total_steps(self) -> int:
        planned = self.steps_per_epoch * self.config.epochs
        return min(planned, self.config.max_steps) if self.config.max_steps else planned

    def fraction_done(self) -> float:
        """How far the run has come, by steps or (with max_time) by time, whichever is further."""
        fraction = self.counters.step / max(self.total_steps, 1)
        if self.config.max_time:
            fraction = max(fraction, self.counters.elapsed / self.config.max_time)
        return min(fraction, 1.0)


def _loop(run: _Run) -> TrainResult:
    """The training loop: one window of every stream per step, until a reason to stop."""
    config, counters, model, optimizer = run.config, run.counters, run.model, run.optimizer
    autocast = autocast_for(run.device, config.precision)
    run.progress.start(_info(run))
    started = time.perf_counter() - counters.elapsed
    losses = _LossWindow(run.device, counters.tokens)
    stop = Stop.DONE if counters.epoch >= config.epochs else None
    model.train()
    with _stop_on_signals(run):
        while stop is None:
            # A pass over the streams starts from zero state; the windows after carry it.
            if counters.position == 0:
                run.state = None
            length = _window_length(run)
            inputs, targets = window_at(run.streams, counters.position, length, run.device)
            # Learning rate from how far the run has come (and, with variable windows, their length).
            counters.elapsed = distributed.from_writer(time.perf_counter() - started)  # one clock, one schedule
            _set_lr(optimizer, _lr_at(run) * (length / config.bptt if config.vary_bptt else 1))
            # Forward and backward over one window; the state enters detached. The objective
            # adds AR/TAR to the loss when they are on; the log shows the plain loss.
            with autocast:
                objective, loss, state = run.training_loss(inputs, targets, run.state)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            # Clip the gradient norm: RNN gradients can explode (Pascanu et al. 2013).
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            if run.average is not None:
                run.average.update_parameters(model)
            run.state = detach_state(state)
            losses.add(loss)
            counters.step, counters.position, counters.tokens = counters.step + 1, counters.position + length, counters.tokens + targets.numel() * distributed.world_size()
            if counters.position >= run.streams.shape[1] - 1:  # every position has been a target
                counters.epoch, counters.position = counters.epoch + 1, 0
            # Log: the only place the loss is read back from the device.
            if counters.step % config.log_every == 0 and not _log(run, losses):
                _roll_back(run, "training loss", losses)
                continue
            # Evaluate and save at the end of each epoch, or every eval_every steps.
            if counters.position == 0 or config.eval_every and counters.step % config.eval_every == 0:
                if not _evaluate_and_save(run, autocast, losses):
                    continue
            stop = distributed.decide(_should_stop(run, started), (None, *Stop), urgent=Stop.INTERRUPTED)
        if losses.count:  # the steps since the last log line
            _log(run, losses)
        if not _just_evaluated(run):
            _evaluate_and_save(run, autocast, losses)
    counters.elapsed = time.perf_counter() - started
    if config.tune_cache and stop is not Stop.INTERRUPTED and run.best_weights is not None:
        _tune_cache(run)
    result = _result(run, stop)
    run.progress.end(result)
    return result


def _should_stop(run: _Run, started: float) -> Stop | None:
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


class _LossWindow:
    """The training loss summed on the device since the last log line, and the tokens/s clock."""

    def __init__(self, device: torch.device, tokens: int):
        self.total = torch.zeros((), device=device)
        self.since_eval, self.since_eval_count = torch.zeros((), device=device), 0  # for the curves
        self.reset(tokens)

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()  # no host sync per step
        self.count += 1
        self.since_eval += loss.detach()
        self.since_eval_count += 1

    def take_since_eval(self) -> float | None:
        """The mean training loss since the last evaluation (None when there is no finite one), and restart it."""
        mean = self.since_eval.item() / self.since_eval_count if self.since_eval_count else None
        self.since_eval.zero_()
        self.since_eval_count = 0
        return mean if mean is not None and math.isfinite(mean) else None

    def reset(self, tokens: int) -> None:
        self.total.zero_()
        self.count = 0
        self.tokens_at, self.time_at = tokens, time.perf_counter()

    def pause(self, seconds: float) -> None:
        """Leave time spent on something else (an evaluation) out of the next tokens/s."""
        self.time_at += seconds


def _window_length(run: _Run) -> int:
    """--bptt, or with --vary-bptt a length drawn from the seed and step (so a resume draws the same)."""
    config = run.config
    if not config.vary_bptt:
        return config.bptt
    draw = np.random.default_rng((config.seed, run.counters.step))
    base = config.bptt if draw.random() < VARY_FULL_SHARE else config.bptt / 2
    return int(min(max(VARY_MIN, round(draw.normal(base, VARY_STD))), 2 * config.bptt))


def _lr_at(run: _Run) -> float:
    """Linear warm-up, then constant, a cosine decay to 10 % over the run, or the plateau divisions."""
    config, lr = run.config, run.config.learning_rate * run.lr_scale
    if config.schedule == "cosine":
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * run.fraction_done()))
    if config.schedule == "plateau":
        lr *= run.counters.plateau_scale
    if config.warmup and run.counters.step < config.warmup:
        lr *= (run.counters.step + 1) / config.warmup
    return lr


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _log(run: _Run, losses: _LossWindow) -> bool:
    """Report the mean loss since the last log line; False when it is not finite."""
    counters, now = run.counters, time.perf_counter()
    loss = distributed.mean(losses.total).item() / losses.count
    run.progress.step({
        "step": counters.step,
        "total_steps": run.total_steps,
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


def _just_evaluated(run: _Run) -> bool:
    log = run.counters.metrics_log
    return bool(log) and log[-1]["step"] == run.counters.step


def _evaluate_and_save(run: _Run, autocast, losses: _LossWindow) -> bool:
    """Evaluate on the validation ids, keep the best weights, save; False after a roll-back.

    With weight averaging both the weights and their average are evaluated; the better one
    is this evaluation's figure and, when it beats the best so far, the saved weights.
    """
    counters, started = run.counters, time.perf_counter()
    metrics = _validate(run, run.model, autocast)
    if not math.isfinite(metrics.loss):  # never save non-finite weights over a good checkpoint
        _roll_back(run, "validation loss", losses)
        return False
    averaged = _validate(run, run.average.module, autocast) if run.average is not None else None
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
        run.best_weights = snapshot(run.average.module if use_average else run.model)
    else:
        counters.bad_evals += 1
        _on_plateau(run)
    run.progress.evaluated({**record, "improved": improved})
    _save(run)
    losses.pause(time.perf_counter() - started)
    return True


def _validate(run: _Run, model, autocast):
    evaluate = distributed.evaluate_loss if distributed.active() else evaluate_loss  # workers score a part each
    return evaluate(
        model, run.valid, run.valid_chars, run.valid_words, batch=run.config.batch,
        bptt=max(run.config.bptt, 128), autocast=autocast, vocab_size=run.model.config.vocab_size,
    )


def _on_plateau(run: _Run) -> None:
    """Validation stalled: the plateau schedule lowers the rate; asgd starts averaging."""
    if run.config.schedule == "plateau":
        run.counters.plateau_scale /= PLATEAU_FACTOR
    if run.config.average == "asgd" and run.average is None:
        run.average = _new_average(run.model, run.config)
        run.progress.message(f"Validation stopped improving: averaging the weights from step {run.counters.step} on.")


def _new_average(model: LanguageModel, config: TrainConfig) -> AveragedModel:
    """An averaged copy of the model's weights; it takes the weights themselves at its first update."""
    ema = get_ema_multi_avg_fn(config.ema_decay) if config.average == "ema" else None
    return AveragedModel(model, multi_avg_fn=ema)


def _tune_cache(run: _Run) -> None:
    """Tune the continuous cache of the best weights on the validation text and save its settings."""
    run.progress.message("Tuning the continuous cache on the validation text…")
    model = LanguageModel(run.model.config).to(run.device)
    _load_weights(model, run.best_weights, "", run.out)  # as saved: a tied matrix may be there once
    cache, report = tune_on(model.eval(), run.valid)
    run.saved_config["cache"] = {**cache.to_dict(), "valid_perplexity": math.exp(report["model_nll"]),
                                 "valid_perplexity_with_cache": math.exp(report["cache_nll"])}
    if cache.enabled:
        run.progress.message(
            f"Cache: validation perplexity {math.exp(report['model_nll']):.2f} → {math.exp(report['cache_nll']):.2f} "
            f"(window {cache.window}, weight {cache.weight}); suggestions use it.")
    else:
        run.progress.message("Cache: no setting lowered the validation perplexity; it stays off.")
    if run.tokenizer.word_level:
        _tune_ngram(run, report["nll"], run.valid[: len(report["nll"]) + 1])
    _save(run)


def _tune_ngram(run: _Run, nll, valid_ids: np.ndarray) -> None:
    """Count the training text into an n-gram, and mix it into suggestions if that lowers the
    validation perplexity (over the model with its cache: nll per position of valid_ids[1:])."""
    run.progress.message(f"Counting the training text into a {NgramConfig.order}-gram…")
    ngram, run.saved_config["ngram"] = fit_ngram(run.train_ids, run.tokenizer.vocab_size, nll, valid_ids)
    run.ngram = ngram if ngram.weight > 0 else None
    mixed = run.saved_config["ngram"]["valid_perplexity_with_ngram"]
    if run.ngram is None:
        run.progress.message("N-gram: it did not lower the validation perplexity; suggestions leave it out.")
    else:
        run.progress.message(f"N-gram: validation perplexity {math.exp(nll.mean().item()):.2f} → {mixed:.2f} "
                             f"(weight {ngram.weight}); suggestions mix it in.")


def _roll_back(run: _Run, what: str, losses: _LossWindow) -> None:
    """A non-finite loss: reload the last good checkpoint and halve the learning rate."""
    step, saved = run.counters.step, (run.out / CONFIG_FILE).exists()
    run.rollbacks += 1
    if run.rollbacks > MAX_ROLLBACKS or not saved:
        raise TrainingDiverged(
            f"the {what} became NaN or infinite at step {step} — lower --lr or --clip; "
            + (f"the last good checkpoint in {run.out} is intact" if saved else "nothing was saved")
        )
    _restore(run)
    run.lr_scale /= 2
    run.progress.message(f"The {what} became NaN or infinite at step {step}: rolled back to step "
                         f"{run.counters.step} and halved the learning rate.")
    losses.reset(run.counters.tokens)


def _save(run: _Run) -> None:
    state = distributed.gather_rows(run.state)  # every worker takes part; the first writes
    if not distributed.is_writer():
        return
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    tensors.update(_optimizer_tensors(run.optimizer))
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"state.{name}": t for name, t in _state_tensors(state).items()})
    if run.average is not None:
        tensors.update({f"average.{k}": v for k, v in run.average.module.state_dict().items()})
        tensors["average_count"] = run.average.n_averaged
    meta = {**run.counters.to_dict(), "optimizer": _optimizer_meta(run.optimizer)}
    config = {**run.saved_config, "training": run.config.to_dict(), "parameters": count_parameters(run.model),
              "metrics": run.counters.best_record}
    save_checkpoint(run.out, run.model, run.tokenizer, config, run.counters.metrics_log,
                    resume=(tensors, meta), best_weights=run.best_weights, lexicon=run.lexicon, ngram=run.ngram)


def _info(run: _Run) -> dict:
    return {
        "out": str(run.out), "device": str(run.device), "precision": run.config.precision,
        "parameters": count_parameters(run.model), "vocab_size": run.model.config.vocab_size,
        "tokenizer": run.tokenizer.kind, "train_tokens": int(run.streams.size) * distributed.world_size(), "valid_tokens": int(len(run.valid)),
        "steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps, "max_time": run.config.max_time,
        "resumed_at": run.counters.step, "init_from": run.saved_config.get("init_from"),
    }


def _result(run: _Run, stop: Stop) -> TrainResult:
    counters = run.counters
    return TrainResult(
        checkpoint=run.out, step=counters.step, epoch=counters.epoch, elapsed=counters.elapsed, stop_reason=stop,
        best=counters.best_record, last=counters.metrics_log[-1] if counters.metrics_log else {},
        tokens_per_s=counters.tokens / max(counters.elapsed, 1e-9),
    )


# Setting a run up: a new model, a resumed run, or a trained model to fine-tune.

def _new_run(corpus, out, tokenizer, model_config, tokenizer_config, config, cache_dir, plan) -> _Run:
    model_config = _resolved_model_config(model_config, tokenizer.vocab_size)
    return _build_run(corpus, out, tokenizer, tokenizer_config, LanguageModel(model_config), config, cache_dir,
                      {"plan": plan} if plan else {}, Lexicon.from_text(corpus.train))


def _sized(model_config, config, tokenizer, train_ids, given, progress):
    """The settings with config.size's preset (for "auto": the one the time can feed) under the
    settings given; and the plan that chose it, for config.json and the start line."""
    if not config.size:
        return model_config, config, None
    if given is None:
        given = _changed(model_config) | _changed(config)
    model_config, config = replace(model_config, vocab_size=tokenizer.vocab_size), replace(config)
    size, plan = config.size, None
    if size == "auto":
        if distributed.is_writer():  # one clock decides for every worker
            weights = {s: recurrent_weights(s, model_config) for s in AUTO_SIZES}

            def speed(name):
                sized_model, sized_config = apply_size(name, replace(model_config), replace(config), given)
                return measure_speed(sized_model, sized_config, train_ids)

            if config.max_time is not None:
                progress.message("Timing the model sizes on this machine…")
            plan = choose_size(len(train_ids), config.max_time, config.epochs, weights, speed)
        plan = distributed.from_writer(plan)
        size = plan.size
    model_config, config = apply_size(size, model_config, config, given)
    if plan is not None:
        if "dropout" not in given:
            model_config.dropout = plan.dropout(model_config.dropout)
        progress.message(plan.describe(model_config, config, config.max_time))
        plan = {"size": plan.size, "tokens_per_s": plan.tokens_per_s, "epochs": plan.epochs,
                "seen_tokens": plan.seen_tokens}
    return model_config, config, plan


def _changed(config) -> set[str]:
    """The fields of a config whose values differ from the defaults."""
    default = type(config)()
    return {f.name for f in fields(config) if getattr(config, f.name) != getattr(default, f.name)}


def measure_speed(model_config: ModelConfig, config: TrainConfig, ids: np.ndarray, steps: int = 3) -> float:
    """Training tokens/s of this model and these settings on this machine: the median of a few
    full steps (forward, backward, clip, step) over the corpus's first windows, after one warm-up."""
    device = pick_device(config.device)
    model = LanguageModel(_resolved_model_config(model_config, model_config.vocab_size)).to(device)
    optimizer = _make_optimizer(model, config)
    autocast = autocast_for(device, pick_precision(config.precision, device))
    streams = batchify(np.resize(ids, config.batch * (config.bptt * (steps + 1) + 1)), config.batch)  # a short text repeats
    model.train()
    times, state = [], None
    for step in range(steps + 1):
        inputs, targets = window_at(streams, step * config.bptt, config.bptt, device)
        started = time.perf_counter()
        with autocast:
            objective, _, state = training_loss(model, inputs, targets, state)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        state = detach_state(state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step allocates and picks kernels
            times.append(time.perf_counter() - started)
    return targets.numel() / float(np.median(times))


def _fine_tune_run(corpus, out, init_from: Path, model_config, config, overwrite, cache_dir) -> _Run:
    """A trained model and its tokenizer, a fresh optimizer and run, a new folder."""
    base = load_checkpoint(init_from)
    wanted = _merged(ModelConfig, base.model.config.to_dict(), model_config)
    _check_same_model(base.model.config, wanted, "--init-from", init_from, ignore=REGULARIZERS)
    model = LanguageModel(wanted)
    model.load_state_dict(base.model.state_dict())
    tokenizer_config = TokenizerConfig.from_dict(base.config.get("tokenizer", {}))
    out = Path(out) if out is not None else default_out(corpus, tokenizer_config.kind)
    _refuse_clobber(out, overwrite)
    lexicon = Lexicon.load(base.path) or Lexicon()
    lexicon.add(Lexicon.from_text(corpus.train).counts)  # the base's words and the new text's
    return _build_run(corpus, out, base.tokenizer, tokenizer_config, model, config, cache_dir,
                      {"init_from": str(base.path)}, lexicon)


def _resumed_run(corpus, out, model_config, tokenizer_config, config, new_corpus, cache_dir) -> _Run:
    """The run saved in `out`, with its tokenizer, weights, optimizer and counters."""
    out = _resume_folder(out)
    saved = read_config(out)
    saved_model = ModelConfig.from_dict(saved["model"])
    wanted_model = _merged(ModelConfig, saved["model"], model_config)  # regularizers may change
    _check_same_model(saved_model, wanted_model, "--resume", out, ignore=REGULARIZERS)
    saved_tokenizer = TokenizerConfig.from_dict(saved["tokenizer"])
    if _merged(TokenizerConfig, saved["tokenizer"], tokenizer_config) != saved_tokenizer:
        raise ConfigError(f"--resume: {out} uses a {saved_tokenizer.kind} tokenizer of its own — drop the tokenizer flags")
    fingerprint, before = corpus.fingerprint(), saved.get("corpus", {}).get("fingerprint")
    if before and fingerprint != before and not new_corpus:
        raise ConfigError(
            f"--resume: {out} was trained on another text (corpus fingerprint {before}, this one {fingerprint}) — "
            "pass the same corpus and --valid as the first run, or --new-corpus to go on with this text"
        )
    tokenizer = load_tokenizer(out, saved_tokenizer.kind)
    config = _merged(TrainConfig, saved.get("training", {}), config)
    lexicon = Lexicon.load(out)
    if lexicon is None or fingerprint != before:  # from before lexicons, or a new text (--new-corpus)
        lexicon = lexicon or Lexicon()
        lexicon.add(Lexicon.from_text(corpus.train).counts)
    run = _build_run(corpus, out, tokenizer, saved_tokenizer, LanguageModel(wanted_model), config, cache_dir,
                     {k: saved[k] for k in ("init_from", "cache") if k in saved}, lexicon, fingerprint)
    _restore(run)
    run.saved_config["resumed_at"] = [*saved.get("resumed_at", []), run.counters.step]  # for `lm info`
    run.best_weights = _read_weights(out)
    if run.counters.position >= run.streams.shape[1] - 1:  # another text (--new-corpus) may be shorter
        run.counters.epoch, run.counters.position = run.counters.epoch + 1, 0
    return run


def _build_run(corpus, out, tokenizer, tokenizer_config, model, config, cache_dir, extra: dict, lexicon: Lexicon,
               fingerprint: str | None = None) -> _Run:
    """The run's data, optimizer and saved settings (fingerprint: the corpus's, when already hashed)."""
    device = distributed.device_for(pick_device(config.device))
    config = replace(config, precision=pick_precision(config.precision, device))  # saved as resolved
    train_ids = token_ids(corpus.train, tokenizer, cache_dir)
    valid_ids = token_ids(corpus.valid, tokenizer, cache_dir)
    need = config.batch * 2
    if len(train_ids) < need:
        raise ConfigError(
            f"the training text has {len(train_ids)} tokens, too few for --batch {config.batch} "
            f"(at least {need} needed) — use a smaller --batch or more text"
        )
    if len(valid_ids) < 2:
        raise ConfigError("the validation text has fewer than 2 tokens — give more text or a larger --valid file")
    model = model.to(device)
    saved_config = {
        **extra,
        "tokenizer": tokenizer_config.to_dict(),
        "corpus": {"sources": corpus.sources, "fingerprint": fingerprint or corpus.fingerprint(),
                   "train_tokens": int(len(train_ids))},
    }
    streams = distributed.shard_rows(batchify(train_ids, config.batch))  # this worker's rows
    run = _Run(model, _make_optimizer(model, config), tokenizer, streams, valid_ids,
               len(corpus.valid), count_words(corpus.valid), config, device, out, saved_config, lexicon)
    run.train_ids = train_ids
    if config.average == "ema":  # asgd starts when validation stalls
        run.average = _new_average(model, config)
    return run


def _given(config, name: str, otherwise):
    """A field's value when it was set (differs from the dataclass default), else `otherwise`."""
    value = getattr(config, name)
    return value if value != getattr(type(config)(), name) else otherwise


def _merged(cls, saved: dict, given):
    """The saved settings, with the fields `given` sets to something other than their default."""
    merged = cls.from_dict(saved)
    for f in fields(cls):
        if f.name != "vocab_size":
            setattr(merged, f.name, _given(given, f.name, getattr(merged, f.name)))
    return merged


def _resolved_model_config(model_config: ModelConfig, vocab_size: int) -> ModelConfig:
    model_config = replace(model_config, vocab_size=vocab_size)
    model_config.validate()
    return model_config.resolved()  # softmax and cutoffs for this vocabulary


def _resume_folder(out) -> Path:
    if out is None:
        out = newest_checkpoint()
        if out is None:
            raise ConfigError("--resume: no checkpoint under checkpoints/ — pass --out DIR")
    out = Path(out)
    recover_interrupted_save(out)
    if not (out / CONFIG_FILE).exists():
        raise ConfigError(f"--resume: {out} holds no checkpoint — check --out, or train without --resume")
    return out


def _refuse_clobber(out: Path, overwrite: bool) -> None:
    recover_interrupted_save(out)
    if (out / CONFIG_FILE).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint — pass --resume to continue it, --overwrite to replace it, or another --out")


def _check_same_model(saved: ModelConfig, wanted: ModelConfig, option: str, folder, ignore=()) -> None:
    diff = ", ".join(f"{f.name} {getattr(saved, f.name)}→{getattr(wanted, f.name)}" for f in fields(ModelConfig)
                     if f.name not in ignore and getattr(saved, f.name) != getattr(wanted, f.name))
    if diff:
        raise ConfigError(f"{option}: {folder} was trained with a different model ({diff}) — drop those flags"
                          + (" or start a new run" if option == "--resume" else ""))


def _make_optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    lr = config.learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=config.decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=config.decay)
    # No weight decay on biases and the embedding's 1-D companions (AdamW convention).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


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


def _restore(run: _Run) -> None:
    """Load the latest weights, optimizer moments, RNG, counters and carried state saved in run.out."""
    tensors, meta = read_resume(run.out)
    _load_weights(run.model, tensors, "model.", run.out)
    run.average = None
    if "average_count" in tensors:  # averaging had started (the weights may be from another --average)
        run.average = _new_average(run.model, run.config if run.config.average != "none" else replace(run.config, average="asgd"))
        _load_weights(run.average.module, tensors, "average.", run.out)
        run.average.n_averaged.copy_(tensors["average_count"])
    elif run.config.average == "ema":
        run.average = _new_average(run.model, run.config)
    saved = meta["optimizer"]
    state = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = t.to(run.device) if name != "step" else t
    for index, scalars in saved["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    run.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if "position" not in meta:  # saved before variable windows: a window index
        meta = {**meta, "position": meta.get("window", 0) * run.config.bptt}
    vars(run.counters).update(vars(_Counters.from_dict(meta)))  # the loop holds this object
    run.state = None
    if "state.h" in tensors:
        h = tensors["state.h"].to(run.device)
        run.state = (h, tensors["state.c"].to(run.device)) if "state.c" in tensors else h
        run.state = distributed.local_rows(run.state, run.streams.shape[0])


def _load_weights(model: LanguageModel, tensors: dict[str, torch.Tensor], prefix: str, out: Path) -> None:
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"embedding.weight", "decoder.weight"}  # saved once
    if unexpected or not set(missing) <= tied or tied <= set(missing):
        raise CheckpointError(f"--resume: the weights in {out} do not fit the model — start a new run")


def _read_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / WEIGHTS_FILE))


@contextmanager
def _stop_on_signals(run: _Run):
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
