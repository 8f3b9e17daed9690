"""Data-parallel training on CPU: gloo, loopback, free ports, one thread per worker, bounded waits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lm
from lm.checkpoint.store import load_checkpoint, read_resume
from lm.training.distributed import free_port

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]
MODEL = dict(layers=1, hidden=32, emb=16, dropout=0.0)
TRAIN = dict(batch=4, bptt=16, lr=1e-2, warmup=0, log_every=5, device="cpu", precision="fp32", eval_every=0,
             tune_cache=False)
LAUNCH = "import sys, lm.training.distributed as d; sys.exit(d.launch(sys.argv[1:], 2))"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
TINY_CLI = ["--tokenizer", "char", "--layers", "1", "--hidden", "32", "--emb", "16", "--batch", "4", "--bptt", "16",
            "--device", "cpu", "--precision", "fp32", "--no-tune-cache"]


def start_workers(tmp_path: Path, corpus_file: Path, name: str, **train) -> tuple[subprocess.Popen, Path]:
    """Two workers of tests/ddp_worker.py under lm.training.distributed.launch; returns the launcher and the report folder."""
    report = tmp_path / f"report-{name}"
    report.mkdir()
    resume = train.pop("resume", False)
    spec = {"corpus": str(corpus_file), "out": str(tmp_path / "run"), "report": str(report), "model": MODEL,
            "train": {**TRAIN, **train}, "resume": resume}
    spec_path = report / "spec.json"
    spec_path.write_text(json.dumps(spec))
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH, sys.executable, str(WORKER), str(spec_path)],
                                env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return launcher, report


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """The exit code and stderr of a launcher; on a timeout its workers (in sessions of their own) are killed too."""
    try:
        process.stdout_text, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in children(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running after {timeout} s:\n{err[-3000:]}")
    return process.returncode, err


def reports(report: Path) -> list[dict]:
    return [json.loads((report / f"REPORT-rank{r}.json").read_text()) for r in range(2)]


def wait_until(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `condition()` holds (a checkpoint is saved) while the process runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before the condition held:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the condition did not hold within {timeout} s")
        time.sleep(0.05)


def test_two_workers_equal_each_other_and_one_process_over_the_same_batch(tmp_path, corpus_file):
    launcher, report = start_workers(tmp_path, corpus_file, "ddp", max_steps=6)
    code, err = finish(launcher)
    assert code == 0, err[-3000:]
    assert [r["step"] for r in reports(report)] == [6, 6]
    rank0, rank1 = (torch.load(report / f"params-rank{r}.pt") for r in range(2))
    # The reference: one process, the same global batch of 4 streams, the same steps.
    lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "alone", model_config=lm.ModelConfig(**MODEL),
             tokenizer_config=lm.TokenizerConfig(kind="char"), config=lm.TrainConfig(**TRAIN, max_steps=6))
    tensors, _ = read_resume(tmp_path / "alone")
    alone = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    initial = lm.LanguageModel(load_checkpoint(tmp_path / "alone").model.config).state_dict()
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
        if name in alone:
            torch.testing.assert_close(value, alone[name], rtol=1e-4, atol=1e-5, msg=name)
            assert not torch.allclose(value, initial[name]), f"{name} did not train"
    # Only the first worker wrote, and what it wrote is its weights.
    saved, _ = read_resume(tmp_path / "run")
    torch.testing.assert_close(saved["model.rnn.weight_hh_l0"], rank0["rnn.weight_hh_l0"])
    assert saved["state.h"].shape == (1, 4, 32)  # the whole state: both workers' streams
    # Each worker scored its part of the validation text; together they scored all of it.
    together, alone = (json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1]) for run in ("run", "alone"))
    assert together["valid_loss"] == pytest.approx(alone["valid_loss"], rel=1e-6)


def test_max_time_and_ctrl_c_stop_both_workers_at_one_step_and_resume_continues(tmp_path, corpus_file):
    launcher, report = start_workers(tmp_path, corpus_file, "timed", max_time=2.0, epochs=1000, eval_every=5)
    code, err = finish(launcher)
    assert code == 0, err[-3000:]
    first, second = reports(report)
    assert first == second and first["stop"] == "max-time", (first, second)
    rank0, rank1 = (torch.load(report / f"params-rank{r}.pt") for r in range(2))
    assert all(torch.equal(value, rank1[name]) for name, value in rank0.items())  # one clock, one learning rate
    # Resume with two workers, and Ctrl-C the launcher once the resumed run has saved.
    metrics = tmp_path / "run" / "metrics.jsonl"
    evaluations = len(metrics.read_text().splitlines())
    launcher, report = start_workers(tmp_path, corpus_file, "interrupted", resume=True, max_time=1000.0, max_steps=100_000)
    wait_until(lambda: len(metrics.read_text().splitlines()) > evaluations, launcher)
    launcher.send_signal(signal.SIGINT)
    code, err = finish(launcher, timeout=60)
    assert code == 130, err[-3000:]
    first_again, second_again = reports(report)
    assert first_again == second_again and first_again["stop"] == "interrupted", (first_again, second_again)
    assert first_again["step"] > first["step"]
    _, meta = read_resume(tmp_path / "run")
    assert meta["step"] == first_again["step"]
    # Resume in one process: the saved state [layers, 4 streams, hidden] is its whole batch.
    result = lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "run",
                      config=lm.TrainConfig(max_steps=first_again["step"] + 2, max_time=1000.0, epochs=1000,
                                                                tune_cache=False), resume=True)
    assert result.step == first_again["step"] + 2


def test_cli_nproc_trains_and_a_killed_worker_stops_the_other_with_one_line(tmp_path, corpus_file):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "cli", "train", str(corpus_file), *TINY_CLI, "--max-steps", "100000",
               "--eval-every", "5", "--nproc", "2", "-o", str(out)]
    launcher = subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until((out / "config.json").exists, launcher)
    victim = next(pid for pid in children(launcher.pid) if "LOCAL_RANK=1" in environ(pid))
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    code, err = finish(launcher, timeout=60)
    assert time.monotonic() - killed < 20  # the agent waits 30 s before killing a worker that hangs
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors[-1].startswith("Error: worker 1 of 2 was killed by SIGKILL"), err[-3000:]
    assert any(line.startswith("Error: worker 0 of 2: another worker stopped") for line in errors), err[-3000:]
    loaded = lm.load(out)  # the last checkpoint is whole
    model, tokenizer = loaded.model, loaded.tokenizer
    assert model.config.hidden == 32 and tokenizer.vocab_size == model.config.vocab_size


def test_two_nodes_on_loopback_through_torchrun_rendezvous(tmp_path, corpus_file):
    endpoint = f"127.0.0.1:{free_port()}"
    out = tmp_path / "nodes"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", endpoint, "--rdzv-id", "lm-test", "-m", "cli", "train", str(corpus_file), *TINY_CLI,
         "--max-steps", "6", "-o", str(out)],
        env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [finish(node) for node in nodes]  # both, before judging: a failure on one shows on the other
    for code, err in finished:
        assert code == 0, "\n---\n".join(err[-3000:] for _, err in finished)
    assert sum("Training finished" in node.stdout_text for node in nodes) == 1  # one run, one writer
    _, meta = read_resume(out)
    assert meta["step"] == 6
    saved, _ = read_resume(out)
    assert saved["state.h"].shape == (1, 4, 32)  # two nodes of 2 streams each


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # already gone
        return []


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
