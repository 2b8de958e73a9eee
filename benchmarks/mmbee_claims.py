"""Chapter 8's committed runs over seeds: MMBee against each of its ablations on the
live-gifting world, the expansion's recall of first-time gift streamers, the orthogonal
projection at several nuisance strengths (claim C2), and the state probe (MFQ and mean
pooling taught the live state itself).

At a profile's sizes (``profiles.MMBeeSize``, default ``cpu``), every seed draws its own
world (``data.live``), builds the burn-in graph, pre-trains GraphCL once, and trains every
variant of ``recipes.mmbee.VARIANTS``; then, for each nuisance strength of the profile
other than the world's own, a world with that strength and MMBee with and without the
projection; and the state probe of both fusions. Each run keeps its test viewers' AUCs
(the probe: its test segments' hits), so the chapter judges the claims with
``study.compare`` over viewers (segments) and seeds.

    python benchmarks/mmbee_claims.py  # -> results/mmbee_claims.json (about 25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recfunnel.data.live import live_world
from recfunnel.profiles import profile_for
from recfunnel.recipes.mmbee import (
    VARIANTS,
    config_for,
    expansion_recall,
    node_embeddings,
    prepare,
    state_probe,
    train_variant,
)
from recfunnel.study import Run, Verdict, compare, paired_gap, provenance, write_report

RESULTS = Path(__file__).parent / "results"
COMPARISONS = (("MMBee", "mean-pool fusion"), ("MMBee", "no projection"),
               ("MMBee", "shared queries"), ("MMBee", "no GIE"), ("MMBee", "GIE, random nodes"),
               ("MMBee", "base (DIN)"))


def sweep_name(variant: str, nuisance: float) -> str:
    return f"{variant} @ nuisance {nuisance:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "mmbee_claims.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size = profile_for("mmbee", args.profile)
    runs, probes, recalls = [], [], {}
    for seed in args.seeds:
        world = live_world(size.world, seed=seed)
        own = world.config.nuisance
        jobs = [(name, name, own) for name in VARIANTS]  # (run name, variant, nuisance)
        jobs += [(sweep_name(variant, nuisance), variant, nuisance)
                 for nuisance in size.nuisances if nuisance != own
                 for variant in ("MMBee", "no projection")]  # at `own`: the runs above
        data = prepare(world, size)
        recall = expansion_recall(world.log(), data.graph, data.rows["test"])
        recalls[seed] = {k: v.tolist() for k, v in recall.items()}
        for fusion in ("mfq", "mean"):
            started = time.perf_counter()
            hits = state_probe(world, size, fusion, seed, device="cpu")
            probes.append(Run(model="state probe", variant=fusion, seed=seed,
                              profile=args.profile, config={"fusion": fusion},
                              metrics={"accuracy": float(hits.mean())},
                              per_user={"accuracy": hits},
                              epochs=size.probe_epochs, seconds=time.perf_counter() - started))
            print(f"seed {seed} state probe, {fusion}: accuracy {hits.mean():.3f}", flush=True)
        worlds = {own: (data, node_embeddings(data, "graphcl", size, seed))}
        for name, variant, nuisance in jobs:
            if nuisance not in worlds:
                other = prepare(live_world(size.world, seed=seed, nuisance=nuisance), size)
                worlds[nuisance] = (other, node_embeddings(other, "graphcl", size, seed))
            job_data, job_nodes = worlds[nuisance]
            started = time.perf_counter()
            _, measured = train_variant(variant, job_data, size, seed, device="cpu",
                                        nodes=job_nodes)
            cfg = config_for(VARIANTS[variant][0], job_data, size)
            runs.append(Run(model="MMBee", variant=name, seed=seed, profile=args.profile,
                            config=dataclasses.asdict(cfg), metrics=measured.metrics,
                            per_user=measured.per_user, epochs=measured.epochs,
                            seconds=time.perf_counter() - started, extra=measured.extra))
            print(f"seed {seed} {name}: AUC {measured.metrics['auc']:.4f}, UAUC "
                  f"{measured.metrics['uauc']:.4f} ({runs[-1].seconds:.0f} s)", flush=True)
    verdicts = {}
    for a, b in COMPARISONS:
        gap = compare(runs, a, b, "uauc")
        verdict = Verdict.better(f"{a} beats {b} on UAUC", gap)
        verdicts[f"{a} vs {b}"] = verdict.to_dict()
        print(f"{verdict.claim}: {gap.summary} -> {verdict.text}", flush=True)
    recall_runs = [Run(model="GIE", variant=name, seed=seed, profile=args.profile, config={},
                       metrics={"recall@5": float(np.mean(recalls[seed][name]))},
                       per_user={"recall@5": np.asarray(recalls[seed][name])})
                   for seed in args.seeds for name in ("expansion", "history", "popularity")]
    for b in ("history", "popularity"):
        gap = compare(recall_runs, "expansion", b, "recall@5")
        verdict = Verdict.better(f"the U->A->A expansion recalls first-time gift streamers "
                                 f"better than {b}", gap)
        verdicts[f"expansion vs {b}"] = verdict.to_dict()
        print(f"{verdict.claim}: {gap.summary} -> {verdict.text}", flush=True)
    gap = paired_gap([run.per_user["accuracy"] for run in probes if run.variant == "mfq"],
                     [run.per_user["accuracy"] for run in probes if run.variant == "mean"],
                     a="MFQ", b="mean pooling", metric="accuracy", unit="segments")
    verdict = Verdict.better("taught the live state, MFQ names it better than mean pooling",
                             gap)
    verdicts["state probe: MFQ vs mean pooling"] = verdict.to_dict()
    print(f"{verdict.claim}: {gap.summary} -> {verdict.text}", flush=True)
    write_report(args.out, {"benchmark": "mmbee_claims", **provenance(),
                            "command": " ".join(["python", "benchmarks/mmbee_claims.py",
                                                 *sys.argv[1:]]),
                            "settings": {"profile": args.profile, "seeds": args.seeds,
                                         "size": dataclasses.asdict(size)},
                            "runs": [run.to_dict() for run in runs],
                            "probes": [run.to_dict() for run in probes], "recall": recalls,
                            "verdicts": verdicts})


if __name__ == "__main__":
    main()
