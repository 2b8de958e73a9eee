"""The chapters' experiments, written once: what a chapter and its benchmark both call.

A recipe turns a chapter's run sizes (``profiles``) into model configurations and trained
models, so that ``benchmarks/`` repeats a chapter's experiment over more seeds or epochs
with exactly the chapter's settings; neither may copy them. ``study`` is the generic layer
(runs, gaps, verdicts); this package is the chapter-specific one above the models.

Every model is trained by ``train.fit``; what differs between families is written once
here: ``fit_next_item`` (any ``models.SequenceModel``, validated by NDCG@10),
``fit_multitask`` (chapter 5's rankers, by their mean validation AUC) and chapter 7's
``qarm.align`` / ``qarm.rank_variants``. A run's ``seed`` fixes its initialisation
(``set_seed`` before the model is built), its epoch order (``train.shuffled`` and
``sequences.cut_points``, both drawn from ``runtime.epoch_rng(seed, epoch)``) and, where a
model draws inside its forward pass, torch's stream (``TrainConfig.seed``).

One module per chapter (``recipes.kuaiformer``, ``elastic``, ``dimerec``, ``home``,
``qarm``); this one holds the training that every chapter shares.

    from recfunnel.recipes.dimerec import dimerec_config, fit_contender
"""

from __future__ import annotations

import dataclasses

from recfunnel.data.impressions import Impressions
from recfunnel.data.sequences import SeqBatch, SequentialSplit, every_window, next_item_metrics
from recfunnel.models import SequenceModel
from recfunnel.models.baselines import SASRec, SASRecConfig
from recfunnel.models.multitask import MultiTaskRanker, validation_auc
from recfunnel.runcache import cached_training
from recfunnel.train import Batches, History, TrainConfig, fit, shuffled

NEXT_ITEM = TrainConfig(monitor="ndcg@10", patience=5)  # a sequence model's settings


def fit_next_item(model: SequenceModel, batches: Batches, valid: SeqBatch,
                  cfg: TrainConfig = NEXT_ITEM) -> History:
    """Train a sequence model on ``batches`` (``sequences.cut_points``, ``every_target``,
    ``every_window``, or ``train.shuffled`` over fixed samples), scored after each epoch by
    full-ranking metrics on ``valid``; ``NEXT_ITEM`` keeps the epoch of the best NDCG@10."""
    return fit(model, batches, cfg=cfg, evaluate=lambda m: next_item_metrics(m, valid))


def fit_recbole_sasrec(split: SequentialSplit, seed: int, cfg: TrainConfig,
                       patience: int | None = 10) -> tuple[SASRec, History]:
    """SASRec with RecBole's settings (50 items, d = 64, all-position softmax, batches of
    128 windows, early stop after ``patience`` epochs), built from the current seed state
    and trained on ``split``: the reference of chapters 2, 3 and 4, trained once and then
    loaded from the run cache (``recfunnel.runcache``) by the chapters that follow."""
    model = SASRec(SASRecConfig(n_items=split.n_items))
    cfg = dataclasses.replace(cfg, patience=patience)
    history = cached_training(
        model, lambda: fit_next_item(model, every_window(split, 128, seed),
                                     split.eval_batch("valid"), cfg),
        cfg, "every_window", split.fingerprint(), 128, seed, label=cfg.desc)
    return model, history


def fit_multitask(model: MultiTaskRanker, train: Impressions, valid: Impressions,
                  cfg: TrainConfig, batch_size: int = 2_048) -> History:
    """The summed BCE of every task on shuffled mini-batches of ``train`` (seeded by
    ``cfg.seed``); after every epoch each task's validation AUC (``valid_auc_<task>``) and
    their mean (``valid_mean_auc``), the monitor ``cfg`` should name."""
    return fit(model, shuffled(train.rank_batch(), batch_size, cfg.seed or 0),
               step=lambda m, batch: m.loss(batch), cfg=cfg,
               evaluate=lambda m: validation_auc(m, valid))

