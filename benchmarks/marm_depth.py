"""Chapter 6's committed runs over seeds: does depth help at equal serving cost, what does
the stale cache cost, and how does quality grow with the cache size L * n * d?

At a profile's sizes (``profiles.MARMSize``, default ``cpu``), every seed draws its own
two-hop exposure streams and initialisation and trains, in stream order, MARM with L = 2,
the single-layer target attention (L = 1), the layer-0 ablation (two layers that ignore the
deeper cached states) and L = 2 trained fresh (each request's receptive field recomputed
with the current parameters, gradients into the past); all are served from the cache. Then
the (L, n) grid of the cache-size trend, at the profile's ``grid_epochs``. Each run keeps
its test users' AUC, so the chapter judges the claims with ``study.compare`` over users and
seeds.

    python benchmarks/marm_depth.py  # -> results/marm_depth.json (about 25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from recfunnel.profiles import profile_for
from recfunnel.recipes.marm import VARIANTS, config_for, streams_for, train_variant
from recfunnel.study import Run, Verdict, compare, provenance, write_report

RESULTS = Path(__file__).parent / "results"
COMPARISONS = (("L=2", "L=1"), ("L=2", "L=2 layer-0 history"), ("L=2 trained fresh", "L=2"))


def grid_name(layers: int, window: int) -> str:
    return f"grid L={layers} n={window}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "marm_depth.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size = profile_for("marm", args.profile)
    jobs = [(name, changes, fresh, None) for name, (changes, fresh) in VARIANTS.items()]
    jobs += [(grid_name(L, n), {"n_layers": L, "window": n}, False, size.grid_epochs)
             for L, n in size.grid]
    runs = []
    for seed in args.seeds:
        streams = streams_for(size, seed)
        for name, changes, fresh, epochs in jobs:
            cfg = config_for(size, streams, **changes)
            started = time.perf_counter()
            _, measured = train_variant(size, streams, cfg, fresh, seed, epochs=epochs,
                                        device="cpu", progress=False)
            runs.append(Run(model="MARM", variant=name, seed=seed, profile=args.profile,
                            config=dataclasses.asdict(cfg), metrics=measured.metrics,
                            per_user=measured.per_user, epochs=measured.epochs,
                            best_epoch=measured.best_epoch,
                            seconds=time.perf_counter() - started, extra=measured.extra))
            print(f"seed {seed} {name}: GAUC click {measured.metrics['gauc_click']:.4f}, long "
                  f"view {measured.metrics['gauc_long_view']:.4f} "
                  f"({runs[-1].seconds:.0f} s)", flush=True)
    verdicts = {}
    for a, b in COMPARISONS:
        gap = compare(runs, a, b, "auc_click")
        verdict = Verdict.better(f"{a} beats {b} on click", gap)
        verdicts[f"{a} vs {b}"] = verdict.to_dict()
        print(f"{verdict.claim}: {gap.summary} -> {verdict.text}", flush=True)
    write_report(args.out, {"benchmark": "marm_depth", **provenance(),
                            "command": " ".join(["python", "benchmarks/marm_depth.py",
                                                 *sys.argv[1:]]),
                            "settings": {"profile": args.profile, "seeds": args.seeds,
                                         "size": dataclasses.asdict(size)},
                            "runs": [run.to_dict() for run in runs], "verdicts": verdicts})


if __name__ == "__main__":
    main()
