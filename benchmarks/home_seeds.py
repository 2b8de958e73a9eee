"""Chapter 5's multi-task comparison over several seeds: shared-bottom, MMoE (ReLU), MMoE with
normalised Swish experts, PLE, HoME, and HoME without each of its four fixes.

Every model is trained at the given profile's sizes on the world's eight-task impressions
(one world, seed 0; the seed varies initialisation and batch order) and records its test
AUC and GAUC per task, its expert diagnostics (dead units, scale spread, degradation, own-
expert share of the four sparsest tasks), its parameter count and its training seconds.

    python benchmarks/home_seeds.py   # cpu profile, seeds 0 1 2 -> results/home_seeds.json
    python benchmarks/home_seeds.py --epochs 3 --patience 0 \
        --out benchmarks/results/home_seeds_3epochs.json

    python benchmarks/home_seeds.py --conflict 0 \
        --out benchmarks/results/home_seeds_aligned.json

(the first trains every model until its validation mean AUC stops improving, as the
chapter does; the second gives every model the same three epochs; the third uses a world
whose tasks never pull apart).

Chapter 5 shows the committed JSON next to its own runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from recfunnel.data.multitask import ImpressionConfig, make_impressions
from recfunnel.models.home import build_ranker
from recfunnel.models.multitask import count_parameters, diagnose, fit_multitask, task_metrics
from recfunnel.profiles import profile_for
from recfunnel.runtime import set_seed

RESULTS = Path(__file__).parent / "results"
SPARSE = ("follow", "comment", "forward", "collect")
CONTENDERS = {
    "shared-bottom": ("shared-bottom", {}), "MMoE": ("MMoE", {}),
    "MMoE+norm": ("MMoE+norm", {}), "PLE": ("PLE", {}), "HoME": ("HoME", {}),
    "HoME-no-norm": ("HoME", {"expert_norm": None}),
    "HoME-layer-norm": ("HoME", {"expert_norm": "layer"}),
    "HoME-no-hierarchy": ("HoME", {"hierarchy": False}),
    "HoME-no-feature-gate": ("HoME", {"feature_gate": False}),
    "HoME-no-self-gate": ("HoME", {"self_gate": False}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(CONTENDERS),
                        choices=list(CONTENDERS))
    parser.add_argument("--epochs", type=int, help="at most (profile's)")
    parser.add_argument("--patience", type=int,
                        help="early-stopping patience, 0 for none (profile's)")
    parser.add_argument("--conflict", type=float, default=ImpressionConfig.conflict,
                        help="the world's conflict between tasks (kappa)")
    parser.add_argument("--out", type=Path, default=RESULTS / "home_seeds.json")
    args = parser.parse_args(argv)
    size = profile_for("home", args.profile)
    if args.epochs is not None:
        size = dataclasses.replace(size, epochs=args.epochs)
    if args.patience is not None:
        size = dataclasses.replace(size, patience=args.patience or None)
    data = make_impressions(ImpressionConfig(n_users=size.users, n_items=size.items,
                                             n_impressions=size.impressions,
                                             conflict=args.conflict))
    train, valid, test = data.split()
    runs = []
    for seed in args.seeds:
        for label in args.models:
            name, flags = CONTENDERS[label]
            set_seed(seed)
            model = build_ranker(name, data, size, **flags)
            start = time.perf_counter()
            history = fit_multitask(model, train, valid, epochs=size.epochs,
                                    batch_size=size.batch_size, lr=size.lr, seed=seed,
                                    patience=size.patience, progress=False)
            seconds = time.perf_counter() - start
            runs.append({"model": label, "seed": seed, "seconds": round(seconds, 1),
                         "epochs_run": len(history.epochs), "best_epoch": history.best_epoch,
                         "parameters": count_parameters(model),
                         "tasks": task_metrics(model, test),
                         "diagnostics": diagnose(model, test, SPARSE)})
            sparse_auc = sum(runs[-1]["tasks"][t]["auc"] for t in SPARSE) / len(SPARSE)
            print(f"seed {seed} {label:22s} {seconds:5.1f} s  sparse AUC {sparse_auc:.4f}",
                  flush=True)
    out = {"profile": args.profile, "size": dataclasses.asdict(size), "sparse": SPARSE,
           "conflict": args.conflict,
           "test_positives": {t: int(p) for t, p in zip(data.tasks, test.labels.sum(0),
                                                          strict=True)},
           "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
