"""Export speed and size: PyTorch against ONNX Runtime, fp32 and int8, one stream on the CPU.

For each model: the per-token latency of one stream stepping one token at a time with the
state carried (p50 / p99 of single calls after a warm-up, one thread), and the size of the
weights on disk, for
  - PyTorch fp32: the checkpoint's model, its model.safetensors;
  - PyTorch int8: lm's dynamic quantization (`lm.model.int8.quantize_int8`, what suggest, generate
    and repl run by default), its state_dict as torch.save writes it;
  - ONNX Runtime fp32 and int8: `lm export` and `lm export --int8`, model.onnx, driven through
    the export's own runtime.py (`Model.step`, numpy in and out).
With --text, also the perplexity of each on that text (the first --max-tokens tokens).

The models, unless --checkpoint is given: random weights (speed and size do not depend on the
values) with a 4,000-word vocabulary, at the default size (2×512 LSTM, embedding 256) and a
small one (1×256 LSTM, embedding 128). There are no named presets yet; the small model stands
in for the smallest.

    python bench/export_speed.py                     # default and small model, random weights
    python bench/export_speed.py -c checkpoints/shakespeare --text held_out.txt
    python bench/export_speed.py --quick             # tiny models, a few seconds

Prints a table and JSON (also written to bench/results/export_speed.json).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lm  # noqa: E402
from lm.checkpoint.store import WEIGHTS_FILE, load_checkpoint, save_checkpoint  # noqa: E402
from lm.export.onnx import export_checkpoint  # noqa: E402
from lm.model.int8 import quantize_int8  # noqa: E402
from lm.model.network import count_parameters  # noqa: E402
from lm.data.tokenizer import WordTokenizer  # noqa: E402

SIZES = {  # name -> ModelConfig fields
    "default (2×512, emb 256)": dict(layers=2, hidden=512, emb=256),
    "small (1×256, emb 128)": dict(layers=1, hidden=256, emb=128),
}
QUICK_SIZES = {"quick (1×64, emb 32)": dict(layers=1, hidden=64, emb=32)}
ENGINES = ("pytorch fp32", "pytorch int8", "onnxruntime fp32", "onnxruntime int8")


def load_runtime():
    """lm/export/runtime.py by its path: the module an app ships."""
    spec = importlib.util.spec_from_file_location("lm_export_runtime", ROOT / "lm" / "export" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_checkpoint(folder: Path, vocab_size: int, fields: dict) -> Path:
    """A checkpoint with random weights and a vocabulary of made-up words."""
    torch.manual_seed(0)
    tokenizer = WordTokenizer([f"w{i}" for i in range(vocab_size - 2)])
    model = lm.LanguageModel(lm.ModelConfig(vocab_size=vocab_size, dropout=0.0, **fields))
    return save_checkpoint(folder, model, tokenizer, {"tokenizer": {"kind": "word"}})


def percentiles(times: list[float]) -> dict:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.50), 3), "p99_ms": round(pick(0.99), 3),
            "tokens_per_s": round(len(times) / sum(times)), "n": len(times)}


def stepper(engine: str, model, folder: Path | None, runtime):
    """A function that takes one token id and advances its own carried state."""
    if engine.startswith("pytorch"):
        state = None

        @torch.inference_mode()
        def step(token: int):
            nonlocal state
            _, state = model(torch.tensor([[token]]), state)
        return step
    exported = runtime.Model(folder, threads=1)
    state = exported.zero_state()

    def step(token: int):
        nonlocal state
        _, state = exported.step([[token]], state)
    return step


def latency(step, ids: list[int], warmup: int) -> dict:
    for token in ids[:warmup]:
        step(token)
    times = []
    for token in ids[warmup:]:
        start = time.perf_counter()
        step(token)
        times.append(time.perf_counter() - start)
    return percentiles(times)


def perplexity(engine: str, model, folder: Path | None, runtime, ids: list[int], chunk: int = 256) -> float:
    """exp(mean next-token NLL) over ids, read in chunks with the state carried."""
    nll, state = 0.0, None
    exported = None if engine.startswith("pytorch") else runtime.Model(folder, threads=1)
    if exported is not None:
        state = exported.zero_state()
    for at in range(0, len(ids) - 1, chunk):
        inputs, targets = ids[at: at + chunk], ids[at + 1: at + chunk + 1]
        inputs = inputs[: len(targets)]
        if exported is None:
            with torch.inference_mode():
                logits, state = model(torch.tensor([inputs]), state)
            logits = logits[0].double().numpy()
        else:
            logits, state = exported.step([inputs], state)
            logits = logits[0].astype(np.float64)
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        nll -= float((logits[np.arange(len(targets)), targets] - log_z).sum())
    return math.exp(nll / (len(ids) - 1))


def torch_bytes(module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def measure(name: str, checkpoint: Path, workdir: Path, args, runtime) -> dict:
    ckpt = load_checkpoint(checkpoint)
    fp32 = export_checkpoint(checkpoint, workdir / "fp32", overwrite=True)
    int8 = export_checkpoint(checkpoint, workdir / "int8", int8=True, overwrite=True)
    models = {"pytorch fp32": ckpt.model, "pytorch int8": quantize_int8(ckpt.model)}
    folders = {"onnxruntime fp32": fp32.folder, "onnxruntime int8": int8.folder}
    sizes = {"pytorch fp32": (checkpoint / WEIGHTS_FILE).stat().st_size, "pytorch int8": torch_bytes(models["pytorch int8"]),
             "onnxruntime fp32": fp32.graph_bytes, "onnxruntime int8": int8.graph_bytes}
    ids = torch.randint(2, ckpt.tokenizer.vocab_size, (args.warmup + args.tokens,),
                        generator=torch.Generator().manual_seed(0)).tolist()
    text_ids = ckpt.tokenizer.encode("\n" + args.text_content)[: args.max_tokens] if args.text_content else None
    engines = {}
    for engine in ENGINES:
        model, folder = models.get(engine), folders.get(engine)
        engines[engine] = {"bytes": sizes[engine], **latency(stepper(engine, model, folder, runtime), ids, args.warmup)}
        if text_ids:
            engines[engine]["perplexity"] = round(perplexity(engine, model, folder, runtime, text_ids), 4)
    config = ckpt.model.config
    return {
        "model": name, "checkpoint": str(checkpoint) if args.checkpoint else None, "tokenizer": ckpt.tokenizer.kind,
        "vocab_size": config.vocab_size, "shape": {k: getattr(config, k) for k in ("cell", "layers", "hidden", "emb", "softmax")},
        "parameters": count_parameters(ckpt.model), "text_tokens": len(text_ids) if text_ids else None,
        "export_check": int8.manifest["check"], "quantized_ops": int8.manifest["graph"]["quantized_ops"],
        "engines": engines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", action="append", type=Path, help="measure this checkpoint (repeatable)")
    parser.add_argument("--text", type=Path, help="held-out text: also measure perplexity on it")
    parser.add_argument("--max-tokens", type=int, default=20_000, help="tokens of --text to score")
    parser.add_argument("--vocab-size", type=int, default=4000, help="vocabulary of the random-weight models")
    parser.add_argument("--tokens", type=int, default=2000, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="one tiny model, few steps: a smoke test")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "export_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one stream decodes fastest on one thread, for both engines
    sizes = SIZES
    if args.quick:
        sizes, args.tokens, args.warmup, args.vocab_size = QUICK_SIZES, 200, 20, 500
    args.text_content = args.text.read_text(encoding="utf-8") if args.text else None
    runtime = load_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            runs = [measure(c.name, c, tmp / f"m{i}", args, runtime) for i, c in enumerate(args.checkpoint)]
        else:
            runs = [measure(name, random_checkpoint(tmp / f"ckpt{i}", args.vocab_size, fields), tmp / f"m{i}", args, runtime)
                    for i, (name, fields) in enumerate(sizes.items())]
    import onnxruntime

    report = {"machine": {"threads": 1, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
              "timed_tokens": args.tokens, "runs": runs}
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    with_ppl = any("perplexity" in e for run in report["runs"] for e in run["engines"].values())
    table = Table(title="One stream, one token per call, 1 thread (CPU)",
                  caption="latency per token: ms p50 / p99 of single calls; size: the weights on disk")
    for column in ("model", "engine", "p50 / p99 ms", "tokens/s", "size", *(["perplexity"] if with_ppl else [])):
        table.add_column(column, justify="left" if column in ("model", "engine") else "right")
    for run in report["runs"]:
        for i, (engine, e) in enumerate(run["engines"].items()):
            cells = [run["model"] if i == 0 else "", engine, f"{e['p50_ms']:.3f} / {e['p99_ms']:.3f}",
                     f"{e['tokens_per_s']:,}", f"{e['bytes'] / 1e6:.2f} MB"]
            if with_ppl:
                cells.append(f"{e['perplexity']:.3f}" if "perplexity" in e else "")
            table.add_row(*cells)
    Console().print(table)


if __name__ == "__main__":
    main()
