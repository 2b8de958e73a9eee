"""Cost counted rather than timed: operation counts from shapes alone, and the exponent
of a cost curve (chapter 3; any chapter that argues about how cost grows with length).

    flops = count_flops(layer.to("meta"), torch.empty(1, 4_096, 64, device="meta"))
    scaling_exponent([256, 1_024, 4_096], [c256, c1024, c4096])  # ~1 linear, ~2 quadratic
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: nn.Module, *inputs) -> int:
    """Floating-point operations of one forward pass (``FlopCounterMode``); on the
    ``meta`` device nothing is computed, so long inputs cost nothing to count."""
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def scaling_exponent(lengths: Sequence[float], values: Sequence[float]) -> float:
    """Exponent a of values ~ lengths^a: least squares on log-log."""
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def attention_map_gib(scores_per_head: float, users: int = 256, heads: int = 2,
                      layers: int = 2) -> float:
    """GiB of float32 attention maps kept for the backward pass: 4 bytes per score, per
    head, layer and user."""
    return 4 * scores_per_head * users * heads * layers / 2**30
