"""What the `lm` commands that run a model print: lm generate's streamed samples, the REPL's
terminal, lm suggest's strip, lm serve's lines and lm export's tables (cli_render.py holds the
consoles and the training and evaluation views).
"""
from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text

from cli_render import byte_size, key_value_table, stderr, stdout


# lm generate and lm repl ---------------------------------------------------------------------

def show_generation(shown_prompt: str, generation, n: int) -> None:
    """One sample streamed as it comes; several in live panels (printed once when not a terminal)."""
    if n == 1:
        stream_text(shown_prompt, (piece.text for piece in generation))
    else:
        show_samples(shown_prompt, generation)


def interrupted() -> None:
    stderr.print("\nInterrupted.", highlight=False)


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


def run_repl(session) -> None:
    """The REPL at the terminal: read a line, let the session handle it, show the reply, until
    :quit or the end of input. When stdin is not a terminal, lines come from it and plain text goes out."""
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
    if reply.corrected:  # what the keyboard changed in the typed line, before the model goes on
        stdout.out(reply.corrected, style="dim" if interactive else "", highlight=False)
    if reply.stream is None:
        return
    try:
        stream_text("", reply.stream, style="cyan" if interactive else "")
    except KeyboardInterrupt:
        session.stop()  # what was shown stays in the text
        stdout.out(" [stopped]", style="dim", highlight=False)


# lm suggest ----------------------------------------------------------------------------------

def show_strip(strip, text: str, output: str | None) -> None:
    """JSON, one word a line (plain), or a table; the correction on a line before the table; a
    line on stderr when there is nothing to suggest. JSON and plain give each suggestion for
    TEXT as given (a correction replaces its typed word)."""
    suggestions = strip.as_typed(text)
    if output == "json":
        import json

        click.echo(json.dumps([s.to_dict() for s in suggestions], ensure_ascii=False))
    elif output == "plain":
        for s in suggestions:
            click.echo(s.word)
    elif suggestions:
        if strip.corrected:
            c = strip.correction
            stdout.print(Text.assemble("Corrected ", (c.typed, "bold"), " to ", (c.word, "bold green"),
                                       " (--no-correct keeps typed words)"), highlight=False)
        stdout.print(suggestion_table(suggestions))
    else:
        stderr.print("No suggestions: no word the model knows starts with the typed letters.", highlight=False)


def suggestion_table(suggestions) -> Table:
    """Word and probability; a third column names the slot when a correction or a fixed slip is shown."""
    from lm.suggest.typed import Slot

    marked = any(s.slot is not Slot.PREDICTION or s.delete for s in suggestions)
    table = Table(show_edge=False)
    table.add_column("word")
    table.add_column("probability", justify="right")
    if marked:
        table.add_column("slot")
    for s in suggestions:
        row = [Text(s.word, style="bold green" if s.slot is Slot.CORRECTION else "bold"), f"{s.probability:.1%}"]
        if marked:
            row.append("fixes a slip" if s.slot is Slot.PREDICTION and s.delete else
                       "" if s.slot is Slot.PREDICTION else s.slot.value)
        table.add_row(*row)
    return table


# lm serve ------------------------------------------------------------------------------------

def warn_open_host(host: str, has_key: bool) -> None:
    stderr.print(f"Warning: listening on {host} lets other machines reach the model"
                 + ("" if has_key else "; consider --api-key"), style="yellow", highlight=False)


def serving_line(service, host: str, port: int) -> str:
    """'Serving NAME (KIND, WEIGHTS on DEVICE by BACKEND, N processes) at URL — Ctrl-C stops'."""
    where = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    processes, backend = service.settings.processes, service.backend
    return (f"Serving {service.settings.name} ({service.tokenizer.kind}, {service.settings.about['weights']} on "
            f"{backend.device} by {backend.name}, {processes} process{'es' if processes > 1 else ''}) at {where} — Ctrl-C stops")


# lm export -----------------------------------------------------------------------------------

def show_export(result) -> None:
    stdout.print(export_table(result))
    stdout.print(f"Try it without torch: python {result.folder}/runtime.py {result.folder} \"the text so far\"",
                 highlight=False, soft_wrap=True)


def export_table(result) -> Table:
    manifest = result.manifest
    model, check = manifest["model"], manifest["check"]
    rows = [("model", f"{model['layers']}×{model['hidden']} {model['cell'].upper()}, emb {model['emb']}, "
                      f"{manifest['tokenizer']['kind']} vocab {model['vocab_size']:,}, {model['softmax']} softmax"),
            ("weights", model["weights"] + "".join(f", {n} {op}" for op, n in manifest["graph"]["quantized_ops"].items())),
            ("fp32 graph vs PyTorch", f"max |Δ| {check['fp32_max_abs_diff']:.1e}")]
    if "int8_top1_agreement" in check:
        rows.append(("int8 graph vs PyTorch", f"max |Δ| {check['int8_max_abs_diff']:.2f}, "
                                              f"top-1 agrees {check['int8_top1_agreement']:.1%}"))
    rows += [(name, byte_size(size)) for name, size in result.files.items()]
    return key_value_table(f"Exported to {result.folder}", rows)


def show_web_export(result) -> None:
    stdout.print(web_export_table(result))
    stdout.print(f"Serve it and open the page: python -m http.server -d {result.folder} 8000, then http://127.0.0.1:8000/ "
                 "(browsers run no WebAssembly from file://)", highlight=False, soft_wrap=True)


def web_export_table(result) -> Table:
    info = result.info
    model, check = info["model"], info["check"]
    rows = [("model", f"{model['layers']}×{model['hidden']} {model['cell'].upper()}, emb {model['emb']}, "
                      f"{info['tokenizer']['kind']} vocab {model['vocab_size']:,}, {model['softmax']} softmax"),
            ("weights", model["weights"])]
    if "int8_top1_agreement" in check:
        rows.append(("int8 graph vs PyTorch", f"top-1 agrees {check['int8_top1_agreement']:.1%}"))
    rows += [(part, byte_size(size)) for part, size in result.parts.items()]
    rows.append(("in all", byte_size(sum(result.files.values()))))
    return key_value_table(f"Web page written to {result.folder}", rows)
