"""Chapter 6's experiments: MARM trained in stream order on exposure streams, and read out.

Training is streaming (card section 9: "order matters"): epoch after epoch, the users'
exposures are served position by position in time order, each position one batch of every
user's request, each read from the cache that the earlier positions wrote with the
parameters current at the time (stale afterwards, and never differentiated). The ``fresh``
variant recomputes every request's receptive field with the current parameters instead
(gradients reach the past; L*n times the work), the reference against which staleness is
measured. After training, a final pass serves the whole stream with the final parameters,
and the valid and test positions are read from it.

    streams = make_exposures(ExposureConfig(n_users=1_000))
    model = MARM(MARMConfig(streams.cfg.n_items + 1, streams.cfg.n_topics, n_layers=2))
    history = fit_marm(model, streams, TrainConfig(epochs=3, lr=3e-3))
    readout = marm_readout(model, streams, "test")   # GAUC per task, per-user AUC
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel import checks
from recfunnel.data.exposures import ExposureConfig, ExposureStreams, make_exposures
from recfunnel.metrics import auc
from recfunnel.models.marm import (
    MARM,
    ExposureCache,
    MARMConfig,
    recompute_request,
    request,
    serving_flops,
)
from recfunnel.profiles import MARMSize
from recfunnel.runtime import resolve_device
from recfunnel.study import Measurement
from recfunnel.train import History, TrainConfig, fit

TASKS = ("click", "long_view")
# the chapter's variants: name -> (MARMConfig changes, trained fresh). "trained fresh"
# recomputes every request's receptive field with the current parameters during training
# (gradients reach the past); every variant is served from the cache all the same
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "L=1": ({"n_layers": 1}, False),
    "L=2": ({"n_layers": 2}, False),
    "L=2 layer-0 history": ({"n_layers": 2, "history": "layer0"}, False),
    "L=2 trained fresh": ({"n_layers": 2}, True),
}


def _serve(model: MARM, data: Mapping[str, torch.Tensor], cache: ExposureCache,
           position: int, fresh: bool, users: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, tasks] of ``users``' (default: everyone's) exposure at ``position``."""
    if users is None:
        users = torch.arange(data["items"].shape[0], device=data["items"].device)
    if fresh:
        return recompute_request(model, data["items"][users], data["topics"][users],
                                 data["feedback"][users], position)
    return request(model, cache, data["items"], data["topics"], data["feedback"], users,
                   position)[0]


@torch.no_grad()
def stream_logits(model: MARM, streams: ExposureStreams, fresh: bool = False, start: int = 0,
                  cache: ExposureCache | None = None) -> np.ndarray:
    """[U, T, tasks] the logits of every exposure, the stream served in time order with the
    model's current parameters into ``cache`` (default: a new, empty one). With ``start``,
    serving begins there: the earlier exposures were never written (a cold cache, whose
    misses fall back to embeddings and are counted in ``cache.miss_rate``), and their
    logits are 0."""
    model.eval()
    device = next(model.parameters()).device
    data = streams.tensors(device)
    cache = cache or ExposureCache.for_model(model, streams.n_users, streams.length)
    out = torch.zeros(streams.n_users, streams.length, model.cfg.n_tasks)
    for t in range(checks.positive_int("start", start, minimum=0), streams.length):
        out[:, t] = _serve(model, data, cache, t, fresh).float().cpu()
    return out.numpy()


def per_user_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users with both labels [U'], their AUC [U']) from labels and scores [U, P]."""
    both = (labels.max(axis=1) == 1) & (labels.min(axis=1) == 0)
    users = np.flatnonzero(both)
    return users, np.array([auc(labels[u], scores[u]) for u in users])


def marm_readout(model: MARM, streams: ExposureStreams, period: str = "test",
                 logits: np.ndarray | None = None) -> dict:
    """Per task: GAUC (per-user AUC weighted by exposures, as Kuaishou reports it) and the
    per-user AUC for paired comparisons, on ``period``'s positions; the cache's miss rate
    of the serving pass is not needed (every predecessor is served before it is read)."""
    logits = stream_logits(model, streams) if logits is None else logits
    span = streams.period(period)
    labels = streams.labels[:, span]  # [U, P, 2]
    out: dict = {"per_user": {}}
    for index, task in enumerate(TASKS):
        users, values = per_user_auc(labels[..., index], logits[:, span, index])
        weights = np.full(len(users), span.stop - span.start)
        out[f"gauc_{task}"] = float(np.average(values, weights=weights))
        out["per_user"][f"auc_{task}"] = values
        out[f"users_{task}"] = users
    return out


def fit_marm(model: MARM, streams: ExposureStreams, cfg: TrainConfig, batch_users: int = 128,
             fresh: bool = False, monitor: bool = True) -> History:
    """Train in stream order for ``cfg.epochs`` passes over the training positions
    (``train.fit``): position by position, each position's requests in batches of
    ``batch_users`` users (in a fixed user order: the order within one position does not
    matter, since a request only reads its own user's past). With ``monitor``, each epoch
    ends with a serving pass and validation GAUC of clicks."""
    device = resolve_device(cfg.device)
    model.to(device)
    data = streams.tensors(device)
    labels = data["labels"]
    chunks = torch.arange(streams.n_users, device=device).split(
        checks.positive_int("batch_users", batch_users))
    state = {}

    def steps(epoch: int) -> list[tuple[int, torch.Tensor]]:
        state["cache"] = ExposureCache.for_model(model, streams.n_users, streams.length)
        return [(t, users) for t in range(streams.train_end) for users in chunks]

    def step(module: MARM, batch: tuple[int, torch.Tensor]) -> torch.Tensor:
        position, users = batch
        logits = _serve(module, data, state["cache"], position, fresh, users)
        return F.binary_cross_entropy_with_logits(logits, labels[users, position])

    def evaluate(module: MARM) -> dict[str, float]:
        return {"valid_gauc": marm_readout(module, streams, "valid")["gauc_click"]}

    if monitor:
        cfg = dataclasses.replace(cfg, monitor="valid_gauc", mode="max")
    return fit(model, steps, step, cfg, evaluate if monitor else None)


# --------------------------------------------------------------------------- the chapter's runs


def streams_for(size: MARMSize, seed: int = 0) -> ExposureStreams:
    """The chapter's exposure streams at ``size`` (a world drawn from ``seed``)."""
    return make_exposures(ExposureConfig(n_users=size.users, n_items=size.items,
                                         n_topics=size.topics, length=size.length, seed=seed))


def config_for(size: MARMSize, streams: ExposureStreams, **changes: Any) -> MARMConfig:
    """MARM at ``size``'s width, heads and window for ``streams``, with ``changes``."""
    base = {"d_model": size.d_model, "n_heads": size.heads, "d_ffn": 2 * size.d_model,
            "window": size.window}
    return MARMConfig(streams.cfg.n_items + 1, streams.cfg.n_topics, **(base | changes))


def train_variant(size: MARMSize, streams: ExposureStreams, cfg: MARMConfig, fresh: bool,
                  seed: int, epochs: int | None = None, device: str = "auto",
                  progress: bool = True, desc: str = "MARM") -> tuple[MARM, Measurement]:
    """Train one variant in stream order (``fit_marm``, early stopping on validation click
    GAUC) from ``seed``'s initialisation and read it out on the test period: GAUC per task,
    each test user's AUC for paired comparisons, and the serving FLOPs per request."""
    torch.manual_seed(seed)
    model = MARM(cfg)
    history = fit_marm(model, streams, TrainConfig(
        epochs=epochs or size.epochs, lr=size.lr, patience=size.patience,
        monitor="valid_gauc", progress=progress, desc=desc, device=device, seed=seed),
        batch_users=size.batch_users, fresh=fresh)
    readout = marm_readout(model, streams, "test")
    return model, Measurement(
        metrics={f"gauc_{t}": readout[f"gauc_{t}"] for t in TASKS},
        per_user={f"auc_{t}": readout["per_user"][f"auc_{t}"] for t in TASKS},
        epochs=len(history.epochs), best_epoch=history.best_epoch,
        extra={"serving_flops": serving_flops(cfg, "cached"), "history": history.epochs})
