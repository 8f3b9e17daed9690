"""The `lm` command: a thin click layer over the `lm` library, rendered with rich."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
import warnings

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import lm
import lm.training.distributed
import lm.export.onnx
import lm.checkpoint.curves
import lm.checkpoint.report
import lm.suggest.repl  # also loads lm.suggest.sampler, for the generate and repl commands
import lm.suggest.engine
import lm.suggest.config
import lm.evaluate.config
from lm.serve.settings import LOOPBACK, ServeSettings
from lm.model.config import CELLS
from lm.data.config import KINDS
from lm.training.config import AVERAGES, DEFAULT_CLIP, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, PRECISIONS, SCHEDULES

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)  # log lines and commands are never cut


class LMGroup(click.Group):
    """Turns library errors into one `Error: ...` line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except lm.LMError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


@click.group(cls=LMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(lm.__version__, prog_name="lm")
def cli():
    """Train stacked-LSTM language models on your own text and get keyboard-style suggestions.

    Example:

        lm train corpus.txt
    """


def field_option(cls, name: str, help: str, flag: str | None = None, **kwargs):
    """A --flag whose default is the dataclass field's own (defaults are never typed twice)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field.default
    kwargs.setdefault("show_default", default is not None)
    if "type" not in kwargs and default is not None and not isinstance(default, str):
        kwargs["type"] = type(default)
    flag = flag or f"--{name.replace('_', '-')}"
    return click.option(flag, name, default=default, help=help, **kwargs)


int8_option = click.option(
    "--int8/--fp32", "int8", default=True, show_default=True,
    help="On the CPU, run the model with int8 weights: several times faster per token; "
         "--fp32 for the exact trained weights (a GPU always runs those).",
)
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (a CUDA GPU when there is one, else the CPU), cpu or cuda.")


def parse_duration(ctx, param, value):
    """Seconds, or a number with s / m / h: 300, 90s, 5m, 1.5h."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration — use seconds or 90s, 5m, 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _per_optimizer(defaults: dict[str, float]) -> str:
    """A default that depends on the optimizer, for a help text: "0.006 adamw, 20 sgd, …"."""
    return ", ".join(f"{value:g} {name}" for name, value in defaults.items())


def read_text_argument(value: str, name: str) -> str:
    """A TEXT or PROMPT argument; '-' reads all of stdin (a text too long for the command line)."""
    if value != "-":
        return value
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise click.BadParameter(f"stdin is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} — "
                                 "convert it first (e.g. iconv -t utf-8)", param_hint=name) from None


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--valid", type=click.Path(), help="Validation file (default: hold out the end of the corpus).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@field_option(lm.TokenizerConfig, "kind", "Tokenizer.", flag="--tokenizer", type=click.Choice(KINDS))
@field_option(lm.TokenizerConfig, "vocab_size", "Vocabulary size (default: all chars; 4000 subwords; words seen --min-count times).", type=int)
@field_option(lm.TokenizerConfig, "min_count", "Word tokenizer: rarer words become <unk> (default: 1 when the text "
              "already has <unk> marks, as WikiText does, else 2).", type=int)
@click.option("--size", type=click.Choice(["auto", *lm.training.presets.SIZES]), default="auto", show_default=True,
              help="A preset: tiny (a phone-keyboard model, about 1.4 M parameters at 10k words), small, medium, large "
              "(AWD-LSTM style, for a GPU); auto picks the largest of tiny, small and medium that the time (--max-time, "
              "else the epochs) can train on this corpus, timing them on this machine. Flags given beside it win.")
@field_option(lm.ModelConfig, "cell", "Recurrent cell.", type=click.Choice(list(CELLS)))
@field_option(lm.ModelConfig, "layers", "Stacked recurrent layers.")
@field_option(lm.ModelConfig, "hidden", "Hidden units per layer.")
@field_option(lm.ModelConfig, "emb", "Embedding size (the tied output layer shares it).")
@field_option(lm.ModelConfig, "projection", "A linear map from the hidden units to the embedding before the tied "
              "output layer (--no-projection needs --hidden equal to --emb).", flag="--projection/--no-projection")
@field_option(lm.ModelConfig, "dropout", "Dropout on embeddings, between layers and on outputs.")
@field_option(lm.ModelConfig, "locked_dropout", "Training: one --dropout mask per sequence, the same at every step "
              "(variational dropout).", flag="--locked-dropout/--no-locked-dropout")
@field_option(lm.ModelConfig, "embedding_dropout", "Training: drop whole word types from the embedding with this probability.")
@field_option(lm.ModelConfig, "weight_drop", "Training: DropConnect on the hidden-to-hidden weights with this probability.")
@field_option(lm.ModelConfig, "ar", "Training: activation regularization, this times the mean squared last-layer output.")
@field_option(lm.ModelConfig, "tar", "Training: temporal activation regularization, this times the mean squared "
              "change of the last-layer output from step to step.")
@field_option(lm.ModelConfig, "softmax", "Output layer: full (tied to the embedding) or adaptive (cheaper for large "
              f"vocabularies); auto picks adaptive from {lm.model.config.ADAPTIVE_MIN_VOCAB:,} tokens.",
              type=click.Choice(lm.model.config.SOFTMAXES))
@field_option(lm.TrainConfig, "batch", "Parallel streams per step.")
@field_option(lm.TrainConfig, "bptt", "Tokens per window of truncated backpropagation through time.")
@field_option(lm.TrainConfig, "optimizer", "Optimizer.", type=click.Choice(OPTIMIZERS))
@field_option(lm.TrainConfig, "lr", f"Peak learning rate (default: {_per_optimizer(DEFAULT_LR)}).", type=float)
@field_option(lm.TrainConfig, "weight_decay", f"Weight decay, decoupled for adamw (default: {_per_optimizer(DEFAULT_WEIGHT_DECAY)}).", type=float)
@field_option(lm.TrainConfig, "clip", f"Clip the gradient norm to this (0: off; default: {_per_optimizer(DEFAULT_CLIP)}).", type=float)
@field_option(lm.TrainConfig, "schedule", "Learning-rate schedule after warm-up.", type=click.Choice(SCHEDULES))
@field_option(lm.TrainConfig, "average", "Keep an averaged copy of the weights and save it when it validates better: "
              "ema (moving average), asgd (from the first evaluation without improvement), none.",
              type=click.Choice(AVERAGES))
@field_option(lm.TrainConfig, "ema_decay", "With --average ema: the average keeps this share of itself each step.")
@field_option(lm.TrainConfig, "vary_bptt", "Draw each window's length around --bptt (and scale the rate to it).",
              flag="--vary-bptt/--fixed-bptt")
@field_option(lm.TrainConfig, "tune_cache", "At the end, tune the continuous cache that adapts suggestions to the "
              "text typed, on the validation text.", flag="--tune-cache/--no-tune-cache")
@field_option(lm.TrainConfig, "warmup", "Warm-up steps.")
@field_option(lm.TrainConfig, "epochs", "Passes over the training text.")
@field_option(lm.TrainConfig, "max_steps", "Stop after this many steps.", type=int)
@click.option("--max-time", callback=parse_duration, help="Stop after this long: seconds, or 90s, 5m, 1h.")
@field_option(lm.TrainConfig, "eval_every", "Evaluate every N steps (0: each epoch).")
@field_option(lm.TrainConfig, "patience", "Stop after this many evaluations without improvement (0: never).")
@field_option(lm.TrainConfig, "seed", "Random seed.")
@field_option(lm.TrainConfig, "device", "auto, cpu or cuda.")
@field_option(lm.TrainConfig, "precision", "Matrix products in bf16 (auto: on GPUs and CPUs with native bf16) or fp32.",
              type=click.Choice(PRECISIONS))
@click.option("--out", "-o", type=click.Path(), help="Checkpoint folder (default: a new one under checkpoints/).")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out (or the newest checkpoint) with its tokenizer and settings.")
@click.option("--new-corpus", is_flag=True, help="With --resume: go on although the corpus differs from the one the run started on.")
@click.option("--init-from", type=click.Path(), help="Fine-tune this checkpoint on the corpus: its model and tokenizer, a fresh "
              "optimizer and schedule, a new --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint folder.")
@click.option("--tensorboard", type=click.Path(file_okay=False), help="Also log the scalars (train loss, lr, tokens/s; "
              "valid loss, perplexity, bits/char) as TensorBoard event files in this folder.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel: train with this many worker processes on this machine (--batch is split between them).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def train(ctx, paths, valid, encoding, out, resume, new_corpus, init_from, overwrite, tensorboard, nproc, quiet, size, **options):
    """Train a language model on text files, folders of them, or hf:NAME[:CONFIG].

    The checkpoint folder holds the config, weights, tokenizer and metrics; Ctrl-C saves it
    and prints the command that resumes. --init-from adapts a trained model to your own text.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) it runs as one worker of several.

    Example:

        lm train corpus.txt --tokenizer char --max-time 5m
    """
    if nproc > 1 and not lm.training.distributed.launched_as_worker():
        # The workers run this same command; the first prints the progress and the summary.
        sys.exit(lm.training.distributed.launch(lm.training.distributed.worker_command(command_words(ctx, skip=("nproc",))), nproc))
    model_config = lm.ModelConfig.from_dict({k: v for k, v in options.items() if k != "vocab_size"})  # the tokenizer's flag
    configs = [model_config, lm.TokenizerConfig.from_dict(options), lm.TrainConfig.from_dict({**options, "size": size})]
    given = {name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    corpus = lm.load_corpus(list(paths), valid=valid, encoding=encoding)
    progress = lm.Progress() if quiet else (LiveProgress(stderr) if stderr.is_terminal else LineProgress(stderr))
    with lm.training.distributed.session():
        board = lm.training.tensorboard.TensorBoardProgress(tensorboard) if tensorboard and lm.training.distributed.is_writer() else None
        with warnings.catch_warnings():
            warnings.showwarning = show_warning  # a curves.png that cannot be drawn: one line, training goes on
            try:
                result = lm.train(corpus, out, *configs, lm.training.tensorboard.Tee(progress, board) if board else progress,
                                  resume=resume, overwrite=overwrite, init_from=init_from, new_corpus=new_corpus,
                                  given=given)
            finally:
                if board:
                    board.close()
        writer = lm.training.distributed.is_writer()
    code = 130 if result.interrupted else 0
    if writer and not quiet:
        stdout.print(summary_table(result))
    if writer and result.interrupted:
        stderr.print(f"Interrupted at step {result.step}; saved to {result.checkpoint}.\n"
                     f"Resume with: {resume_command(ctx, result.checkpoint)}", highlight=False)
    if lm.training.distributed.launched_as_worker():
        lm.training.distributed.leave(code)
    sys.exit(code)


def show_warning(message, category, filename, lineno, file=None, line=None):
    stderr.print(f"Warning: {message}", highlight=False)


def resume_command(ctx: click.Context, checkpoint) -> str:
    """The `lm train` command that continues this run: every argument given, --out and --resume, quoted."""
    words = ["lm", *command_words(ctx, skip=("out", "resume", "init_from", "overwrite"))]
    return shlex.join([*words, "--out", str(checkpoint), "--resume"])


def command_words(ctx: click.Context, skip=()) -> list[str]:
    """This command's name and the arguments given on its command line, but those in `skip`."""
    words = [ctx.info_name]
    for param in ctx.command.params:
        if param.name in skip:
            continue
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words += list(value)
        elif param.is_flag:
            words.append(param.opts[0] if value == param.flag_value or value is True else param.secondary_opts[0])
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return words


class LineProgress(lm.Progress):
    """Plain lines, for logs and pipes."""

    def __init__(self, console: Console):
        self.console = console
        self.char = False

    def start(self, info):
        self.char = info["tokenizer"] == "char"
        what = f"Fine-tuning {info['init_from']}:" if info["init_from"] else "Training"
        if info["resumed_at"]:
            what = f"Resuming at step {info['resumed_at']:,}:"
        self.console.print(
            f"{what} {info['parameters']:,} parameters on {info['train_tokens']:,} tokens "
            f"({info['tokenizer']}, vocab {info['vocab_size']:,}) on {info['device']} ({info['precision']}) → {info['out']}",
            highlight=False,
        )

    def step(self, stats):
        self.console.print(f"step {stats['step']:>6}  {_step_text(stats, self.char)}", highlight=False)

    def evaluated(self, record):
        mark = " (best, saved)" if record["improved"] else ""
        self.console.print(f"valid  step {record['step']}: {_valid_text(record, self.char)}{mark}", highlight=False)

    def message(self, text):
        self.console.print(text, highlight=False)


class LiveProgress(LineProgress):
    """A rich progress bar with loss, perplexity or bits per character, tokens/s, lr and ETA."""

    def start(self, info):
        super().start(info)
        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self.task = self.bar.add_task("epoch 1", total=1000, stats="", completed=0)
        self.bar.start()

    def step(self, stats):
        self.bar.update(self.task, completed=stats["fraction"] * 1000,
                        description=f"epoch {stats['epoch']}/{stats['epochs']} step {stats['step']:,}",
                        stats=_step_text(stats, self.char))

    def evaluated(self, record):
        self.bar.console.print(f"valid  step {record['step']}: {_valid_text(record, self.char)}"
                               + (" [green](best, saved)" if record["improved"] else ""), highlight=False)

    def message(self, text):
        if hasattr(self, "bar"):
            self.bar.console.print(text, highlight=False)
        else:
            super().message(text)

    def end(self, result):
        self.bar.stop()


def _step_text(stats, char: bool) -> str:
    quality = f"{stats['bits_per_token']:.3f} bpc" if char else f"ppl {stats['perplexity']:.1f}"
    return f"loss {stats['loss']:.3f}  {quality}  {stats['tokens_per_s']:,.0f} tok/s  lr {stats['lr']:.2e}"


def _valid_text(record, char: bool) -> str:
    text = f"loss {record['valid_loss']:.4f}  ppl {record['valid_perplexity']:.2f}"
    text += f"  word ppl {record['valid_word_perplexity']:.1f}" if not char else ""
    return text + f"  {record['valid_bits_per_char']:.4f} bits/char"


def summary_table(result: lm.TrainResult) -> Table:
    table = Table(title="Training finished" if not result.interrupted else "Training interrupted", show_header=False)
    best = result.best
    rows = [
        ("checkpoint", str(result.checkpoint)),
        ("stopped", result.stop_reason),
        ("steps", f"{result.step:,} ({result.epoch} full epochs)"),
        ("time", f"{result.elapsed:.1f} s"),
        ("tokens/s", f"{result.tokens_per_s:,.0f}"),
    ]
    if best:
        rows += [
            ("best valid loss", f"{best['valid_loss']:.4f} (step {best['step']})"),
            ("perplexity / token", f"{best['valid_perplexity']:.2f}"),
            ("perplexity / word", f"{best['valid_word_perplexity']:.2f}"),
            ("bits / char", f"{best['valid_bits_per_char']:.4f}"),
        ]
    for key, value in rows:
        table.add_row(key, value)
    return table


@cli.command("eval")
@click.argument("paths", nargs=-1, required=True)
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@field_option(lm.evaluate.config.EvalConfig, "batch", "Parallel streams (1: one stream, the exact reference).")
@field_option(lm.evaluate.config.EvalConfig, "bptt", "Tokens per window.")
@field_option(lm.evaluate.config.EvalConfig, "overlap", "Tokens each stream after the first reads unscored before its cut (0: zero-state cuts).")
@field_option(lm.evaluate.config.EvalConfig, "max_words", "Evaluate only the first N words.", type=int)
@field_option(lm.evaluate.config.EvalConfig, "keyboard", "Measure top-1/top-3 accuracy and keystroke savings.", flag="--keyboard/--no-keyboard")
@field_option(lm.evaluate.config.EvalConfig, "keyboard_words", "Keyboard metrics on the first N words (a suggestion per keystroke is slow).")
@field_option(lm.evaluate.config.EvalConfig, "split", "Split of an hf: dataset.", type=click.Choice(lm.evaluate.config.SPLITS))
@field_option(lm.evaluate.config.EvalConfig, "encoding", "Text encoding of the files.")
@field_option(lm.evaluate.config.EvalConfig, "device", "auto, cpu or cuda.")
@field_option(lm.evaluate.config.EvalConfig, "cache", "Also report the figures with the checkpoint's continuous cache.",
              flag="--cache/--no-cache")
@field_option(lm.evaluate.config.EvalConfig, "ngram", "Also report the figures with the word model's n-gram mixed in.",
              flag="--ngram/--no-ngram")
@field_option(lm.evaluate.config.EvalConfig, "adapt", "Also read the text with dynamic evaluation: a small gradient step "
              "every 20 tokens on the text already read (slow).", is_flag=True, show_default=False)
@field_option(lm.evaluate.config.EvalConfig, "adapt_lr", "Dynamic evaluation: step size (RMS-normalised).")
@field_option(lm.evaluate.config.EvalConfig, "adapt_decay", "Dynamic evaluation: pull back toward the trained weights per step.")
@field_option(lm.evaluate.config.EvalConfig, "tune_cache", "First tune the cache (and count a word model's n-gram) on the "
              "checkpoint's own training and validation text, and save them in the checkpoint.", is_flag=True,
              show_default=False)
@field_option(lm.evaluate.config.EvalConfig, "int8", "Evaluate the int8 model that suggest, generate and repl run by default.",
              flag="--int8/--fp32")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def eval_(paths, checkpoint, as_json, quiet, **options):
    """Measure a model on text files, folders or hf:NAME[:CONFIG]: perplexity, bits per char, keyboard metrics.

    The loss is summed over the whole text with the state carried; perplexity per word and
    bits per character compare char, subword and word models. The keyboard metrics simulate
    typing the first --keyboard-words words with a three-slot suggestion strip.

    Example:

        lm eval wikitext-2/test.txt -c checkpoints/wiki --max-words 50000
    """
    config = lm.evaluate.config.EvalConfig(**options)
    with EvalBar(stderr, show=not quiet and stderr.is_terminal) as bar:
        result = lm.evaluate.evaluation.evaluate_paths(list(paths), checkpoint, config, bar)
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        stdout.print(eval_table(result))


class EvalBar(lm.evaluate.evaluation.EvalProgress):
    """A rich progress bar for each phase of `lm eval` (disabled: shows nothing)."""

    PHASES = {"loss": "likelihood (tokens)", "keyboard": "keyboard (words)"}

    def __init__(self, console: Console, show: bool = True):
        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True, disable=not show,
        )
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def start(self, task, total):
        if self.task is not None:
            self.bar.update(self.task, visible=False)
        self.task = self.bar.add_task(self.PHASES.get(task, task), total=total)

    def advance(self, n):
        self.bar.advance(self.task, n)


def eval_table(result) -> Table:
    table = Table(title=f"Evaluation of {result.checkpoint}", show_header=False)
    loss = result.loss
    sources = ", ".join(result.sources[:3]) + (f" and {len(result.sources) - 3} more" if len(result.sources) > 3 else "")
    sample = f"first {loss.words:,} of {result.total_words:,} words (--max-words)" if result.sampled else f"{loss.words:,} words"
    rows = [
        ("text", sources), ("evaluated", f"{sample}, {loss.tokens:,} tokens, {loss.chars:,} chars"),
        ("loss / token", f"{loss.loss:.4f}"), ("perplexity / token", f"{loss.perplexity:.2f}"),
        ("perplexity / word", f"{loss.word_perplexity:.2f}"), ("bits / char", f"{loss.bits_per_char:.4f}"),
        ("likelihood speed", f"{result.words_per_s:,.0f} words/s on {result.device}"),
    ]
    keys = result.keyboard
    if keys is not None:
        rows += [
            ("keyboard sample", f"first {keys.words + keys.unknown_words:,} words, {keys.unknown_words:,} <unk> skipped"),
            ("top-1 accuracy", f"{keys.top1_accuracy:.1%}"), ("top-3 accuracy", f"{keys.top3_accuracy:.1%}"),
            ("keystroke savings", f"{keys.keystroke_savings:.1%} ({keys.keystrokes:,} of {keys.baseline_keystrokes:,} keys)"),
        ]
    if result.cache_loss is not None:
        cache = result.cache
        rows += _added_rows("cache", "the cache", f"window {cache.window}, weight {cache.weight:g}, sharpness "
                            f"{cache.sharpness:.3g}", result.stream_loss, result.cache_loss, result.cache_keyboard)
    if result.ngram_loss is not None:
        rows += _added_rows("n-gram", "the n-gram" + (" and the cache" if result.cache_loss else ""),
                            f"weight {result.ngram_weight:g}", result.stream_loss, result.ngram_loss, result.ngram_keyboard)
    if result.adapt_loss is not None:
        base, adapted = result.stream_loss, result.adapt_loss
        rows.append(("perplexity / token, one stream", f"{base.perplexity:.2f} → {adapted.perplexity:.2f} with dynamic "
                     f"evaluation ({adapted.perplexity / base.perplexity - 1:+.1%}; "
                     f"{adapted.tokens / max(result.adapt_seconds, 1e-9):,.0f} tokens/s)"))
        if result.adapt_cache_loss is not None:
            both = result.adapt_cache_loss
            rows.append(("perplexity / token, one stream", f"{base.perplexity:.2f} → {both.perplexity:.2f} with both "
                         f"({both.perplexity / base.perplexity - 1:+.1%})"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _added_rows(name: str, with_what: str, settings: str, base, mixed, keyboard) -> list[tuple[str, str]]:
    """An inference-time addition's rows (the cache, the n-gram): its settings, one stream's
    perplexity without and with it, and the keyboard typed again with it."""
    rows = [(name, settings),
            ("perplexity / token, one stream", f"{base.perplexity:.2f} → {mixed.perplexity:.2f} with {with_what} "
                                               f"({mixed.perplexity / base.perplexity - 1:+.1%})")]
    if keyboard is not None:
        rows += [(f"with {with_what}: top-1 / top-3", f"{keyboard.top1_accuracy:.1%} / {keyboard.top3_accuracy:.1%}"),
                 (f"with {with_what}: keystroke savings", f"{keyboard.keystroke_savings:.1%}")]
    return rows


@cli.command()
@click.argument("prompt", required=False, default="")
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@field_option(lm.suggest.config.GenerationConfig, "n", "Samples drawn at once, as one batch.")
@field_option(lm.suggest.config.GenerationConfig, "max_tokens", f"Most tokens per sample (default: {lm.suggest.config.DEFAULT_MAX_TOKENS} unless --max-words is given).", type=int)
@field_option(lm.suggest.config.GenerationConfig, "max_words", "Most words per sample.", type=int)
@field_option(lm.suggest.config.GenerationConfig, "stop_at", "End a sample with its sentence or paragraph.", type=click.Choice(lm.suggest.config.STOP_AT))
@field_option(lm.suggest.config.GenerationConfig, "stop", "End a sample after this text (repeatable).", type=str, multiple=True, show_default=False)
@field_option(lm.suggest.config.GenerationConfig, "temperature", "Sampling temperature (0: greedy).")
@field_option(lm.suggest.config.GenerationConfig, "top_k", "Draw from the k most likely tokens (0: all).")
@field_option(lm.suggest.config.GenerationConfig, "top_p", "Draw from the most likely tokens holding this probability (1: all).")
@field_option(lm.suggest.config.GenerationConfig, "repetition_penalty", "Make tokens seen in the last --repetition-window tokens less likely (1: off).")
@field_option(lm.suggest.config.GenerationConfig, "repetition_window", "Tokens the repetition guard looks back over.")
@field_option(lm.suggest.config.GenerationConfig, "seed", "Random seed (default: a fresh one; --json shows it).", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the prompt, settings, seed and samples as JSON.")
@int8_option
@device_option
def generate(prompt, checkpoint, as_json, int8, device, **options):
    """Continue PROMPT (or start a new text) with a trained model, streaming the text.

    The prompt is read once after a newline; each new token costs one step of the model.
    PROMPT '-' reads the prompt from stdin and prints only the continuation.

    Example:

        lm generate "The old man" --max-words 40 --temperature 0.7 --n 3
    """
    config = lm.suggest.config.GenerationConfig(**options)
    config.validate()
    shown = "" if prompt == "-" else prompt  # a prompt from stdin is not echoed back
    prompt = read_text_argument(prompt, "PROMPT")
    predictor = lm.load(checkpoint, device=device, int8=int8, cache=False, ngram=False)
    generation = lm.suggest.sampler.generate(predictor.model, predictor.tokenizer, prompt, config)
    try:
        if as_json:
            import json

            generation.run()
            click.echo(json.dumps({"prompt": prompt, "config": config.to_dict(), **generation.to_dict()}, indent=2, ensure_ascii=False))
        elif config.n == 1:
            stream_text(shown, (piece.text for piece in generation))
        else:
            show_samples(shown, generation)
    except KeyboardInterrupt:
        stderr.print("\nInterrupted.", highlight=False)
        sys.exit(130)


def stream_text(prompt: str, pieces, style: str = "") -> str:
    """Write the prompt in bold, then each piece as it comes; end with one newline."""
    if prompt:
        stdout.out(prompt, style="bold", end="", highlight=False)
    text = prompt
    for piece in pieces:
        stdout.out(piece, style=style, end="", highlight=False)
        text += piece
    if not text.endswith("\n"):
        stdout.out("")
    return text


class SampleView:
    """Live panels, one per sample, redrawn from the text so far."""

    def __init__(self, prompt: str, n: int):
        self.prompt, self.texts = prompt, [""] * n

    def __rich__(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        return Group(*(Panel(Text.assemble((self.prompt, "bold"), text.rstrip("\n")), title=f"sample {i + 1}", title_align="left")
                       for i, text in enumerate(self.texts)))


def show_samples(prompt: str, generation) -> None:
    from rich.live import Live

    view = SampleView(prompt, len(generation.samples))
    if not stdout.is_terminal:  # pipes and logs get the finished samples once
        view.texts = [sample.text for sample in generation.run()]
        stdout.print(view)
        return
    with Live(view, console=stdout, refresh_per_second=12):
        for piece in generation:
            view.texts[piece.index] += piece.text


@cli.command()
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@field_option(lm.suggest.config.ReplConfig, "temperature", "Sampling temperature (0: greedy); :temp changes it.")
@field_option(lm.suggest.config.ReplConfig, "top_k", "Draw from the k most likely tokens (0: all); :topk changes it.")
@field_option(lm.suggest.config.ReplConfig, "top_p", "Draw from the most likely tokens holding this probability (1: all); :topp changes it.")
@field_option(lm.suggest.config.ReplConfig, "max_words", "Most words the model writes per turn; :len changes it.")
@field_option(lm.suggest.config.ReplConfig, "stop_at", "End a turn with the sentence, the paragraph or none; :until changes it.",
              type=click.Choice([*lm.suggest.config.STOP_AT, "none"]), callback=lambda ctx, param, value: None if value == "none" else value)
@field_option(lm.suggest.config.ReplConfig, "repetition_penalty", "Repetition guard (1: off); :rep changes it.")
@field_option(lm.suggest.config.ReplConfig, "seed", "Random seed for every turn (default: fresh); :seed changes it.", type=int)
@int8_option
@device_option
def repl(checkpoint, int8, device, **options):
    """Write a text together with the model, turn by turn.

    Type some text and press Enter: the model continues it, and both stay in the text for the
    next turn (the state is carried, not recomputed). An empty line lets the model go on.
    Commands start with ':' (:help lists them: :temp, :topk, :topp, :len, :reset, :undo,
    :context, :suggest, :quit). Ctrl-C stops the model, Ctrl-D leaves. When stdin is not a
    terminal, lines are read from it and plain text is written.

    Example:

        lm repl -c checkpoints/wiki --temperature 0.7
    """
    session = lm.suggest.repl.Repl.load(lm.load(checkpoint, device=device, int8=int8), lm.suggest.config.ReplConfig(**options))
    interactive = sys.stdin.isatty()
    if interactive:
        enable_line_editing()
        stdout.print("Type text for the model to continue; :help lists the commands, Ctrl-D leaves.", style="dim")
    while (line := read_line(interactive)) is not None:
        reply = session.handle(line)
        if reply.quit:
            break
        show_reply(session, reply, interactive)


def enable_line_editing() -> None:
    """input() gains line editing and history once readline is loaded."""
    try:
        import readline  # noqa: F401
    except ImportError:  # not on every platform; input() still works
        pass


def read_line(interactive: bool) -> str | None:
    """The next input line, or None at the end (Ctrl-D, end of stdin)."""
    while True:
        try:
            if interactive:
                return input("> ")
            line = sys.stdin.readline()
            return line or None
        except EOFError:
            if interactive:
                stdout.out("")  # leave the shell's prompt on a line of its own
            return None
        except KeyboardInterrupt:  # at the prompt: drop the line, as Python's REPL does
            if not interactive:
                return None
            stdout.out("")


def show_reply(session, reply, interactive: bool) -> None:
    if reply.text:
        stdout.out(reply.text, highlight=False)
    if reply.stream is None:
        return
    try:
        stream_text("", reply.stream, style="cyan" if interactive else "")
    except KeyboardInterrupt:
        session.stop()  # what was shown stays in the text
        stdout.out(" [stopped]", style="dim", highlight=False)




@cli.command()
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every network, with a warning).")
@click.option("--port", default=8000, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@field_option(ServeSettings, "api_key", "Require `Authorization: Bearer KEY` on every endpoint but /health and the page.",
              envvar="LM_API_KEY", show_envvar=True, show_default=False, type=str)
@field_option(ServeSettings, "max_body", "Largest request body in bytes (larger: 413).")
@field_option(ServeSettings, "max_sessions", "Keystroke sessions kept (least recently used dropped first), split "
              "evenly between the server processes.")
@field_option(ServeSettings, "session_idle", "Seconds after which an unused session is dropped.")
@field_option(ServeSettings, "processes", "Server processes, each with its own sessions (default: one per core on the "
              "CPU, one on a GPU).", type=int, show_default=False)
@field_option(ServeSettings, "workers", "Requests doing model work at once in each process (torch gets cores / "
              "(processes × workers) threads each).")
@field_option(ServeSettings, "cache", "Suggestions use the checkpoint's continuous cache (one per session).",
              flag="--cache/--no-cache")
@field_option(ServeSettings, "ngram", "Suggestions mix in the word model's n-gram.", flag="--ngram/--no-ngram")
@int8_option
def serve(checkpoint, host, port, device, int8, **options):
    """Serve suggestions and generation over HTTP, with a page that suggests as you type.

    Endpoints: GET / (the page), GET|POST /suggest, POST /generate (with "stream": true,
    server-sent events), GET /info, GET /health. A client that sends a "session" id gets its
    text's state kept, so each keystroke costs one word at most. Stops cleanly on Ctrl-C or
    SIGTERM.

    Example:

        lm serve -c checkpoints/wiki --port 8000
    """
    from lm.serve import listen, load_app, run

    if host not in LOOPBACK:
        stderr.print(f"Warning: listening on {host} lets other machines reach the model"
                     + ("" if options["api_key"] else "; consider --api-key"), style="yellow", highlight=False)
    app = load_app(checkpoint, ServeSettings(**options), device=device, int8=int8)
    sock = listen(host, port, app.state.service.settings.processes)
    service = app.state.service
    where = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    processes = service.settings.processes
    announce = lambda: click.echo(  # noqa: E731 - once every server process listens
        f"Serving {service.settings.name} ({service.tokenizer.kind}, {service.settings.about['weights']} on "
        f"{service.suggester.device}, {processes} process{'es' if processes > 1 else ''}) at {where} — Ctrl-C stops",
        err=True)
    sys.exit(run(app, sock, processes, announce))


@cli.command()
@click.argument("text", required=False, default="")
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@field_option(lm.suggest.config.SuggestConfig, "k", "How many suggestions.", flag="-k")
@field_option(lm.suggest.config.SuggestConfig, "beam_width", "Piece sequences kept per search step (char and subword models).")
@field_option(lm.suggest.config.SuggestConfig, "max_depth", "Search steps after the typed prefix (char models: the longest word offered).")
@field_option(lm.suggest.config.SuggestConfig, "punctuation_min", "Offer punctuation only when at least this likely.")
@click.option("--words", "words_file", type=click.Path(), help="A user dictionary, one word a line: char and subword "
              "models may offer its words besides those of the training text.")
@field_option(lm.suggest.config.SuggestConfig, "any_word", "Char and subword models: offer any spelling, not only words of "
              "the training text and --words.", is_flag=True, show_default=False)
@click.option("--json", "output", flag_value="json", help="Print a JSON list of {word, probability, completion}.")
@click.option("--plain", "output", flag_value="plain", help="Print one word per line.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Let the continuous cache tuned at the end of training adapt the suggestions to TEXT.")
@click.option("--ngram/--no-ngram", default=True, show_default=True,
              help="Mix in the n-gram counted from the training text (word models, when it helped on the validation text).")
@click.option("--adapt", is_flag=True, help="First adapt the weights to TEXT by dynamic evaluation (a gradient step "
              "every 20 tokens): for a long TEXT of your own, such as a document you are writing.")
@int8_option
@device_option
def suggest(text, checkpoint, words_file, output, int8, device, cache, ngram, adapt, **options):
    """Suggest what comes after TEXT, like a phone keyboard's suggestion strip.

    After a space (or no text): the most likely next words. Inside a word: its completions and,
    weighted by the chance that the typed word is already whole, the words after it (their
    completion starts with a space); the typed word itself never takes a slot. Char and subword
    models offer words of the training text, --words and words typed twice in TEXT. TEXT '-'
    reads the text from stdin.

    Example:

        lm suggest "the clouds are in the" -k 5
    """
    text = read_text_argument(text, "TEXT")
    words = lm.data.lexicon.read_words_file(words_file) if words_file else ()
    suggestions = lm.suggest.engine.suggest_words(text, checkpoint, lm.suggest.config.SuggestConfig(**options), device=device,
                                           int8=int8, words=words, cache=cache, ngram=ngram,
                                           adapt=lm.AdaptConfig() if adapt else None)
    if output == "json":
        import json

        click.echo(json.dumps([s.to_dict() for s in suggestions], ensure_ascii=False))
    elif output == "plain":
        for s in suggestions:
            click.echo(s.word)
    elif suggestions:
        stdout.print(suggestion_table(suggestions))
    else:
        stderr.print("No suggestions: no word the model knows starts with the typed letters.", highlight=False)


def suggestion_table(suggestions: list[lm.suggest.engine.Suggestion]) -> Table:
    from rich.text import Text

    table = Table(show_edge=False)
    table.add_column("word")
    table.add_column("probability", justify="right")
    for s in suggestions:
        table.add_row(Text(s.word, style="bold"), f"{s.probability:.1%}")
    return table


@cli.command("export")
@click.argument("out_dir", type=click.Path())
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@click.option("--int8", is_flag=True, help="Quantize the weights to int8 with ONNX Runtime (LSTM models): about a quarter of the size.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUT_DIR.")
def export(out_dir, checkpoint, int8, overwrite):
    """Export a model for apps and phones: an ONNX graph, the tokenizer and a manifest.

    OUT_DIR gets model.onnx, one step function (ids, state) -> (logits, state) with batch and
    time dynamic; the tokenizer's files; manifest.json (tokenizer, state names and shapes,
    checksums); and runtime.py, which suggests and generates with onnxruntime, numpy and
    sentencepiece only. The graph is checked against the PyTorch model before it is kept.

    Example:

        lm export -c checkpoints/wiki phone-model --int8
    """
    result = lm.export.onnx.export_checkpoint(checkpoint, out_dir, int8=int8, overwrite=overwrite)
    stdout.print(export_table(result))
    stdout.print(f"Try it without torch: python {result.folder}/runtime.py {result.folder} \"the text so far\"",
                 highlight=False, soft_wrap=True)


def export_table(result: lm.export.onnx.ExportResult) -> Table:
    manifest = result.manifest
    model, check = manifest["model"], manifest["check"]
    table = Table(title=f"Exported to {result.folder}", show_header=False)
    rows = [("model", f"{model['layers']}×{model['hidden']} {model['cell'].upper()}, emb {model['emb']}, "
                      f"{manifest['tokenizer']['kind']} vocab {model['vocab_size']:,}, {model['softmax']} softmax"),
            ("weights", model["weights"] + "".join(f", {n} {op}" for op, n in manifest["graph"]["quantized_ops"].items())),
            ("fp32 graph vs PyTorch", f"max |Δ| {check['fp32_max_abs_diff']:.1e}")]
    if "int8_top1_agreement" in check:
        rows.append(("int8 graph vs PyTorch", f"max |Δ| {check['int8_max_abs_diff']:.2f}, "
                                              f"top-1 agrees {check['int8_top1_agreement']:.1%}"))
    rows += [(name, _size(size)) for name, size in result.files.items()]
    for key, value in rows:
        table.add_row(key, value)
    return table


@cli.command()
@click.option("--checkpoint", "-c", type=click.Path(), help="Checkpoint folder (default: the newest under checkpoints/).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(checkpoint, as_json):
    """Describe a checkpoint: model, size, tokenizer, settings, corpus, best figures and curve.

    Reads config.json and metrics.jsonl only, so it is quick on any checkpoint. The checkpoint
    folder also holds curves.png, the same curves as a picture.

    Example:

        lm info -c checkpoints/shakespeare
    """
    summary = lm.checkpoint.report.checkpoint_summary(checkpoint)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    stdout.print(info_table(summary))
    metrics_log = lm.checkpoint.store.read_metrics(summary["checkpoint"])
    if metrics_log:
        width = max(40, min(stdout.width, 100))
        stdout.print(Text.from_ansi(lm.checkpoint.curves.terminal_chart(metrics_log, width=width, color=stdout.is_terminal)))


def info_table(summary: dict) -> Table:
    model, tokenizer, training, corpus = summary["model"], summary["tokenizer"], summary["training"], summary["corpus"]
    best, trained = summary["best"], summary["trained"]
    table = Table(title=f"Checkpoint {summary['checkpoint']}", show_header=False)
    parameters = f"{model['parameters']:,}" if model.get("parameters") else "unknown"
    rows = [
        ("model", f"{model['layers']}×{model['hidden']} {model['cell'].upper()}, emb {model['emb']}, {model['softmax']} softmax"),
        ("regularization", ", ".join(f"{name.replace('_', ' ')} {model[name]}" for name in lm.model.config.REGULARIZERS
                                     if model.get(name)) or "none"),
        ("size", f"{parameters} parameters, weights {_size(summary['size']['weights_bytes'])}, "
                 f"folder {_size(summary['size']['folder_bytes'])}"),
        ("tokenizer", f"{tokenizer['kind']}, vocab {tokenizer['vocab_size']:,}"),
    ]
    if training:
        settings = lm.TrainConfig.from_dict(training)
        rows.append(("training", f"{training['optimizer']} lr {settings.learning_rate:g}, {training['schedule']}, "
                                 f"batch {training['batch']} × bptt {training['bptt']}, clip {settings.clip_norm:g}, "
                                 f"{training['precision']}"
                                 + (f", {training['average']} weight average" if training.get("average", "none") != "none" else "")
                                 + (", varied bptt" if training.get("vary_bptt") else "")))
    if corpus:
        rows.append(("corpus", f"{', '.join(corpus.get('sources', []))} ({corpus.get('train_tokens', 0):,} training tokens)"))
    if "valid_loss" in best:
        rows.append(("best valid", f"perplexity {best['valid_perplexity']:.2f}, {best['valid_bits_per_char']:.4f} bits/char "
                                   f"at step {best['step']:,} ({_duration(best['minutes'])})"
                                   + (", averaged weights" if best.get("averaged") else "")))
    rows.append(("trained", f"{trained['steps']:,} steps ({trained['epochs']} full epochs), {trained['tokens']:,} tokens "
                            f"in {_duration(trained['minutes'])}"))
    rows.append(("evaluations", f"{trained['evaluations']}"))
    if summary.get("plan"):
        plan = summary["plan"]
        timed = f" at {plan['tokens_per_s']:,.0f} tokens/s" if plan.get("tokens_per_s") else ""
        rows.append(("size chosen", f"{plan['size']} by --size auto{timed}, for about {plan['epochs']:.1f} epochs"))
    if summary["fine_tuned_from"]:
        rows.append(("fine-tuned from", summary["fine_tuned_from"]))
    if summary["resumed_at"]:
        rows.append(("resumed at step", ", ".join(f"{s:,}" for s in summary["resumed_at"])))
    if summary["curves"]:
        rows.append(("curves", summary["curves"]))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _duration(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"


def _size(size: int) -> str:
    return f"{size / 1e6:,.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} bytes"


if __name__ == "__main__":
    cli()
