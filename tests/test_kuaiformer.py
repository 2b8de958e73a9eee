"""KuaiFormer's invariants: query-token causality, logQ, compression, loss, serving."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from recfunnel.data.sequences import SeqBatch
from recfunnel.models.kuaiformer import (
    AdaptiveCompressor,
    KuaiFormer,
    KuaiFormerConfig,
    in_batch_logits,
    smoothed_in_batch_loss,
)
from recfunnel.retrieval import build_index

TINY = KuaiFormerConfig(n_items=30, side_buckets=(6,), d_model=16, n_heads=2, n_layers=2,
                        d_ffn=32, n_interests=3, compression=((1, 4), (2, 2)), n_raw=3,
                        p_dropout=0.0)


def tiny_batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    user_seq = torch.randint(1, TINY.n_items, (B, TINY.max_len), generator=g)
    user_seq[0, :5] = 0  # a shorter history, left-padded
    feats = torch.randint(1, 6, (B, TINY.max_len, 1), generator=g) * (user_seq > 0)[..., None]
    return SeqBatch(torch.arange(B), user_seq, user_seq == 0,
                    torch.randint(1, TINY.n_items, (B,), generator=g), feats)


def test_token_count_and_best_interest_scores():
    assert (TINY.max_len, TINY.n_tokens) == (11, 6)
    paper = KuaiFormerConfig(n_items=10, compression=((2, 64), (5, 16)), n_raw=48)
    assert (paper.max_len, paper.n_tokens) == (256, 55)  # the paper's 256 -> 55
    torch.manual_seed(0)
    model = KuaiFormer(TINY).eval()
    batch = tiny_batch()
    with torch.no_grad():
        interests = model.interests(batch.user_seq, batch.is_pad, batch.seq_feats)  # [4, 3, 16]
        scores = model.score_all(batch)  # [4, 30]
        items = model.item_vectors().detach()
    by_hand = torch.tensor([[max(float(u @ items[v]) for u in interests[b])
                             for v in range(1, 30)] for b in range(4)])
    torch.testing.assert_close(scores[:, 1:], by_hand)  # Eq. 9: the best interest's score
    assert torch.isneginf(scores[:, 0]).all()  # padding is never served
    winners = torch.einsum("bkd,vd->bkv", interests, items)[:, :, 1:].argmax(1)
    assert len(winners.unique()) > 1  # several interests each win some items


def test_query_tokens_see_the_sequence_but_not_later_queries():
    torch.manual_seed(0)
    model = KuaiFormer(TINY).eval()
    batch = tiny_batch()
    interests = model.interests(batch.user_seq, batch.is_pad, batch.seq_feats)
    interests[:, 1].sum().backward()  # the second interest
    assert model.queries.grad[2].abs().sum() == 0  # q_3 comes later: unseen
    assert model.queries.grad[:2].abs().sum() > 0
    oldest = model.embedding.item_emb.weight.grad[batch.user_seq[1, 0]]
    assert oldest.abs().sum() > 0  # the oldest (compressed) item reaches every interest


def test_compression_keeps_the_newest_items_and_ignores_padding():
    torch.manual_seed(0)
    compressor = AdaptiveCompressor(TINY).eval()
    tokens = torch.randn(2, TINY.max_len, 16)
    is_pad = torch.zeros(2, TINY.max_len, dtype=torch.bool)
    is_pad[0, :6] = True  # the first group (4) and half of the second (2 of 2) are padding
    out, out_pad = compressor(tokens, is_pad)
    assert out.shape == (2, TINY.n_tokens, 16)
    torch.testing.assert_close(out[:, -TINY.n_raw:], tokens[:, -TINY.n_raw:])  # untouched
    assert out_pad[0].tolist() == [True, True, False, False, False, False]
    noisy = tokens.clone()
    noisy[0, :6] = 50 * torch.randn(6, 16)  # whatever sits at padding
    torch.testing.assert_close(compressor(noisy, is_pad)[0][0, 2:], out[0, 2:])


def test_log_q_shifts_each_logit_by_exactly_minus_log_q():
    torch.manual_seed(0)
    interests, targets = torch.randn(5, 2, 8), torch.randn(5, 8)
    ids = torch.tensor([1, 2, 3, 4, 5])
    log_q = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.1, 0.1]))
    plain = in_batch_logits(interests, targets, ids, None)
    corrected = in_batch_logits(interests, targets, ids, log_q)
    torch.testing.assert_close(corrected - plain, -log_q[None, :].expand(5, 5))


def test_score_is_the_best_interest_and_accidental_hits_are_masked():
    interests = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.5, 0.5], [0.0, 0.0]]])
    targets = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    logits = in_batch_logits(interests, targets, torch.tensor([7, 8]), None)
    torch.testing.assert_close(logits, torch.tensor([[2.0, 3.0], [1.0, 1.5]]))
    same = in_batch_logits(interests, targets, torch.tensor([7, 7]), None)
    assert torch.isneginf(same[0, 1]) and torch.isneginf(same[1, 0])
    assert torch.isfinite(same.diagonal()).all()


def test_smoothed_loss_reduces_to_cross_entropy_at_alpha_zero():
    torch.manual_seed(0)
    logits = torch.randn(6, 6)
    torch.testing.assert_close(smoothed_in_batch_loss(logits, 0.0),
                               F.cross_entropy(logits, torch.arange(6)))
    better = logits.clone()
    better.diagonal().add_(3.0)
    assert smoothed_in_batch_loss(better, 0.1) < smoothed_in_batch_loss(logits, 0.1)


def test_training_reaches_every_parameter_and_fits_a_batch():
    torch.manual_seed(0)
    model = KuaiFormer(TINY)
    model.set_item_frequencies(torch.arange(30.0))
    batch = tiny_batch(B=8)
    loss = model(batch)
    loss.backward()
    silent = [name for name, p in model.named_parameters()
              if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == []
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        model(batch).backward()
        optimiser.step()
    assert model(batch).item() < 0.5 * loss.item()


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_serving_through_the_index_matches_score_all(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    torch.manual_seed(0)
    model = KuaiFormer(TINY).eval()
    batch = tiny_batch()
    with torch.no_grad():
        interests = model.interests(batch.user_seq, batch.is_pad, batch.seq_feats)
        expected = model.score_all(batch).topk(5).indices
        exclude = torch.zeros(4, 30, dtype=torch.bool)
        exclude[:, 0] = True  # the padding id
        _, ids = build_index(model.item_vectors(), backend).search(interests, 5, exclude)
    torch.testing.assert_close(ids, expected)


def test_auxiliary_loss_scores_each_raw_position_against_its_next_item():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, aux_weight=0.5)
    model = KuaiFormer(cfg).eval()
    model.set_item_frequencies(torch.arange(30.0))
    batch = tiny_batch()
    with torch.no_grad():
        hidden = model.encode(batch.user_seq, batch.is_pad, batch.seq_feats)
        raw = hidden[:, -cfg.n_interests - cfg.n_raw:-cfg.n_interests]  # [B, n_raw, D]
        items = torch.cat([batch.user_seq[:, -cfg.n_raw:], batch.target_ids[:, None]], 1)
        table, log_q = model.embedding.item_emb.weight, model.log_q
        terms = []
        for b in range(len(batch)):
            for j in range(cfg.n_raw):
                current, following = items[b, j], items[b, j + 1]
                if current == 0 or following == 0:
                    continue
                pos = raw[b, j] @ table[following] - log_q[following]
                neg = raw[b, j] @ table[batch.target_ids].T - log_q[batch.target_ids]
                neg[batch.target_ids == following] = float("-inf")  # accidental hits
                terms.append(-torch.cat([pos[None], neg]).log_softmax(0)[0])
        by_hand = torch.stack(terms).mean()
        aux = model.next_item_loss(raw, batch)
        paper = KuaiFormer(dataclasses.replace(cfg, aux_weight=0.0)).eval()
        paper.load_state_dict(model.state_dict())
        extra = model(batch) - paper(batch)
    torch.testing.assert_close(aux, by_hand)
    torch.testing.assert_close(extra, 0.5 * aux)  # aux_weight times it, nothing else


def test_the_full_softmax_scores_each_target_against_the_whole_catalogue():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, loss="full", smoothing=0.0, aux_weight=0.5)
    model = KuaiFormer(cfg).eval()
    model.set_item_frequencies(torch.arange(30.0))  # ignored: nothing is sampled
    batch = tiny_batch()
    batch.user_seq[1, :-2] = 0  # a history of two items: padded raw positions too
    batch = SeqBatch(batch.user_ids, batch.user_seq, batch.user_seq == 0, batch.target_ids,
                     batch.seq_feats * (batch.user_seq > 0)[..., None])
    with torch.no_grad():
        hidden = model.encode(batch.user_seq, batch.is_pad, batch.seq_feats)
        scores = model.score_all(batch)  # [B, V], the serving scores (Eq. 9)
        main = F.cross_entropy(scores[:, 1:], batch.target_ids - 1)  # padding is no class
        raw = hidden[:, -cfg.n_interests - cfg.n_raw:-cfg.n_interests]
        items = torch.cat([batch.user_seq[:, -cfg.n_raw:], batch.target_ids[:, None]], 1)
        table = model.embedding.item_emb.weight
        terms = [F.cross_entropy((raw[b, j] @ table[1:].T)[None], items[b, j + 1, None] - 1)
                 for b in range(len(batch)) for j in range(cfg.n_raw)
                 if items[b, j] != 0 and items[b, j + 1] != 0]
        by_hand = main + 0.5 * torch.stack(terms).mean()
        torch.testing.assert_close(model(batch), by_hand)
    with pytest.raises(ValueError, match="loss"):
        dataclasses.replace(TINY, loss="sampled")


def test_smoothing_over_the_catalogue_skips_padding_and_rewards_the_target():
    logits = torch.tensor([[float("-inf"), 1.0, 2.0, 0.5]])
    target = torch.tensor([2])
    torch.testing.assert_close(smoothed_in_batch_loss(logits, 0.0, target),
                               F.cross_entropy(logits[:, 1:], target - 1))
    sharper = logits.clone()
    sharper[0, 2] += 2.0
    assert smoothed_in_batch_loss(sharper, 0.1, target) < smoothed_in_batch_loss(logits, 0.1,
                                                                                 target)
    assert torch.isfinite(smoothed_in_batch_loss(logits, 0.1, target))


def test_item_frequencies_shorter_than_the_vocabulary_count_the_rest_once():
    model = KuaiFormer(TINY)
    model.set_item_frequencies(torch.tensor([0.0, 5.0, 3.0]))  # items 3..29 never watched
    expected = torch.tensor([1.0, 5.0, 3.0] + [1.0] * 27)
    torch.testing.assert_close(model.log_q, (expected / expected[1:].sum()).log())
    with pytest.raises(ValueError, match="at most 30"):
        model.set_item_frequencies(torch.ones(31))
