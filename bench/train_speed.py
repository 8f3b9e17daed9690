"""Training speed: tokens/s and peak memory of `lm.train`, against this machine's own ceilings.

Ceilings measured in the same run:
  - fp32 matrix multiply GFLOP/s (what the cores can do at best);
  - a bare nn.LSTM + output layer forward/backward/step at the same size, batch and BPTT
    (what a plain PyTorch loop does with no data, logging, evaluation or checkpoints).

    python bench/train_speed.py                       # char model on Tiny Shakespeare
    python bench/train_speed.py --tokenizer word --corpus ../shared/corpora/wikitext-2/train.txt
    python bench/train_speed.py --reference           # the classic word-level example's configuration
    python bench/train_speed.py --quick               # a few seconds, for a smoke test
    python bench/train_speed.py --regularize          # lm train with the AWD-LSTM regularizers on
                                                      # (the bare loop stays plain: the ceiling)

Prints a table and JSON (also written to bench/results/train_speed.json).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.data.batching import batchify, windows  # noqa: E402
from lm.model.loss import mean_loss  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
# The AWD-LSTM regularizers of the large preset, for --regularize.
AWD = {k: v for k, v in lm.training.presets.SIZES["large"]["model"].items() if k in lm.model.config.REGULARIZERS and k != "dropout"}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    n = n if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def bare_lstm_tokens_per_s(config: lm.ModelConfig, streams, bptt: int, steps: int, optimizer: str = "adamw",
                           precision: str = "fp32", device: torch.device = torch.device("cpu")) -> float:
    """A plain loop over the first windows of the real token streams [batch, length]: embedding,
    nn.LSTM (cuDNN on a GPU), projection, output layer, loss, backward, clip, optimizer step; the
    loss is never read back, as in a loop that logs rarely. (Real text, not random ids: an
    adaptive softmax costs far more for the rare words that uniform ids mostly are.)"""
    model = lm.LanguageModel(config).to(device)
    optimizer = (torch.optim.SGD(model.parameters(), lr=20.0) if optimizer == "sgd"
                 else torch.optim.AdamW(model.parameters(), lr=1e-3))
    state = None
    times = []
    for step, (inputs, targets) in zip(range(steps + 3), windows(streams, bptt, device=device)):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, state = mean_loss(model, inputs, targets, state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = lm.detach_state(state)
        sync(device)
        if step >= 3:  # the first steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
    return streams.shape[0] * bptt / statistics.median(times)


class Recorder(lm.Progress):
    def __init__(self):
        self.rates: list[float] = []
        self.info: dict = {}

    def start(self, info):
        self.info = info

    def step(self, stats):
        self.rates.append(stats["tokens_per_s"])


def lm_train_tokens_per_s(corpus, model_config, tokenizer_config, train_config) -> tuple[float, dict]:
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as out:
        result = lm.train(corpus, Path(out) / "m", model_config, tokenizer_config, train_config, recorder)
    steady = recorder.rates[1:] or recorder.rates  # the first interval includes start-up
    return statistics.median(steady), {"info": recorder.info, "best": result.best, "elapsed": result.elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--tokenizer", default="char", choices=["char", "unigram", "bpe", "word"])
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--layers", type=int, default=lm.ModelConfig.layers)
    parser.add_argument("--hidden", type=int, default=lm.ModelConfig.hidden)
    parser.add_argument("--emb", type=int, default=lm.ModelConfig.emb)
    parser.add_argument("--batch", type=int, default=lm.TrainConfig.batch)
    parser.add_argument("--bptt", type=int, default=lm.TrainConfig.bptt)
    parser.add_argument("--optimizer", default=lm.TrainConfig.optimizer)
    parser.add_argument("--dropout", type=float, default=lm.ModelConfig.dropout)
    parser.add_argument("--precision", default=lm.TrainConfig.precision, choices=lm.training.config.PRECISIONS)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--reference", action="store_true",
                        help="the classic word-level PyTorch example: WikiText-2 cut to 10k words, 2×200 tied LSTM, "
                             "batch 20, BPTT 35, SGD, dropout 0.2")
    parser.add_argument("--steps", type=int, default=200, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument("--regularize", action="store_true",
                        help="lm train with " + ", ".join(f"{k}={v}" for k, v in AWD.items()) + " (the large preset's)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "train_speed.json"))
    args = parser.parse_args()
    if args.reference:
        args.corpus, args.tokenizer, args.vocab_size = str(ROOT.parent / "shared" / "corpora" / "wikitext-2" / "train.txt"), "word", 10000
        args.layers, args.hidden, args.emb, args.batch, args.bptt, args.optimizer, args.dropout = 2, 200, 200, 20, 35, "sgd", 0.2
    if args.quick:
        args.hidden, args.emb, args.steps, args.repeats = 64, 32, 30, 1

    if not Path(args.corpus).exists():
        sys.exit(f"corpus {args.corpus} not found — pass --corpus (the shared corpora live beside the repository)")
    corpus = lm.load_corpus([args.corpus])
    model_config = lm.ModelConfig(layers=args.layers, hidden=args.hidden, emb=args.emb, dropout=args.dropout,
                                  **(AWD if args.regularize else {}))
    tokenizer_config = lm.TokenizerConfig(kind=args.tokenizer, vocab_size=args.vocab_size)
    train_config = lm.TrainConfig(batch=args.batch, bptt=args.bptt, optimizer=args.optimizer, max_steps=args.steps,
                                  precision=args.precision,
                                  eval_every=0, patience=0, log_every=max(args.steps // 8, 5), device=args.device)

    device = lm._util.pick_device(args.device)
    gflops = matmul_gflops(device)
    runs = [lm_train_tokens_per_s(corpus, model_config, tokenizer_config, train_config) for _ in range(args.repeats)]
    rate = statistics.median(r[0] for r in runs)
    info = runs[0][1]["info"]
    plain = {k: getattr(lm.ModelConfig, k) for k in AWD}  # the ceiling is the plain loop
    sized = lm.ModelConfig(**{**model_config.to_dict(), **plain, "vocab_size": info["vocab_size"]})
    tokenizer = lm.data.corpus.prepare_tokenizer(corpus, tokenizer_config)  # cached by the runs above
    streams = batchify(lm.data.corpus.token_ids(corpus.train, tokenizer), args.batch)  # [batch, length]
    bare_steps = 20 if not args.quick else 5
    bare = statistics.median(bare_lstm_tokens_per_s(sized, streams, args.bptt, bare_steps, args.optimizer,
                                                    info["precision"], device) for _ in range(args.repeats))
    bare_fp32 = statistics.median(bare_lstm_tokens_per_s(sized, streams, args.bptt, bare_steps, args.optimizer, "fp32", device)
                                  for _ in range(args.repeats))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    report = {
        "machine": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "matmul_gflops": round(gflops, 1)},
        "corpus": str(args.corpus), "tokenizer": args.tokenizer, "vocab_size": info["vocab_size"],
        "model": {"layers": args.layers, "hidden": args.hidden, "emb": args.emb, "parameters": info["parameters"]},
        "batch": args.batch, "bptt": args.bptt, "optimizer": args.optimizer, "dropout": args.dropout,
        "regularizers": AWD if args.regularize else {},
        "precision": info["precision"], "steps": args.steps, "repeats": args.repeats,
        "lm_train_tokens_per_s": round(rate), "bare_lstm_tokens_per_s": round(bare),
        "bare_lstm_fp32_tokens_per_s": round(bare_fp32),
        "fraction_of_bare": round(rate / bare, 3), "speedup_over_plain_fp32_loop": round(rate / bare_fp32, 2),
        "peak_rss_mb": round(peak_mb),
        "valid_loss_after_steps": runs[0][1]["best"].get("valid_loss"),
    }
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lm train speed ({report['machine']['device']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    model = report["model"]
    rows = [
        ("model", f"{model['layers']}×{model['hidden']} {report['tokenizer']}, emb {model['emb']}, vocab {report['vocab_size']:,}"),
        ("parameters", f"{model['parameters']:,}"),
        ("batch × bptt, optimizer", f"{report['batch']} × {report['bptt']}, {report['optimizer']}"),
        ("lm train's regularizers", ", ".join(f"{k} {v}" for k, v in report["regularizers"].items()) or "dropout only"),
        ("matmul ceiling", f"{report['machine']['matmul_gflops']} GFLOP/s"),
        ("plain PyTorch loop, fp32", f"{report['bare_lstm_fp32_tokens_per_s']:,} tok/s"),
        (f"bare loop, {report['precision']}", f"{report['bare_lstm_tokens_per_s']:,} tok/s"),
        (f"lm train, {report['precision']}", f"{report['lm_train_tokens_per_s']:,} tok/s"),
        ("lm train / bare loop (same precision)", f"{report['fraction_of_bare']:.0%}"),
        ("lm train / plain fp32 loop", f"{report['speedup_over_plain_fp32_loop']:.2f}×"),
        ("peak memory (RSS)", f"{report['peak_rss_mb']:,} MB"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
