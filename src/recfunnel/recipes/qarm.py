"""Chapter 7's experiment: the multi-modal world, stages A and B (pairs, alignment) and one
ranker per variant of the paper's Table 1, as the chapter and ``benchmarks/qarm_scale.py`` run
them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recfunnel.data.multimodal import MultiModalData, make_multimodal, rank_batch
from recfunnel.metrics import auc
from recfunnel.models import qarm
from recfunnel.models.qarm_pretrain import clicks, id_embeddings, mine_pairs, pretrained_vectors
from recfunnel.profiles import QARMSize
from recfunnel.runtime import resolve_device
from recfunnel.train import History, TrainConfig, fit, shuffled


def qarm_world(size: QARMSize, seed: int) -> MultiModalData:
    """Chapter 7's multi-modal world at a profile's size, drawn from ``seed``."""
    return make_multimodal(n_users=size.users, n_items=size.items,
                           n_impressions=size.impressions, history=size.history, seed=seed)


# the rows of the paper's Table 1, and two more: name -> (ranker inputs, vectors used)
VARIANTS = {
    "base": (qarm.RankerInputs(), "aligned"),
    "+ frozen raw vector": (qarm.RankerInputs(frozen=True), "raw"),
    "+ frozen aligned vector": (qarm.RankerInputs(frozen=True), "aligned"),
    "+ VQ code": (qarm.RankerInputs(vq=True), "aligned"),
    "+ RQ code": (qarm.RankerInputs(rq=True), "aligned"),
    "+ VQ & RQ codes": (qarm.RankerInputs(vq=True, rq=True), "aligned"),
    "+ aligned vector & codes": (qarm.RankerInputs(frozen=True, vq=True, rq=True), "aligned"),
    "+ codes of raw vectors": (qarm.RankerInputs(vq=True, rq=True), "raw"),
}


@dataclass
class Aligned:
    """Stages A and B on one world: the raw and aligned vectors [I, d] and the pairs used."""

    raw: torch.Tensor
    aligned: torch.Tensor
    pairs: np.ndarray
    history: History


def align(aligner: qarm.ItemAligner, content: torch.Tensor, pairs: np.ndarray,
          batch_size: int, cfg: TrainConfig, temperature: float = 0.07) -> History:
    """Stage B: train ``aligner`` on (trigger, target) item pairs with the symmetric
    in-batch loss (``qarm.alignment_loss``); ``content`` [I, d_in]; order seeded by
    ``cfg.seed``."""
    if len(pairs) < 2:
        raise ValueError("need at least two pairs to align on")
    on_device = content.to(resolve_device(cfg.device))

    def step(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return qarm.alignment_loss(model(on_device[batch[:, 0]]), model(on_device[batch[:, 1]]),
                                   batch[:, 0], batch[:, 1], temperature)

    batches = shuffled(torch.as_tensor(pairs, dtype=torch.long), batch_size, cfg.seed or 0,
                       min_batch=2)
    return fit(aligner, batches, step=step, cfg=cfg)


def align_items(data: MultiModalData, d: int, window: int, epochs: int,
                batch_size: int = 256, seed: int = 0, progress: bool = True,
                device: str = "cpu") -> Aligned:
    """Mine pairs from the training clicks with the U2I rule and align the content to them."""
    train, _, _ = data.split()
    users, items = clicks(data, train)
    ids = id_embeddings(users, items, data.n_users, data.n_items, seed=seed)
    pairs = mine_pairs(users, items, window, item_vectors=ids)
    content = torch.from_numpy(data.content())
    aligner = qarm.ItemAligner(content.shape[1], d)
    cfg = TrainConfig(epochs=epochs, seed=seed, device=device, progress=progress,
                      desc="alignment")
    history = align(aligner, content, pairs, batch_size, cfg)
    return Aligned(raw=pretrained_vectors(content, d, seed),
                   aligned=qarm.encode_items(aligner, content), pairs=pairs, history=history)


def rank_variants(data: MultiModalData, vectors: dict[str, torch.Tensor],
                  codes: dict[str, qarm.ItemCodes], variants: Sequence[str], d_emb: int,
                  hidden: Sequence[int], epochs: int, batch_size: int = 1_024,
                  lr: float = 3e-3, patience: int | None = 1, seed: int = 0,
                  progress: bool = True, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Train one ranker per variant (``VARIANTS``) on the same data and seed; return each
    one's test scores (``qarm.evaluate_ranker``) and its best epoch."""
    train, valid, test = data.split()
    results = {}
    for name in variants:
        inputs, source = VARIANTS[name]
        torch.manual_seed(seed)
        model = qarm.QARMRanker(data.n_users, data.n_items, d_emb, hidden, inputs=inputs,
                                frozen=vectors[source], codes=codes[source])
        cfg = TrainConfig(epochs=epochs, lr=lr, monitor="valid_auc", patience=patience,
                          seed=seed, progress=progress, desc=name, device=device)
        history = fit(model, shuffled(rank_batch(data, train), batch_size, seed),
                      step=lambda m, batch: m.loss(batch), cfg=cfg,
                      evaluate=lambda m: {"valid_auc": auc(data.labels[valid],
                                                           qarm.predict(m, data, valid))})
        results[name] = qarm.evaluate_ranker(model, data, test) | {
            "best_epoch": history.best_epoch}
    return results


def item_codes(data: MultiModalData, run: Aligned, size: QARMSize, seed: int
               ) -> dict[str, qarm.ItemCodes]:
    """VQ and RQ codes of the raw and of the aligned vectors, the codebooks fitted on the
    warm items only (cold items are encoded, never fitted on)."""
    return {name: qarm.build_codes(vectors, ~data.is_cold, size.vq_k, size.rq_levels,
                                   size.rq_size, seed=seed)
            for name, vectors in (("raw", run.raw), ("aligned", run.aligned))}


def held_out_pairs(data: MultiModalData) -> np.ndarray:
    """Consecutive co-clicks of the validation and test days: the item-to-item targets."""
    _, valid, test = data.split()
    return mine_pairs(*clicks(data, valid | test), window=1)


@dataclass
class SeedStudy:
    """One world's whole recipe: each variant's test scores and the held-out co-click
    Recall@10 of the raw and the aligned vectors."""

    scores: dict[str, dict[str, float]]
    recall: dict[str, float]


def seed_study(data: MultiModalData, size: QARMSize, variants: Sequence[str], seed: int,
               device: str = "cpu", progress: bool = False, run: Aligned | None = None,
               codes: dict[str, qarm.ItemCodes] | None = None) -> SeedStudy:
    """Stages A-C and the rankers on one world (``run`` and ``codes``: already made)."""
    if run is None:
        run = align_items(data, size.d_align, size.window, size.align_epochs,
                          size.align_batch, seed=seed, progress=False, device=device)
    codes = codes if codes is not None else item_codes(data, run, size, seed)
    held = held_out_pairs(data)
    vectors = {"raw": run.raw, "aligned": run.aligned}
    scores = rank_variants(data, vectors, codes, variants, size.d_emb, size.hidden,
                           size.epochs, size.batch_size, size.lr, size.patience, seed=seed,
                           progress=progress, device=device)
    return SeedStudy(scores, {name: qarm.pair_recall(v, held) for name, v in vectors.items()})
