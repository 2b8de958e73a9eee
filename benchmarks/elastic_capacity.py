"""ELASTIC's capacity claims on the returning-interest histories of chapter 3.

Claim 4: the interest memory adds capacity at constant compute (memory sizes, 0 = no
memory: the k experts are the same learned vectors for every user). Claim 5: more
experts help, then saturate. Every run uses the chapter's data, model and training at the
given profile (only the memory size or the expert count changes) and records the test
NDCG@10 per user, so that runs can be compared pairwise, and the encoder's forward
operations for one user. The data are drawn once (``--data-seed``); each configuration is
trained once per ``--seeds`` value (the model's initialisation and batch order).

    python benchmarks/elastic_capacity.py  # cpu profile -> results/elastic_capacity.json

The chapter shows the committed JSON when its profile does not run the sweeps itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from recfunnel.data.planted import plant_returning_interests, planted_world
from recfunnel.data.world import World
from recfunnel.models.elastic import Elastic, encoder_gflop
from recfunnel.profiles import profile_for
from recfunnel.recipes.elastic import capacity_configs, long_run
from recfunnel.runtime import set_seed
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--banks", type=int, nargs="+", default=[0, 256, 4_096],
                        help="memory sizes besides the profile's (0: no memory)")
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 4, 16],
                        help="expert counts besides the profile's")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "elastic_capacity.json")
    args = parser.parse_args(argv)
    source = provenance()  # the code as it was when the runs started
    size = profile_for("elastic", args.profile)
    world = World.build(planted_world(size.long_users, size.long_items, size.long_topics,
                                      seed=args.data_seed))
    returns = plant_returning_interests(world, size.long_len, size.long_gap, old_share=0.9,
                                        seed=args.data_seed)
    configs = capacity_configs(size, returns.n_items, args.banks, args.experts)
    rows = []
    for seed in args.seeds:
        for cfg in configs:
            set_seed(seed)
            run = long_run(f"N={cfg.memory_size}, k={cfg.n_experts}, seed {seed}", Elastic(cfg),
                           returns, size, seed)
            per_user = run.per_user["ndcg@10"]
            rows.append({"memory_size": cfg.memory_size or 0, "n_experts": cfg.n_experts,
                         "seed": seed, "ndcg@10": float(per_user.mean()),
                         "per_user_ndcg@10": [round(float(v), 5) for v in per_user],
                         "encoder_gflop": encoder_gflop(cfg),
                         "train_seconds": round(run.seconds, 1)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_user_ndcg@10"}),
                  flush=True)
    report = {"benchmark": "elastic_capacity", **source, "profile": args.profile,
              "data_seed": args.data_seed, "seeds": args.seeds,
              "size": dataclasses.asdict(size), "threads": torch.get_num_threads(),
              "rows": rows}
    print(f"wrote {write_report(args.out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
