"""What the `lm` commands that make and measure a model print: lm train's progress bar and
summary, lm eval's bar and tables, lm info; and the consoles and table helpers every command's
output shares (cli_inference.py prints what the commands that run a model show).

cli.py parses the options and calls the library; the result comes here to be shown. Nothing in
lm/ imports click or rich: these modules are their only meeting point with the library's
results. They are imported when a command runs, never by `lm --help`.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from lm.evaluate.config import EvalProgress
from lm.evaluate.typing import FIGURES as TYPING_ROWS
from lm.model.config import REGULARIZERS
from lm.training.config import TrainConfig
from lm.training.progress import Progress

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)  # log lines and commands are never cut

# Under every table with a per-word perplexity: what it is, and why a char model shows one.
WORD_PERPLEXITY_NOTE = "perplexity / word: the token losses summed over each word, so char, subword and word models compare"


def show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the commands: one line on stderr, no source line."""
    stderr.print(f"Warning: {message}", highlight=False)


def key_value_table(title: str, rows: list[tuple[str, str]], caption: str | None = None) -> Table:
    """A two-column key/value table without a header."""
    table = Table(title=title, caption=caption, caption_justify="left", show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    return table


def _duration(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"


def byte_size(size: int) -> str:
    return f"{size / 1e6:,.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} bytes"


# lm train ------------------------------------------------------------------------------------

@contextmanager
def train_progress(quiet: bool, tensorboard: str | None = None) -> Iterator[Progress]:
    """The progress a run reports to: nothing (quiet), a live bar on a terminal or plain lines for
    logs, and TensorBoard event files in the folder `tensorboard` when given. Meanwhile each warning
    shows as one line (a curves.png that cannot be drawn: training goes on)."""
    shown = Progress() if quiet else (LiveProgress(stderr) if stderr.is_terminal else LineProgress(stderr))
    board = None
    if tensorboard:
        from lm.training.tensorboard import Tee, TensorBoardProgress

        board = TensorBoardProgress(tensorboard)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            yield Tee(shown, board) if board else shown
        finally:
            if board:
                board.close()


class LineProgress(Progress):
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


def show_train_result(result, quiet: bool, resume_command: str) -> None:
    """The summary table (unless quiet), and after Ctrl-C the command that resumes."""
    if not quiet:
        stdout.print(summary_table(result))
    if result.interrupted:
        stderr.print(f"Interrupted at step {result.step}; saved to {result.checkpoint}.\n"
                     f"Resume with: {resume_command}", highlight=False)


def summary_table(result) -> Table:
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
    return key_value_table("Training finished" if not result.interrupted else "Training interrupted", rows,
                  WORD_PERPLEXITY_NOTE if best else None)


# lm eval -------------------------------------------------------------------------------------

class EvalBar(EvalProgress):
    """A rich progress bar for each phase of `lm eval` (disabled: shows nothing)."""

    PHASES = {"loss": "likelihood (tokens)", "keyboard": "keyboard (words)", "typing": "typing with slips (words)"}

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


def eval_bar(quiet: bool) -> EvalBar:
    """The bar on stderr, shown on a terminal unless quiet."""
    return EvalBar(stderr, show=not quiet and stderr.is_terminal)


def keystroke_line(keys) -> str:
    """Keystroke savings with the keys saved and the keys pressed, e.g.
    "18.8% saved (565 of 3,000 keys; 2,435 pressed)" (taps and backspaces count as presses)."""
    saved = keys.baseline_keystrokes - keys.keystrokes
    return (f"{keys.keystroke_savings:.1%} saved ({saved:,} of {keys.baseline_keystrokes:,} keys; "
            f"{keys.keystrokes:,} pressed)")


def eval_table(result) -> Table:
    loss = result.loss
    sources = ", ".join(result.sources[:3]) + (f" and {len(result.sources) - 3} more" if len(result.sources) > 3 else "")
    sample = f"first {loss.words:,} of {result.total_words:,} words (--max-words)" if result.sampled else f"{loss.words:,} words"
    rows = [
        ("text", sources), ("evaluated", f"{sample}, {loss.tokens:,} tokens, {loss.chars:,} chars"),
        ("loss / token", f"{loss.loss:.4f}"), ("perplexity / token", f"{loss.perplexity:.2f}"),
        ("perplexity / word", f"{loss.word_perplexity:.2f}"),
        ("bits / char", f"{loss.bits_per_char:.4f}"),
        ("likelihood speed", f"{result.words_per_s:,.0f} words/s on {result.device}"),
    ]
    keys = result.keyboard
    if keys is not None:
        rows += [
            ("keyboard sample", f"first {keys.words + keys.unknown_words:,} words, {keys.unknown_words:,} <unk> skipped"),
            ("top-1 accuracy", f"{keys.top1_accuracy:.1%}"), ("top-3 accuracy", f"{keys.top3_accuracy:.1%}"),
            ("keystroke savings", keystroke_line(keys)),
        ]
    return key_value_table(f"Evaluation of {result.checkpoint}", rows + _mixture_rows(result), WORD_PERPLEXITY_NOTE)


def _mixture_rows(result) -> list[tuple[str, str]]:
    """The rows of the inference-time additions: the cache, the n-gram, dynamic evaluation."""
    rows = []
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
    return rows


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


TYPING_COLUMNS = ("none: exact-prefix completion by frequency, never corrects; spell checker: an unknown word "
                  "becomes the nearest known one, by frequency (symspellpy); lm: the checkpoint's keyboard")


def typing_table(typed) -> Table:
    """`lm eval --typing`: each keyboard's figures side by side (an lm.evaluate.typing.TypingResult)."""
    names = list(typed.keyboards)
    table = Table(title=f"Typing with slips: {typed.words:,} words, {typed.typed_wrong:.1%} of them with a slip "
                        f"(seed {typed.seed}, {typed.words_per_s:,.0f} words/s)",
                  caption=TYPING_COLUMNS, caption_justify="left")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for label, key in TYPING_ROWS:
        cells = [typed.keyboards[name][key] for name in names]
        table.add_row(label, *("—" if v is None else f"{v:.1%}" for v in cells))
    for kind in ("finish", "complete", "swipe"):
        cells = [typed.keyboards[name]["ms"].get(kind) for name in names]
        table.add_row(f"ms per {kind}, p50 / p99",
                      *("—" if v is None else f"{v['p50']:.2f} / {v['p99']:.2f}" for v in cells))
    return table


# lm info -------------------------------------------------------------------------------------

def show_info(summary: dict, metrics_log: list[dict]) -> None:
    """The summary table, then the curves drawn in the terminal (when the run logged any)."""
    stdout.print(info_table(summary))
    if metrics_log:
        from lm.checkpoint.curves import terminal_chart

        width = max(40, min(stdout.width, 100))
        stdout.print(Text.from_ansi(terminal_chart(metrics_log, width=width, color=stdout.is_terminal)))


def info_table(summary: dict) -> Table:
    model, tokenizer = summary["model"], summary["tokenizer"]
    parameters = f"{model['parameters']:,}" if model.get("parameters") else "unknown"
    rows = [
        ("model", f"{model['layers']}×{model['hidden']} {model['cell'].upper()}, emb {model['emb']}, {model['softmax']} softmax"),
        ("regularization", ", ".join(f"{name.replace('_', ' ')} {model[name]}" for name in REGULARIZERS
                                     if model.get(name)) or "none"),
        ("size", f"{parameters} parameters, weights {byte_size(summary['size']['weights_bytes'])}, "
                 f"folder {byte_size(summary['size']['folder_bytes'])}"),
        ("tokenizer", f"{tokenizer['kind']}, vocab {tokenizer['vocab_size']:,}"),
    ]
    return key_value_table(f"Checkpoint {summary['checkpoint']}", rows + _run_rows(summary))


def _run_rows(summary: dict) -> list[tuple[str, str]]:
    """How the checkpoint was trained: settings, corpus, best figures, steps, and its history."""
    training, corpus, best, trained = summary["training"], summary["corpus"], summary["best"], summary["trained"]
    rows = []
    if training:
        settings = TrainConfig.from_dict(training)
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
        if plan.get("replanned"):
            again = plan["replanned"]
            rows.append(("re-planned", f"after {again['after_s']:g} s: {again['tokens_per_s']:,.0f} tokens/s, "
                                       f"about {again['epochs']:.1f} epochs, dropout {again['dropout']:g}"))
    if summary["fine_tuned_from"]:
        rows.append(("fine-tuned from", summary["fine_tuned_from"]))
    if summary["resumed_at"]:
        rows.append(("resumed at step", ", ".join(f"{s:,}" for s in summary["resumed_at"])))
    if summary["curves"]:
        rows.append(("curves", summary["curves"]))
    return rows
