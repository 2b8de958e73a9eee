"""Reproducibility and hardware: seeds, device resolution and an environment report.

Every chapter starts with ``set_seed(SEED)``, ``device = resolve_device(DEVICE)`` and
``print(environment_report(device))``, so a reader can tell which run produced a figure.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from importlib import metadata

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels.

    ``deterministic=True`` turns on ``torch.use_deterministic_algorithms`` in warn-only
    mode, so an operation without a deterministic kernel warns instead of failing, and
    sets the cuBLAS workspace variable that deterministic CUDA matmuls need.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The one random stream behind every epoch's training order in the package: the
    same (seed, epoch) gives the same order on every machine, and different epochs or
    seeds give independent ones (NumPy seeds a generator from the pair itself)."""
    return np.random.default_rng([seed, epoch])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; other names are checked.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    name = device.lower().strip()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICE_CHOICES}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was asked for but this torch has no MPS backend")
    return torch.device(name)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report(device: str | torch.device = "auto") -> str:
    """A few lines naming the versions and hardware of this run (printed by every chapter)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        hardware = f"cuda ({torch.cuda.get_device_name(dev)})"
    else:
        hardware = f"{dev.type} ({os.cpu_count()} CPU cores)"
    packages = ("recfunnel", "torch", "numpy", "matplotlib", "faiss-cpu")
    lines = [
        f"python      {platform.python_version()} ({sys.platform})",
        *(f"{name:<11} {_version(name)}" for name in packages),
        f"device      {hardware}",
    ]
    return "\n".join(lines)
