"""Chapter 4's MovieLens-100K comparison and DimeRec's ablations over several seeds.

SASRec (RecBole's settings), ComiRec-SA, DimeRec and each ablation (no guidance loss, no
sphere, the raw newest K items as condition) are trained at the given profile's sizes with
the chapter's configuration, once per ``--seeds`` value (initialisation and batch order; the
split is fixed). Every run records its test metrics, the mean number of genres in the top 50,
and for every test user the rank of the target within the top 50 (0: not in it), from which
any per-user Recall@K or NDCG@K with K <= 50 follows for paired comparisons
(``recfunnel.metrics.metrics_from_ranks``).

    python benchmarks/dimerec_seeds.py  # cpu profile, seeds 0 1 2 -> results/dimerec_seeds.json
    python benchmarks/dimerec_seeds.py --epochs 60 --sasrec-epochs 100 --patience 10 \
        --models SASRec ComiRec-SA DimeRec --out benchmarks/results/dimerec_converged.json

(the second trains each model until validation NDCG@10 has not improved for 10 epochs).

Chapter 4 shows the committed JSON next to its own single-seed run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from recfunnel.data.movielens import genre_matrix, load_ml100k
from recfunnel.data.sequences import SequentialSplit
from recfunnel.metrics import category_coverage, ranking_metrics
from recfunnel.models.dimerec import DimeRec
from recfunnel.profiles import profile_for
from recfunnel.recipes.dimerec import dimerec_contenders, fit_contender
from recfunnel.runtime import set_seed
from recfunnel.study import provenance

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="ComiRec-SA and DimeRec (profile's)")
    parser.add_argument("--sasrec-epochs", type=int, help="SASRec (profile's)")
    parser.add_argument("--models", nargs="+", help="a subset of the contenders' names")
    parser.add_argument("--patience", type=int,
                        help="early-stopping patience of every model (default: each fit's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "dimerec_seeds.json")
    args = parser.parse_args(argv)
    source = provenance()  # the code as it was when the runs started
    size = profile_for("dimerec", args.profile)
    size = dataclasses.replace(size, epochs=args.epochs or size.epochs,
                               sasrec_epochs=args.sasrec_epochs or size.sasrec_epochs)
    movielens = load_ml100k()
    split = SequentialSplit(movielens.interactions, max_len=50)
    test = split.eval_batch("test")
    genres = genre_matrix(movielens, split.n_items)
    contenders = dimerec_contenders(size, split.n_items)
    if args.models:
        unknown = set(args.models) - set(contenders)
        if unknown:
            raise SystemExit(f"unknown models {sorted(unknown)}; choose from {list(contenders)}")
        contenders = {name: contenders[name] for name in args.models}
    patience = {} if args.patience is None else {"patience": args.patience}
    rows = []
    for seed in args.seeds:
        for name, cfg in contenders.items():
            set_seed(seed)
            model, history, seconds = fit_contender(name, cfg, split, size, seed, **patience)
            scores = test.scores(model.score_all)
            metrics = ranking_metrics(scores, test.target_ids, ks=(10, 20, 50), reduce=False)
            top50 = scores.topk(50, dim=1).indices  # the ranking ranking_metrics uses
            coverage = category_coverage(top50, genres).float()
            hit = top50 == test.target_ids[:, None]
            rank = torch.where(hit.any(1), hit.float().argmax(1) + 1, 0)
            rows.append({"model": name, "seed": seed,
                         **{k: float(v.mean()) for k, v in metrics.items()},
                         "genres_top50": float(coverage.mean()),
                         "epochs_run": len(history.epochs), "best_epoch": history.best_epoch,
                         "sample_steps": model.cfg.sample_steps
                         if isinstance(model, DimeRec) else None,
                         "rank_top50": rank.tolist(),
                         "train_seconds": round(seconds, 1)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "rank_top50"}),
                  flush=True)
    report = {"benchmark": "dimerec_seeds", **source, "profile": args.profile,
              "seeds": args.seeds, "patience": args.patience,
              "size": dataclasses.asdict(size), "threads": torch.get_num_threads(),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in report.pop("rows")]  # one run per line
    args.out.write_text(json.dumps(report, indent=1)[:-2] + ',\n "rows": [\n'
                        + ",\n".join(lines) + "\n ]\n}\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
