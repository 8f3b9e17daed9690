"""Which backend runs inference: `--backend auto|torch|onnx` (imports neither torch nor numpy).

auto: ONNX Runtime on the CPU when it is installed (several times faster per token than
torch's int8 and no torch to import), PyTorch on a GPU or when ONNX Runtime is missing.
"""
from __future__ import annotations

import importlib.util
import os

from ..errors import ConfigError

BACKENDS = ("auto", "torch", "onnx")


def choose_backend(name: str, device: str = "auto") -> str:
    """"torch" or "onnx" for --backend NAME and --device DEVICE (auto, cpu, cuda, cuda:N)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} — use auto, torch or onnx")
    device = str(device)
    if name == "onnx" and device.startswith("cuda"):
        raise ConfigError(f"--backend onnx runs on the CPU, not --device {device} — use --backend torch for a GPU")
    if name != "auto":
        return name
    if device.startswith("cuda") or device == "auto" and gpu_present():
        return "torch"
    return "onnx" if onnx_installed() else "torch"


def onnx_installed() -> bool:
    """Whether ONNX Runtime can be imported (looked up, not imported: that costs a tenth of a second)."""
    return importlib.util.find_spec("onnxruntime") is not None


def gpu_present() -> bool:
    """Whether an NVIDIA driver is loaded, judged without importing torch (which takes a second)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")
