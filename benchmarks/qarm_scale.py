"""Chapter 7's question: do trainable codes catch up with the frozen aligned vector as the
data per code id grows?

For each number of impressions (the world's users and items fixed at the profile's sizes,
so every item and code id is seen more often), and each seed, the whole QARM recipe runs as
the chapter runs it: a world, pair mining and alignment, codes, then one ranker per variant
with early stopping. Recorded per run: test AUC, GAUC and AUC per item group (cold, tail,
torso, head), best epoch, seconds.

    python benchmarks/qarm_scale.py   # cpu sizes, 75k..600k impressions, seeds 0 1 2
                                      # -> results/qarm_scale.json

Chapter 7 shows the committed JSON next to its own run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from recfunnel.data.multimodal import make_multimodal
from recfunnel.profiles import profile_for
from recfunnel.recipes import qarm as recipe
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("base", "+ frozen aligned vector", "+ VQ & RQ codes", "+ aligned vector & codes")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--impressions", type=int, nargs="+",
                        default=[75_000, 150_000, 300_000, 600_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--out", default=str(RESULTS / "qarm_scale.json"))
    args = parser.parse_args(argv)
    size = profile_for("qarm", args.profile)
    origin = provenance()
    runs = []
    for impressions in args.impressions:
        for seed in args.seeds:
            start = time.perf_counter()
            data = make_multimodal(n_users=size.users, n_items=size.items,
                                   n_impressions=impressions, history=size.history, seed=seed)
            scores = recipe.seed_study(data, size, args.variants, seed).scores  # chapter 7's
            runs += [{"impressions": impressions, "seed": seed, "variant": name, **score}
                     for name, score in scores.items()]
            print(f"{impressions:>8,} seed {seed}: " + ", ".join(
                f"{name} {score['auc']:.4f}" for name, score in scores.items())
                + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    report = {"benchmark": "qarm_scale", **origin, "profile": args.profile, "runs": runs}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
