"""Peak memory of full-ranking evaluation: the whole [B, V] score matrix against chunks.

``whole`` scores every user against every item (``SeqBatch.scores``) and ranks the matrix
at once with ``ranking_metrics`` (its relevance mask is another [B, V]); ``chunked`` is
``next_item_metrics``, which scores and ranks ``--chunk`` users at a time. Both run the same
model (a user-by-item inner product, as a retrieval model's ``score_all``) on the same
users, each in a fresh process so that its peak resident memory is its own; the per-user
metrics of the two must be identical.

    python benchmarks/evaluation_memory.py  # -> results/evaluation_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from recfunnel.data.sequences import SeqBatch, next_item_metrics
from recfunnel.metrics import ranking_metrics
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"


class InnerProduct(torch.nn.Module):
    """score_all(batch) = U[user] @ V.T: [b, V] scores, like a two-tower retriever."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.users = torch.nn.Parameter(torch.randn(n_users, dim, generator=generator))
        self.items = torch.nn.Parameter(torch.randn(n_items, dim, generator=generator))

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        return self.users[batch.user_ids] @ self.items.T


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def measure(mode: str, n_users: int, n_items: int, chunk: int) -> dict:
    """One contender in this process: its peak memory above the baseline and a digest of
    its per-user NDCG@10 and Recall@20."""
    torch.set_num_threads(1)
    model = InnerProduct(n_users, n_items).requires_grad_(False)
    users = torch.arange(n_users)
    batch = SeqBatch(users, torch.ones(n_users, 1, dtype=torch.long),
                     torch.zeros(n_users, 1, dtype=torch.bool), users % (n_items - 1) + 1)
    before = peak_mb()
    if mode == "whole":
        scores = batch.scores(model.score_all, chunk)  # [B, V]
        per_user = ranking_metrics(scores, batch.target_ids, ks=(10, 20), reduce=False)
    else:
        per_user = next_item_metrics(model, batch, ks=(10, 20), chunk=chunk, reduce=False)
    return {"peak_mb_above_start": peak_mb() - before,
            "ndcg@10": per_user["ndcg@10"].mean().item(),
            "digest": float((per_user["ndcg@10"] * torch.arange(n_users)).sum()
                            + per_user["recall@20"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["6040x3706", "8192x8192"],
                        help="USERSxITEMS (MovieLens-1M's is 6040x3706)")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--out", type=Path, default=RESULTS / "evaluation_memory.json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, users, items, chunk = args.child
        print(json.dumps(measure(mode, int(users), int(items), int(chunk))))
        return
    rows = []
    for size in args.sizes:
        users, items = (int(x) for x in size.split("x"))
        row = {"users": users, "items": items, "chunk": args.chunk}
        for mode in ("whole", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(users),
                                  str(items), str(args.chunk)], check=True,
                                 capture_output=True, text=True).stdout
            row[mode] = json.loads(out.strip().splitlines()[-1])
        row["identical_metrics"] = row["whole"]["digest"] == row["chunked"]["digest"]
        row["memory_ratio"] = (row["whole"]["peak_mb_above_start"]
                               / max(row["chunked"]["peak_mb_above_start"], 1e-9))
        rows.append(row)
        print(f"{users:,} x {items:,}: whole {row['whole']['peak_mb_above_start']:.0f} MB, "
              f"chunked {row['chunked']['peak_mb_above_start']:.0f} MB, identical metrics: "
              f"{row['identical_metrics']}")
    write_report(args.out, {"benchmark": "evaluation_memory", **provenance(),
                            "command": " ".join(["python", "benchmarks/evaluation_memory.py",
                                                 *sys.argv[1:]]), "rows": rows})


if __name__ == "__main__":
    main()
