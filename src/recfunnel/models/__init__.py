"""One module per system, plus the references several chapters share: ``baselines``
(popularity, matrix factorisation, SASRec) and ``multitask_baselines`` (shared-bottom, MMoE,
PLE). Each family has one contract:

* sequence models (SASRec, KuaiFormer, ELASTIC, ComiRec-SA, DimeRec) are ``SequenceModel``:
  the training loss of a batch, every item's score, and the two halves of that score an
  index serves (item vectors, and one or K query vectors per user);
* rankers take one ``data.ranking.RankBatch`` (padding id 0) and return logits; the
  multi-task ones are composed in ``models.multitask`` from a config's mixer.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recfunnel.data.sequences import SeqBatch


@runtime_checkable
class SequenceModel(Protocol):
    """The contract of the retrieval chapters' models: ``score_all(batch)[b, v]`` ranks the
    items as the best inner product of ``query_vectors(batch)[b]`` (one vector, or each of
    K) with ``item_vectors()[v]`` does, so an index over the item vectors serves it."""

    def forward(self, batch) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        """The training loss of a batch (and optional logs)."""
        ...

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V] every item's score; the padding id 0 is -inf."""
        ...

    def item_vectors(self) -> torch.Tensor:
        """[V, D] the table an index holds (row 0 is padding)."""
        ...

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, D] or [B, K, D]: what the index is asked."""
        ...
