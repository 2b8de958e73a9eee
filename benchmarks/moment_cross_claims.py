"""Chapter 9's committed runs over seeds: the four data streams with the base ranker, and
Moment&Cross with its search-unit and contrastive ablations on the paper's stream, each
trained in one prequential pass on the stream world of every seed.

At a profile's sizes (``profiles.MomentCrossSize``, default ``cpu``),
``recipes.moment_cross.claim_runs`` (which the chapter calls itself where the profile says
``live_claims``) draws every seed's world (``data.streams``) and runs every variant of
``recipes.moment_cross.variants``; each run keeps its per-viewer values (click AUC, PCOC
of every task, comment log-loss) and, for the streams, its per-highlight detection lags,
so the chapter judges claims C1-C6 with ``study.compare`` over viewers and seeds. The
learning rates were chosen on the world of seed 100, never on these seeds.

    python benchmarks/moment_cross_claims.py  # -> results/moment_cross_claims.json
    # (about 18 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from recfunnel.profiles import profile_for
from recfunnel.recipes.moment_cross import PAPER, claim_runs, judge
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "moment_cross_claims.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size = profile_for("moment_cross", args.profile)
    runs = claim_runs(size, args.seeds, args.profile, device="cpu",
                      log=lambda line: print(line, flush=True))
    verdicts = judge(runs)
    for key, verdict in verdicts.items():
        print(f"{key}: {verdict.claim}: {verdict.measured} -> {verdict.text}", flush=True)
    write_report(args.out, {"benchmark": "moment_cross_claims", **provenance(),
                            "command": " ".join(["python", "benchmarks/moment_cross_claims.py",
                                                 *sys.argv[1:]]),
                            "settings": {"profile": args.profile, "seeds": args.seeds,
                                         "size": dataclasses.asdict(size)},
                            "paper": PAPER, "runs": [run.to_dict() for run in runs],
                            "verdicts": {k: v.to_dict() for k, v in verdicts.items()}})


if __name__ == "__main__":
    main()
