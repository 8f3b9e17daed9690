"""Load on `lm serve`: many typists, each a keystroke session typing WikiText-2 text key by key.

The server runs as `lm serve` (int8 weights, the defaults) in its own process on a loopback
port. Each client keeps one connection open and sends `POST /suggest {"text", "session"}`
after every character, waiting for the answer before the next key, as a keyboard does,
--keys-per-second on average. Typists are independent: each starts at a random moment and
varies its pauses (0.5 to 1.5 times the mean), so keys of different typists sometimes
collide, as they would from real people; --lockstep makes them all start together and keep
the pace exactly, which sends every typist's key at once (the worst case). After
--document-chars characters a typist starts a new document under a new session id, so the server's session store (capped by --max-sessions) keeps turning over.
Phases run 1, 8 and 32 typists at once (bounded by --requests and --max-seconds each), then a
soak of --soak requests at the largest count typing flat out: the server's capacity, and its
memory after many sessions have come and gone. The client shares the machine's cores with
the server.

    python bench/serve_load.py                      # a 2×512 char model trained briefly on WikiText-2
    python bench/serve_load.py -c checkpoints/wiki  # your checkpoint
    python bench/serve_load.py --quick              # a tiny model and a few hundred requests

Prints a table and JSON (also written to bench/results/serve_load.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.serve.settings import ServeSettings  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def documents(path: Path, chars: int, tail: float = 1.0) -> list[str]:
    """The text (its last `tail` share) as documents of about `chars` characters, headings
    dropped, cut at a word end."""
    text = path.read_text(encoding="utf-8")
    lines = [line.strip() for line in text[int(len(text) * (1 - tail)):].splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("="))
    docs, at = [], 0
    while at + chars < len(text):
        end = text.rfind(" ", at, at + chars) + 1 or at + chars
        docs.append(text[at:end])
        at = end
    return docs


def start_server(checkpoint: Path, processes: int | None, workers: int, max_sessions: int,
                 flags: str = "") -> tuple[subprocess.Popen, int]:
    command = [sys.executable, str(ROOT / "cli.py"), "serve", "-c", str(checkpoint), "--port", "0",
               "--workers", str(workers), "--max-sessions", str(max_sessions), *flags.split()]
    if processes is not None:
        command += ["--processes", str(processes)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r":(\d+) — ", line)
    if not match:
        process.kill()
        sys.exit(f"lm serve did not start: {line}{process.stderr.read()}")
    return process, int(match.group(1))


def memory_mb(pid: int) -> dict:
    """The server's memory from /proc, over its process and the server processes it forked:
    resident (RSS, pages shared after the fork counted in each), proportional (PSS, shared
    pages split between their processes: what the server adds to the machine), and peak RSS."""
    pids = [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = {"rss_mb": 0.0, "pss_mb": 0.0, "peak_mb": 0.0}
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text()
        rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        total["rss_mb"] += _kb(status, "VmRSS") / 1024
        total["peak_mb"] += _kb(status, "VmHWM") / 1024
        total["pss_mb"] += _kb(rollup, "Pss") / 1024
    return {key: round(value, 1) for key, value in total.items()} | {"processes": len(pids)}


def _kb(text: str, key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1))


class Connection:
    """One keep-alive HTTP/1.1 connection; a few lines instead of a client library, so the
    load generator takes as little as possible of the cores the server needs."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def typist(port: int, docs: list[str], first: int, name: str, budget: dict, latencies: list, errors: list,
                 keys_per_second: float, lockstep: bool = False):
    """Type documents key by key until the phase's requests or time run out.

    A key follows the answer to the previous one, `keys_per_second` on average (0: at once).
    Typists are independent: each starts at a random moment of the first interval and waits
    between 0.5 and 1.5 intervals before each key (seeded by its name). With `lockstep`, all
    start together and keep the interval exactly, so their keys arrive in bursts."""
    interval = 1 / keys_per_second if keys_per_second > 0 else 0.0
    rng = random.Random(name)
    pause = (lambda: interval) if lockstep else (lambda: interval * rng.uniform(0.5, 1.5))  # noqa: E731
    connection = Connection(port)
    try:
        if not lockstep:
            await asyncio.sleep(interval * rng.random())
        for n in range(first, first + len(docs)):
            doc, session = docs[n % len(docs)], f"{name}-doc{n}"
            for end in range(1, len(doc) + 1):
                if budget["left"] <= 0 or time.perf_counter() > budget["deadline"]:
                    return
                budget["left"] -= 1
                start = time.perf_counter()
                try:
                    status, body = await connection.post("/suggest", {"text": doc[:end], "session": session})
                    if status != 200 or b'"suggestions"' not in body:
                        errors.append(f"{status} {body[:200]!r}")
                except (OSError, asyncio.IncompleteReadError) as e:
                    errors.append(repr(e))
                    connection.close()
                    connection = Connection(port)
                latencies.append(time.perf_counter() - start)
                await asyncio.sleep(max(0.0, pause() - latencies[-1]))
    finally:
        connection.close()


async def phase(port: int, docs: list[str], clients: int, requests: int, max_seconds: float, tag: str,
                keys_per_second: float, lockstep: bool = False) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    budget = {"left": requests, "deadline": time.perf_counter() + max_seconds}
    start = time.perf_counter()
    await asyncio.gather(*(typist(port, docs, i * 7, f"{tag}-c{i}", budget, latencies, errors, keys_per_second,
                                  lockstep) for i in range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "clients": clients, "keys_per_second": keys_per_second, "lockstep": lockstep, "requests": len(latencies),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2), "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2), "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "errors": len(errors), "first_errors": errors[:3],
        "stopped_by": "time" if budget["left"] > 0 else "requests",
    }


def train_model(out: Path, args) -> None:
    """The default model shape (or a tiny one for --quick), trained briefly: latency, not quality."""
    corpus_path = WIKITEXT / "train.txt"
    if args.quick:
        corpus_path = out.parent / "train-slice.txt"
        corpus_path.write_text((WIKITEXT / "train.txt").read_text(encoding="utf-8")[:300_000], encoding="utf-8")
    shape = dict(layers=1, hidden=64, emb=32) if args.quick else {}
    lm.train(lm.load_corpus([str(corpus_path)]), out, model_config=lm.ModelConfig(dropout=0.0, **shape),
             tokenizer_config=lm.TokenizerConfig(kind="char"),
             config=lm.TrainConfig(batch=16, bptt=64, max_steps=args.steps, eval_every=0, patience=0,
                                   log_every=max(args.steps // 4, 1), device="cpu"))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", help="serve this checkpoint (default: train the default shape briefly)")
    parser.add_argument("--text", default=str(WIKITEXT / "valid.txt"), help="the text the typists type")
    parser.add_argument("--tail", type=float, default=1.0,
                        help="type only the last share of --text (0.1: the held-out tenth of a one-file corpus)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent typists per phase, comma-separated")
    parser.add_argument("--keys-per-second", type=float, default=8,
                        help="each typist's pace in the phases (8: a fast typist, about 95 words a minute; 0: flat out)")
    parser.add_argument("--lockstep", action="store_true",
                        help="typists start together and keep the pace exactly, so keys arrive in bursts (the worst case)")
    parser.add_argument("--requests", type=int, default=1500, help="keystrokes per phase (at most)")
    parser.add_argument("--max-seconds", type=float, default=60, help="time per phase (at most)")
    parser.add_argument("--soak", type=int, default=100_000, help="keystrokes of the soak phase (0: none)")
    parser.add_argument("--soak-seconds", type=float, default=600, help="time of the soak phase (at most)")
    parser.add_argument("--document-chars", type=int, default=600, help="characters a typist types per session")
    parser.add_argument("--processes", type=int, help="lm serve --processes (default: its own, one per core)")
    parser.add_argument("--workers", type=int, default=ServeSettings.workers, help="lm serve --workers")
    parser.add_argument("--server-flags", default="", help="more lm serve flags, e.g. \"--no-cache --fp32\"")
    parser.add_argument("--max-sessions", type=int, default=100,
                        help="lm serve --max-sessions: below the soak's documents, so the store turns over")
    parser.add_argument("--steps", type=int, default=150, help="training steps when no checkpoint is given")
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few hundred keystrokes")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_seconds, args.soak, args.soak_seconds, args.steps = 300, 20, 1000, 30, 20
    return args


async def measure(port: int, pid: int, docs: list[str], args) -> dict:
    await phase(port, docs, 2, 100, 30, "warmup", 0)  # imports, caches, first sessions
    before = memory_mb(pid)
    counts = [int(c) for c in args.clients.split(",")]
    phases = [await phase(port, docs, n, args.requests, args.max_seconds, f"p{n}", args.keys_per_second, args.lockstep)
              for n in counts]
    after_phases = memory_mb(pid)
    # The soak types flat out: the server's capacity, and its memory after many sessions.
    soak = await phase(port, docs, max(counts), args.soak, args.soak_seconds, "soak", 0) if args.soak else None
    return {"phases": phases, "soak": soak, "memory": {"before": before, "after_phases": after_phases,
                                                        "after_soak": memory_mb(pid) if soak else None}}


def main() -> None:
    import torch

    args = parse_args()
    if not Path(args.text).exists():
        sys.exit(f"{args.text} not found — pass --text (the shared corpora live beside the repository)")
    docs = documents(Path(args.text), args.document_chars, args.tail)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "model"
        if not args.checkpoint:
            train_model(checkpoint, args)
        config = lm.checkpoint.folder.read_config(checkpoint)
        process, port = start_server(checkpoint, args.processes, args.workers, args.max_sessions, args.server_flags)
        try:
            results = asyncio.run(measure(port, process.pid, docs, args))
        finally:
            process.terminate()
            code = process.wait(30)
    report = {
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "torch": torch.__version__},
        "model": {k: config["model"][k] for k in ("cell", "layers", "hidden", "emb", "vocab_size")},
        "tokenizer": config["tokenizer"]["kind"], "weights": "int8", "processes": args.processes, "workers": args.workers,
        "server_flags": args.server_flags,
        "max_sessions": args.max_sessions,
        "text": args.text, "tail": args.tail, "document_chars": args.document_chars, "server_exit_code": code, **results,
    }
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    model = report["model"]
    table = Table(title=f"lm serve under typing load: {model['layers']}×{model['hidden']} {model['cell']} "
                        f"({report['tokenizer']}, {report['weights']}), {report['memory']['before']['processes']} "
                        f"process(es), --workers {report['workers']}, "
                        f"--max-sessions {report['max_sessions']}, "
                        f"{report['machine']['cpus']} cores shared with the load generator",
                  caption="each request is one keystroke of a session; latency is the client's round trip")
    for column in ("clients", "pace", "requests", "requests/s", "p50 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="right")
    rows = report["phases"] + ([report["soak"]] if report["soak"] else [])
    for i, run in enumerate(rows):
        label = f"{run['clients']}" + (" (soak)" if i == len(report["phases"]) else "")
        pace = f"{run['keys_per_second']:g} keys/s" if run["keys_per_second"] else "flat out"
        pace += " in lockstep" if run["lockstep"] and run["keys_per_second"] else ""
        table.add_row(label, pace, f"{run['requests']:,}", f"{run['requests_per_s']:,.0f}", f"{run['p50_ms']:.1f}",
                      f"{run['p99_ms']:.1f}", f"{run['max_ms']:.1f}", str(run["errors"]))
    Console().print(table)
    memory = report["memory"]
    soak = f", after the soak {memory['after_soak']['pss_mb']:.0f} MB" if memory["after_soak"] else ""
    print(f"server memory (PSS, all its processes): {memory['before']['pss_mb']:.0f} MB after warm-up, "
          f"{memory['after_phases']['pss_mb']:.0f} MB after the phases{soak}; "
          f"peak RSS {max(m['peak_mb'] for m in memory.values() if m):.0f} MB")


if __name__ == "__main__":
    main()
