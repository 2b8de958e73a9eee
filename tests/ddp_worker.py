"""Launched twice by test_train.py with torchrun: trains under DDP and saves the weights."""

import copy
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from recfunnel.train import TrainConfig, distributed_rank, fit, make_loader


class LinearRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, batch):
        x, y, _ = batch
        return nn.functional.mse_loss(self.linear(x).squeeze(-1), y)


def main(out_dir: Path) -> None:
    rank, world_size = distributed_rank()
    assert world_size == 2, world_size
    torch.manual_seed(100 + rank)  # different start per rank: DDP must broadcast rank 0's
    model = LinearRegression()
    initial = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(0)  # the same dataset on both ranks
    x = torch.randn(512, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    data = TensorDataset(x, y, torch.arange(512))
    loader = make_loader(data, batch_size=32, shuffle=True, seed=0)
    sample_ids = torch.cat([batch[2] for batch in loader])  # this rank's shard
    cfg = dataclasses.replace(TrainConfig(), epochs=8, lr=0.05, progress=False, device="cpu")
    history = fit(model, loader, cfg=cfg)
    torch.save({
        "initial": initial,
        "final": model.state_dict(),
        "sample_ids": sample_ids,
        "first_loss": history.epochs[0]["train_loss"],
        "last_loss": history.epochs[-1]["train_loss"],
    }, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
