"""The suggestion engine an export carries: the lm package as one zip, lm-engine.zip.

runtime.py puts the zip first on sys.path (zipimport), so an export suggests and generates with
lm's own code, the strip `lm suggest` gives, where lm is not installed. The ONNX Runtime path
imports no torch, so the zip needs onnxruntime, numpy, rapidfuzz and safetensors (and
sentencepiece for subword models) beside it.

The zip holds the package as installed: each module's source, the package data (the keyboard
layouts, which lm/suggest/layout.py reads through importlib.resources, so from inside a zip
too), and beside each module its bytecode for the Python that wrote the export. zipimport
cannot write bytecode caches, so without it every start compiles the engine: importing it took
0.185 s from sources and 0.125 s with the bytecode (this two-core machine, Python 3.11). The
bytecode is an unchecked hash-based .pyc (PEP 552), valid whatever the entries' dates; another
Python refuses its magic number and zipimport compiles the source instead.
"""
from __future__ import annotations

import importlib.util
import marshal
import zipfile
from pathlib import Path

ENGINE_FILE = "lm-engine.zip"
PACKAGE = Path(__file__).resolve().parents[1]  # the lm package that writes the export
UNCHECKED_HASH_PYC = 0b01  # PEP 552 flags: hash-based, never checked against the source (the zip does not change)
ENTRY_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: entries say nothing about the machine that wrote them


def write_engine_zip(path: Path) -> None:
    """Write the lm package (sources, package data, bytecode) to the zip at `path`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in package_files():
            name = "lm/" + file.relative_to(PACKAGE).as_posix()
            data = file.read_bytes()
            _add(archive, name, data)
            if file.suffix == ".py":
                _add(archive, name + "c", bytecode(data, name))


def package_files() -> list[Path]:
    """Every file of the lm package as installed: modules and package data, no bytecode caches or hidden files."""
    found = []
    for path in PACKAGE.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(PACKAGE).parts)
        if path.is_file() and path.suffix not in (".pyc", ".pyo") and not hidden:
            found.append(path)
    return sorted(found)


def bytecode(source: bytes, name: str) -> bytes:
    """A module's .pyc (PEP 552, unchecked hash): magic, flags, the source's hash, the marshalled code."""
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    return (importlib.util.MAGIC_NUMBER + UNCHECKED_HASH_PYC.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, ENTRY_DATE)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16  # a plain readable file
    archive.writestr(entry, data)
