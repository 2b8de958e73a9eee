"""Our SASRec and KuaiFormer against RecBole 1.2.1's SASRec, on one MovieLens-100K split.

The protocol is RecBole's (the course's ``data.sequences`` reproduces it line for line):
leave-one-out by time, histories of at most 50 items, full ranking over all items with
only padding masked, validation on NDCG@10, the test scored with the best validation
checkpoint. All models run in one process, one after the other, on the same machine and
threads. RecBole's SASRec trains on every prefix as its own sample with a softmax over all
items (its "CE" loss); one epoch takes over a minute on 2 cores, so its epochs are capped
(``--recbole-epochs``) and the JSON says so.

Run it in the benchmark's own environment (recbole is never a dependency of the package):

    python3 -m venv benchmarks/.venv-recbole
    benchmarks/.venv-recbole/bin/pip install torch==2.13.0
    benchmarks/.venv-recbole/bin/pip install -r benchmarks/requirements-recbole.txt
    benchmarks/.venv-recbole/bin/pip install --no-deps -e . && \\
        benchmarks/.venv-recbole/bin/pip install pyarrow tqdm matplotlib
    benchmarks/.venv-recbole/bin/python benchmarks/peer_recbole.py --recbole-epochs 10 --seeds 0 1 2

Our SASRec trains on overlapping windows (``recipes.retrieval.SETTINGS.sasrec_stride``).
On the first seed it is trained once per ``--dropouts`` value and once with a separate
output item table; the setting with the best validation NDCG@10 (never the test) is marked
``chosen`` and trained on the other seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoint reload

from retrieval_ml1m import recbole_test_ranks  # noqa: E402

from recfunnel.data.movielens import load_ml100k, side_features  # noqa: E402
from recfunnel.data.sequences import (  # noqa: E402
    SequentialSplit,
    cut_points,
    every_window,
    next_item_metrics,
)
from recfunnel.models.baselines import SASRec, SASRecConfig  # noqa: E402
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig  # noqa: E402
from recfunnel.recipes.retrieval import SETTINGS, target_ranks  # noqa: E402
from recfunnel.runtime import environment_report, set_seed  # noqa: E402
from recfunnel.study import provenance, write_report  # noqa: E402
from recfunnel.train import TrainConfig, fit  # noqa: E402

KS = (10, 20)


def run_recbole(epochs: int, seed: int, batch_size: int, users: np.ndarray) -> dict:
    """RecBole 1.2.1's SASRec with its defaults, on its bundled ml-100k; ``users``: the order
    of the per-user test ranks (our split's)."""
    import importlib.util

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec as RecBoleSASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.autograd.set_detect_anomaly(False)  # RecBole's SINE module switches it on
    data_path = Path(importlib.util.find_spec("recbole").origin).parent / "dataset_example"
    checkpoints = tempfile.mkdtemp()
    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "data_path": str(data_path), "checkpoint_dir": checkpoints, "seed": seed,
        "reproducibility": True, "epochs": epochs, "train_batch_size": batch_size,
        "stopping_step": 10, "loss_type": "CE", "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": 50, "metrics": ["Recall", "NDCG"], "topk": list(KS),
        "valid_metric": "NDCG@10", "eval_args": {"split": {"LS": "valid_and_test"},
                                                 "order": "TO", "mode": "full"},
        "show_progress": False, "state": "WARNING", "device": "cpu", "use_gpu": False,
    })
    init_seed(seed, True)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = RecBoleSASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    curve: list[tuple[float, float]] = []  # (seconds since start, validation NDCG@10)
    valid_epoch = trainer._valid_epoch
    started = time.perf_counter()

    def recording_valid_epoch(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        curve.append((time.perf_counter() - started, float(score)))
        return score, result

    trainer._valid_epoch = recording_valid_epoch
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    wall = time.perf_counter() - started
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    return {
        "model": "RecBole 1.2.1 SASRec", "seed": seed, "epochs": len(curve), "epoch_cap": epochs,
        "wall_seconds": wall, "best_valid_ndcg@10": float(best_valid), "valid_curve": curve,
        **{f"test_{name}": float(value) for name, value in test.items()},
        "test_ranks": recbole_test_ranks(trainer, test_data, dataset, users),
    }


def run_ours(name: str, model: torch.nn.Module, batches, valid, test, epochs: int,
             lr: float, seed: int) -> dict:
    curve: list[tuple[float, float]] = []
    started = time.perf_counter()

    def evaluate(m):
        ndcg = next_item_metrics(m, valid)["ndcg@10"]
        curve.append((time.perf_counter() - started, ndcg))
        return {"ndcg@10": ndcg}

    cfg = TrainConfig(epochs=epochs, lr=lr, monitor="ndcg@10", patience=10, progress=False)
    history = fit(model, batches, cfg=cfg, evaluate=evaluate)
    wall = time.perf_counter() - started
    model.eval()
    result = next_item_metrics(model, test, ks=KS)
    ranks = target_ranks(model, test).tolist()
    return {
        "model": name, "seed": seed, "epochs": len(history.epochs), "epoch_cap": epochs,
        "wall_seconds": wall, "best_valid_ndcg@10": history.best_value,
        "valid_curve": curve,
        **{f"test_{metric}": value for metric, value in result.items()
           if metric.startswith(("recall", "ndcg"))},
        "test_ranks": ranks,
    }


def sasrec_run(split: SequentialSplit, seed: int, epochs: int, dropout: float,
               separate_output: bool = False) -> dict:
    """Our SASRec (RecBole's architecture) on overlapping windows (``recipes.retrieval``'s
    stride: every target once, with at least 41 items of history)."""
    set_seed(seed)
    model = SASRec(SASRecConfig(n_items=split.n_items, p_dropout=dropout,
                                separate_output=separate_output))
    stride = SETTINGS.sasrec_stride
    run = run_ours("recfunnel SASRec", model, every_window(split, 128, seed, stride),
                   split.eval_batch("valid"), split.eval_batch("test"), epochs, lr=1e-3,
                   seed=seed)
    return {**run, "dropout": dropout, "separate_output": separate_output, "stride": stride}


def kuaiformer_run(data, seed: int, epochs: int, n_interests: int) -> dict:
    """The chapter's MovieLens-100K configuration (notebooks/02_kuaiformer)."""
    set_seed(seed)
    frame = side_features(data)
    columns = ("rating_bucket", "genre_bucket", "decade_bucket")
    cfg = KuaiFormerConfig(
        n_items=int(frame["item_id"].max()) + 1,
        side_buckets=tuple(int(frame[c].max()) + 1 for c in columns),
        d_model=32, d_ffn=64, n_interests=n_interests, compression=((1, 32), (2, 8)),
        n_raw=16, aux_weight=1.0)
    split = SequentialSplit(frame, max_len=cfg.max_len, feature_columns=columns)
    model = KuaiFormer(cfg)
    model.set_item_frequencies(torch.as_tensor(split.train_item_counts()))
    result = run_ours(f"recfunnel KuaiFormer k={n_interests}", model,
                      cut_points(split, 8, 256, seed),
                      split.eval_batch("valid"), split.eval_batch("test"), epochs, lr=2e-3,
                      seed=seed)
    return {**result, "config": dataclasses.asdict(cfg)}


def first_reaching(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, score in curve if score >= target), None)


def show(run: dict) -> None:
    """Print a finished run without its curve, ranks and config."""
    hidden = ("valid_curve", "test_ranks", "config")
    print(json.dumps({k: v for k, v in run.items() if k not in hidden}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recbole-epochs", type=int, default=6)
    parser.add_argument("--our-epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of our models; RecBole runs once, with the first")
    parser.add_argument("--batch-size", type=int, default=256, help="RecBole's train batch")
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5],
                        help="our SASRec's dropout sweep (first seed; chosen on validation)")
    parser.add_argument("--skip-recbole", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "peer_recbole.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    origin = provenance()
    data = load_ml100k()
    split = SequentialSplit(data.interactions, max_len=50)
    runs: list[dict] = []

    def save(done: list[dict]) -> None:
        """Rewrite the report with the runs so far (a long run keeps what it finished)."""
        if not args.skip_recbole:
            target = done[0]["best_valid_ndcg@10"]
            for run in done:
                run["seconds_to_recbole_best_valid"] = first_reaching(run["valid_curve"], target)
        write_report(args.out, {
            "benchmark": "peer_recbole", **origin, "seeds": args.seeds,
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "environment": environment_report("cpu"), "split_checksum": split.checksum(),
            "runs": done,
        })

    if not args.skip_recbole:
        runs.append(run_recbole(args.recbole_epochs, args.seeds[0], args.batch_size,
                                split.user_ids))
        show(runs[-1])
        save(runs)
    # the sweep, on the first seed: dropout, then the separate output table at the default;
    # the setting with the best validation NDCG@10 is the one the other seeds train
    settings = [(p, False) for p in args.dropouts] + [(SETTINGS.sasrec_dropout, True)]
    sweep: list[dict] = []
    for dropout, separate_output in settings:
        sweep.append(sasrec_run(split, args.seeds[0], args.our_epochs, dropout, separate_output))
        save(runs + sweep)
    chosen = max(sweep, key=lambda run: run["best_valid_ndcg@10"])
    for run in sweep:
        run["chosen"] = run is chosen
        show(run)
    for seed in args.seeds:
        if seed == args.seeds[0]:
            runs.extend(sweep)
        else:
            runs.append({**sasrec_run(split, seed, args.our_epochs, chosen["dropout"],
                                      chosen["separate_output"]), "chosen": True})
            show(runs[-1])
        for n_interests in (1, 4):
            runs.append(kuaiformer_run(data, seed, args.our_epochs, n_interests))
            show(runs[-1])
            save(runs)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
