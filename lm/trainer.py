"""Training: truncated backpropagation through time with the state carried between windows.

The loop reads top to bottom: set the learning rate, forward, backward, clip, step, log,
evaluate and save, stop. Progress leaves through a `Progress` object; losses are summed on the
device and read only at log intervals, so a step never waits on the host.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ._util import flag, pick_device
from .batching import batchify, count_windows, windows
from .checkpoint import CONFIG_FILE, DEFAULT_ROOT, WEIGHTS_FILE, read_config, read_resume, save_checkpoint, snapshot
from .corpus import Corpus, count_words, prepare_tokenizer, token_ids
from .errors import ConfigError, TrainingDiverged
from .evaluate import evaluate_loss
from .model import LanguageModel, ModelConfig, count_parameters, detach_state
from .tokenizer import TokenizerConfig

OPTIMIZERS = ("adamw", "sgd", "rmsprop")
MAX_ROLLBACKS = 3
DEFAULT_LR = {"adamw": 3e-3, "sgd": 20.0, "rmsprop": 1e-3}
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """How to train. CLI flags share these names; the defaults live only here."""

    batch: int = 32
    bptt: int = 64
    optimizer: str = "adamw"
    lr: float | None = None  # None: the optimizer's default in DEFAULT_LR
    weight_decay: float = 0.01
    clip: float = 1.0
    schedule: str = "cosine"
    warmup: int = 50  # steps of linear warm-up
    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    eval_every: int = 0  # steps; 0 = once an epoch
    patience: int = 3  # evaluations without improvement before stopping
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast where the hardware runs it fast, else fp32

    def validate(self) -> None:
        for name in ("batch", "bptt", "epochs", "log_every", "max_steps", "max_time", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                default = getattr(TrainConfig, name)
                hint = "leave it out" + ("" if default is None else f" for the default {default}")
                raise ConfigError(f"{flag(name)} must be positive, not {value} — pass a number above 0, or {hint}")
        for name in ("eval_every", "warmup", "patience", "weight_decay", "clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)} cannot be negative, not {getattr(self, name)} — pass 0 or more (0 switches it off)")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r} — pick one of those")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Progress:
    """Receives training events. This base class shows nothing: it is the quiet progress."""

    def start(self, info: dict) -> None: ...

    def step(self, stats: dict) -> None: ...

    def evaluated(self, record: dict) -> None: ...

    def message(self, text: str) -> None: ...

    def end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    """What a run produced and why it stopped."""

    checkpoint: Path
    step: int
    epoch: int
    elapsed: float
    stop_reason: str  # "done", "max-steps", "max-time", "early-stop", "interrupted"
    best: dict  # metrics of the saved (best) weights
    last: dict  # metrics of the last evaluation
    tokens_per_s: float

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"


@dataclass
class _Data:
    tokenizer: object
    train: np.ndarray  # [batch, length] streams
    valid: np.ndarray  # 1-D ids
    valid_chars: int
    valid_words: int


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


def default_out(corpus: Corpus, tokenizer: TokenizerConfig, root: Path = DEFAULT_ROOT) -> Path:
    """checkpoints/<corpus>-<tokenizer>-<time>: a new folder per run."""
    return Path(root) / f"{corpus.name}-{tokenizer.kind}-{time.strftime('%Y%m%d-%H%M%S')}"


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
) -> TrainResult:
    """Train a language model on a corpus and save it as a checkpoint folder.

    Args:
        out: checkpoint folder; a new one under checkpoints/ when None.
        resume: continue the run saved in `out` (its configs win; a different model config
            is an error).
        overwrite: allow replacing a checkpoint folder from another run.
    Returns:
        TrainResult; on Ctrl-C or SIGTERM the state is saved and stop_reason is "interrupted".
    """
    model_config = model_config or ModelConfig()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    config = config or TrainConfig()
    progress = progress or Progress()
    config.validate()
    tokenizer_config.validate()
    out = Path(out) if out is not None else default_out(corpus, tokenizer_config)
    saved = _check_out(out, resume, overwrite)
    if saved is not None:
        tokenizer_config = TokenizerConfig.from_dict(saved["tokenizer"])
    device = pick_device(config.device)
    torch.manual_seed(config.seed)

    progress.message("Preparing the tokenizer and token cache…")
    data = _prepare_data(corpus, tokenizer_config, config, cache_dir)
    model_config.vocab_size = data.tokenizer.vocab_size
    try:
        model_config.validate()
        model_config = model_config.resolved()  # softmax and cutoffs for this vocabulary
    except ValueError as e:
        raise ConfigError(f"{e} — fix the model flags") from None
    if saved is not None:
        _check_same_model(ModelConfig.from_dict(saved["model"]), model_config, out)
    model = LanguageModel(model_config).to(device)
    optimizer = _make_optimizer(model, config)
    run = _RunState()
    if resume:
        run = _restore(out, model, optimizer, device)
    loop = _Loop(model, optimizer, data, config, device, progress, out, corpus, tokenizer_config, run)
    if resume:
        loop.best_weights = _read_weights(out)
    return loop.run()


class _RunState:
    """Counters that survive a resume."""

    def __init__(self, meta: dict | None = None):
        meta = meta or {}
        self.step = meta.get("step", 0)
        self.epoch = meta.get("epoch", 0)
        self.window = meta.get("window", 0)  # next window within the epoch
        self.elapsed = meta.get("elapsed", 0.0)
        self.tokens = meta.get("tokens", 0)
        self.best_loss = meta.get("best_loss", math.inf)
        self.bad_evals = meta.get("bad_evals", 0)
        self.metrics_log: list[dict] = meta.get("metrics_log", [])
        self.best_record: dict = meta.get("best_record", {})
        self.state = None  # carried hidden state

    def to_dict(self) -> dict:
        keys = ("step", "epoch", "window", "elapsed", "tokens", "best_loss", "bad_evals", "metrics_log", "best_record")
        return {k: getattr(self, k) for k in keys}


class _Loop:
    def __init__(self, model, optimizer, data, config, device, progress, out, corpus, tokenizer_config, run):
        config = replace(config, precision=pick_precision(config.precision, device))  # saved as resolved
        self.model, self.optimizer, self.data, self.config = model, optimizer, data, config
        self.device, self.progress, self.out, self.corpus = device, progress, out, corpus
        self.tokenizer_config, self.run_state = tokenizer_config, run
        self.precision = config.precision
        self.autocast = autocast_for(device, self.precision)
        self.steps_per_epoch = count_windows(data.train.shape[1], config.bptt)
        planned = self.steps_per_epoch * config.epochs
        self.total_steps = min(planned, config.max_steps) if config.max_steps else planned
        self.best_weights = None
        self.stop_requested = False
        self.lr_scale = 1.0  # halved after each roll-back from a non-finite loss
        self.rollbacks = 0
        self.loss_sum = torch.zeros((), device=device)
        self.corpus_fingerprint = corpus.fingerprint()  # hashed once, not at every save

    def run(self) -> TrainResult:
        self.progress.start(self._info())
        self.started = time.perf_counter() - self.run_state.elapsed
        self._reset_log_window()
        self.model.train()
        reason = "done"
        with _stop_on_signals(self):
            while self.run_state.epoch < self.config.epochs and reason in ("done", "rolled-back"):
                reason = self._run_epoch()
            if self.loss_count:  # the steps since the last log line
                self._log()
            if not self._just_evaluated():
                self._evaluate_and_save(final=True)
        result = self._result(reason)
        self.progress.end(result)
        return result

    def _run_epoch(self) -> str:
        """One pass down the streams (or the rest of one, after a resume)."""
        run, config = self.run_state, self.config
        if run.window == 0:
            run.state = None  # a new pass starts from zero state
        for inputs, targets in windows(self.data.train, config.bptt, run.window, self.device):
            self._train_step(inputs, targets)
            reason = "done"
            # Log: the only place the loss is read back from the device.
            if run.step % config.log_every == 0 and not self._log():
                return self._roll_back("training loss")
            if config.eval_every and run.step % config.eval_every == 0:
                reason = self._evaluate_and_save()
            reason = self._stop_reason(reason)
            if reason != "done":
                return reason
        run.epoch += 1
        run.window = 0
        reason = "done" if self._just_evaluated() else self._evaluate_and_save()
        return self._stop_reason(reason)

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        run = self.run_state
        # Learning rate from how far the run has come, by steps or by time.
        run.elapsed = time.perf_counter() - self.started
        self._set_lr(self._progress_fraction(run))
        # Forward and backward over one window; the state enters detached.
        with self.autocast:
            loss, state = self.model.loss(inputs, targets, run.state)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Clip the gradient norm: RNN gradients can explode (Pascanu et al. 2013).
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        run.state = detach_state(state)
        run.step += 1
        run.window += 1
        run.tokens += targets.numel()
        self.loss_sum += loss.detach()  # summed on the device: no host sync per step
        self.loss_count += 1

    def _reset_log_window(self) -> None:
        self.loss_sum.zero_()
        self.loss_count = 0
        self.tokens_at_log, self.time_at_log = self.run_state.tokens, time.perf_counter()

    def _just_evaluated(self) -> bool:
        log = self.run_state.metrics_log
        return bool(log) and log[-1]["step"] == self.run_state.step

    def _roll_back(self, what: str) -> str:
        """A non-finite loss: reload the last good checkpoint and halve the learning rate."""
        step = self.run_state.step
        self.rollbacks += 1
        if self.rollbacks > MAX_ROLLBACKS or not (self.out / CONFIG_FILE).exists():
            raise TrainingDiverged(
                f"the {what} became NaN or infinite at step {step} — lower --lr or --clip; "
                + (f"the last good checkpoint in {self.out} is intact" if (self.out / CONFIG_FILE).exists() else "nothing was saved")
            )
        self.run_state = _restore(self.out, self.model, self.optimizer, self.device)
        self.lr_scale /= 2
        self.progress.message(
            f"The {what} became NaN or infinite at step {step}: rolled back to step "
            f"{self.run_state.step} and halved the learning rate."
        )
        self._reset_log_window()
        return "rolled-back"

    def _progress_fraction(self, run: _RunState) -> float:
        fraction = run.step / max(self.total_steps, 1)
        if self.config.max_time:
            fraction = max(fraction, run.elapsed / self.config.max_time)
        return min(fraction, 1.0)

    def _set_lr(self, fraction: float) -> None:
        config, base = self.config, self.config.learning_rate
        lr = base * self.lr_scale
        if config.schedule == "cosine":
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction))  # decays to 10 %
        if config.warmup and self.run_state.step < config.warmup:
            lr *= (self.run_state.step + 1) / config.warmup
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _stop_reason(self, reason: str) -> str:
        if reason != "done":
            return reason
        if self.stop_requested:
            return "interrupted"
        if self.config.max_steps and self.run_state.step >= self.config.max_steps:
            return "max-steps"
        if self.config.max_time and time.perf_counter() - self.started >= self.config.max_time:
            return "max-time"
        return "done"

    def _log(self) -> bool:
        """Report the mean loss since the last log line; False when it is not finite."""
        run, now = self.run_state, time.perf_counter()
        loss = self.loss_sum.item() / self.loss_count
        self.progress.step({
            "step": run.step,
            "total_steps": self.total_steps,
            "epoch": run.epoch + 1,
            "epochs": self.config.epochs,
            "loss": loss,
            "perplexity": math.exp(min(loss, 700)),
            "bits_per_token": loss / math.log(2),
            "tokens_per_s": (run.tokens - self.tokens_at_log) / max(now - self.time_at_log, 1e-9),
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed": run.elapsed,
            "fraction": self._progress_fraction(run),
        })
        self._reset_log_window()
        return math.isfinite(loss)

    def _evaluate_and_save(self, final: bool = False) -> str:
        """Evaluate on the validation ids, keep the best weights, save; 'early-stop' on a plateau."""
        run, started = self.run_state, time.perf_counter()
        metrics = evaluate_loss(
            self.model, self.data.valid, self.data.valid_chars, self.data.valid_words,
            batch=self.config.batch, bptt=max(self.config.bptt, 128), autocast=self.autocast,
            vocab_size=self.model.config.vocab_size,
        )
        if not math.isfinite(metrics.loss):  # never save non-finite weights over a good checkpoint
            return self._roll_back("validation loss")
        run.elapsed = time.perf_counter() - self.started
        record = {"step": run.step, "epoch": run.epoch, "elapsed": round(run.elapsed, 2), "tokens": run.tokens,
                  **{f"valid_{k}": v for k, v in metrics.to_dict().items() if k not in ("tokens", "chars", "words")}}
        run.metrics_log.append(record)
        improved = metrics.loss < run.best_loss
        if improved:
            run.best_loss, run.best_record, run.bad_evals = metrics.loss, record, 0
            self.best_weights = snapshot(self.model)
        else:
            run.bad_evals += 1
        self.progress.evaluated({**record, "improved": improved})
        self._save(run)
        self.time_at_log += time.perf_counter() - started  # the next tokens/s counts training only
        if not final and self.config.patience and run.bad_evals >= self.config.patience:
            return "early-stop"
        return "done"

    def _save(self, run: _RunState) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(_optimizer_tensors(self.optimizer))
        tensors["rng.torch"] = torch.get_rng_state()
        for name, t in _state_tensors(run.state).items():
            tensors[f"state.{name}"] = t
        meta = {**run.to_dict(), "optimizer": _optimizer_meta(self.optimizer)}
        config = {
            "training": asdict(self.config),
            "tokenizer": self.tokenizer_config.to_dict(),
            "corpus": {"sources": self.corpus.sources, "fingerprint": self.corpus_fingerprint,
                       "train_tokens": int(self.data.train.size)},
            "parameters": count_parameters(self.model),
            "metrics": run.best_record,
        }
        save_checkpoint(self.out, self.model, self.data.tokenizer, config, run.metrics_log,
                        resume=(tensors, meta), best_weights=self.best_weights)

    def _info(self) -> dict:
        return {
            "out": str(self.out), "device": str(self.device), "precision": self.precision,
            "parameters": count_parameters(self.model),
            "vocab_size": self.model.config.vocab_size, "tokenizer": self.tokenizer_config.kind,
            "train_tokens": int(self.data.train.size), "valid_tokens": int(len(self.data.valid)),
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "max_time": self.config.max_time, "resumed_at": self.run_state.step,
        }

    def _result(self, reason: str) -> TrainResult:
        run, elapsed = self.run_state, time.perf_counter() - self.started
        return TrainResult(
            checkpoint=self.out, step=run.step, epoch=run.epoch, elapsed=elapsed, stop_reason=reason,
            best=run.best_record, last=run.metrics_log[-1] if run.metrics_log else {},
            tokens_per_s=run.tokens / max(elapsed, 1e-9),
        )


def _prepare_data(corpus: Corpus, tokenizer_config: TokenizerConfig, config: TrainConfig, cache_dir) -> _Data:
    tokenizer = prepare_tokenizer(corpus, tokenizer_config, cache_dir)
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
    return _Data(tokenizer, batchify(train_ids, config.batch), valid_ids, len(corpus.valid), count_words(corpus.valid))


def _check_out(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """The saved config when resuming; refuse to clobber another run's checkpoint."""
    exists = (out / CONFIG_FILE).exists()
    if resume:
        if not exists:
            raise ConfigError(f"--resume: {out} holds no checkpoint — check --out, or train without --resume")
        return read_config(out)
    if exists and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint — pass --resume to continue it, --overwrite to replace it, or another --out")
    return None


def _check_same_model(saved: ModelConfig, wanted: ModelConfig, out: Path) -> None:
    if saved != wanted:
        diff = ", ".join(f"{f.name} {getattr(saved, f.name)}→{getattr(wanted, f.name)}"
                         for f in fields(ModelConfig) if getattr(saved, f.name) != getattr(wanted, f.name))
        raise ConfigError(f"--resume: {out} was trained with a different model ({diff}) — drop those flags or start a new run")


def _make_optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    lr = config.learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    # No weight decay on biases and the embedding's 1-D companions (AdamW convention).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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


def _restore(out: Path, model: LanguageModel, optimizer: torch.optim.Optimizer, device: torch.device) -> _RunState:
    """Load the latest weights, optimizer moments, RNG and carried state saved in `out`."""
    tensors, meta = read_resume(out)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"embedding.weight", "decoder.weight"}
    if unexpected or not set(missing) <= tied or tied <= set(missing):
        raise ConfigError(f"--resume: the weights in {out} do not fit the model — start a new run")
    saved = meta["optimizer"]
    state = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = t.to(device) if name != "step" else t
    for index, scalars in saved["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    run = _RunState(meta)
    if "state.h" in tensors:
        h = tensors["state.h"].to(device)
        run.state = (h, tensors["state.c"].to(device)) if "state.c" in tensors else h
    return run


def _read_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / WEIGHTS_FILE))


@contextmanager
def _stop_on_signals(loop: _Loop):
    """Ctrl-C and SIGTERM ask the loop to stop after the current step, then it saves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if loop.stop_requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        loop.stop_requested = True
        loop.progress.message("Stopping after this step and saving… (Ctrl-C again to abort)")

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
