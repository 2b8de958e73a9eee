"""An outside yardstick for chapter 6: DIN from torch-rechub, trained on the same two-hop
exposure streams and time split as MARM, and compared per test user with the committed
runs of ``marm_depth.py`` (L = 1 target attention, MARM L = 2).

DIN (Zhou et al., KDD 2018) pools the history with an attention MLP over [target, history,
target - history, target * history]. Each sample is one exposure at a training position;
its history is the ``size.window`` exposures before it, as MARM reads them, each as its
item and its topic combined with the feedback it received (topic * 3 + feedback, so that
DIN sees clicks in the history as MARM does), the target as its item and its topic as if
clicked. DIN has no notion of order within the history, so the previous exposure's
feedback is given as a context feature (MARM learns recency itself). Samples are shuffled
(DIN needs no time order: it reads no states of earlier requests); early stopping on
validation click GAUC; the test period is scored once with the best weights.

Run it in the benchmark's own environment (torch-rechub is never a dependency of the
package):

    python3 -m venv benchmarks/.venv-rechub
    benchmarks/.venv-rechub/bin/pip install torch==2.13.0
    benchmarks/.venv-rechub/bin/pip install -r benchmarks/requirements-rechub.txt
    benchmarks/.venv-rechub/bin/pip install --no-deps -e . && \\
        benchmarks/.venv-rechub/bin/pip install pyarrow tqdm matplotlib
    benchmarks/.venv-rechub/bin/python benchmarks/marm_din.py  # -> results/marm_din.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.models.ranking import DIN

from recfunnel.data.exposures import ExposureStreams
from recfunnel.profiles import MARMSize, profile_for
from recfunnel.recipes.marm import per_user_auc, streams_for
from recfunnel.study import Run, Verdict, compare, load_runs, provenance, write_report

RESULTS = Path(__file__).parent / "results"
NAME = "DIN (torch-rechub)"


def samples(streams: ExposureStreams, window: int, period: str) -> dict[str, torch.Tensor]:
    """One row per (user, position) of ``period``, users outer, positions inner."""
    span = streams.period(period)
    positions = np.arange(span.start, span.stop)
    U = streams.n_users
    index = positions[:, None] + np.arange(-window, 0)[None]  # [P, n]
    real = index >= 0
    safe = index.clip(min=0)
    feedback = streams.feedback
    hist_item = np.where(real, streams.items[:, safe], 0)  # [U, P, n], 0 pads
    hist_topic = np.where(real, streams.topics[:, safe] * 3 + feedback[:, safe] + 1, 0)
    previous = np.where(positions > 0, feedback[:, (positions - 1).clip(min=0)] + 1, 0)
    rows = {"target_item": streams.items[:, positions],
            "target_topic": streams.topics[:, positions] * 3 + 1 + 1,  # "as if clicked"
            "previous_feedback": np.broadcast_to(previous, (U, len(positions))),
            "hist_item": hist_item, "hist_topic": hist_topic}
    out = {k: torch.as_tensor(np.ascontiguousarray(v)).reshape(U * len(positions), *v.shape[2:])
           for k, v in rows.items()}
    out["label"] = torch.as_tensor(streams.clicks[:, positions], dtype=torch.float32).reshape(-1)
    return out


def build(streams: ExposureStreams, d: int) -> DIN:
    items, topics = streams.cfg.n_items + 1, streams.cfg.n_topics * 3 + 1
    targets = [SparseFeature("target_item", items, embed_dim=d, padding_idx=0),
               SparseFeature("target_topic", topics, embed_dim=d, padding_idx=0)]
    history = [SequenceFeature("hist_item", items, embed_dim=d, pooling="concat",
                               shared_with="target_item", padding_idx=0),
               SequenceFeature("hist_topic", topics, embed_dim=d, pooling="concat",
                               shared_with="target_topic", padding_idx=0)]
    context = [SparseFeature("previous_feedback", 4, embed_dim=d)]
    return DIN(context, history, targets, mlp_params={"dims": [4 * d, 2 * d]},
               attention_mlp_params={"dims": [2 * d]})


@torch.no_grad()
def scores(model: DIN, rows: dict[str, torch.Tensor], batch: int = 8192) -> np.ndarray:
    model.eval()
    n = len(rows["label"])
    return torch.cat([model({k: v[i:i + batch] for k, v in rows.items()})
                      for i in range(0, n, batch)]).numpy()


def user_aucs(streams: ExposureStreams, period: str, predicted: np.ndarray) -> np.ndarray:
    span = streams.period(period)
    P = span.stop - span.start
    return per_user_auc(streams.clicks[:, span], predicted.reshape(streams.n_users, P))[1]


def train_din(size: MARMSize, streams: ExposureStreams, seed: int, epochs: int,
              batch: int) -> tuple[np.ndarray, float, int, int]:
    torch.manual_seed(seed)
    model = build(streams, size.d_model)
    train, valid, test = (samples(streams, size.window, p) for p in ("train", "valid", "test"))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, best_state, best_epoch, waited, ran = -1.0, None, 0, 0, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train["label"]))
        for chunk in order.split(batch):
            x = {k: v[chunk] for k, v in train.items()}
            loss = F.binary_cross_entropy(model(x), x["label"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        ran = epoch + 1
        value = float(user_aucs(streams, "valid", scores(model, valid)).mean())
        print(f"  epoch {ran}: valid GAUC {value:.4f}", flush=True)
        if value > best:
            best, best_state, best_epoch, waited = value, copy.deepcopy(model.state_dict()), ran, 0
        else:
            waited += 1
            if waited >= size.patience:
                break
    model.load_state_dict(best_state)
    test_aucs = user_aucs(streams, "test", scores(model, test))
    return test_aucs, float(test_aucs.mean()), ran, best_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--marm-runs", type=Path, default=RESULTS / "marm_depth.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "marm_din.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size = profile_for("marm", args.profile)
    runs = []
    for seed in args.seeds:
        streams = streams_for(size, seed)
        started = time.perf_counter()
        aucs, gauc, ran, best_epoch = train_din(size, streams, seed, args.epochs, args.batch)
        runs.append(Run(model="DIN", variant=NAME, seed=seed, profile=args.profile,
                        config={"d_model": size.d_model, "window": size.window,
                                "batch": args.batch, "lr": 1e-3},
                        metrics={"gauc_click": gauc}, per_user={"auc_click": aucs},
                        epochs=ran, best_epoch=best_epoch,
                        seconds=time.perf_counter() - started))
        print(f"seed {seed} {NAME}: GAUC click {gauc:.4f} ({runs[-1].seconds:.0f} s)",
              flush=True)
    marm = [run for run in load_runs(args.marm_runs) if run.variant in ("L=1", "L=2")]
    verdicts = {}
    for other in ("L=1", "L=2"):
        gap = compare(runs + marm, other, NAME, "auc_click")
        verdicts[f"{other} vs DIN"] = Verdict.better(f"{other} beats DIN on click",
                                                      gap).to_dict()
        print(f"{other} - DIN: {gap.summary}", flush=True)
    write_report(args.out, {"benchmark": "marm_din", **provenance(),
                            "torch_rechub": metadata.version("torch-rechub"),
                            "command": " ".join(["python", "benchmarks/marm_din.py",
                                                 *sys.argv[1:]]),
                            "settings": {k: v for k, v in vars(args).items()
                                         if k not in ("out", "marm_runs")},
                            "runs": [run.to_dict() for run in runs], "verdicts": verdicts})


if __name__ == "__main__":
    main()
