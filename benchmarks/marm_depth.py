"""Does depth help at equal serving cost? MARM with L = 2 against the single-layer target
attention (L = 1) and the layer-0 ablation (two layers that ignore the deeper cached
states), on chapter 6's two-hop exposure streams, over ``--seeds``; and what the stale cache
costs: L = 2 trained fresh (each request's receptive field recomputed with the current
parameters, gradients into the past) against L = 2 trained on the cache, both served from it.

Each seed draws its own streams (``ExposureConfig(seed=...)``) and initialisation; every
model is trained in stream order (``recipes.marm.fit_marm``, early stopping on validation
click GAUC) and read out on the test period: GAUC of click and long view, and each test
user's AUC for paired comparisons (``study.paired_gap`` over users and seeds, the book's one
verdict rule), plus serving FLOPs per request.

    python benchmarks/marm_depth.py  # -> results/marm_depth.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from recfunnel.data.exposures import ExposureConfig, make_exposures
from recfunnel.models.marm import MARM, MARMConfig, serving_flops
from recfunnel.recipes.marm import TASKS, fit_marm, marm_readout
from recfunnel.study import Run, Verdict, compare, provenance, write_report
from recfunnel.train import TrainConfig

RESULTS = Path(__file__).parent / "results"
# name -> (model changes, trained fresh: every request's receptive field recomputed with the
# current parameters, so gradients reach the past; served from the cache all the same)
VARIANTS = {"L=1": ({"n_layers": 1}, False), "L=2": ({"n_layers": 2}, False),
            "L=2 layer-0 history": ({"n_layers": 2, "history": "layer0"}, False),
            "L=2 trained fresh": ({"n_layers": 2}, True)}
COMPARISONS = (("L=2", "L=1"), ("L=2", "L=2 layer-0 history"), ("L=2 trained fresh", "L=1"),
               ("L=2 trained fresh", "L=2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=RESULTS / "marm_depth.json")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        streams = make_exposures(ExposureConfig(n_users=args.users, n_items=1_000, n_topics=16,
                                                length=args.length, hop=4.0, taste=0.3,
                                                hop_window=args.window, seed=seed))
        for name, (changes, fresh) in VARIANTS.items():
            cfg = MARMConfig(streams.cfg.n_items + 1, streams.cfg.n_topics,
                             d_model=args.d_model, n_heads=args.heads, d_ffn=2 * args.d_model,
                             window=args.window, **changes)
            torch.manual_seed(seed)
            model = MARM(cfg)
            started = time.perf_counter()
            history = fit_marm(model, streams, TrainConfig(
                epochs=args.epochs, lr=args.lr, patience=args.patience, monitor="valid_gauc",
                progress=False, device="cpu"), fresh=fresh)
            readout = marm_readout(model, streams, "test")
            runs.append(Run(model="MARM", variant=name, seed=seed, profile="benchmark",
                            config=dataclasses.asdict(cfg),
                            metrics={f"gauc_{t}": readout[f"gauc_{t}"] for t in TASKS},
                            per_user={f"auc_{t}": readout["per_user"][f"auc_{t}"]
                                      for t in TASKS},
                            epochs=len(history.epochs), best_epoch=history.best_epoch,
                            seconds=time.perf_counter() - started,
                            extra={"serving_flops": serving_flops(cfg, "cached")}))
            print(f"seed {seed} {name}: GAUC click {readout['gauc_click']:.4f}, long view "
                  f"{readout['gauc_long_view']:.4f}", flush=True)
    verdicts = {}
    for task in TASKS:
        for a, b in COMPARISONS:
            # each seed has its own streams, so its test users differ: study.compare pairs
            # users within a seed and combines the seeds
            gap = compare(runs, a, b, f"auc_{task}")
            verdict = Verdict.better(f"{a} beats {b} on {task}", gap)
            verdicts[f"{a} vs {b} ({task})"] = verdict.to_dict()
            print(f"{verdict.claim}: {gap.summary} -> {verdict.text}", flush=True)
    write_report(args.out, {"benchmark": "marm_depth", **provenance(),
                            "command": " ".join(["python", "benchmarks/marm_depth.py",
                                                 *sys.argv[1:]]),
                            "settings": {k: v for k, v in vars(args).items() if k != "out"},
                            "runs": [run.to_dict() for run in runs], "verdicts": verdicts})


if __name__ == "__main__":
    main()
