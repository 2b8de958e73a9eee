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
import sys
from pathlib import Path

from recfunnel.data.impressions import ImpressionConfig, make_impressions
from recfunnel.profiles import profile_for
from recfunnel.recipes.home import HOME_ABLATIONS, fit_ranker, ranker_configs
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"
SPARSE = ("follow", "comment", "forward", "collect")
CONTENDERS = ("shared-bottom", "MMoE", "MMoE+norm", "PLE", "HoME", *HOME_ABLATIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(CONTENDERS),
                        choices=list(ranker_configs(profile_for("home", "smoke"))))
    parser.add_argument("--epochs", type=int, help="at most (profile's)")
    parser.add_argument("--patience", type=int,
                        help="early-stopping patience, 0 for none (profile's)")
    parser.add_argument("--conflict", type=float, default=ImpressionConfig.conflict,
                        help="the world's conflict between tasks (kappa)")
    parser.add_argument("--out", type=Path, default=RESULTS / "home_seeds.json")
    args = parser.parse_args(argv)
    source = provenance()  # the code as it was when the runs started
    size = profile_for("home", args.profile)
    if args.epochs is not None:
        size = dataclasses.replace(size, epochs=args.epochs)
    if args.patience is not None:
        size = dataclasses.replace(size, patience=args.patience or None)
    data = make_impressions(ImpressionConfig(n_users=size.users, n_items=size.items,
                                             n_impressions=size.impressions,
                                             conflict=args.conflict))
    _, _, test = data.split()
    configs = ranker_configs(size)
    runs = []
    for seed in args.seeds:
        for label in args.models:
            _, run = fit_ranker(configs[label], data, size, seed, SPARSE, progress=False)
            seconds = run.pop("seconds")
            run.pop("history")
            runs.append({"model": label, "seed": seed, "seconds": round(seconds, 1)} | run)
            sparse_auc = sum(runs[-1]["tasks"][t]["auc"] for t in SPARSE) / len(SPARSE)
            print(f"seed {seed} {label:22s} {seconds:5.1f} s  sparse AUC {sparse_auc:.4f}",
                  flush=True)
    out = {**source, "profile": args.profile, "size": dataclasses.asdict(size),
           "sparse": SPARSE,
           "conflict": args.conflict,
           "test_positives": {t: int(p) for t, p in zip(data.tasks, test.labels.sum(0),
                                                          strict=True)},
           "runs": runs}
    print(f"wrote {write_report(args.out, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
