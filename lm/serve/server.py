"""Loading a checkpoint for serving, and running the app under uvicorn until SIGTERM or Ctrl-C."""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from typing import Callable

from fastapi import FastAPI

from ..backend.choose import choose_backend
from ..checkpoint.loader import load
from ..errors import ConfigError
from .app import create_app
from .settings import ServeSettings

GRACE_SECONDS = 5  # open streams get this long to finish when the server is asked to stop
# A server process that dies is replaced, unless this many died within RESTART_WINDOW seconds:
# then something is wrong with every one of them, and the server stops with an error.
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
log = logging.getLogger("lm.serve")


def default_processes(device: str = "cpu") -> int:
    """One server process per core on the CPU (the suggestion search is Python, which one
    process runs on one core at a time); one on a GPU, whose context cannot be forked."""
    return _cores() if device == "cpu" and hasattr(os, "fork") else 1


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_app(checkpoint=None, settings: ServeSettings | None = None, device: str = "auto", int8: bool = True,
             backend: str = "auto") -> FastAPI:
    """Load a checkpoint (the newest under checkpoints/ when None) and build the app around it.

    int8 weights are used on the CPU only; a GPU runs the float weights. backend: "auto"
    (ONNX Runtime on the CPU when it is installed), "torch" or "onnx" (lm.load).
    Torch gets cores / (processes × workers) threads each, so concurrent requests do not fight
    for the cores; ONNX Runtime steps a model on the thread that asks.
    """
    settings = settings or ServeSettings()
    settings.validate()
    backend = choose_backend(backend, device)
    device_type = "cpu"
    if backend == "torch":
        from .._util import pick_device

        device = pick_device(device)
        device_type = device.type
    if settings.processes is None:
        settings.processes = default_processes(device_type)
    if settings.processes > 1 and (device_type != "cpu" or not hasattr(os, "fork")):
        raise ConfigError(f"--processes {settings.processes} needs the CPU on a system with fork() "
                          "(a GPU's context cannot be shared by forked processes) — use --processes 1")
    if backend == "torch":  # before any model work: a process that forks must not have started torch's thread pool
        import torch

        torch.set_num_threads(max(1, _cores() // (settings.processes * settings.workers)))
    predictor = load(checkpoint, device, int8=int8, cache=settings.cache, ngram=settings.ngram, words=settings.words,
                     backend=backend)
    if settings.name == ServeSettings.name:
        settings.name = predictor.path.name
    settings.about = {
        "parameters": predictor.config.get("parameters") or _count_parameters(predictor),
        "weights": "int8" if predictor.int8 else "float32",
        "train_tokens": predictor.config.get("corpus", {}).get("train_tokens"),
        "metrics": predictor.metrics,
        **settings.about,
    }
    return create_app(predictor.backend, predictor.tokenizer, settings, predictor.lexicon, predictor.cache, predictor.ngram)


def _count_parameters(predictor) -> int:
    """The model's parameters, for a checkpoint whose config.json does not say (loads the PyTorch model)."""
    from ..model.network import count_parameters

    return count_parameters(predictor.model)


def listen(host: str = "127.0.0.1", port: int = 8000, processes: int = 1) -> socket.socket:
    """A listening socket (port 0: any free port), so a taken port is one clear error before serving.

    For several server processes the socket is only bound, with SO_REUSEPORT: each process
    listens on a socket of its own on the same port (`listening_copy`), and the kernel spreads
    new connections over them. (On one shared socket, whichever process wakes first accepts:
    all 8 connections of a load test went to one process of two.)

    Raises:
        ConfigError: the address cannot be bound.
    """
    shared = processes > 1 and hasattr(socket, "SO_REUSEPORT")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = _bind(info[0], info[4], reuse_port=False)
        if shared:  # a plain bind first: it fails if anyone holds the port, even another group
            address = sock.getsockname()
            sock.close()
            sock = _bind(info[0], address, reuse_port=True)
        else:
            sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}) — pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def listening_copy(sock: socket.socket) -> socket.socket:
    """A server process's own listening socket on the port `sock` holds with SO_REUSEPORT."""
    own = _bind(sock.family, sock.getsockname(), reuse_port=True)
    own.listen(2048)
    return own


def _bind(family, address, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def run(app: FastAPI, sock: socket.socket, processes: int = 1, ready: Callable[[], None] = lambda: None) -> int:
    """Serve until SIGTERM or Ctrl-C, then finish open requests (for up to GRACE_SECONDS).

    With processes > 1 the server forks that many copies of itself after the model is loaded
    (they share its weights), each accepting on its own socket on the port (`listen` with the
    same count): each has its own sessions, and a client's keep-alive connection stays with
    one process. Returns the exit code.

    Args:
        ready: called once every server process serves, so a client that connects then is
            not refused (e.g. to print the address).
    """
    # What exists now (modules, the app, the model) lives as long as the server: kept out of the
    # collector's full passes, which would otherwise walk it in the middle of a request, and
    # out of the pages it writes to, so forked processes go on sharing them.
    gc.freeze()
    if processes == 1:
        _serve(app, sock, ready)
        return 0
    return _Supervisor(app, sock, processes).run(ready)


def _serve(app: FastAPI, sock: socket.socket, started: Callable[[], None] = lambda: None) -> None:
    """Serve on a listening socket with uvicorn; `started` is called once uvicorn handles SIGTERM."""
    import uvicorn

    class Server(uvicorn.Server):
        stop_early = False  # a signal came before uvicorn listened for signals

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            self.should_exit = self.should_exit or self.stop_early
            started()

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_SECONDS,
                            lifespan="off")
    server = Server(config)
    # Until uvicorn takes over the signals, one only marks the server to stop as soon as it has
    # started. Afterwards uvicorn re-raises the signal that stopped it; with this handler in
    # place again, that re-raise is harmless and the process exits 0.
    mark = lambda *_: setattr(server, "stop_early", True)  # noqa: E731
    previous = {sig: signal.signal(sig, mark) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def _die_with(supervisor: int) -> None:
    """Linux: have this server process sent SIGTERM when the supervisor dies, even by SIGKILL,
    so no orphan goes on serving the port (or holding its parent's output pipes open)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != supervisor:  # it died before prctl: nobody would send the signal
        os._exit(0)


def _wait_for_bytes(fd: int, count: int) -> None:
    """Read `count` bytes from a pipe, or until every writer has closed it (a process that
    failed before listening closes it by exiting)."""
    while count > 0:
        data = os.read(fd, count)  # a signal's handler runs, then the read goes on (PEP 475)
        if not data:
            return
        count -= len(data)


def _is_bound_only(sock: socket.socket) -> bool:
    return not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


class _Supervisor:
    """Forks the server processes, replaces one that dies, and stops them all on SIGTERM or Ctrl-C."""

    def __init__(self, app: FastAPI, sock: socket.socket, processes: int):
        self.app, self.sock, self.processes = app, sock, processes
        self.children: set[int] = set()
        self.deaths: deque[float] = deque()
        self.stopping = False
        self.listening_pipe: int | None = None  # while the first processes start: where each says it serves

    def run(self, ready: Callable[[], None]) -> int:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        code = 0
        try:
            listening, self.listening_pipe = os.pipe()
            for _ in range(self.processes):
                self._fork()
            os.close(self.listening_pipe)
            self.listening_pipe = None
            _wait_for_bytes(listening, self.processes)  # each process writes one once it serves
            os.close(listening)
            if not self.stopping:
                ready()
            while self.children:
                pid, status = os.wait()  # retried after a signal's handler (PEP 475)
                if pid not in self.children:
                    continue
                self.children.discard(pid)
                exit_code = os.waitstatus_to_exitcode(status)
                if self.stopping:
                    code = code or max(exit_code, 0)
                elif self._may_restart():
                    log.error("server process %d exited (%d); starting another", pid, exit_code)
                    self._fork()
                else:
                    log.error("%d server processes died within %g s; stopping", MAX_RESTARTS, RESTART_WINDOW)
                    self._stop()
                    code = 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()
        return code

    def _fork(self) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self.children.add(pid)
            return
        code = 0
        try:
            _die_with(supervisor)
            if "torch" in sys.modules:
                # torch rebuilds its thread pool in a forked child on first use; two model threads
                # doing that at once can race ("Invalid thread pool!"), so rebuild it now, alone.
                torch = sys.modules["torch"]
                torch.set_num_threads(torch.get_num_threads())
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            sock = listening_copy(self.sock) if _is_bound_only(self.sock) else self.sock
            _serve(self.app, sock, self._started)
        except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
            log.exception("server process failed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _started(self) -> None:
        """In a server process: tell the supervisor this one serves (the first ones only)."""
        if self.listening_pipe is not None:
            os.write(self.listening_pipe, b"+")
            os.close(self.listening_pipe)
            self.listening_pipe = None

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESTART_WINDOW:
            self.deaths.popleft()
        return len(self.deaths) < MAX_RESTARTS

    def _stop(self, *_) -> None:
        """Ask every server process to finish (a terminal's Ctrl-C reaches them too: a second
        SIGTERM is harmless to uvicorn, a second SIGINT would cut open streams short)."""
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
