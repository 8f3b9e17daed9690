"""onnxruntime-web for `lm export --web`: the pinned npm package, fetched once, verified, cached.

The page runs the model with onnxruntime-web's WebAssembly build, and must work offline, so
its files are copied into every web export instead of being fetched from a CDN. The package
comes from the npm registry once per machine and is kept as the registry's tarball in the
user's cache (~/.cache/lm, or $XDG_CACHE_HOME/lm), checked against the registry's sha512
`dist.integrity` for the pinned version each time it is used. A machine without the registry
passes a copy: `--onnxruntime-web PATH` (or $LM_ONNXRUNTIME_WEB), either the tarball
(`npm pack onnxruntime-web@VERSION`) or the unpacked package folder.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .._util import first_line
from ..errors import ExportError

VERSION = "1.31.1"
# `npm view onnxruntime-web@1.31.1 dist.integrity`: the registry's checksum of the tarball.
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz"
ENV = "LM_ONNXRUNTIME_WEB"
FLAG = "--onnxruntime-web"
# What the page loads: the WebAssembly-only ES module, which imports its Emscripten loader and
# the SIMD build from `ort.env.wasm.wasmPaths` (the same build runs single-threaded).
FILES = ("dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm")
FETCH_TIMEOUT_S = 120


def onnxruntime_web_files(source: str | Path | None = None) -> dict[str, bytes]:
    """The files of onnxruntime-web the page needs, by file name.

    Args:
        source: a tarball or unpacked package of the pinned version; None: $LM_ONNXRUNTIME_WEB,
            else the cached tarball, fetched from the npm registry when it is not cached.
    Raises:
        ExportError: the package cannot be fetched, or a copy is not the pinned version.
    """
    source = source or os.environ.get(ENV)
    if source:
        path = Path(source).expanduser()
        if path.is_dir():
            return _from_folder(path)
        if path.is_file():
            return _from_tarball(_verified(path.read_bytes(), path))
        raise ExportError(f"{path} (given for onnxruntime-web) does not exist — pass the .tgz of "
                          f"onnxruntime-web@{VERSION} or its unpacked folder to {FLAG}")
    return _from_tarball(_cached_tarball())


def cached_tarball_path() -> Path:
    """Where the fetched tarball is kept."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lm"
    return cache / f"onnxruntime-web-{VERSION}.tgz"


def _cached_tarball() -> bytes:
    """The verified tarball from the cache; fetched (and cached) when missing or damaged."""
    path = cached_tarball_path()
    if path.is_file():
        data = path.read_bytes()
        if _matches(data):
            return data
    data = _verified(_fetch(), TARBALL_URL)
    try:  # written atomically: a second export at the same time finds a whole file or none
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
            f.write(data)
        os.replace(f.name, path)
    except OSError:
        pass  # no cache to keep it in: the next export fetches it again
    return data


def _fetch() -> bytes:
    try:
        with urllib.request.urlopen(TARBALL_URL, timeout=FETCH_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or first_line(e)
        raise ExportError(f"cannot fetch onnxruntime-web {VERSION} from the npm registry ({reason}) — connect "
                          f"once, or pass {FLAG} PATH (the .tgz of `npm pack onnxruntime-web@{VERSION}`)") from None


def _matches(data: bytes) -> bool:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode() == INTEGRITY


def _verified(data: bytes, where) -> bytes:
    if not _matches(data):
        raise ExportError(f"{where} is not onnxruntime-web {VERSION} as the npm registry publishes it (its sha512 "
                          f"differs) — pass the genuine .tgz to {FLAG}, or delete it to fetch it again")
    return data


def _from_tarball(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {Path(name).name: tar.extractfile(f"package/{name}").read() for name in FILES}


def _from_folder(folder: Path) -> dict[str, bytes]:
    """An unpacked package (no checksum to verify: its package.json must name the pinned version)."""
    try:
        version = json.loads((folder / "package.json").read_text(encoding="utf-8")).get("version")
        if version != VERSION:
            raise ExportError(f"{folder} holds onnxruntime-web {version}, not {VERSION} — pass "
                              f"onnxruntime-web@{VERSION} to {FLAG}")
        return {Path(name).name: (folder / name).read_bytes() for name in FILES}
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder} is not an unpacked onnxruntime-web package ({first_line(e)}) — pass "
                          f"the .tgz of onnxruntime-web@{VERSION} or its unpacked folder to {FLAG}") from None
