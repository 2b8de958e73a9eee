"""HoME: Hierarchy of Multi-Gate Experts (Wang et al. 2024, bibkey wang2024home).

Two expert levels, each of HoME's three fixes a field of ``HoMEConfig`` so that a chapter
can ablate them one at a time with ``dataclasses.replace``:

* ``expert_norm``: experts are Linear -> BatchNorm -> Swish (``Norm.BATCH``; ``Norm.LAYER``
  for LayerNorm) instead of Linear -> ReLU (``None``) (section 3: against expert collapse);
* ``hierarchy``: tasks are grouped (``groups``: watch-time tasks and interaction tasks).
  The *meta layer* has global shared experts and per-group experts; each group's gate
  reads only its own and the global ones, a shared gate only the global ones. The *task
  layer* reads the meta outputs of the task's group (x_g = z_g concatenated with z_shared)
  and has per-group experts and per-task experts; task t's gate reads only its group's
  and its own (a -inf mask on the gate logits: against expert degradation). Switched off,
  every gate may read every expert of its layer;
* ``feature_gate``: each meta expert k sees its own rescaled input v * 2 sigmoid(v B_k A_k)
  (LoRA-style, identity at the start), and ``self_gate``: each mixture gets a gated
  residual over its owner's own experts, z_g += SelfGate(group g's experts) and
  r_t += SelfGate(task t's experts) (against underfitting of sparse tasks).

Shapes, with B rows, d_v the feature vector, d_e the expert width:

    v [B, d_v] -> meta experts [B, E_meta, d_e] -> z_g, z_shared [B, d_e]
    x_g = z_g ++ z_shared [B, 2 d_e] -> task experts [B, E_task, d_e] -> r_t [B, d_e]
    r_t -> Tower_t -> logit_t

What the paper leaves open is chosen as follows [proposed]: BN + Swish after every hidden
layer of an expert; the task-layer gates read x_g (what their experts read); feature-gates
on the meta experts only; self-gates on both levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.moe import Activation, ExpertBank, FeatureGate, Gate, Norm, SelfGate, mix
from recfunnel.models.multitask import Trace


@dataclass(frozen=True)
class HoMEConfig:
    """HoME's sizes and its three fixes (each switchable for the ablations)."""

    n_meta_shared: int = 2  # global meta experts
    n_meta_group: int = 2  # meta experts per task group
    n_task_group: int = 1  # task-layer experts per group
    n_task_own: int = 1  # task-layer experts per task
    meta_hidden: tuple[int, ...] = (64, 32)
    task_hidden: tuple[int, ...] = (32,)
    lora_rank: int = 8  # of the feature-gates
    expert_norm: Norm | None = Norm.BATCH  # None: Linear -> ReLU experts (no fix)
    hierarchy: bool = True
    feature_gate: bool = True
    self_gate: bool = True
    d_emb: int = 16
    tower_hidden: int = 16

    def __post_init__(self) -> None:
        if min(self.n_meta_shared, self.n_meta_group, self.n_task_group + self.n_task_own) < 1:
            raise ValueError("need meta experts of both kinds and at least one task expert")
        if self.meta_hidden[-1] != self.task_hidden[-1]:
            raise ValueError("meta and task experts must end at the same width d_e")
        if self.expert_norm is not None and not isinstance(self.expert_norm, Norm):
            raise ValueError(f"expert_norm must be None or a Norm, got {self.expert_norm!r}")

    def mixer(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
              ) -> HoME:
        return HoME(d_v, tasks, groups, self)


class HoME(nn.Module):
    """HoME's mixer: v [B, d_v] -> one [B, d_e] representation per task, through the meta
    and the task layer, with the fixes ``cfg`` switches on."""

    task_layer = "task"  # the Trace layer whose gates are per task

    def __init__(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]],
                 cfg: HoMEConfig):
        super().__init__()
        self.tasks, self.cfg = tuple(tasks), cfg
        grouped = [t for members in groups.values() for t in members]
        if sorted(grouped) != sorted(self.tasks):
            raise ValueError("groups must assign every task to exactly one group")
        self.groups = {g: tuple(members) for g, members in groups.items()}
        self.group_of = {t: g for g, members in self.groups.items() for t in members}
        activation = Activation.SWISH if cfg.expert_norm else Activation.RELU
        names = list(self.groups)

        # meta layer: [global..., group 0's..., group 1's...]
        self.meta_index = {"shared": list(range(cfg.n_meta_shared))}
        for g, name in enumerate(names):
            start = cfg.n_meta_shared + g * cfg.n_meta_group
            self.meta_index[name] = list(range(start, start + cfg.n_meta_group))
        n_meta = cfg.n_meta_shared + len(names) * cfg.n_meta_group
        self.meta_experts = ExpertBank(n_meta, d_v, cfg.meta_hidden, activation, cfg.expert_norm)
        self.feature_gates = FeatureGate(d_v, cfg.lora_rank, n_meta) if cfg.feature_gate else None
        self.meta_gates = nn.ModuleDict({
            owner: Gate(d_v, n_meta, self._allowed(n_meta, index, cfg.hierarchy))
            for owner, index in self._meta_readers(names).items()})
        self.d_out = d_e = cfg.meta_hidden[-1]

        # task layer: [group 0's..., group 1's..., task 0's..., task 1's...]
        self.task_index = {}
        for g, name in enumerate(names):
            self.task_index[name] = list(range(g * cfg.n_task_group, (g + 1) * cfg.n_task_group))
        first_own = len(names) * cfg.n_task_group
        for t, task in enumerate(self.tasks):
            start = first_own + t * cfg.n_task_own
            self.task_index[task] = list(range(start, start + cfg.n_task_own))
        n_task = first_own + len(self.tasks) * cfg.n_task_own
        expert_group = [name for name in names for _ in range(cfg.n_task_group)] + [
            self.group_of[task] for task in self.tasks for _ in range(cfg.n_task_own)]
        self.register_buffer("expert_group", torch.tensor([names.index(g) for g in expert_group]))
        self.task_experts = ExpertBank(n_task, 2 * d_e, cfg.task_hidden, activation,
                                       cfg.expert_norm)
        self.task_gates = nn.ModuleList(
            Gate(2 * d_e, n_task, self._allowed(
                n_task, self.task_index[self.group_of[task]] + self.task_index[task],
                cfg.hierarchy))
            for task in self.tasks)

        owners = (*names, *(task for task in self.tasks if self.task_index[task]))
        self.self_gates = nn.ModuleDict({f"of_{owner}": SelfGate(d_e) for owner in owners}
                                        ) if cfg.self_gate else None  # "of_": a task may be
        # called "forward", which nn.ModuleDict would refuse as a key

    def extra_repr(self) -> str:
        cfg = self.cfg
        return (f"expert_norm={cfg.expert_norm}, hierarchy={cfg.hierarchy}, "
                f"feature_gate={cfg.feature_gate}, self_gate={cfg.self_gate}")

    # ------------------------------------------------------------------ wiring

    def _meta_readers(self, names: list[str]) -> dict[str, list[int]]:
        readers = {name: self.meta_index["shared"] + self.meta_index[name] for name in names}
        readers["shared"] = self.meta_index["shared"]
        return readers

    @staticmethod
    def _allowed(n: int, index: list[int], hierarchy: bool) -> torch.Tensor:
        allowed = torch.zeros(n, dtype=torch.bool)
        allowed[index] = True
        return allowed if hierarchy else torch.ones(n, dtype=torch.bool)

    # ------------------------------------------------------------------ forward

    def forward(self, v: torch.Tensor, trace: Trace | None = None) -> list[torch.Tensor]:
        # [B, E_meta, d_v] with feature-gates (one input per expert), else v itself [B, d_v]
        gated = self.feature_gates(v) if self.feature_gates is not None else v
        meta = self.meta_experts(gated)  # [B, E_meta, d_e]
        meta_gates = {owner: gate(v) for owner, gate in self.meta_gates.items()}
        z = {}
        for owner, g in meta_gates.items():
            z[owner] = mix(g, meta)  # [B, d_e]
            if self.self_gates is not None and f"of_{owner}" in self.self_gates:
                z[owner] = z[owner] + self.self_gates[f"of_{owner}"](
                    meta[:, self.meta_index[owner]])
        x = {name: torch.cat([z[name], z["shared"]], dim=-1) for name in self.groups}
        per_group = torch.stack(list(x.values()), dim=1)  # [B, G, 2 d_e]
        task = self.task_experts(per_group[:, self.expert_group])  # [B, E_task, d_e]
        gates, reps = {}, []
        for t, name in enumerate(self.tasks):
            gates[name] = self.task_gates[t](x[self.group_of[name]])
            r = mix(gates[name], task)
            if self.self_gates is not None and f"of_{name}" in self.self_gates:
                r = r + self.self_gates[f"of_{name}"](task[:, self.task_index[name]])
            reps.append(r)
        if trace is not None:
            trace.outputs.update(meta=meta, task=task)
            trace.gates.update(meta=meta_gates, task=gates)
            trace.shared.update(meta=self.meta_index["shared"],
                                task=[k for g in self.groups for k in self.task_index[g]])
            trace.own.update(task={name: self.task_index[name] for name in self.tasks})
        return reps
