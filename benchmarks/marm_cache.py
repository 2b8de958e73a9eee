"""MARM's serving cost: a request read from the cache against recomputing its history.

For each window n and depth L, ``--batch`` users' streams of L*n + 1 random exposures are
served: the cache is filled by serving positions 0 .. L*n - 1, then the last position is
timed both ways, ``cached`` (``models.marm.request``: read n cached states per layer) and
``recompute`` (``models.marm.recompute_request``: every layer over the L*n exposures the
target depends on), median of ``--repeats``, in float32 with frozen random parameters. The
two outputs' max |difference| is recorded in the same run, and the operation counts of one
request from ``serving_flops`` (attention: the score and weighting matmuls; total:
everything, projections and FFN included).

    python benchmarks/marm_cache.py  # -> results/marm_cache.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from recfunnel.models.marm import (
    MARM,
    ExposureCache,
    MARMConfig,
    recompute_request,
    request,
    serving_flops,
)
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure(n: int, layers: int, batch: int, repeats: int, d_model: int) -> dict:
    cfg = MARMConfig(n_items=1_000, n_topics=16, d_model=d_model, n_layers=layers, window=n)
    torch.manual_seed(0)
    model = MARM(cfg).eval()
    for parameter in model.parameters():
        parameter.normal_(0, 0.3)
    T = layers * n + 1
    items = torch.randint(1, cfg.n_items, (batch, T))
    topics, feedback = items % cfg.n_topics, torch.randint(0, 3, (batch, T))
    users = torch.arange(batch)
    cache = ExposureCache.for_model(model, batch, T)
    for t in range(T - 1):
        request(model, cache, items, topics, feedback, users, t)
    cached = request(model, cache, items, topics, feedback, users, T - 1)[0]
    full = recompute_request(model, items, topics, feedback, T - 1)
    flops = {mode: serving_flops(cfg, mode) for mode in ("cached", "recompute")}
    seconds = {
        "cached": median_seconds(lambda: request(model, cache, items, topics, feedback, users,
                                                 T - 1), repeats) / batch,
        "recompute": median_seconds(lambda: recompute_request(model, items, topics, feedback,
                                                              T - 1), repeats) / batch,
    }
    return {"n": n, "layers": layers, "batch": batch, "d_model": d_model,
            "max_abs_diff": float((cached - full).abs().max()),
            "seconds_per_request": seconds, "flops_per_request": flops,
            "attention_flops_ratio": flops["recompute"]["attention"] / flops["cached"]["attention"],
            "total_flops_ratio": flops["recompute"]["total"] / flops["cached"]["total"],
            "wall_time_ratio": seconds["recompute"] / seconds["cached"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS / "marm_cache.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for layers in args.layers:
        for n in args.windows:
            row = measure(n, layers, args.batch, args.repeats, args.d_model)
            rows.append(row)
            print(f"L={layers} n={n}: attention FLOPs x{row['attention_flops_ratio']:.0f}, "
                  f"total FLOPs x{row['total_flops_ratio']:.1f}, wall time "
                  f"x{row['wall_time_ratio']:.1f}, max |diff| {row['max_abs_diff']:.1e}",
                  flush=True)
    write_report(args.out, {"benchmark": "marm_cache", **provenance(),
                            "command": " ".join(["python", "benchmarks/marm_cache.py",
                                                 *sys.argv[1:]]),
                            "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
