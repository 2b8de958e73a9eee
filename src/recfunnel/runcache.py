"""Finished training runs kept on disk, so that the same training is never done twice.

Chapters 2, 3 and 4 all measure against the same SASRec on MovieLens-100K, and chapter 3
reuses chapter 2's KuaiFormer. ``cached_training`` stores what such a run produced and,
when the very same run is asked for again, loads it instead of training.

"The same run" means the same key: a hash of everything its result depends on, namely
the package's source files, the model's class and initial weights, the random state when
training starts, its configuration (``model.cfg``: a flag that changes no weight, such as
KuaiFormer's logQ switch, still changes the run), the caller's description of the data
and settings (a split's fingerprint, a ``TrainConfig``), the device type, torch's version
and its thread count. A hit restores
the trained weights, the training ``History`` and the random state the run left behind, so
every later cell sees exactly what it would have seen after training; any change is a miss.

``RECFUNNEL_RUN_CACHE`` names the folder (default ``~/.cache/recfunnel/runs``); ``off``
switches the cache off. Entries are written to a temporary name and renamed when
complete, and read with ``weights_only=True``: no pickled code ever runs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recfunnel.runtime import resolve_device
from recfunnel.train import History, TrainConfig

CACHE_VAR = "RECFUNNEL_RUN_CACHE"
PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path | None:
    """The folder of cached runs, or None when ``RECFUNNEL_RUN_CACHE=off``."""
    value = os.environ.get(CACHE_VAR, "").strip()
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "recfunnel" / "runs"


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _describe(part: Any) -> str:
    """A stable text for one key part; a TrainConfig without its progress-bar settings."""
    if isinstance(part, TrainConfig):
        part = dataclasses.replace(part, desc="", progress=False)
    return repr(part)


def _rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.as_tensor(keys.astype(np.int64)), position, has_gauss,
                       gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples that saving may have turned into lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def run_key(model: nn.Module, device: str, *parts: Any) -> str:
    """The key of training ``model`` (as it is now, under the current random state) on
    ``device`` with what ``parts`` describe."""
    digest = hashlib.sha256()
    digest.update(_source_digest().encode())
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    digest.update(repr(getattr(model, "cfg", None)).encode() + repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    state = _rng_state()
    digest.update(repr(state["python"]).encode())
    digest.update(state["torch"].numpy().tobytes())
    digest.update(state["numpy"][1].numpy().tobytes() + repr(state["numpy"][2:]).encode())
    digest.update(f"{resolve_device(device).type} torch {torch.__version__} "
                  f"threads {torch.get_num_threads()}".encode())
    for part in parts:
        digest.update(_describe(part).encode())
    return digest.hexdigest()[:32]


def cached_training(model: nn.Module, train: Callable[[], History], cfg: TrainConfig,
                    *parts: Any, label: str = "this run") -> History:
    """Run ``train()`` (which trains ``model`` in place under ``cfg``), or load its result
    when the same run (``run_key``) has been done before. ``parts`` describe everything else
    the run reads: the data (its checksum), batch sizes, sampling settings."""
    folder = cache_dir()
    if folder is None:
        return train()
    path = folder / f"{run_key(model, cfg.device, cfg, *parts)}.pt"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
        except Exception as error:  # a damaged entry is a miss, and is replaced below
            print(f"{label}: the cached run could not be read ({type(error).__name__}); "
                  "training again")
        else:
            model.to(resolve_device(cfg.device))
            _set_rng_state(saved["rng"])
            print(f"{label}: the same training ran before; its result is loaded from the run "
                  f"cache (set {CACHE_VAR}=off to train again)")
            return History(**saved["history"])
    history = train()
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "history": dataclasses.asdict(history), "rng": _rng_state()}, partial)
    os.replace(partial, path)
    return history
