"""The mixture-of-experts layers and the diagnostics of their three failures."""

import pytest
import torch

from recfunnel.layers.moe import (
    Expert,
    FeatureGate,
    Gate,
    SelfGate,
    dead_unit_fraction,
    degradation,
    gate_mass,
    mix,
    own_expert_share,
    scale_spread,
)


def test_gates_are_distributions_and_a_mask_removes_experts_and_their_gradient():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    g = Gate(8, 5)(x)
    assert torch.allclose(g.sum(-1), torch.ones(16)) and (g >= 0).all()
    masked = Gate(8, 5, allowed=torch.tensor([True, True, False, True, False]))
    weights = masked(x)
    assert torch.allclose(weights.sum(-1), torch.ones(16))
    assert (weights[:, [2, 4]] == 0).all()
    outputs = torch.randn(16, 5, 4, requires_grad=True)
    mix(weights, outputs).sum().backward()
    assert (outputs.grad[:, [2, 4]] == 0).all() and (outputs.grad[:, [0, 1, 3]] != 0).any()
    with pytest.raises(ValueError, match="allowed"):
        Gate(8, 3, allowed=torch.zeros(3, dtype=torch.bool))


def test_mix_is_the_gate_weighted_sum():
    gates = torch.tensor([[0.25, 0.75]])
    outputs = torch.tensor([[[4.0, 0.0], [0.0, 4.0]]])
    assert torch.equal(mix(gates, outputs), torch.tensor([[1.0, 3.0]]))


def test_the_feature_gate_starts_at_identity_and_can_learn():
    torch.manual_seed(0)
    gate, v = FeatureGate(12, rank=3), torch.randn(5, 12)
    assert torch.equal(gate(v), v)
    gate(v).pow(2).sum().backward()
    assert gate.up.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="rank"):
        FeatureGate(12, rank=0)


def test_the_self_gate_weighs_one_or_several_outputs():
    torch.manual_seed(0)
    gate = SelfGate(4)
    one = torch.randn(3, 1, 4)
    expected = torch.sigmoid(gate.score(one)) * one
    assert torch.allclose(gate(one), expected[:, 0])
    several = torch.randn(3, 2, 4)
    weights = gate.score(several).softmax(dim=1)
    assert torch.allclose(gate(several), (weights * several).sum(1))


def test_normalised_swish_experts_have_no_dead_units_where_relu_ones_do():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    relu = Expert(16, (32,), activation="relu")
    with torch.no_grad():
        relu[0].bias[:16] = -10.0  # half the units can never fire
    assert dead_unit_fraction(relu(x)) == pytest.approx(0.5, abs=0.05)
    swish = Expert(16, (32,), activation="swish", norm="batch")
    with torch.no_grad():
        swish[0].bias[:16] = -10.0  # batch normalisation removes the shift
    assert dead_unit_fraction(swish(x)) == 0.0
    with pytest.raises(ValueError, match="activation"):
        Expert(16, (8,), activation="gelu")
    with pytest.raises(ValueError, match="norm"):
        Expert(16, (8,), norm="group")


def test_diagnostics_return_the_known_answers():
    outputs = torch.zeros(10, 3, 2)
    outputs[:, 0, 0], outputs[:, 1, 0], outputs[:, 2, 1] = 1.0, 4.0, 2.0
    assert scale_spread(outputs) == pytest.approx(4.0)
    gates = {"click": torch.tensor([[0.5, 0.5, 0.0]] * 4),
             "like": torch.tensor([[0.5, 0.0, 0.5]] * 4)}
    mass = gate_mass(gates)
    assert torch.allclose(mass, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]))
    # expert 0 is shared equally (1/2), expert 1 is owned by click (1)
    assert torch.allclose(degradation(mass, shared=[0, 1]), torch.tensor([0.5, 1.0]))
    assert torch.allclose(own_expert_share(mass, own=[[1], [2]]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="own experts"):
        own_expert_share(mass, own=[[1]])
    with pytest.raises(ValueError):
        dead_unit_fraction(torch.zeros(3))
