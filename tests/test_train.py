"""The shared training loop: learning, early stopping, checkpoints, clipping, errors, DDP."""

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from recfunnel.data.ranking import RankBatch
from recfunnel.data.sequences import SeqBatch, WindowBatch
from recfunnel.train import (
    TrainConfig,
    fit,
    load_checkpoint,
    make_loader,
    save_checkpoint,
    shuffled,
)

QUIET = TrainConfig(epochs=5, lr=0.05, progress=False)


class LinearRegression(nn.Module):
    def __init__(self, d_in: int = 4):
        super().__init__()
        self.linear = nn.Linear(d_in, 1)

    def forward(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.linear(x).squeeze(-1), y)


def regression_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    model = LinearRegression()
    loader = make_loader(regression_data(), batch_size=32)
    history = fit(model, loader, cfg=dataclasses.replace(QUIET, epochs=20))
    losses = history.column("train_loss")
    assert len(losses) == 20 and len(history.steps) == 20 * len(loader)
    assert losses[-1] < 0.01 * losses[0]
    torch.testing.assert_close(model.linear.weight.detach(),
                               torch.tensor([[1.0, -2.0, 0.5, 3.0]]), atol=0.05, rtol=0)


def test_custom_step_and_logs():
    model = LinearRegression()

    def step(model, batch):
        loss = model(batch)
        return loss, {"double": 2 * loss.item()}

    history = fit(model, [next(iter(make_loader(regression_data(), 32)))] * 3, step, QUIET)
    assert history.steps[0]["double"] == pytest.approx(2 * history.steps[0]["loss"])


def test_early_stopping_restores_the_best_weights():
    model = LinearRegression()
    values = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9])  # best at epoch 2, then 3 worse epochs
    snapshots = []

    def evaluate(model):
        snapshots.append(model.linear.weight.detach().clone())
        return {"ndcg@10": next(values)}

    cfg = dataclasses.replace(QUIET, epochs=6, monitor="ndcg@10", patience=3)
    history = fit(model, make_loader(regression_data(), 64), cfg=cfg, evaluate=evaluate)
    assert history.stopped_early and len(history.epochs) == 5
    assert (history.best_epoch, history.best_value) == (2, 0.5)
    torch.testing.assert_close(model.linear.weight, snapshots[1])


def test_a_wall_budget_stops_after_the_epoch_that_spends_it():
    model = LinearRegression()
    values = iter([0.1, 0.5, 0.3])

    def slow_evaluate(model):  # each epoch takes at least 0.2 s
        time.sleep(0.2)
        return {"ndcg@10": next(values)}

    cfg = dataclasses.replace(QUIET, epochs=50, monitor="ndcg@10", max_seconds=0.5)
    history = fit(model, make_loader(regression_data(), 64), cfg=cfg, evaluate=slow_evaluate)
    assert history.stopped_by_budget and not history.stopped_early
    assert len(history.epochs) == 3 and history.best_epoch == 2  # 0.4 s < 0.5 s <= 0.6 s
    unbudgeted = fit(LinearRegression(), make_loader(regression_data(), 64),
                     cfg=dataclasses.replace(QUIET, epochs=3))
    assert not unbudgeted.stopped_by_budget and len(unbudgeted.epochs) == 3


def test_checkpoint_roundtrip_is_weights_only(tmp_path):
    model = LinearRegression()
    cfg = dataclasses.replace(QUIET, monitor="score", checkpoint_path=str(tmp_path / "best.pt"))
    fit(model, make_loader(regression_data(), 64), cfg=cfg,
        evaluate=lambda m: {"score": -m(next(iter(make_loader(regression_data(1), 256)))).item()})
    fresh = LinearRegression()
    meta = load_checkpoint(tmp_path / "best.pt", fresh)
    assert meta["epoch"] >= 1 and "score" in meta
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())

    with pytest.raises(ValueError, match=r"meta\['note'\]: a type cannot be stored"):
        save_checkpoint(tmp_path / "evil.pt", model, note=LinearRegression)  # a class
    assert not (tmp_path / "evil.pt").exists()
    torch.save({"model": model.state_dict(), "meta": {"note": LinearRegression}},
               tmp_path / "evil.pt")  # written by hand: loading must still refuse it
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(tmp_path / "evil.pt", fresh)


def test_gradients_are_clipped():
    model = LinearRegression()
    model.linear.weight.data.fill_(100.0)  # a huge loss and gradient
    before = model.linear.weight.detach().clone()
    batch = next(iter(make_loader(regression_data(), 256)))
    cfg = TrainConfig(epochs=1, lr=1.0, grad_clip=1e-3, progress=False)
    fit(model, [batch], cfg=cfg)
    # AdamW's first step moves each weight by about lr whatever the gradient's size, so
    # check the clipping itself: after clipping the gradient norm is at most grad_clip
    grad_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert grad_norm <= 1e-3 + 1e-9
    assert not torch.equal(before, model.linear.weight)


def test_clear_errors():
    model = LinearRegression()
    generator = (batch for batch in make_loader(regression_data(), 64))
    with pytest.raises(ValueError, match="one-shot generator"):
        fit(model, generator, cfg=QUIET)
    with pytest.raises(ValueError, match="needs a `monitor`"):
        TrainConfig(patience=2)
    with pytest.raises(KeyError, match="monitor 'auc'"):
        fit(model, make_loader(regression_data(), 64),
            cfg=dataclasses.replace(QUIET, monitor="auc"), evaluate=lambda m: {"ndcg": 0.0})

    class Exploding(LinearRegression):
        def forward(self, batch):
            return super().forward(batch) * float("inf")

    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(Exploding(), make_loader(regression_data(), 64), cfg=QUIET)


def test_batches_may_be_redrawn_every_epoch():
    seen_epochs = []

    def batches(epoch):
        seen_epochs.append(epoch)
        return make_loader(regression_data(seed=epoch), 64)

    fit(LinearRegression(), batches, cfg=dataclasses.replace(QUIET, epochs=3))
    assert seen_epochs == [1, 2, 3]


def test_the_one_shuffle_is_a_fresh_permutation_per_epoch_and_the_same_per_seed():
    rows = torch.arange(10, 110)
    draw = shuffled(rows, batch_size=32, seed=3)
    epoch_1 = torch.cat(draw(1))
    assert sorted(epoch_1.tolist()) == rows.tolist()  # every row once
    assert [len(b) for b in draw(1)] == [32, 32, 32, 4]
    assert torch.equal(epoch_1, torch.cat(shuffled(rows, 32, seed=3)(1)))  # reproducible
    assert not torch.equal(epoch_1, torch.cat(draw(2)))  # a new order each epoch
    assert not torch.equal(epoch_1, torch.cat(shuffled(rows, 32, seed=4)(1)))
    assert [len(b) for b in shuffled(rows, 33, min_batch=2)(1)] == [33, 33, 33]  # 1 dropped
    with pytest.raises(ValueError, match="positive"):
        shuffled(rows, 0)


def test_the_shuffle_keeps_the_rows_of_every_batch_type_together():
    n = 7
    seq = torch.arange(1, 3 * n + 1).view(n, 3)
    batches = {  # every field of row r carries r's newest item, so a mixed row shows
        SeqBatch: (SeqBatch(torch.arange(n), seq, seq == 0, seq[:, -1]),
                   lambda b: (b.user_seq[:, -1], b.target_ids)),
        WindowBatch: (WindowBatch(seq, seq == 0, seq),
                      lambda b: (b.user_seq[:, -1], b.target_seq[:, -1])),
        RankBatch: (RankBatch(seq, seq[:, -1:].float()),
                    lambda b: (b.features[:, -1], b.labels[:, 0].long())),
    }
    for kind, (data, fields) in batches.items():
        drawn = shuffled(data, 3, seed=0)(1)
        assert all(isinstance(batch, kind) for batch in drawn)
        for batch in drawn:
            newest, other = fields(batch)
            assert torch.equal(newest, other), kind.__name__


def test_a_seeded_config_seeds_torch_when_fit_starts():
    class Noisy(LinearRegression):
        def forward(self, batch):
            self.drawn = torch.rand(1)
            return super().forward(batch)

    draws = []
    for _ in range(2):
        torch.manual_seed(len(draws) + 123)  # a different global state each time
        model = Noisy()
        fit(model, make_loader(regression_data(), 256),
            cfg=dataclasses.replace(QUIET, epochs=1, seed=5))
        draws.append(model.drawn)
    assert torch.equal(draws[0], draws[1])


def test_ddp_replicas_stay_equal(tmp_path):
    """Two CPU processes (gloo) train on different shards from different initial weights;
    DDP must broadcast the start and average the gradients so both end identical."""
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(rank0["sample_ids"].tolist()).isdisjoint(rank1["sample_ids"].tolist())
    assert not torch.equal(rank0["initial"]["linear.weight"], rank1["initial"]["linear.weight"])
    torch.testing.assert_close(rank0["final"], rank1["final"], rtol=0, atol=0)
    assert not torch.equal(rank0["final"]["linear.weight"], rank0["initial"]["linear.weight"])
    assert rank0["last_loss"] < 0.1 * rank0["first_loss"]
