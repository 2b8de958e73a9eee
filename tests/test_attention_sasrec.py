"""Shared attention blocks and SASRec: causality, padding, rotary positions."""

import math

import pandas as pd
import pytest
import torch

from recfunnel.data.sequences import SeqBatch, SequentialSplit
from recfunnel.layers.attention import LlamaBlock, MultiHeadAttention, PreNormBlock, rotate
from recfunnel.models.baselines import SASRec, SASRecConfig


@pytest.mark.parametrize("block_type", [PreNormBlock, LlamaBlock])
def test_a_later_item_cannot_change_an_earlier_output(block_type):
    torch.manual_seed(0)
    block = block_type(16, 2, 32).eval()
    x = torch.randn(2, 6, 16, requires_grad=True)
    out = block(x, causal=True)
    out[:, 2].sum().backward()  # position 2 may depend on positions 0..2 only
    assert x.grad[:, 3:].abs().sum() == 0
    assert x.grad[:, :3].abs().sum() > 0


def test_padding_keys_are_ignored():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 5, 8)
    is_pad = torch.tensor([[True, True, False, False, False]])
    noisy = x.clone()
    noisy[:, :2] = 100 * torch.randn(1, 2, 8)  # whatever sits at padding
    torch.testing.assert_close(attn(x, is_pad)[:, 2:], attn(noisy, is_pad)[:, 2:])


def test_rotary_scores_depend_on_distance_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (rotate(q, torch.tensor([i])) * rotate(k, torch.tensor([j]))).sum()
    torch.testing.assert_close(score(3, 1), score(10, 8))
    assert not torch.isclose(score(3, 1), score(3, 2))


def test_sasrec_padding_changes_nothing_and_future_is_unseen():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, max_len=6, d_model=16, n_heads=2, d_ffn=32,
                                p_dropout=0.0)).eval()
    short = torch.tensor([[0, 0, 0, 4, 5, 6]])
    unpadded = short[:, 3:]  # the same history without its padding
    batch = SeqBatch(torch.tensor([1]), short, short == 0, torch.tensor([7]))
    scores = model.score_all(batch)
    assert scores.shape == (1, 20) and torch.isneginf(scores[0, 0])
    # changing the newest item changes the prediction; an older position's output is
    # untouched by it (causality)
    changed = short.clone()
    changed[0, -1] = 9
    hidden = model.encode(short, short == 0)
    hidden_changed = model.encode(changed, changed == 0)
    torch.testing.assert_close(hidden[:, 3:5], hidden_changed[:, 3:5])
    assert not torch.allclose(hidden[:, 5], hidden_changed[:, 5])
    torch.testing.assert_close(model.encode(unpadded, unpadded == 0), hidden[:, 3:])


def test_sasrec_loss_counts_every_target_once():
    frame = pd.DataFrame({"user_id": [1] * 12 + [2] * 5, "item_id": list(range(1, 13)) +
                          [3, 4, 5, 6, 7], "timestamp": range(17)})
    split = SequentialSplit(frame, max_len=4)
    windows = split.train_windows()
    assert int((windows.target_seq > 0).sum()) == len(split.train_samples()[0])
    model = SASRec(SASRecConfig(n_items=13, max_len=4, d_model=8, n_heads=1, d_ffn=16))
    loss = model(windows)
    assert loss.ndim == 0 and loss.item() == pytest.approx(math.log(12), rel=0.25)  # ~uniform
    loss.backward()
    silent = [name for name, p in model.named_parameters()
              if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == []


def test_a_separate_output_table_scores_the_items_and_learns():
    frame = pd.DataFrame({"user_id": [1] * 12 + [2] * 5, "item_id": list(range(1, 13)) +
                          [3, 4, 5, 6, 7], "timestamp": range(17)})
    split = SequentialSplit(frame, max_len=4)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=13, max_len=4, d_model=8, n_heads=1, d_ffn=16,
                                separate_output=True)).eval()
    assert model.item_vectors() is model.out_emb.weight
    batch = split.eval_batch("test")
    hidden = model.encode(batch.user_seq, batch.is_pad)[:, -1]
    expected = hidden @ model.out_emb.weight.T
    torch.testing.assert_close(model.score_all(batch)[:, 1:], expected[:, 1:])
    model(split.train_windows(stride=1)).backward()
    for table in (model.item_emb, model.out_emb):  # the input table reads, the output scores
        assert table.weight.grad[1:].abs().sum() > 0


def test_eager_and_fused_attention_agree():
    torch.manual_seed(0)
    fused = SASRec(SASRecConfig(n_items=30, max_len=10, d_model=16, n_heads=2, d_ffn=32,
                                p_dropout=0.0)).eval()
    eager = SASRec(SASRecConfig(n_items=30, max_len=10, d_model=16, n_heads=2, d_ffn=32,
                                p_dropout=0.0, attention="eager")).eval()
    eager.load_state_dict(fused.state_dict())
    seq = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 9]])
    torch.testing.assert_close(eager.encode(seq, seq == 0), fused.encode(seq, seq == 0))
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(8, 2, impl="flash")
