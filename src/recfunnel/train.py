"""One training loop for every chapter.

``fit(model, batches, step, cfg, evaluate)`` trains any ``nn.Module`` whose loss a
``step(model, batch)`` function returns (by default ``model(batch)`` itself returns the
loss, or ``(loss, logs)``), with AdamW, gradient clipping, mixed precision on CUDA only,
early stopping on a validation metric, a ``tqdm`` progress bar, checkpoints, and
DistributedDataParallel when launched by ``torchrun``. It returns a ``History`` that
``plots.training_curves`` draws.

No callbacks and no subclassing: what a model needs beyond this lives in its
``training_step`` and ``evaluate`` functions.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from recfunnel import checks
from recfunnel.runtime import epoch_rng, resolve_device

Batches = Iterable | Callable[[int], Iterable]
StepFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]
EvalFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``fit``; a chapter overrides them with ``dataclasses.replace``."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm; None switches clipping off
    amp: bool = True  # mixed precision; used only when the device is CUDA
    device: str = "auto"
    monitor: str | None = None  # key of evaluate()'s dict that picks the best epoch
    mode: str = "max"  # "max" or "min": which direction of `monitor` is better
    patience: int | None = None  # epochs without improvement before stopping; None: never
    restore_best: bool = True  # load the best epoch's weights back at the end
    checkpoint_path: str | None = None  # the best weights are saved here as they improve
    progress: bool = True
    desc: str = "training"  # label of the progress bar
    seed: int | None = None  # seeds torch (dropout, in-model draws) when fit starts
    # wall-clock budget: no new epoch starts once the epochs so far (with their
    # evaluations) took this many seconds; None: no budget
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        checks.positive_int("TrainConfig.epochs", self.epochs)
        checks.real("TrainConfig.lr", self.lr, low=0.0, low_open=True)
        checks.real("TrainConfig.weight_decay", self.weight_decay, low=0.0)
        if self.grad_clip is not None:  # None switches clipping off; 0 would zero every step
            checks.real("TrainConfig.grad_clip", self.grad_clip, low=0.0, low_open=True)
        checks.one_of("TrainConfig.mode", self.mode, ("max", "min"))
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise checks.InvalidInputError(f"TrainConfig.monitor: must be a metric name, got "
                                           f"{self.monitor!r}")
        if self.patience is not None:
            checks.positive_int("TrainConfig.patience", self.patience)
            if self.monitor is None:
                raise checks.InvalidInputError(
                    "TrainConfig.patience: early stopping needs a `monitor` metric name")
        if self.seed is not None:
            checks.positive_int("TrainConfig.seed", self.seed, minimum=0)
        if self.max_seconds is not None:
            checks.real("TrainConfig.max_seconds", self.max_seconds, low=0.0, low_open=True)


@dataclass
class History:
    """What happened during ``fit``: one row per optimiser step and one per epoch."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    monitor: str | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False  # by ``patience``
    stopped_by_budget: bool = False  # by ``max_seconds``

    def column(self, key: str, level: str = "epochs") -> list[float]:
        """The values of ``key`` over epochs (or steps), for plotting and tests."""
        rows = self.epochs if level == "epochs" else self.steps
        return [row[key] for row in rows if key in row]

    @property
    def seconds(self) -> float:
        return sum(row["seconds"] for row in self.epochs)

    def plot(self, metrics: Iterable[str] | None = None, **kwargs):
        """Training loss (and validation metrics) against epochs; see ``plots``."""
        from recfunnel.plots import training_curves

        return training_curves(self, metrics=metrics, **kwargs)


# --------------------------------------------------------------------------- distributed


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); starts the process group when ``torchrun`` launched us."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader that shards the data across ranks when running distributed."""
    rank, world_size = distributed_rank()
    if world_size > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )
        return DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last,
                          collate_fn=collate_fn)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size, shuffle=shuffle, generator=generator,
                      drop_last=drop_last, collate_fn=collate_fn)


def shuffled(data: Any, batch_size: int, seed: int = 0, min_batch: int = 1
             ) -> Callable[[int], list]:
    """``epoch -> batches``: the rows of ``data`` (anything with ``len`` that a LongTensor
    of rows indexes: a tensor, ``SeqBatch``, ``WindowBatch``, ``RankBatch``) in a fresh
    order each epoch (``runtime.epoch_rng(seed, epoch)``), cut into ``batch_size`` rows;
    a last batch smaller than ``min_batch`` is dropped (in-batch losses need two rows)."""
    if batch_size < 1 or min_batch < 1:
        raise ValueError("batch_size and min_batch must be positive")

    def batches(epoch: int) -> list:
        order = torch.as_tensor(epoch_rng(seed, epoch).permutation(len(data)))
        return [data[rows] for rows in order.split(batch_size) if len(rows) >= min_batch]

    return batches


# --------------------------------------------------------------------------- helpers


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, dataclass with ``.to``, tuple, list or dict) to ``device``."""
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def _default_step(model: nn.Module, batch: Any):
    return model(batch)


def _split_step_output(out) -> tuple[torch.Tensor, dict[str, float]]:
    loss, logs = (out if isinstance(out, tuple) else (out, {}))
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError("the step must return a scalar loss tensor, or (loss, logs)")
    return loss, {key: float(value) for key, value in logs.items()}


def save_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    **meta: Any,
) -> None:
    """Save weights (and optimiser state) so ``load_checkpoint`` can read them safely.

    ``meta`` may hold numbers, strings, None, tensors and lists, tuples and dicts of them
    (NumPy scalars are stored as Python numbers); anything else is refused before writing,
    since ``weights_only`` loading could not read it back. The file is written under a
    temporary name and renamed, so a failed save never destroys the previous checkpoint."""
    state = {"model": model.state_dict(), "meta": {key: _plain_meta(f"meta[{key!r}]", value)
                                                   for key, value in meta.items()}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as tmp:
        partial = Path(tmp.name)
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _plain_meta(name: str, value: Any) -> Any:
    """``value`` in a form ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_meta(f"{name}[{i}]", v) for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _plain_meta(f"{name}[{k!r}]", v) for k, v in value.items()}
    raise checks.InvalidInputError(f"{name}: a {type(value).__name__} cannot be stored in a "
                                   "checkpoint (numbers, strings, tensors and their lists "
                                   "and dicts can)")


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code runs); returns its meta."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state.get("meta", {})


def _amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    batches: Batches,
    step: StepFn | None = None,
    cfg: TrainConfig = TrainConfig(),
    evaluate: EvalFn | None = None,
) -> History:
    """Train ``model`` in place and return its ``History``.

    batches:  a re-iterable of batches (a DataLoader, a list), or ``epoch -> iterable``
              for data that is redrawn every epoch (fresh negatives, say).
    step:     ``step(model, batch) -> loss`` or ``(loss, logs)``; defaults to ``model(batch)``.
              Under DDP ``model`` is the wrapped module, so call it, not its methods.
    evaluate: ``evaluate(model) -> {"metric": value}``, called after every epoch in
              eval mode without gradients; ``cfg.monitor`` names the metric to track.
    """
    rank, world_size = distributed_rank()
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    model.to(device)
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if world_size > 1 else model
    )
    step = step or _default_step
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = _amp_dtype() if use_amp else torch.float32
    # a gradient scaler is needed for float16 only; bfloat16 has float32's range
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history = History(monitor=cfg.monitor)
    best_state: dict[str, torch.Tensor] | None = None
    epochs_since_best = 0
    sign = 1.0 if cfg.mode == "max" else -1.0

    per_epoch = None if callable(batches) else _length(batches)
    total = per_epoch * cfg.epochs if per_epoch is not None else None
    bar = tqdm(total=total, desc=cfg.desc, disable=not cfg.progress or rank != 0,
               unit="step", dynamic_ncols=True)
    global_step = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            epoch_batches = batches(epoch) if callable(batches) else batches
            sampler = getattr(epoch_batches, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)  # reshuffle the shards every epoch
            model.train()
            started, loss_sum, n_steps = time.perf_counter(), 0.0, 0
            for batch in epoch_batches:
                batch = move_to(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss, logs = _split_step_output(step(trained, batch))
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch}, step {global_step + 1}"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                n_steps += 1
                loss_sum += loss.item()
                history.steps.append({"step": global_step, "epoch": epoch,
                                      "loss": loss.item(), **logs})
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", refresh=False)
            if n_steps == 0:
                empty = _length(epoch_batches) == 0
                raise checks.InvalidInputError(
                    f"batches: epoch {epoch} has no batch (the list is empty)" if empty else
                    f"batches: epoch {epoch} saw no batch: pass a re-iterable (a DataLoader "
                    "or a list) or a function epoch -> batches, not a one-shot generator"
                )
            row = {"epoch": epoch, "train_loss": loss_sum / n_steps}
            if evaluate is not None:
                model.eval()
                with torch.no_grad():
                    row.update(_metrics_of(evaluate(model), epoch))
                model.train()
            row["seconds"] = time.perf_counter() - started
            history.epochs.append(row)
            out_of_time = (cfg.max_seconds is not None and epoch < cfg.epochs
                           and history.seconds >= cfg.max_seconds)

            if cfg.monitor is None:
                if out_of_time:
                    history.stopped_by_budget = True
                    break
                continue
            if cfg.monitor not in row:
                raise KeyError(f"monitor {cfg.monitor!r} is not among the logged {sorted(row)}")
            value = row[cfg.monitor]
            if math.isnan(value):
                raise FloatingPointError(f"evaluate returned NaN for the monitored "
                                         f"{cfg.monitor!r} at epoch {epoch}: no epoch can be "
                                         "judged best against it")
            if history.best_value is None or sign * (value - history.best_value) > 0:
                history.best_epoch, history.best_value = epoch, value
                epochs_since_best = 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                            model.state_dict().items()})
                if cfg.checkpoint_path is not None and rank == 0:
                    save_checkpoint(cfg.checkpoint_path, model, optimizer, epoch=epoch,
                                    **{cfg.monitor: value})
            else:
                epochs_since_best += 1
            bar.set_postfix(epoch=epoch, **{cfg.monitor: f"{value:.4f}"})
            if cfg.patience is not None and epochs_since_best >= cfg.patience:
                history.stopped_early = True
                break
            if out_of_time:
                history.stopped_by_budget = True
                break
    finally:
        bar.close()
    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def _metrics_of(result: Any, epoch: int) -> dict[str, float]:
    """``evaluate``'s dict as floats, refused when it is not a dict of numbers."""
    if not isinstance(result, Mapping):
        raise checks.InvalidInputError(f"evaluate: must return a dict of metrics, got "
                                       f"{type(result).__name__} {result!r} at epoch {epoch}")
    out = {}
    for key, value in result.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise checks.InvalidInputError(
                f"evaluate: metric {key!r} is {value!r}, not a number (epoch {epoch})") from None
    return out


def _length(batches: Iterable) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None
