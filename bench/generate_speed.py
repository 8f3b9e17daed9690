"""Generation speed: tokens/s of the sampler for one stream and for a batch, on CPU.

Also the time per token after a 10-token prompt and after a 2,000-token prompt (the state is
carried, so it must not grow with the prompt), for the float model and its int8 quantization,
and ceilings measured in the same run: bare float LSTM cells stepped at the same size (no
embedding, output layer, sampling or text), a whole nn.LSTM call for one step, and the model
step without sampling.

    python bench/generate_speed.py                    # random weights, default ModelConfig size
    python bench/generate_speed.py --checkpoint checkpoints/wiki
    python bench/generate_speed.py --quick            # a few seconds, for a smoke test

Prints a table and JSON (also written to bench/results/generate_speed.json).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.model.int8 import quantize_int8  # noqa: E402
from lm.model.network import count_parameters  # noqa: E402
from lm.suggest.sampler import START_TEXT, GenerationConfig, Sampler  # noqa: E402
from lm.data.tokenizer import DEFAULT_SUBWORD_VOCAB, CharTokenizer  # noqa: E402


def random_model(args) -> tuple[lm.LanguageModel, CharTokenizer]:
    """Random weights at the stated size, with a tokenizer of one symbol per id."""
    torch.manual_seed(0)
    config = lm.ModelConfig(vocab_size=args.vocab_size, cell=args.cell, layers=args.layers, hidden=args.hidden,
                            emb=args.emb, dropout=0.0)
    symbols = [START_TEXT, " "] + [chr(0x4E00 + i) for i in range(args.vocab_size - 3)]  # id 0 is <unk>
    return lm.LanguageModel(config).eval(), CharTokenizer(symbols)


def prompt_ids(tokenizer, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(length)
    return torch.randint(1, tokenizer.vocab_size, (length,), generator=generator).tolist()


def timed_generation(model, tokenizer, prompt: list[int], n: int, tokens: int) -> tuple[float, float, list[float]]:
    """(seconds to read the prompt, seconds to generate, seconds between tokens of stream 0)."""
    sampler = Sampler(model, tokenizer)
    start = time.perf_counter()
    sampler.feed_ids(tokenizer.encode(START_TEXT) + prompt)
    read = time.perf_counter() - start
    config = GenerationConfig(n=n, max_tokens=tokens, temperature=1.0, seed=0)
    gaps, last = [], time.perf_counter()
    start = last
    for piece in sampler.generate(config):
        if piece.index == 0:
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    return read, time.perf_counter() - start, gaps


def summarise(runs: list[tuple[float, float, list[float]]], prompt_length: int, n: int, tokens: int) -> dict:
    """Medians over repeats; latency percentiles over every token of stream 0."""
    gaps = sorted(g for run in runs for g in run[2])
    generate_s = statistics.median(run[1] for run in runs)
    return {
        "prompt_tokens": prompt_length, "streams": n, "tokens_per_stream": tokens,
        "prompt_read_ms": round(statistics.median(run[0] for run in runs) * 1e3, 2),
        "tokens_per_s": round(n * tokens / generate_s),
        "ms_per_step": round(generate_s / tokens * 1e3, 3),
        "p50_ms": round(gaps[len(gaps) // 2] * 1e3, 3),
        "p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1e3, 3),
    }


@torch.inference_mode()
def steps_per_s(step, tokens: int) -> float:
    """Rate of a bare step function called `tokens` times with its state carried."""
    state = None
    start = time.perf_counter()
    for _ in range(tokens):
        state = step(state)
    return tokens / (time.perf_counter() - start)


def ceilings(model, int8_model, config: lm.ModelConfig):
    """Bare loops at the same size: float LSTM cells alone (the fastest float step torch offers
    on CPU), a whole nn.LSTM call, and the models without sampling or text."""
    cells = [nn.LSTMCell(config.emb if i == 0 else config.hidden, config.hidden).eval() for i in range(config.layers)]
    rnn = nn.LSTM(config.emb, config.hidden, config.layers, batch_first=True).eval()
    x = torch.randn(1, config.emb)  # [batch, emb]
    ids = torch.ones(1, 1, dtype=torch.long)  # [batch, time]

    def cell_step(state):
        state = state or [None] * len(cells)
        inputs, new = x, []
        for cell, s in zip(cells, state):
            h, c = cell(inputs, s)
            new.append((h, c))
            inputs = h
        return new

    return {"bare_lstm_cells": cell_step, "bare_nn_lstm": lambda state: rnn(x[:, None], state)[1],
            "bare_model": lambda state: model(ids, state)[1], "bare_int8_model": lambda state: int8_model(ids, state)[1]}


def measure(models: dict, tokenizer, args) -> dict:
    """Every configuration once per repeat, in turn, so that load on the machine hits all alike."""
    cases = {"single_stream": ("fp32", args.short_prompt, 1), "single_stream_long_prompt": ("fp32", args.long_prompt, 1),
             "batch": ("fp32", args.short_prompt, args.batch), "int8_single_stream": ("int8", args.short_prompt, 1),
             "int8_single_stream_long_prompt": ("int8", args.long_prompt, 1), "int8_batch": ("int8", args.short_prompt, args.batch)}
    prompts = {length: prompt_ids(tokenizer, length) for length in (args.short_prompt, args.long_prompt)}
    bare = ceilings(models["fp32"], models["int8"], models["fp32"].config)
    runs = {name: [] for name in cases}
    rates = {name: [] for name in bare}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, (precision, length, n) in cases.items():
            runs[name].append(timed_generation(models[precision], tokenizer, prompts[length], n, args.tokens))
        for name, step in bare.items():
            rates[name].append(steps_per_s(step, args.tokens))
    found = {name: summarise(runs[name][1:], *cases[name][1:], args.tokens) for name in cases}
    found.update({f"{name}_step_tokens_per_s": round(statistics.median(r[1:])) for name, r in rates.items()})
    return found


def main() -> None:
    defaults = lm.ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="measure a trained checkpoint instead of random weights")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_SUBWORD_VOCAB)
    parser.add_argument("--cell", default=defaults.cell, choices=["lstm", "gru", "rnn"])
    parser.add_argument("--layers", type=int, default=defaults.layers)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--emb", type=int, default=defaults.emb)
    parser.add_argument("--tokens", type=int, default=300, help="tokens generated per stream and run")
    parser.add_argument("--batch", type=int, default=8, help="streams in the batched run")
    parser.add_argument("--short-prompt", type=int, default=10)
    parser.add_argument("--long-prompt", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own; 1 is often fastest for one stream)")
    parser.add_argument("--quick", action="store_true", help="few tokens and repeats")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "generate_speed.json"))
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.batch = 40, 2, 4
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = lm.load(args.checkpoint) if args.checkpoint else random_model(args)

    model, tokenizer = loaded.model, loaded.tokenizer
    config = model.config
    found = measure({"fp32": model, "int8": quantize_int8(model)}, tokenizer, args)
    single, long, bare = found["single_stream"], found["single_stream_long_prompt"], found["bare_lstm_cells_step_tokens_per_s"]
    report = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu"},
        "model": {"source": args.checkpoint or "random weights", **config.to_dict(), "parameters": count_parameters(model),
                  "tokenizer": tokenizer.kind},
        "tokens_per_stream": args.tokens, "repeats": args.repeats,
        **found,
        "long_vs_short_ms_per_step": round(long["ms_per_step"] / single["ms_per_step"], 3),
        "int8_long_vs_short_ms_per_step": round(found["int8_single_stream_long_prompt"]["ms_per_step"]
                                                / found["int8_single_stream"]["ms_per_step"], 3),
        "int8_speedup_single_stream": round(found["int8_single_stream"]["tokens_per_s"] / single["tokens_per_s"], 2),
        "single_stream_fraction_of_bare_lstm": round(single["tokens_per_s"] / bare, 3),
        "single_stream_fraction_of_bare_model": round(single["tokens_per_s"] / found["bare_model_step_tokens_per_s"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    model, single, long, batch = report["model"], report["single_stream"], report["single_stream_long_prompt"], report["batch"]
    int8, int8_batch = report["int8_single_stream"], report["int8_batch"]
    table = Table(title=f"lm generation speed (CPU, {report['machine']['threads']} threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("model", f"{model['layers']}×{model['hidden']} {model['cell']}, emb {model['emb']}, vocab {model['vocab_size']:,} ({model['source']})"),
        ("parameters", f"{model['parameters']:,}"),
        ("bare float LSTM cells step (ceiling)", f"{report['bare_lstm_cells_step_tokens_per_s']:,} tok/s"),
        ("bare nn.LSTM call, one step", f"{report['bare_nn_lstm_step_tokens_per_s']:,} tok/s"),
        ("bare model step, no sampling: fp32, int8", f"{report['bare_model_step_tokens_per_s']:,}, "
                                                     f"{report['bare_int8_model_step_tokens_per_s']:,} tok/s"),
        ("one stream", f"{single['tokens_per_s']:,} tok/s  (p50 {single['p50_ms']} ms, p99 {single['p99_ms']} ms)"),
        ("one stream / bare LSTM cells, / bare model", f"{report['single_stream_fraction_of_bare_lstm']:.0%}, "
                                                       f"{report['single_stream_fraction_of_bare_model']:.0%}"),
        (f"batch of {batch['streams']}", f"{batch['tokens_per_s']:,} tok/s  ({batch['ms_per_step']} ms per step)"),
        (f"per token after {single['prompt_tokens']:,}-token prompt", f"{single['ms_per_step']} ms (read in {single['prompt_read_ms']} ms)"),
        (f"per token after {long['prompt_tokens']:,}-token prompt", f"{long['ms_per_step']} ms (read in {long['prompt_read_ms']} ms)"),
        ("long / short prompt", f"{report['long_vs_short_ms_per_step']:.2f}×"),
        ("int8: one stream", f"{int8['tokens_per_s']:,} tok/s  (p50 {int8['p50_ms']} ms, p99 {int8['p99_ms']} ms; "
                             f"{report['int8_speedup_single_stream']}× fp32)"),
        (f"int8: batch of {int8_batch['streams']}", f"{int8_batch['tokens_per_s']:,} tok/s"),
        ("int8: long / short prompt", f"{report['int8_long_vs_short_ms_per_step']:.2f}×"),
        ("peak memory (RSS)", f"{report['peak_rss_mb']:,} MB"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
