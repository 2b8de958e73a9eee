"""The multi-task rankers HoME is measured against, as mixers of ``models.multitask``.

* shared-bottom: one MLP shared by all tasks, one tower per task: all sharing, no choice;
* MMoE: K shared experts and one softmax gate per task (Ma et al. 2018, bibkey
  ma2018mmoe, section 4);
* PLE: Progressive Layered Extraction, levels of shared plus task-specific experts, each
  task's gate reading only the shared and its own experts (Tang et al. 2020, bibkey
  tang2020ple, section 4.3); one level is CGC, and one level without task experts is MMoE.

Each has a config dataclass; ``models.multitask.build_ranker(config, data)`` builds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.layers.moe import Activation, Expert, ExpertBank, Gate, Norm, mix
from recfunnel.models.multitask import Trace


@dataclass(frozen=True)
class SharedBottomConfig:
    hidden: tuple[int, ...] = (128, 64)  # the shared MLP's widths
    activation: Activation = Activation.RELU
    norm: Norm | None = None
    d_emb: int = 16  # width of each field's embedding
    tower_hidden: int = 16

    def mixer(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
              ) -> SharedBottom:
        return SharedBottom(d_v, len(tasks), self)


class SharedBottom(nn.Module):
    """v [B, d_v] -> one shared MLP -> the same [B, d] for every task."""

    task_layer = "task"

    def __init__(self, d_v: int, n_tasks: int, cfg: SharedBottomConfig):
        super().__init__()
        self.n_tasks = n_tasks
        self.bottom = Expert(d_v, cfg.hidden, cfg.activation, cfg.norm)
        self.d_out = self.bottom.d_out

    def forward(self, v: torch.Tensor, trace: Trace | None = None) -> list[torch.Tensor]:
        h = self.bottom(v)  # [B, d]
        if trace is not None:
            trace.outputs["task"] = h[:, None]
        return [h] * self.n_tasks


@dataclass(frozen=True)
class PLEConfig:
    n_shared: int = 2  # shared experts per level
    n_own: int = 1  # experts of each task per level
    levels: int = 2
    expert_hidden: tuple[int, ...] = (64, 32)
    activation: Activation = Activation.RELU
    norm: Norm | None = None
    d_emb: int = 16
    tower_hidden: int = 16

    def __post_init__(self) -> None:
        if self.n_shared < 1 or self.n_own < 0 or self.levels < 1:
            raise ValueError("need n_shared >= 1, n_own >= 0 and levels >= 1")

    def mixer(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
              ) -> PLE:
        return PLE(d_v, tasks, self)


@dataclass(frozen=True)
class MMoEConfig:
    n_experts: int = 8  # K shared experts
    expert_hidden: tuple[int, ...] = (64, 32)
    activation: Activation = Activation.RELU
    norm: Norm | None = None
    d_emb: int = 16
    tower_hidden: int = 16

    def mixer(self, d_v: int, tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
              ) -> PLE:
        """MMoE is PLE with one level and no task-specific experts."""
        return PLE(d_v, tasks, PLEConfig(n_shared=self.n_experts, n_own=0, levels=1,
                                         expert_hidden=self.expert_hidden,
                                         activation=self.activation, norm=self.norm))


class PLE(nn.Module):
    """``levels`` layers of ``n_shared`` shared experts plus ``n_own`` experts per task. Task
    t's gate is a softmax over the shared experts and its own only (the other tasks' experts
    are masked); below the last level a shared gate over all experts feeds the next level's
    shared experts. Level l > 0 experts read the level below's mixtures: shared experts the
    shared one, task t's experts task t's."""

    task_layer = "task"

    def __init__(self, d_v: int, tasks: Sequence[str], cfg: PLEConfig):
        super().__init__()
        self.tasks = tuple(tasks)
        T, K = len(self.tasks), cfg.n_shared + len(self.tasks) * cfg.n_own
        self.n_shared, self.n_own, self.levels = cfg.n_shared, cfg.n_own, cfg.levels
        self.d_out = d_e = cfg.expert_hidden[-1]
        self.experts = nn.ModuleList()  # per level a bank: [shared, task 0's, task 1's, ...]
        self.task_gates = nn.ModuleList()  # per level: one Gate per task
        self.shared_gates = nn.ModuleList()  # per level but the last
        for level in range(cfg.levels):
            d_in = d_v if level == 0 else d_e
            self.experts.append(ExpertBank(K, d_in, cfg.expert_hidden, cfg.activation,
                                           cfg.norm))
            self.task_gates.append(nn.ModuleList(Gate(d_in, K, self._readable(t, K))
                                                 for t in range(T)))
            if level < cfg.levels - 1:
                self.shared_gates.append(Gate(d_in, K))

    def _readable(self, task: int, n_experts: int) -> torch.Tensor:
        """[E] booleans: the shared experts and task ``task``'s own."""
        allowed = torch.zeros(n_experts, dtype=torch.bool)
        allowed[: self.n_shared] = True
        start = self.n_shared + task * self.n_own
        allowed[start:start + self.n_own] = True
        return allowed

    def forward(self, v: torch.Tensor, trace: Trace | None = None) -> list[torch.Tensor]:
        shared_in, task_in = v, [v] * len(self.tasks)
        for level in range(self.levels):
            if level == 0:  # every expert reads v
                stacked = self.experts[0](v)  # [B, E, d_e]
            else:  # shared experts read the shared mixture, task t's experts task t's
                inputs = [shared_in] * self.n_shared + [x for x in task_in
                                                        for _ in range(self.n_own)]
                stacked = self.experts[level](torch.stack(inputs, dim=1))
            gates = [gate(x) for gate, x in zip(self.task_gates[level], task_in, strict=True)]
            if level < self.levels - 1:
                shared_in = mix(self.shared_gates[level](shared_in), stacked)
            task_in = [mix(g, stacked) for g in gates]
            if trace is not None:
                name = "task" if level == self.levels - 1 else f"level{level}"
                trace.outputs[name] = stacked
                trace.gates[name] = dict(zip(self.tasks, gates, strict=True))
                trace.shared[name] = list(range(self.n_shared))
                trace.own[name] = {task: list(range(self.n_shared + t * self.n_own,
                                                    self.n_shared + (t + 1) * self.n_own))
                                   for t, task in enumerate(self.tasks)}
        return task_in
