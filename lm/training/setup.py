"""Setting a run up: a new model, a resumed run, or a trained model to fine-tune.

Each returns a `Run` (lm/training/run.py) ready for the loop: the token ids, the model on its
device, the optimizer, the average, and what the checkpoint folder will record.
"""
from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from .._util import pick_device
from ..checkpoint.folder import CONFIG_FILE, DEFAULT_ROOT, newest_checkpoint, read_config, recover_interrupted_save
from ..checkpoint.store import load_checkpoint
from ..data.batching import batchify
from ..data.corpus import Corpus, count_words, prepare_tokenizer, token_ids
from ..data.lexicon import Lexicon
from ..data.tokenizer import TokenizerConfig, load_tokenizer
from ..errors import ConfigError
from ..model.config import REGULARIZERS, ModelConfig
from ..model.network import LanguageModel
from . import distributed
from .averaging import WeightAverage
from .config import TrainConfig
from .forecast import Forecast
from .presets import AUTO_SIZES, apply_size, choose_size, recurrent_weights
from .progress import Progress
from .run import Folder, Run, RunLength, Texts
from .saving import read_weights, restore
from .speed import measure_speed
from .step import build_model, make_optimizer, pick_precision


def default_out(corpus: Corpus, kind: str, root: Path = DEFAULT_ROOT) -> Path:
    """checkpoints/<corpus>-<tokenizer>-<time>: a new folder per run."""
    return Path(root) / f"{corpus.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run(corpus, out, model_config: ModelConfig, tokenizer_config: TokenizerConfig, config: TrainConfig, cache_dir,
            overwrite: bool, given: set[str] | None, progress: Progress) -> Run:
    """A new model, its tokenizer trained on the corpus, sized by config.size under the settings given."""
    with distributed.writer_first():  # the tokenizer and token cache are built once
        out = Path(out) if out is not None else default_out(corpus, tokenizer_config.kind)
        _refuse_clobber(out, overwrite)
        tokenizer = prepare_tokenizer(corpus, tokenizer_config, cache_dir)
        train_ids = token_ids(corpus.train, tokenizer, cache_dir)
        token_ids(corpus.valid, tokenizer, cache_dir)
    model_config, config, plan, forecast = sized(model_config, config, tokenizer, train_ids, given, progress)
    torch.manual_seed(config.seed)  # timing the sizes drew from the generator
    model = build_model(model_config, tokenizer.vocab_size)
    run = _build_run(corpus, out, tokenizer, tokenizer_config, model, config, cache_dir,
                     {"plan": plan.to_dict()} if plan else {}, Lexicon.from_text(corpus.train))
    run.forecast = forecast
    return run


def fine_tune_run(corpus, out, init_from: Path, model_config: ModelConfig, config: TrainConfig, overwrite: bool,
                  cache_dir) -> Run:
    """A trained model and its tokenizer, a fresh optimizer and run, a new folder."""
    with distributed.writer_first():
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


def resumed_run(corpus, out, model_config: ModelConfig, tokenizer_config: TokenizerConfig, config: TrainConfig,
                new_corpus: bool, cache_dir) -> Run:
    """The run saved in `out`, with its tokenizer, weights, optimizer and counters."""
    with distributed.writer_first():
        out = _resume_folder(out)
        saved = read_config(out)
        saved_model = ModelConfig.from_dict(saved["model"])
        wanted_model = _merged(ModelConfig, saved["model"], model_config)  # regularizers may change
        _check_same_model(saved_model, wanted_model, "--resume", out, ignore=REGULARIZERS)
        saved_tokenizer = TokenizerConfig.from_dict(saved["tokenizer"])
        if _merged(TokenizerConfig, saved["tokenizer"], tokenizer_config) != saved_tokenizer:
            raise ConfigError(f"--resume: {out} uses a {saved_tokenizer.kind} tokenizer of its own — drop the tokenizer flags")
        fingerprint = _check_same_corpus(corpus, out, saved, new_corpus)
        tokenizer = load_tokenizer(out, saved_tokenizer.kind)
        config = _merged(TrainConfig, saved.get("training", {}), config)
        lexicon = Lexicon.load(out)
        if lexicon is None or fingerprint != saved.get("corpus", {}).get("fingerprint"):  # from before lexicons, or --new-corpus
            lexicon = lexicon or Lexicon()
            lexicon.add(Lexicon.from_text(corpus.train).counts)
        run = _build_run(corpus, out, tokenizer, saved_tokenizer, LanguageModel(wanted_model), config, cache_dir,
                         {k: saved[k] for k in ("init_from", "cache") if k in saved}, lexicon, fingerprint)
        restore(run)
        run.folder.saved_config["resumed_at"] = [*saved.get("resumed_at", []), run.counters.step]  # for `lm info`
        run.folder.best_weights = read_weights(out)
        if run.counters.position >= run.texts.streams.shape[1] - 1:  # another text (--new-corpus) may be shorter
            run.counters.epoch, run.counters.position = run.counters.epoch + 1, 0
        return run


def sized(model_config: ModelConfig, config: TrainConfig, tokenizer, train_ids, given: set[str] | None,
          progress: Progress):
    """The settings with config.size's preset (for "auto": the one the time can feed) under the
    settings given; the plan that chose it, for config.json and the start line; and for a timed
    run, the forecast the loop checks once (lm/training/forecast.py)."""
    if not config.size:
        return model_config, config, None, None
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
            plan = choose_size(len(train_ids), config.max_time, config.epochs, weights, speed, tokenizer.vocab_size)
        plan = distributed.from_writer(plan)
        size = plan.size
    model_config, config = apply_size(size, model_config, config, given)
    forecast = None
    if plan is not None:
        preset_dropout = None if "dropout" in given else model_config.dropout
        if preset_dropout is not None:
            model_config.dropout = plan.dropout(preset_dropout)
        progress.message(plan.describe(model_config, config, config.max_time))
        if config.max_time is not None and plan.tokens_per_s:
            forecast = Forecast(plan, config.max_time, preset_dropout)
    return model_config, config, plan, forecast


def _build_run(corpus, out, tokenizer, tokenizer_config, model, config, cache_dir, extra: dict, lexicon: Lexicon,
               fingerprint: str | None = None) -> Run:
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
    texts = Texts(streams, valid_ids, len(corpus.valid), count_words(corpus.valid), train_ids)
    return Run(config, device, model, make_optimizer(model, config), WeightAverage(model, config), texts,
               RunLength.of(streams.shape[1], config), Folder(out, tokenizer, lexicon, saved_config))


def _check_same_corpus(corpus: Corpus, out: Path, saved: dict, new_corpus: bool) -> str:
    """The corpus's fingerprint; raises ConfigError when it is not the saved run's and --new-corpus is off."""
    fingerprint, before = corpus.fingerprint(), saved.get("corpus", {}).get("fingerprint")
    if before and fingerprint != before and not new_corpus:
        raise ConfigError(
            f"--resume: {out} was trained on another text (corpus fingerprint {before}, this one {fingerprint}) — "
            "pass the same corpus and --valid as the first run, or --new-corpus to go on with this text"
        )
    return fingerprint


def _changed(config) -> set[str]:
    """The fields of a config whose values differ from the defaults."""
    default = type(config)()
    return {f.name for f in fields(config) if getattr(config, f.name) != getattr(default, f.name)}


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
