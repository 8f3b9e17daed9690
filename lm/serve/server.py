"""Loading a checkpoint for serving, and running the app under uvicorn until SIGTERM or Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket

import torch
from fastapi import FastAPI

from .._util import pick_device
from ..cache import CacheConfig
from ..checkpoint import load_checkpoint, load_ngram
from ..errors import ConfigError
from ..lexicon import Lexicon
from ..model import count_parameters, quantize_int8
from .app import create_app
from .settings import ServeSettings

GRACE_SECONDS = 5  # open streams get this long to finish when the server is asked to stop


def load_app(checkpoint=None, settings: ServeSettings | None = None, device: str = "auto", int8: bool = True) -> FastAPI:
    """Load a checkpoint (the newest under checkpoints/ when None) and build the app around it.

    int8 weights are used on the CPU only; a GPU runs the float weights.
    Torch gets cores / workers threads each, so concurrent requests do not fight for the cores.
    """
    settings = settings or ServeSettings()
    settings.validate()
    ckpt = load_checkpoint(checkpoint, pick_device(device))
    int8 = int8 and ckpt.model.embedding.weight.device.type == "cpu"
    model = quantize_int8(ckpt.model) if int8 else ckpt.model
    if settings.name == ServeSettings.name:
        settings.name = ckpt.path.name
    settings.about = {
        "parameters": ckpt.config.get("parameters", count_parameters(ckpt.model)),
        "weights": "int8" if int8 else str(ckpt.model.embedding.weight.dtype).removeprefix("torch."),
        "train_tokens": ckpt.config.get("corpus", {}).get("train_tokens"),
        "metrics": ckpt.metrics,
        **settings.about,
    }
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // settings.workers))
    cache = CacheConfig.from_dict(ckpt.config.get("cache") or {}) if settings.cache else None
    ngram = load_ngram(ckpt.path) if settings.ngram else None
    return create_app(model, ckpt.tokenizer, settings, Lexicon.load(ckpt.path), cache, ngram)


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket (port 0: any free port), so a taken port is one clear error before serving.

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}) — pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve until SIGTERM or Ctrl-C, then finish open requests (for up to GRACE_SECONDS) and return."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_SECONDS,
                            lifespan="off")
    # uvicorn re-raises the signal that stopped it once it has shut down; with these no-op
    # handlers in place that re-raise is harmless and the process exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
