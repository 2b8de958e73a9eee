"""ELASTIC (chapter 3): linear cost, sparse memory gradients, no future leakage, padding,
the product-key search and the diagnostics."""

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recfunnel.data.sequences import SeqBatch, SequentialSplit
from recfunnel.layers.attention import PreNormBlock
from recfunnel.layers.memory import ProductKeyMemory, slot_usage
from recfunnel.models.elastic import DispatcherLayer, Elastic, ElasticConfig, expert_similarity


def small_config(**changes) -> ElasticConfig:
    base = dict(n_items=50, max_len=12, d_model=16, n_heads=2, n_layers=2, d_ffn=32,
                n_experts=4, memory_size=64, top_c=4, p_dropout=0.0)
    return ElasticConfig(**(base | changes))


def flops(module, *inputs) -> int:
    """Floating-point operations of one forward pass, counted on the meta device (shapes
    only, nothing is computed)."""
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def test_doubling_the_length_doubles_the_dispatcher_cost_but_quadruples_attention():
    d, k = 32, 8
    layer = DispatcherLayer(small_config(d_model=d, n_experts=k)).to("meta")
    block = PreNormBlock(d, 2, 64).to("meta")

    def lda(length):
        x = torch.empty(2, length, d, device="meta")
        return flops(layer, x, torch.empty(2, k, d, device="meta"), None)

    def self_attention_scores(length):  # the [L, L] part of SASRec's block
        x = torch.empty(2, length, d, device="meta")
        return flops(block, x, None, False) - flops(block.ffn, x)

    for length in (1_024, 4_096):
        assert 1.9 < lda(2 * length) / lda(length) < 2.1
        assert self_attention_scores(2 * length) / self_attention_scores(length) > 3.0


def test_gradients_reach_only_the_selected_slots_and_their_sub_keys():
    torch.manual_seed(0)
    memory = ProductKeyMemory(n_slots=64, d_query=8, d_value=4, top_c=3, top_k=2)
    read = memory(torch.randn(5, 8))
    (read.scores.softmax(-1)[..., None] * read.values).sum().backward()
    value_rows = memory.values.weight.grad.abs().sum(1).nonzero().flatten()
    assert set(value_rows.tolist()) == set(read.slots.flatten().tolist())
    first, second = read.slots // memory.n_sub, read.slots % memory.n_sub
    for half, chosen in ((0, first), (1, second)):
        rows = memory.sub_keys.grad[half].abs().sum(1).nonzero().flatten()
        assert set(rows.tolist()) <= set(chosen.flatten().tolist())


def test_product_keys_find_the_exact_top_k_of_all_slots():
    torch.manual_seed(1)
    memory = ProductKeyMemory(n_slots=100, d_query=12, d_value=4, top_c=5, top_k=5)
    query = torch.randn(7, 12)
    n = memory.n_sub
    full_keys = torch.cat([memory.sub_keys[0].repeat_interleave(n, 0),
                           memory.sub_keys[1].repeat(n, 1)], dim=1)  # [N, d_query]
    brute = (query @ full_keys.T).topk(5).indices
    assert torch.equal(memory(query).slots.sort(-1).values, brute.sort(-1).values)
    assert memory.score_count() == 2 * 10 + 25


def test_a_future_item_cannot_change_an_earlier_prediction():
    """The prediction after position p reads items before p only, through the split and
    the model; changing a later item changes nothing."""
    torch.manual_seed(0)
    rows = [(u, 1 + (7 * u + 3 * t) % 40, t) for u in (1, 2) for t in range(10)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    changed = frame.copy()
    changed.loc[(changed.user_id == 1) & (changed.timestamp >= 6), "item_id"] = 45
    model = Elastic(small_config()).eval()
    users, positions = [1, 1, 2], [4, 6, 5]  # predictions after 4 and 6 items of user 1
    before = model.score_all(SequentialSplit(frame, max_len=12).batch(users, positions))
    after = model.score_all(SequentialSplit(changed, max_len=12).batch(users, positions))
    torch.testing.assert_close(before, after)  # item 6 onwards is the future of both cuts
    later = SequentialSplit(changed, max_len=12).batch([1], [7])
    assert not torch.allclose(model.score_all(later),
                              model.score_all(SequentialSplit(frame, max_len=12).batch([1], [7])))


@pytest.mark.parametrize("memory_size", [64, None])
def test_padding_does_not_change_a_short_users_output(memory_size):
    torch.manual_seed(0)
    model = Elastic(small_config(memory_size=memory_size)).eval()
    history = torch.tensor([[5, 9, 2, 7]])
    padded = torch.cat([torch.zeros(1, 8, dtype=torch.long), history], dim=1)
    noisy = model.encode(padded, padded == 0)
    clean = model.encode(history, history == 0)
    torch.testing.assert_close(noisy.user, clean.user)
    torch.testing.assert_close(noisy.experts, clean.experts)
    if memory_size:
        assert torch.equal(noisy.read.slots, clean.read.slots)


def test_experts_are_read_from_the_memory_and_learn():
    torch.manual_seed(0)
    model = Elastic(small_config(balance_weight=0.1))
    seq = torch.randint(1, 50, (8, 12))
    batch = SeqBatch(torch.arange(8), seq, seq == 0, torch.randint(1, 50, (8,)))
    out = model.eval().encode(seq, seq == 0)
    assert out.experts.shape == (8, 4, 16) and out.read.slots.shape == (8, 4)
    # the initial experts are what the memory returns: other slot values, other experts
    with torch.no_grad():
        saved = model.imr.memory.values.weight.clone()
        model.imr.memory.values.weight.mul_(-1)
        flipped = model.encode(seq, seq == 0)
        model.imr.memory.values.weight.copy_(saved)
    assert (flipped.experts - out.experts).abs().max() > 1e-3
    # and training moves the memory: the loss on a fixed batch falls, the read slots change
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss, logs = model(batch)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert {"next_item", "balance"} <= set(logs)
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.imr.memory.values.weight, saved)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="square"):
        Elastic(small_config(memory_size=50))
    with pytest.raises(ValueError, match="top_k"):
        Elastic(small_config(n_experts=20, top_c=4))
    model = Elastic(small_config())
    with pytest.raises(ValueError, match="max_len"):
        model.encode(torch.ones(1, 13, dtype=torch.long), torch.zeros(1, 13, dtype=torch.bool))


def test_diagnostics_on_known_inputs():
    even = slot_usage(torch.arange(16).view(4, 4), n_slots=16)
    assert even == {"used": 1.0, "entropy": pytest.approx(1.0), "top1_share": 1 / 16}
    collapsed = slot_usage(torch.zeros(4, 4, dtype=torch.long), n_slots=16)
    assert collapsed == {"used": 1 / 16, "entropy": 0.0, "top1_share": 1.0}
    same = torch.ones(3, 4, 8)  # every expert the same vector: similarity 1 everywhere
    torch.testing.assert_close(expert_similarity(same), torch.ones(4, 4))
    orthogonal = torch.eye(4)[None].expand(3, 4, 4)
    torch.testing.assert_close(expert_similarity(orthogonal), torch.eye(4))
