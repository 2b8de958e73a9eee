"""KuaiFormer's in-batch softmax with logQ (the paper's) against a softmax over the whole
catalogue, on planted-interest worlds of growing catalogues (chapter 2's sweep).

At each catalogue size one world is planted (``--profile``'s users and topics), and
KuaiFormer (k = 4, 64 items, no auxiliary loss) is trained with each loss for the
profile's planted epochs; every test user's NDCG@10 is stored for paired comparisons
(``recipes.kuaiformer.catalogue_verdicts``). Chapter 2 reads the committed JSON at the
``smoke`` and ``cpu`` profiles and reruns the sweep at ``gpu``.

    python benchmarks/kuaiformer_catalogue.py            # cpu profile, seed 0
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from recfunnel.profiles import profile_for
from recfunnel.recipes.kuaiformer import catalogue_record, catalogue_sweep
from recfunnel.runtime import environment_report
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "kuaiformer_catalogue.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    origin = provenance()
    size = profile_for("kuaiformer", args.profile)
    record = catalogue_record(catalogue_sweep(size, args.seed))
    write_report(args.out, {"benchmark": "kuaiformer_catalogue", **origin,
                            "profile": args.profile, "seed": args.seed,
                            "users": size.catalogue_users, "topics": size.planted_topics,
                            "epochs": size.planted_epochs,
                            "environment": environment_report("cpu"), "sweep": record})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
