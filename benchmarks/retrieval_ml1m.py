"""The retrieval chapters' models against RecBole's GRU4Rec and SASRec and RecTools' SASRec
on MovieLens-1M (one seed: 6,040 test users give the paired test its power) and
MovieLens-100K (three seeds), on one split and protocol (RecBole's: leave-one-out by time,
50-item histories, full ranking over every item, the best validation NDCG@10 epoch tested).

Every contender trains under a wall-clock budget (``--budget``, seconds per model on the
machine that runs it; the JSON records it and whether the budget or early stopping ended
the run) and stores each test user's 1-based target rank over the whole catalogue, so any
Recall@K / NDCG@K and paired per-user gaps follow (``recfunnel.recipes.retrieval``). The
report is rewritten after every model and a rerun skips the (dataset, model, seed) runs it
already holds: the benchmark resumes model by model. Our settings are fixed in
``recipes.retrieval`` before any run; nothing is chosen on the test split.

The peers run in their own environments (never the package's dependencies):

    python3 -m venv benchmarks/.venv-recbole   # see peer_recbole.py for its install
    benchmarks/.venv-recbole/bin/python benchmarks/retrieval_ml1m.py          # ours + RecBole
    python3 -m venv benchmarks/.venv-rectools
    benchmarks/.venv-rectools/bin/pip install torch==2.13.0 "rectools[torch]==0.19.0"
    benchmarks/.venv-rectools/bin/pip install --no-deps -e . && \\
        benchmarks/.venv-rectools/bin/pip install pyarrow tqdm matplotlib
    benchmarks/.venv-rectools/bin/python benchmarks/retrieval_ml1m.py --models "RecTools SASRec"

A model whose peer library is not importable is skipped with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoint reload

from recfunnel.recipes.retrieval import (  # noqa: E402
    DATASETS,
    OURS,
    PEERS,
    SETTINGS,
    Splits,
    load_splits,
    train,
)
from recfunnel.runtime import environment_report  # noqa: E402
from recfunnel.study import provenance, write_report  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SEEDS = {"ml-1m": [0], "ml-100k": [0, 1, 2]}


class BudgetSpentError(Exception):
    """Raised inside a peer's training loop when its wall budget is spent."""


def recbole_run(model_name: str, splits: Splits, seed: int, budget: float) -> dict:
    """RecBole 1.2.1's GRU4Rec or SASRec (dropout 0.2) on our interactions written as its
    atomic files (so its split is ours: the JSON records both checksums), its CE loss over
    all items, batches of 256, stopped by its early stopping (10 epochs) or the budget."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import GRU4Rec, SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.autograd.set_detect_anomaly(False)  # RecBole's SINE module switches it on
    folder = Path(tempfile.mkdtemp())
    name = f"course-{splits.name}"
    (folder / name).mkdir()
    frame = splits.interactions
    with open(folder / name / f"{name}.inter", "w") as out:
        out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for row in frame.itertuples(index=False):
            out.write(f"{row.user_id}\t{row.item_id}\t{row.rating}\t{row.timestamp}\n")
    extra = {"hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2} if model_name == "SASRec" \
        else {}
    config = Config(model=model_name, dataset=name, config_dict={
        "data_path": str(folder), "checkpoint_dir": str(folder / "saved"), "seed": seed,
        "reproducibility": True, "epochs": 200, "train_batch_size": 256, "stopping_step": 10,
        "loss_type": "CE", "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 50,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "show_progress": False, "state": "WARNING", "device": "cpu", "use_gpu": False,
        **extra})
    init_seed(seed, True)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = {"GRU4Rec": GRU4Rec, "SASRec": SASRec}[model_name](config, train_data.dataset)
    trainer = Trainer(config, model)
    curve: list[tuple[float, float]] = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    started = time.perf_counter()
    stopped_by_budget = False

    def budgeted_train_epoch(*args, **kwargs):
        if curve and time.perf_counter() - started >= budget:
            raise BudgetSpentError
        return train_epoch(*args, **kwargs)

    def recording_valid_epoch(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        curve.append((time.perf_counter() - started, float(score)))
        return score, result

    trainer._train_epoch, trainer._valid_epoch = budgeted_train_epoch, recording_valid_epoch
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except BudgetSpentError:
        stopped_by_budget = True
    wall = time.perf_counter() - started
    own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    return {"model": f"RecBole {model_name}", "epochs": len(curve), "valid_curve": curve,
            "best_valid_ndcg@10": float(trainer.best_valid_score), "wall_seconds": wall,
            "stopped_by_budget": stopped_by_budget,
            "recbole_test": {k: float(v) for k, v in own.items()},  # its own evaluator
            "config": {"train_batch_size": 256, "stopping_step": 10, **extra},
            "test_ranks": recbole_test_ranks(trainer, test_data, dataset,
                                             splits.plain.user_ids)}


def recbole_test_ranks(trainer, test_data, dataset, users: np.ndarray) -> list[int]:
    """Each of ``users``' 1-based test target rank under a fitted RecBole trainer's model
    (ties count against the target, as in ``recipes.retrieval.target_ranks``); RecBole's
    own user tokens are matched to ours, and a user missing on either side is an error."""
    ranks: dict[int, int] = {}
    trainer.model.eval()
    with torch.no_grad():
        for batched in test_data:
            interaction, scores, _, positive_i = trainer._full_sort_batch_eval(batched)
            target = scores[torch.arange(len(scores)), positive_i][:, None]
            tokens = dataset.id2token("user_id", interaction["user_id"].cpu().numpy())
            for user, rank in zip(tokens, (scores >= target).sum(1).tolist(), strict=True):
                ranks[int(user)] = int(rank)
    if sorted(ranks) != sorted(int(u) for u in users):
        raise AssertionError("RecBole's test users differ from the split's")
    return [ranks[int(u)] for u in users]


def rectools_run(splits: Splits, seed: int, budget: float) -> dict:
    """RecTools 0.19's SASRecModel with its defaults (2 blocks, 4 heads, 256 factors,
    dropout 0.2, softmax loss) but 50 items of history, fitted on the same training targets
    (every item but the last two of each user) one epoch at a time (``fit_partial``) until
    the budget is spent, then asked for each user's top 200 after the history that ends
    with the validation item; a target below 200 gets rank 0 (a miss at any K <= 200).
    RecTools' validation-driven early stopping is not wired in: its last epoch is tested."""
    import random

    import pandas as pd
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    split = splits.plain

    def dataset(drop_last: int) -> Dataset:
        rows = [(u, item, t) for u in split.user_ids
                for t, item in enumerate(split.sequences[u][:-drop_last])]
        frame = pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Datetime])
        frame[Columns.Weight] = 1.0
        frame[Columns.Datetime] = pd.to_datetime(frame[Columns.Datetime], unit="s")
        return Dataset.construct(frame)

    train_data, test_history = dataset(2), dataset(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = SASRecModel(session_max_len=50, deterministic=True, verbose=0)
    started, epochs = time.perf_counter(), 0
    while epochs == 0 or time.perf_counter() - started < budget:
        model.fit_partial(train_data, min_epochs=1, max_epochs=1)
        epochs += 1
    wall = time.perf_counter() - started
    recs = model.recommend(users=split.user_ids, dataset=test_history, k=200,
                           filter_viewed=False)
    target = {int(u): int(split.sequences[u][-1]) for u in split.user_ids}
    hits = recs[recs[Columns.Item] == recs[Columns.User].map(target)]
    rank_of = dict(zip(hits[Columns.User].astype(int), hits[Columns.Rank].astype(int),
                       strict=True))
    return {"model": "RecTools SASRec", "epochs": epochs, "valid_curve": [],
            "best_valid_ndcg@10": None, "wall_seconds": wall,
            "stopped_by_budget": True,
            "config": {"session_max_len": 50, "top": 200, "library": "rectools 0.19.0"},
            "test_ranks": [rank_of.get(int(u), 0) for u in split.user_ids]}


def ours_run(name: str, splits: Splits, seed: int, budget: float) -> dict:
    trained = train(name, splits, seed, budget, progress=False)
    history = trained.history
    return {"model": name, "epochs": len(history.epochs),
            "valid_curve": [(float(np.sum(history.column("seconds")[:i + 1])), v)
                            for i, v in enumerate(history.column("ndcg@10"))],
            "best_valid_ndcg@10": history.best_value, "wall_seconds": trained.seconds,
            "stopped_by_budget": history.stopped_by_budget,
            "config": json.loads(json.dumps({"settings": dataclasses.asdict(SETTINGS),
                                             "model": dataclasses.asdict(trained.model.cfg)},
                                            default=str)),
            "test_ranks": trained.ranks.tolist()}


def available(model: str) -> bool:
    library = {"RecBole": "recbole", "RecTools": "rectools"}.get(model.split()[0])
    return library is None or importlib.util.find_spec(library) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=[*PEERS, *OURS],
                        choices=[*PEERS, *OURS])
    parser.add_argument("--budget", type=float, nargs=2, default=(600.0, 240.0),
                        metavar=("ML1M", "ML100K"), help="wall seconds per model and seed")
    parser.add_argument("--seeds-100k", type=int, nargs="+", default=SEEDS["ml-100k"])
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval_ml1m.json")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    parser.add_argument("--redo", action="store_true",
                        help="rerun --models (with a new --budget, say) and replace their runs")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    report = (json.loads(args.out.read_text()) if args.out.exists() and not args.fresh
              else {"benchmark": "retrieval_ml1m", "runs": []})
    report.update({"machine": platform.machine(), "threads": torch.get_num_threads(),
                   "environment": environment_report("cpu")})
    origin = provenance()  # this invocation's code: each run records it too
    seeds = {"ml-1m": SEEDS["ml-1m"], "ml-100k": args.seeds_100k}
    budgets = dict(zip(DATASETS, args.budget, strict=True))
    for dataset in args.datasets:
        splits = None
        for model in args.models:
            if not available(model):
                print(f"{model}: its library is not importable here; skipped", flush=True)
                continue
            for seed in seeds[dataset]:
                key = (dataset, model, seed)
                done = [r for r in report["runs"] if (r["dataset"], r["model"], r["seed"]) == key]
                if done and not args.redo:
                    continue
                splits = splits or load_splits(dataset)
                report.setdefault("split_checksums", {})[dataset] = splits.plain.checksum()
                budget = budgets[dataset]
                if model.startswith("RecBole"):
                    run = recbole_run(model.split()[1], splits, seed, budget)
                elif model == "RecTools SASRec":
                    run = rectools_run(splits, seed, budget)
                else:
                    run = ours_run(model, splits, seed, budget)
                run.update({"dataset": dataset, "seed": seed, "budget_seconds": budget,
                            **origin})
                report["runs"] = [r for r in report["runs"] if r not in done] + [run]
                write_report(args.out, report)
                ndcg = np.mean([1 / np.log2(r + 1) if 1 <= r <= 10 else 0.0
                                for r in run["test_ranks"]])
                print(json.dumps({k: run[k] for k in ("dataset", "model", "seed", "epochs",
                                                      "wall_seconds", "best_valid_ndcg@10")}
                                 | {"test_ndcg@10": float(ndcg)}), flush=True)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
