"""What QARM starts from: item pairs mined from behaviour, and the cascade's frozen vectors.

Luo et al. 2024 (bibkey luo2025qarm), stage A and the pre-trained input of stage B:

* ``mine_pairs``: (trigger, target) item pairs from behaviour. For each clicked target, the
  trigger is the item among the user's previous ``window`` clicks that a U2I model's ID
  embeddings find most similar to it (``id_embeddings``: matrix factorisation on the
  training clicks); without embeddings, the latest earlier click (plain co-click);
* ``pretrained_vectors``: the frozen multi-modal item vectors of the usual cascade, an
  encoder trained for something else (here a fixed random projection of the content).

``models.qarm`` aligns the content to the pairs, quantises it and ranks with the codes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.multimodal import MultiModalData
from recfunnel.models.baselines import MatrixFactorization, MFConfig
from recfunnel.train import TrainConfig, fit


def clicks(data: MultiModalData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the clicked impressions among ``rows``, time-ordered per user."""
    clicked = rows & (data.labels == 1)
    return data.users[clicked], data.items[clicked]


def id_embeddings(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                  d: int = 32, epochs: int = 5, seed: int = 0, progress: bool = False
                  ) -> torch.Tensor:
    """[n_items, d] item vectors of a U2I model (matrix factorisation with a softmax over the
    catalogue) trained on the (user, item) clicks; unclicked items keep their random init."""
    pairs = torch.utils.data.TensorDataset(torch.as_tensor(users), torch.as_tensor(items))
    torch.manual_seed(seed)
    model = MatrixFactorization(MFConfig(n_users, n_items, d_model=d))
    loader = torch.utils.data.DataLoader(pairs, batch_size=1_024, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    fit(model, loader, cfg=TrainConfig(epochs=epochs, lr=1e-2, device="cpu",
                                       progress=progress, desc="U2I model"))
    return model.item_emb.weight.detach()


def mine_pairs(users: np.ndarray, items: np.ndarray, window: int,
               item_vectors: torch.Tensor | None = None) -> np.ndarray:
    """[P, 2] (trigger, target) item pairs from clicks (stage A); ``users`` and ``items``
    [n] list the clicks grouped by user and in time order.

    Each click is a target; its trigger is, among the user's previous ``window`` clicks
    (of other items than the target), the one whose ``item_vectors`` are the most
    cosine-similar to the target's (the paper's U2I rule), or the latest one without
    vectors (plain co-click)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    unit = None if item_vectors is None else F.normalize(item_vectors.float(), dim=1)
    pairs = []
    bounds = np.flatnonzero(np.diff(users)) + 1
    for sequence in np.split(np.asarray(items), bounds):
        if len(sequence) < 2:
            continue
        padded = np.concatenate([np.full(window, -1), sequence])
        earlier = np.lib.stride_tricks.sliding_window_view(padded, window)[:-1]  # [m, W]
        usable = (earlier >= 0) & (earlier != sequence[:, None])
        if unit is None:  # latest usable earlier click
            score = np.where(usable, np.arange(window)[None, :], -1).astype(float)
        else:
            sims = (unit[np.maximum(earlier, 0)] @ unit[sequence][:, :, None]).squeeze(-1)
            score = np.where(usable, sims.numpy(), -np.inf)
        has = usable.any(axis=1)
        best = score.argmax(axis=1)
        pairs.append(np.stack([earlier[np.arange(len(sequence)), best][has], sequence[has]], 1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)



def pretrained_vectors(content: torch.Tensor, d: int, seed: int = 0) -> torch.Tensor:
    """[I, d] the cascade's frozen item vectors: a fixed random projection of the content,
    an encoder trained for something else, which keeps whatever the content mostly shows."""
    generator = torch.Generator().manual_seed(seed)
    return content @ torch.randn(content.shape[1], d, generator=generator) / content.shape[1] ** 0.5
