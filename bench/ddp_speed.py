"""Data-parallel training speed: tokens/s of `lm.train` with 1 and N workers (DDP).

On the CPU (default) three set-ups train the same global batch (--batch streams) of the
default char model on Tiny Shakespeare for a short fixed number of steps:
  - one process with one thread,
  - one process with N threads (the usual way to use N cores),
  - N workers with one thread each (`lm train --nproc N`: DDP over gloo).
On GPUs (--device cuda) it compares one worker on one GPU with one worker per GPU (NCCL),
and reports one worker's speed as a fraction of a bare cuDNN step (bench/train_speed.py).

Each set-up runs --repeats times in fresh processes; a run's speed is the median of its
logged tokens/s after the first log window (warm-up), and the table shows the median run.
Evaluation time is left out (the trainer pauses its clock for it). Run it alone:

    flock -x /tmp/lm-cpu.lock python bench/ddp_speed.py
    python bench/ddp_speed.py --device cuda --nproc 4
    python bench/ddp_speed.py --quick

Prints a table and JSON (also written to bench/results/ddp_speed.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
VALID_CHARS = 20_000  # a short validation file: the bench times training, not evaluation
LAUNCH = "import sys, lm.training.distributed as d; sys.exit(d.launch(sys.argv[2:], int(sys.argv[1])))"


def worker(args) -> None:
    """One training run (or one worker of it); the first worker writes its logged speeds."""
    import torch

    import lm
    import lm.training.distributed

    class Speeds(lm.Progress):
        def __init__(self):
            self.tokens_per_s = []

        def step(self, stats):
            self.tokens_per_s.append(stats["tokens_per_s"])

    torch.set_num_threads(args.threads)
    speeds = Speeds()
    corpus = lm.load_corpus([str(args.corpus)], valid=str(args.valid))
    with lm.training.distributed.session():
        lm.train(corpus, Path(args.out), config=lm.TrainConfig(
            batch=args.batch, max_steps=args.steps, log_every=args.log_every, device=args.device,
            precision=args.precision, warmup=0, eval_every=0, tune_cache=False), tokenizer_config=lm.TokenizerConfig(kind="char"),
            progress=speeds, overwrite=True)
        if lm.training.distributed.is_writer():
            Path(args.report).write_text(json.dumps(speeds.tokens_per_s))


def decision_cost(args) -> None:
    """One worker of the per-step cost probe: the clock broadcast and the stop all-reduce, timed."""
    import time

    import torch

    import lm.training.distributed as d
    from lm.training.config import Stop

    torch.set_num_threads(1)
    with d.session():
        for phase in ("warm-up", "timed"):
            started = time.perf_counter()
            for _ in range(args.steps):
                d.from_writer(time.perf_counter())
                d.decide(None, (None, *Stop), urgent=Stop.INTERRUPTED)
            seconds = time.perf_counter() - started
        if d.is_writer():
            Path(args.report).write_text(json.dumps(seconds / args.steps))


def measure_decisions(args, folder: Path) -> float:
    """Seconds per step that the two per-step collectives cost between two workers."""
    report = folder / "decisions.json"
    command = [str(Path(__file__).resolve()), "--decisions", "--steps", "2000", "--report", str(report)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", LAUNCH, "2", sys.executable, *command], env=env, check=True)
    return json.loads(report.read_text())


def run_once(args, workers: int, threads: int, batch: int, folder: Path) -> float:
    """tokens/s of one fresh run: the median logged speed after the first window."""
    report = folder / "speeds.json"
    command = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--corpus", str(args.corpus),
               "--valid", str(args.valid), "--out", str(folder / "ckpt"), "--report", str(report), "--batch",
               str(batch), "--steps", str(args.steps), "--log-every", str(args.log_every), "--device", args.device,
               "--precision", args.precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if workers == 1:
        subprocess.run([sys.executable, *command], env=env, check=True)
    else:
        subprocess.run([sys.executable, "-c", LAUNCH, str(workers), sys.executable, *command], env=env, check=True)
    speeds = json.loads(report.read_text())[1:]
    return statistics.median(speeds)


def measure(args, workers: int, threads: int, batch: int) -> dict:
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            runs.append(run_once(args, workers, threads, batch, Path(folder)))
    return {"workers": workers, "threads": threads, "batch": batch, "tokens_per_s": statistics.median(runs), "runs": runs}


def bare_fraction(args) -> float:
    """One worker's tokens/s over a bare cuDNN loop of the same model, batch and BPTT (GPU only)."""
    import numpy as np
    import torch

    import lm
    from bench.train_speed import bare_lstm_tokens_per_s
    from lm.data.batching import batchify

    text = args.corpus.read_text(encoding="utf-8")
    tokenizer = lm.train_tokenizer(text, lm.TokenizerConfig(kind="char"))
    ids = np.asarray(tokenizer.encode_array(text))
    config = lm.ModelConfig(vocab_size=tokenizer.vocab_size).resolved()
    return bare_lstm_tokens_per_s(config, batchify(ids, args.batch), lm.TrainConfig().bptt, args.steps,
                                  precision="bf16" if args.precision != "fp32" else "fp32", device=torch.device("cuda"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--nproc", type=int, default=2, help="workers (CPU: also the threads of the one-process run)")
    parser.add_argument("--batch", type=int, default=32, help="streams per step (CPU: over all workers; GPU: per worker)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--quick", action="store_true", help="8 steps, one run each: a smoke test")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decisions", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--valid", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.decisions:
        return decision_cost(args)
    if args.quick:
        args.steps, args.repeats = 8, 1
    with tempfile.TemporaryDirectory() as folder:
        args.valid = Path(folder) / "valid.txt"
        args.valid.write_text(args.corpus.read_text(encoding="utf-8")[-VALID_CHARS:], encoding="utf-8")
        if args.device == "cpu":  # one global batch, split between the workers
            rows = [measure(args, 1, 1, args.batch), measure(args, 1, args.nproc, args.batch),
                    measure(args, args.nproc, 1, args.batch)]
        else:  # a GPU wants its own full batch: the global batch grows with the workers
            rows = [measure(args, 1, 1, args.batch), measure(args, args.nproc, 1, args.batch * args.nproc)]
        decisions = measure_decisions(args, Path(folder))
    one = rows[0]["tokens_per_s"]
    for row in rows:
        row["speed_up"] = row["tokens_per_s"] / one
        row["efficiency"] = row["speed_up"] / max(row["workers"], row["threads"])
    result = {"device": args.device, "batch": args.batch, "steps": args.steps, "precision": args.precision,
              "cpus": os.cpu_count(), "rows": rows, "decisions_us_per_step": decisions * 1e6}
    if args.device == "cuda":
        result["fraction_of_bare_cudnn"] = one / bare_fraction(args)
    print(f"{'set-up':<28} {'batch':>6} {'tokens/s':>10} {'speed-up':>9} {'efficiency':>11}")
    for row in rows:
        name = f"{row['workers']} worker(s) x {row['threads']} thread(s)"
        print(f"{name:<28} {row['batch']:>6} {row['tokens_per_s']:>10,.0f} {row['speed_up']:>8.2f}x {row['efficiency']:>10.0%}")
    print(f"per-step decisions (clock broadcast + stop all-reduce, 2 workers, gloo): {decisions * 1e6:.0f} µs")
    if "fraction_of_bare_cudnn" in result:
        print(f"one worker / bare cuDNN step: {result['fraction_of_bare_cudnn']:.0%}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "ddp_speed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
