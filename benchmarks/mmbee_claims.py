"""Chapter 8's committed runs over seeds: MMBee against each of its ablations on the
live-gifting world, the expansion's recall of first-time gift streamers, the orthogonal
projection at several nuisance strengths (claim C2), and the state probe (MFQ and mean
pooling taught the live state itself).

At a profile's sizes (``profiles.MMBeeSize``, default ``cpu``), ``recipes.mmbee.claim_runs``
(which the chapter calls itself at gpu): every seed draws its own world (``data.live``),
builds the burn-in graph, pre-trains GraphCL once, and trains every variant of
``recipes.mmbee.VARIANTS``; then, for each nuisance strength of the profile other than the
world's own, a world with that strength and MMBee with and without the projection; and
the state probe of both fusions. Each run keeps its test viewers' AUCs (the probe: its
test segments' hits), so the chapter judges the claims with ``study.compare`` over viewers
(segments) and seeds.

    python benchmarks/mmbee_claims.py  # -> results/mmbee_claims.json (about 25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from recfunnel.profiles import profile_for
from recfunnel.recipes.mmbee import claim_runs, probe_gap, recall_runs
from recfunnel.study import Verdict, compare, provenance, write_report

RESULTS = Path(__file__).parent / "results"
COMPARISONS = (("MMBee", "mean-pool fusion"), ("MMBee", "no projection"),
               ("MMBee", "shared queries"), ("MMBee", "no GIE"), ("MMBee", "GIE, random nodes"),
               ("MMBee", "base (DIN)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "mmbee_claims.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size = profile_for("mmbee", args.profile)
    claims = claim_runs(size, args.seeds, args.profile, device="cpu",
                        log=lambda line: print(line, flush=True))
    verdicts = {}
    judged = [(f"{a} vs {b}", f"{a} beats {b} on UAUC", compare(claims.runs, a, b, "uauc"))
              for a, b in COMPARISONS]
    recalled = recall_runs(claims.recalls, args.profile)
    judged += [(f"expansion vs {b}", "the U->A->A expansion recalls first-time gift "
                f"streamers better than {b}", compare(recalled, "expansion", b, "recall@5"))
               for b in ("history", "popularity")]
    judged.append(("state probe: MFQ vs mean pooling",
                   "taught the live state, MFQ names it better than mean pooling",
                   probe_gap(claims.probes)))
    for key, claim, gap in judged:
        verdict = Verdict.better(claim, gap)
        verdicts[key] = verdict.to_dict()
        print(f"{claim}: {gap.summary} -> {verdict.text}", flush=True)
    write_report(args.out, {"benchmark": "mmbee_claims", **provenance(),
                            "command": " ".join(["python", "benchmarks/mmbee_claims.py",
                                                 *sys.argv[1:]]),
                            "settings": {"profile": args.profile, "seeds": args.seeds,
                                         "size": dataclasses.asdict(size)},
                            "runs": [run.to_dict() for run in claims.runs],
                            "probes": [run.to_dict() for run in claims.probes],
                            "recall": claims.recalls, "verdicts": verdicts})


if __name__ == "__main__":
    main()
