"""Exact torch top-k against FAISS (flat inner product) on the same queries.

For each catalogue size V: build both indexes over V random item vectors, search the same
B query vectors (single-interest and K-interest), and record the median wall time of
several repeats, queries per second, the FAISS/torch time ratio, and the share of returned
neighbours the two agree on (both are exact, so it should be 1.0).

    .venv/bin/python benchmarks/retrieval_backends.py --sizes 10000 100000 --out results/x.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from recfunnel.retrieval import ExactIndex, FaissIndex
from recfunnel.runtime import environment_report, set_seed
from recfunnel.study import provenance, write_report


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(sizes: list[int], n_queries: int, dim: int, k: int, n_interests: int,
        repeats: int) -> list[dict]:
    rows = []
    for n_items in sizes:
        set_seed(0)
        items = torch.randn(n_items, dim)
        for K in (1, n_interests):
            queries = torch.randn(n_queries, K, dim) if K > 1 else torch.randn(n_queries, dim)
            exact, faiss_index = ExactIndex(items), FaissIndex(items)
            exact_ids = exact.search(queries, k)[1]
            faiss_ids = faiss_index.search(queries, k)[1]
            t_exact = median_seconds(lambda e=exact, q=queries: e.search(q, k), repeats)
            t_faiss = median_seconds(lambda f=faiss_index, q=queries: f.search(q, k), repeats)
            rows.append({
                "n_items": n_items, "n_interests": K, "n_queries": n_queries, "dim": dim,
                "k": k,
                "exact_seconds": t_exact, "faiss_seconds": t_faiss,
                "exact_queries_per_s": n_queries / t_exact,
                "faiss_queries_per_s": n_queries / t_faiss,
                "faiss_over_exact_time": t_faiss / t_exact,
                "neighbour_agreement": (exact_ids == faiss_ids).float().mean().item(),
            })
            print(f"V={n_items:>8} K={K}: exact {t_exact * 1e3:8.1f} ms, "
                  f"faiss {t_faiss * 1e3:8.1f} ms, agreement {rows[-1]['neighbour_agreement']:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--interests", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "retrieval_backends.json")
    args = parser.parse_args()
    origin = provenance()
    rows = run(args.sizes, args.queries, args.dim, args.k, args.interests, args.repeats)
    write_report(args.out, {
        "benchmark": "retrieval_backends", **origin,
        "machine": platform.machine(),
        "environment": environment_report("cpu").splitlines(),
        "threads": torch.get_num_threads(),
        "rows": rows,
    })
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
