"""Run every benchmark, one after another (never two at once: on two cores they slow each other).

    python bench/run_all.py --quick      # a smoke test of every script, a few minutes
    python bench/run_all.py              # the figures in the README (about an hour on 2 cores)

Each script prints its table and writes its JSON under bench/results/; this prints a summary
of which ran and how long each took.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "corpora"

# (script, arguments in full mode); --quick replaces the arguments with --quick.
FULL = [
    ("train_speed.py", []),
    ("train_speed.py", ["--reference", "--json", str(BENCH / "results" / "train_speed_reference.json")]),
    ("train_speed.py", ["--tokenizer", "word", "--corpus", str(SHARED / "wikitext-2" / "train.txt"),
                        "--json", str(BENCH / "results" / "train_speed_wikitext.json")]),
    ("ddp_speed.py", []),
    ("data_speed.py", []),
    ("generate_speed.py", ["--threads", "1"]),
    ("suggest_latency.py", []),
    ("serve_load.py", []),
    ("eval_speed.py", ["--train-time", "900"]),
    ("quantize_quality.py", ["-c", str(BENCH / "results" / "eval_speed-model"),
                             "--text", str(SHARED / "wikitext-2" / "test.txt")]),
    ("keyboard_quality.py", ["-c", str(BENCH / "results" / "eval_speed-model")]),
    ("export_speed.py", []),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every script in its quick mode")
    args = parser.parse_args()
    scripts = {script: None for script, _ in FULL} if args.quick else None
    runs = [(script, ["--quick"]) for script in scripts] if args.quick else FULL
    results = []
    for script, script_args in runs:
        command = [sys.executable, str(BENCH / script), *script_args]
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        results.append((" ".join([script, *script_args]), code, time.perf_counter() - start))
    print()
    for name, code, seconds in results:
        print(f"{'ok    ' if code == 0 else 'FAILED'} {seconds:7.1f} s  {name}")
    sys.exit(max(code for _, code, _ in results))


if __name__ == "__main__":
    main()
