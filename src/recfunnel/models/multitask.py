"""What every multi-task ranker shares: the feature embedding, one tower per task, the loss,
training, per-task AUC/GAUC, and the expert diagnostics read from a ``Trace``.

A ranker is composed, not inherited: ``MultiTaskRanker(embed, mixer, towers)``. The
*mixer* turns the feature vector v [B, d_v] into one representation per task; shared-bottom,
MMoE, CGC/PLE (``models.multitask_baselines``) and HoME (``models.home``) are mixers and
differ there and nowhere else, so their comparison is fair by construction. Each model has
a config dataclass whose ``mixer(d_v, tasks, groups)`` builds its mixer, and
``build_ranker(config, data)`` the whole ranker; variants are ``dataclasses.replace``.

    ranker = build_ranker(HoMEConfig(), impressions)
    loss, logs = ranker.loss(batch)  # batch: data.ranking.RankBatch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.data.impressions import Impressions
from recfunnel.data.ranking import RankBatch
from recfunnel.layers.features import FieldEmbedding
from recfunnel.layers.moe import (
    dead_unit_fraction,
    degradation,
    gate_mass,
    own_expert_share,
    scale_spread,
)
from recfunnel.metrics import auc, gauc


@dataclass
class Trace:
    """What the experts did on a batch, for the diagnostics.

    outputs: {layer: [B, E, d] expert outputs}; gates: {layer: {owner: [B, E]}} (owner: a
    task, or a group for HoME's meta layer); shared: {layer: indices of experts that several
    owners may read}; own: {layer: {task: indices of that task's own experts}}."""

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    gates: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    shared: dict[str, list[int]] = field(default_factory=dict)
    own: dict[str, dict[str, list[int]]] = field(default_factory=dict)


class Tower(nn.Sequential):
    """A task's head: r [B, d] -> Linear -> ReLU -> Linear -> logit [B, 1]."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class Mixer(Protocol):
    """v [B, d_v] -> one [B, d_out] representation per task; fills ``trace`` if given."""

    d_out: int
    task_layer: str  # the Trace layer whose gates are per task

    def __call__(self, v: torch.Tensor, trace: Trace | None = None) -> list[torch.Tensor]: ...


class MixerConfig(Protocol):
    """What a model's config provides: the embedding and tower sizes and its mixer."""

    d_emb: int
    tower_hidden: int

    def mixer(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
              ) -> nn.Module: ...


class MultiTaskRanker(nn.Module):
    """Feature embedding -> mixer -> one tower per task -> logits [B, T]. The loss is the
    sum over tasks of the mean binary cross-entropy (equal task weights)."""

    def __init__(self, embed: FieldEmbedding, mixer: nn.Module, tasks: Sequence[str],
                 tower_hidden: int):
        super().__init__()
        if len(tasks) < 2:
            raise ValueError("a multi-task ranker needs at least two tasks")
        self.tasks = tuple(tasks)
        self.embed, self.mixer = embed, mixer
        self.towers = nn.ModuleList(Tower(mixer.d_out, tower_hidden) for _ in self.tasks)

    @property
    def task_layer(self) -> str:
        return self.mixer.task_layer

    def forward(self, batch: RankBatch, trace: Trace | None = None) -> torch.Tensor:
        """batch.features [B, F] -> logits [B, T]."""
        reps = self.mixer(self.embed(batch.features), trace)
        return torch.cat([tower(r) for tower, r in zip(self.towers, reps, strict=True)], dim=1)

    def loss(self, batch: RankBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.labels is None:
            raise ValueError("the loss needs a batch with labels")
        logits = self(batch)  # [B, T]
        per_task = F.binary_cross_entropy_with_logits(logits, batch.labels,
                                                      reduction="none").mean(0)
        logs = dict(zip((f"bce_{t}" for t in self.tasks), per_task.detach().tolist(),
                        strict=True))
        return per_task.sum(), logs


def build_ranker(cfg: MixerConfig, data: Impressions) -> MultiTaskRanker:
    """The ranker ``cfg`` describes, for ``data``'s fields, tasks and task groups: the
    embedding is built first, then the mixer, then the towers (so one seed gives one
    initialisation whatever the model)."""
    embed = FieldEmbedding(data.cardinalities, cfg.d_emb)
    mixer = cfg.mixer(embed.d_out, data.tasks, data.groups)
    return MultiTaskRanker(embed, mixer, data.tasks, cfg.tower_hidden)


def count_parameters(model: nn.Module, skip_embeddings: bool = True) -> int:
    """Trainable parameters, by default without the feature tables all models share."""
    return sum(p.numel() for name, p in model.named_parameters()
               if p.requires_grad and not (skip_embeddings and name.startswith("embed.")))


# --------------------------------------------------------------------------- train, evaluate


@torch.no_grad()
def predict(model: MultiTaskRanker, data: Impressions, batch_size: int = 8_192) -> np.ndarray:
    """Probabilities [N, T] in eval mode (BatchNorm uses its running statistics)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = torch.from_numpy(data.features)
    probs = [torch.sigmoid(model(RankBatch(features[s:s + batch_size].to(device)))).cpu()
             for s in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(probs).numpy()


def task_metrics(model: MultiTaskRanker, data: Impressions, with_gauc: bool = True
                 ) -> dict[str, dict[str, float]]:
    """{task: {"auc", "gauc", "positives"}}; GAUC weights each user's AUC by impressions and
    leaves out users with a single label class (``metrics.gauc``)."""
    probs = predict(model, data)
    scores = {}
    for t, task in enumerate(model.tasks):
        scores[task] = {"auc": auc(data.labels[:, t], probs[:, t]),
                        "positives": int(data.labels[:, t].sum())}
        if with_gauc:
            scores[task]["gauc"] = gauc(data.labels[:, t], probs[:, t], data.users)
    return scores


def validation_auc(model: MultiTaskRanker, valid: Impressions) -> dict[str, float]:
    """Each task's AUC on ``valid`` (``valid_auc_<task>``) and their mean
    (``valid_mean_auc``): what picks the epoch whose weights are kept."""
    scores = task_metrics(model, valid, with_gauc=False)
    per_task = {f"valid_auc_{task}": s["auc"] for task, s in scores.items()}
    return {"valid_mean_auc": float(np.mean(list(per_task.values())))} | per_task


# --------------------------------------------------------------------------- diagnostics


@torch.no_grad()
def trace(model: MultiTaskRanker, data: Impressions, rows: int = 8_192) -> Trace:
    """The expert outputs and gates of ``rows`` held-out impressions, in eval mode."""
    was_training = model.training
    model.eval()
    recorded = Trace()
    device = next(model.parameters()).device
    model(RankBatch(torch.from_numpy(data.features[:rows]).to(device)), trace=recorded)
    model.train(was_training)
    return recorded


def diagnose(model: MultiTaskRanker, data: Impressions, sparse: Sequence[str] = ()
             ) -> dict[str, float]:
    """HoME's three failures measured on held-out rows:

    * dead_units: share of expert output units with |output| < 1e-3 on > 90 % of rows, over
      every expert layer (collapse); scale_spread: largest over smallest expert output
      scale, worst layer;
    * degradation: over the shared experts of the per-task gate layer, the mean of the
      heaviest reader's excess share, 0 when all tasks allowed to read an expert use it
      equally and 1 when one owns it;
    * own_share: mean gate mass the ``sparse`` tasks put on their own experts
      (underfitting; nan for a model without task experts)."""
    recorded = trace(model, data)
    if not recorded.outputs:
        raise ValueError(f"{type(model).__name__} has no experts to diagnose")
    units = torch.cat([out.flatten(1) for out in recorded.outputs.values()], dim=1)
    spread = max(scale_spread(out) for out in recorded.outputs.values())
    layer, nan = model.task_layer, float("nan")
    excess, own_share = nan, nan
    if layer in recorded.gates:
        mass = gate_mass(recorded.gates[layer])  # [T, E]
        excess = float(degradation(mass, recorded.shared[layer], relative=True).nanmean())
        own = recorded.own.get(layer, {})
        if sparse and all(own.get(t) for t in sparse):
            index = [model.tasks.index(t) for t in sparse]
            own_share = float(own_expert_share(mass[index], [own[t] for t in sparse]).mean())
    return {"dead_units": dead_unit_fraction(units), "scale_spread": spread,
            "degradation": excess, "own_share": own_share}
