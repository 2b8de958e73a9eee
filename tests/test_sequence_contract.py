"""Every sequence model keeps one contract: an index over its item vectors, asked with its
query vectors, returns exactly the items its full scores rank first."""

from __future__ import annotations

import pytest
import torch

from recfunnel.data.sequences import SeqBatch, WindowBatch
from recfunnel.models import SequenceModel
from recfunnel.models.baselines import SASRec, SASRecConfig
from recfunnel.models.dimerec import ComiRecSA, DimeRec, DimeRecConfig
from recfunnel.models.elastic import Elastic, ElasticConfig
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.retrieval import ExactIndex

V = 40
MODELS = {
    "SASRec": lambda: SASRec(SASRecConfig(n_items=V, max_len=8, d_model=16, n_heads=2,
                                          d_ffn=32, p_dropout=0.0)),
    "KuaiFormer": lambda: KuaiFormer(KuaiFormerConfig(
        n_items=V, d_model=16, n_heads=2, n_layers=1, d_ffn=32, n_interests=3,
        compression=((1, 2),), n_raw=6, p_dropout=0.0)),
    "ELASTIC": lambda: Elastic(ElasticConfig(n_items=V, max_len=8, d_model=16, n_heads=2,
                                             n_layers=1, d_ffn=32, n_experts=4,
                                             memory_size=64, top_c=4, p_dropout=0.0)),
    "ComiRec-SA": lambda: ComiRecSA(DimeRecConfig(n_items=V, max_len=8, d_model=16,
                                                  n_interests=3)),
    "DimeRec": lambda: DimeRec(DimeRecConfig(n_items=V, max_len=8, d_model=16, n_interests=3,
                                             diffusion_steps=10, sample_steps=2, hidden=32)),
}


def batch(B: int = 12) -> SeqBatch:
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, V, (B, 8), generator=g)
    seq[0, :3] = 0  # a shorter, left-padded history
    return SeqBatch(torch.arange(B), seq, seq == 0, torch.randint(1, V, (B,), generator=g))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_index_serves_what_score_all_ranks(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    assert isinstance(model, SequenceModel)
    rows = batch()
    with torch.no_grad():
        scores = model.score_all(rows)  # [B, V]
        table = model.item_vectors()[1:]  # row 0 is padding: never in the index
        queries = model.query_vectors(rows)
    assert scores.shape == (len(rows), V) and torch.isneginf(scores[:, 0]).all()
    _, found = ExactIndex(table).search(queries, k=10)
    expected = scores[:, 1:].topk(10, dim=1).indices
    assert torch.equal(found, expected), name


@pytest.mark.parametrize("name", list(MODELS))
def test_the_loss_of_a_batch_is_a_finite_scalar_that_training_lowers(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    rows = batch(32)
    if name == "SASRec":  # SASRec learns from every position of a window
        target = torch.roll(rows.user_seq, -1, dims=1)
        target[:, -1] = rows.target_ids
        rows = WindowBatch(rows.user_seq, rows.is_pad, target * (~rows.is_pad))

    def loss_of(out):
        return out[0] if isinstance(out, tuple) else out

    first = loss_of(model(rows))
    assert first.dim() == 0 and torch.isfinite(first)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimiser.zero_grad()
        loss_of(model(rows)).backward()
        optimiser.step()
    assert loss_of(model(rows)).item() < first.item()


def test_the_gpu_profiles_configurations_build_and_train_a_step():
    """The sizes only the gpu profile uses (wider models, ELASTIC's 65,536-slot memory,
    200-step diffusion), built by the chapters' own recipes and trained for one step on a
    small batch, so that a Colab user is not the first to run them."""
    from recfunnel.profiles import profile_for
    from recfunnel.recipes.dimerec import dimerec_config
    from recfunnel.recipes.elastic import elastic_config

    elastic = elastic_config(profile_for("elastic", "gpu"), n_items=V, max_len=8)
    dimerec = dimerec_config(profile_for("dimerec", "gpu"), n_items=V)
    assert elastic.memory_size == 65_536 and dimerec.diffusion_steps == 200
    for model in (Elastic(elastic), DimeRec(dimerec)):
        torch.manual_seed(0)
        rows = batch(8)
        if isinstance(model, DimeRec):  # its window is 50 long: pad the histories
            rows = SeqBatch(rows.user_ids, torch.nn.functional.pad(rows.user_seq, (42, 0)),
                            torch.nn.functional.pad(rows.is_pad, (42, 0), value=True),
                            rows.target_ids)
        out = model(rows)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
