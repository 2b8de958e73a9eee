"""The one batch every ranker of the course takes.

A ranker scores impressions: a user and a candidate item, with their categorical features
and, for models that read one, the user's recent items. ``RankBatch`` holds them as
tensors, with **id 0 as padding everywhere** (a history shorter than its width is
left-padded with 0, as the sequence models' histories are), and the labels when training.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RankBatch:
    """features [B, F] int64 categorical ids (the user's and the item's among them); history
    [B, H] int64 the user's recent item ids, 0 = padding (None for rankers that read none);
    labels [B, T] float 0/1 per task (None at serving). A model that reads more (chapter 8's
    segment tokens and graph paths) subclasses it with more [B, ...] fields."""

    features: torch.Tensor
    labels: torch.Tensor | None = None
    history: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.dim() != 2:
            raise ValueError(f"features must be [B, F], got {tuple(self.features.shape)}")
        B = len(self.features)
        for name in ("labels", "history"):
            value = getattr(self, name)
            if value is not None and (value.dim() != 2 or len(value) != B):
                raise ValueError(f"{name} must be [{B}, n], got {tuple(value.shape)}")

    def to(self, device) -> RankBatch:
        return type(self)(*(None if getattr(self, f.name) is None else
                            getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, rows) -> RankBatch:
        return type(self)(*(None if getattr(self, f.name) is None else
                            getattr(self, f.name)[rows] for f in fields(self)))
