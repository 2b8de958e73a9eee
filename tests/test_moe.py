"""The mixture-of-experts layers and the diagnostics of their three failures."""

import pytest
import torch

from recfunnel.layers.moe import (
    Activation,
    Expert,
    ExpertBank,
    FeatureGate,
    Gate,
    Norm,
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
    gate, v = FeatureGate(12, rank=3, n_experts=4), torch.randn(5, 12)
    assert torch.equal(gate(v), v[:, None].expand(5, 4, 12))
    gate(v).pow(2).sum().backward()
    assert gate.up.grad.abs().sum() > 0
    with torch.no_grad():  # once trained, each expert gets its own scaling in (0, 2)
        gate.up.normal_()
    gated = gate(v) / v[:, None]
    assert gated.min() > 0 and gated.max() < 2 and not torch.allclose(gated[:, 0], gated[:, 1])
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
    relu = Expert(16, (32,), activation=Activation.RELU)
    with torch.no_grad():
        relu[0].bias[:16] = -10.0  # half the units can never fire
    assert dead_unit_fraction(relu(x)) == pytest.approx(0.5, abs=0.05)
    swish = Expert(16, (32,), activation=Activation.SWISH, norm=Norm.BATCH)
    with torch.no_grad():
        swish[0].bias[:16] = -10.0  # batch normalisation removes the shift
    assert dead_unit_fraction(swish(x)) == 0.0
    with pytest.raises(ValueError, match="activation"):
        Expert(16, (8,), activation="relu")  # a string, not an Activation
    with pytest.raises(ValueError, match="norm"):
        Expert(16, (8,), norm="batch")


@pytest.mark.parametrize("norm", [None, Norm.BATCH, Norm.LAYER])
def test_an_expert_bank_computes_exactly_k_separate_experts(norm):
    torch.manual_seed(0)
    bank = ExpertBank(3, 6, (8, 4), activation=Activation.SWISH, norm=norm)
    experts = [Expert(6, (8, 4), activation=Activation.SWISH, norm=norm) for _ in range(3)]
    with torch.no_grad():  # copy the bank's weights into three plain experts
        for k, expert in enumerate(experts):
            linears = [m for m in expert if isinstance(m, torch.nn.Linear)]
            norms = [m for m in expert if isinstance(m, (torch.nn.BatchNorm1d,
                                                         torch.nn.LayerNorm))]
            for layer, linear in enumerate(linears):
                linear.weight.copy_(bank.weights[layer][k].T)
                linear.bias.copy_(bank.biases[layer][k, 0])
                if norm is Norm.LAYER:
                    norms[layer].weight.normal_()
                    bank.norms[layer].gain[k, 0] = norms[layer].weight
    shared, own = torch.randn(16, 6), torch.randn(16, 3, 6)
    assert torch.allclose(bank(shared), torch.stack([e(shared) for e in experts], 1),
                          atol=1e-5)
    assert torch.allclose(bank(own), torch.stack([e(own[:, k]) for k, e in enumerate(experts)],
                                                 1), atol=1e-5)
    bank.eval()  # running statistics, as at inference
    for e in experts:
        e.eval()
    assert torch.allclose(bank(own), torch.stack([e(own[:, k]) for k, e in enumerate(experts)],
                                                 1), atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        bank(torch.randn(16, 2, 6))


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


def test_relative_degradation_counts_only_the_tasks_allowed_to_read():
    # expert 0 read equally by two tasks, expert 1 by three with one owning 80 %,
    # expert 2 by one task only (masked for the others: exactly zero mass)
    mass = torch.tensor([[0.5, 0.8, 0.0], [0.5, 0.1, 0.0], [0.0, 0.1, 0.3]])
    relative = degradation(mass, [0, 1, 2], relative=True)
    assert relative[0] == pytest.approx(0.0)
    assert relative[1] == pytest.approx((0.8 - 1 / 3) / (1 - 1 / 3))
    assert torch.isnan(relative[2])
