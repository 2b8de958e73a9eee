"""The authors' UniCDR against the course's, on the same cross-domain data, split and budget.

The official code (``../shared/peers/unicdr``, MIT, commit b216bc0) is copied into a
temporary folder and patched there, never in place; each patch is named in ``PATCHES`` and
recorded in the JSON:

* ``cpu``: the critic's random shift calls ``.cuda(device)``; it becomes ``.to(device)``.
* ``negatives by set``: the 999 evaluation negatives of a test line are checked against
  the ones already drawn in a list (999 x 999 comparisons per line, hours for this data);
  a set holds the same items, so the draws are unchanged and take seconds.
* ``python 3.11``: ``random.sample`` no longer takes a set (the training negatives); the
  same uniform draw is made from a tuple of the set, built once.
* ``iterations``: 500 steps per epoch are hard-coded; read them from ``UNICDR_ITERATIONS``
  (the same budget as ours, epochs x iterations x batch).
* ``validation file``: with two domains the official code validates on ``test.txt``; the
  patch also builds a loader for ``valid.txt`` (the rule is applied afterwards, below).
* ``dump``: at every evaluation epoch, the user vectors the model computes for the valid
  and test users (with the official test-time contexts) and each domain's item table are
  written to disk; nothing else of the loop changes (its learning-rate decay still reads
  the test file, as the official code does).

Both implementations then go through the course's metric code, on the same users, with the
same 999 sampled negatives per test user (``recipes.unicdr.sampled_candidates``) and the
same full ranking (training items masked, ties broken at random), at every evaluation
epoch, and two model-selection rules are applied to both: the official one (the epoch with
the best test NDCG@10 of the target domain; the sampled protocol's when that is the
official protocol) and a separate validation split (the best validation NDCG@10, full
ranking). The data: the short-video / living-room world of each seed (``data.crossdomain``)
written in the official ``dual-user-intra`` format (``user<TAB>item`` per line, items from
0); cold users are left out of the test files (the official two-domain task has none).

Configurations: the official hyper-parameters at the course's budget (``lambda_a`` 0.5),
and the course's choice (``lambda_a`` 0: no ID embedding in the aggregator), each for both
implementations.

    python benchmarks/peer_unicdr.py  # -> results/peer_unicdr.json (about 25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recfunnel.data.crossdomain import TARGET, CrossDomain, cross_domain_world
from recfunnel.profiles import UniCDRSize, profile_for
from recfunnel.recipes.unicdr import (
    Histories,
    sampled_candidates,
    train,
    user_vectors,
    variant_config,
    vector_metrics,
)
from recfunnel.study import Run, Verdict, compare, provenance, write_report

RESULTS = Path(__file__).parent / "results"
PEER = Path("../shared/peers/unicdr/UniCDR")  # from the repository's root (--peer)
TASK, DOMAINS = "dual-user-intra", "video_live"  # domain 0 video_live, domain 1 live_video
MARGIN = 0.10  # ours may trail the official by at most 10 % of its NDCG@10 (declared)

PATCHES = [  # (name, file, the official text, the replacement)
    ("cpu", "model/UniCDR.py", ".cuda(share_user.device)", ".to(share_user.device)"),
    ("negatives by set", "utils/data.py",
     "                        for i in range(negative_number):\n",
     "                        chosen = set(ret)\n"
     "                        for i in range(negative_number):\n"),
    ("negatives by set", "utils/data.py",
     "                                    if rand in ret:\n",
     "                                    if rand in chosen:\n"),
    ("negatives by set", "utils/data.py",
     "                                ret.append(rand)\n                                break\n",
     "                                ret.append(rand)\n"
     "                                chosen.add(rand)\n"
     "                                break\n"),
    ("python 3.11", "utils/data.py", "        self.item_set = item_set\n",
     "        self.item_set = item_set\n"
     "        self.item_tuple = None if item_set is None else tuple(item_set)\n"),
    ("python 3.11", "utils/data.py", "random.sample(self.item_set, 1)[0]",
     "random.choice(self.item_tuple)"),
    ("iterations", "train_rec.py", "    iteration_num = 500",
     '    iteration_num = int(os.environ.get("UNICDR_ITERATIONS", 500))'),
    ("validation file", "train_rec.py",
     '    print("the item number of different domains", opt["item_max"])',
     '    print("the item number of different domains", opt["item_max"])\n'
     '    course_valid = {d: task_gen_all[domain_id[d]].instance_a_valid_dataloader(\n'
     '        os.path.join("../datasets/" + str(opt["task"]) + "/dataset/", d + "/valid.txt"),'
     ' 100) for d in domain_list}'),
    ("dump", "train_rec.py",
     '        print("valid time:  ", (time.time() - valid_start) / 60, "(min)")',
     '        print("valid time:  ", (time.time() - valid_start) / 60, "(min)")\n'
     '        import course_dump\n'
     '        course_dump.dump(mymodel.model, epoch, {"valid": course_valid,'
     ' "test": test_dataloader})'),
]

DUMP_MODULE = '''"""Written by the course's benchmark: the model's user vectors and item tables."""
import os

import numpy as np
import torch


def dump(model, epoch, loaders_by_split):
    model.eval()
    model.item_embedding_select()
    out = {}
    with torch.no_grad():
        for split, loaders in loaders_by_split.items():
            for idx, name in enumerate(loaders):
                users, vectors = [], []
                for user, item, ci, cs, gi, gs in loaders[name]:
                    users.append(user.numpy())
                    vectors.append(model.forward_user(idx, user, ci, cs, gi, gs).numpy())
                out[f"{split}_users_{idx}"] = np.concatenate(users)
                out[f"{split}_vectors_{idx}"] = np.concatenate(vectors)
        for idx in range(len(model.con_item_emb_list) - 1):
            out[f"items_{idx}"] = model.con_item_emb_list[idx].numpy()
    np.savez(os.path.join(os.environ["UNICDR_DUMP"], f"epoch{epoch}.npz"), **out)
'''


def without_cold(data: CrossDomain) -> dict[int, dict[str, np.ndarray]]:
    """Per domain, the valid and test rows of users who trained in that domain, whose
    held-out item was trained on by someone (the official loader skips the others)."""
    out = {}
    for d, domain in enumerate(data.domains):
        users, items = np.unique(domain.train[:, 0]), np.unique(domain.train[:, 1])
        out[d] = {split: rows[np.isin(rows[:, 0], users) & np.isin(rows[:, 1], items)]
                  for split, rows in (("valid", domain.valid), ("test", domain.test))}
    return out


def write_official_files(data: CrossDomain, root: Path, rows: dict) -> None:
    names = [DOMAINS, "_".join(reversed(DOMAINS.split("_")))]
    for d, name in enumerate(names):
        folder = root / "datasets" / TASK / "dataset" / name
        folder.mkdir(parents=True)
        for split, table in (("train", data.domains[d].train), ("valid", rows[d]["valid"]),
                             ("test", rows[d]["test"])):
            (folder / f"{split}.txt").write_text(
                "".join(f"{u}\t{i - 1}\n" for u, i in table.tolist()))


def patched_copy(peer: Path, root: Path) -> Path:
    code = root / "UniCDR"
    shutil.copytree(peer, code)
    for name, file, old, new in PATCHES:
        path = code / file
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"patch {name!r}: the official text was not found once in {file}")
        path.write_text(text.replace(old, new))
    (code / "course_dump.py").write_text(DUMP_MODULE)
    return code


def per_epoch(vectors_of, hist: Histories, rows: dict, candidates: dict, d: int):
    """{split: per-row metrics} of one epoch from ``vectors_of(split) -> (users, vectors,
    items)``, on the rows both implementations score (matched by user)."""
    out = {}
    for split in ("valid", "test"):
        users, vectors, items = vectors_of(split)
        position = {u: i for i, u in enumerate(users.tolist())}
        keep = np.array([u in position for u in rows[d][split][:, 0]])
        chosen = rows[d][split][keep]
        vecs = vectors[[position[u] for u in chosen[:, 0]]]
        out[split] = (chosen[:, 0], vector_metrics(vecs, items, hist, d, chosen,
                                                   candidates[split][keep]))
    return out


def select(epochs: dict[int, dict], rule: str) -> int:
    """The chosen epoch: ``official`` the best test NDCG@10 (sampled protocol), ``valid``
    the best validation NDCG@10 (full ranking)."""
    if rule == "official":
        return max(epochs, key=lambda e: epochs[e]["test"][1]["sampled ndcg@10"].mean())
    return max(epochs, key=lambda e: epochs[e]["valid"][1]["ndcg@10"].mean())


def run_official(peer: Path, data: CrossDomain, size: UniCDRSize, lambda_a: float, seed: int,
                 rows: dict, candidates: dict, hist: Histories, d: int) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_official_files(data, root, rows)
        code = patched_copy(peer, root)
        dumps = root / "dumps"
        dumps.mkdir()
        env = {**os.environ, "UNICDR_ITERATIONS": str(size.iterations),
               "UNICDR_DUMP": str(dumps), "OMP_NUM_THREADS": str(torch.get_num_threads())}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "train_rec.py", "--task", TASK, "--domains", DOMAINS,
             "--aggregator", "mean", "--num_epoch", str(size.epochs), "--latent_dim",
             str(size.dim), "--batch_size", str(size.batch_size), "--lr", str(size.lr),
             "--weight_decay", str(size.weight_decay), "--maxlen", str(size.maxlen),
             "--lambda_a", str(lambda_a), "--seed", str(seed)],
            cwd=code, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"the official UniCDR failed:\n{result.stderr[-3000:]}")
        epochs = {}
        for path in sorted(dumps.glob("epoch*.npz")):
            saved = np.load(path)
            epoch = int(path.stem[len("epoch"):])
            # its item table has one more (never used) row: item_max + 1 with item_max = the
            # largest id + 1
            epochs[epoch] = per_epoch(
                lambda split, s=saved: (s[f"{split}_users_{d}"], s[f"{split}_vectors_{d}"],
                                        s[f"items_{d}"][:hist.n_items[d] + 1]),
                hist, rows, candidates, d)
    return epochs, seconds


def run_ours(data: CrossDomain, size: UniCDRSize, lambda_a: float, seed: int, rows: dict,
             candidates: dict, d: int) -> tuple[dict, float]:
    epochs = {}

    def record(epoch, model, hist):
        def vectors_of(split):
            users = rows[d][split][:, 0]
            return (users, user_vectors(model, hist, d, users, "cpu").numpy(),
                    model.tables[d].detach().numpy())
        epochs[epoch] = per_epoch(vectors_of, hist, rows, candidates, d)
        model.train()

    cfg = dataclasses.replace(variant_config("UniCDR", size), lambda_a=lambda_a)
    started = time.perf_counter()
    train(data, cfg, size, seed, select_domains=(d,), device="cpu", progress=False,
          on_eval=record)
    return epochs, time.perf_counter() - started


def as_run(name: str, config: str, rule: str, seed: int, epochs: dict, seconds: float,
           profile: str) -> Run:
    chosen = select(epochs, rule)
    users, metrics = epochs[chosen]["test"]
    return Run(model=name, variant=f"{name}, {config}, {rule}", seed=seed, profile=profile,
               config={"config": config, "rule": rule},
               metrics={k: float(v.mean()) for k, v in metrics.items()},
               per_user={k: v for k, v in metrics.items()}, epochs=max(epochs),
               best_epoch=chosen, seconds=seconds,
               extra={"users": users.tolist(), "curve": {
                   e: {s: {k: float(v.mean()) for k, v in epochs[e][s][1].items()}
                       for s in ("valid", "test")} for e in sorted(epochs)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "peer_unicdr.json")
    parser.add_argument("--peer", type=Path, default=PEER)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not (args.peer / "train_rec.py").exists():
        raise SystemExit(f"the official UniCDR code is not at {args.peer}")
    size = profile_for("unicdr", args.profile)
    header = {"benchmark": "peer_unicdr", **provenance(),
              "command": " ".join(["python", "benchmarks/peer_unicdr.py", *sys.argv[1:]])}
    configs = {"official hyper-parameters (lambda_a 0.5)": 0.5,
               "the course's (lambda_a 0)": 0.0}
    runs = []
    for seed in args.seeds:
        data = cross_domain_world(size.world, seed)
        d = data.index(TARGET)
        hist = Histories.of(data)
        rows = without_cold(data)
        candidates = {}
        for split in ("valid", "test"):
            full = sampled_candidates(data, hist, d, split, seed)
            kept = np.isin(getattr(data.domains[d], split)[:, 0], rows[d][split][:, 0])
            candidates[split] = full[kept]
        for config, lambda_a in configs.items():
            for name in ("official UniCDR", "course UniCDR"):
                if name == "official UniCDR":
                    epochs, seconds = run_official(args.peer.resolve(), data, size, lambda_a,
                                                   seed, rows, candidates, hist, d)
                else:
                    epochs, seconds = run_ours(data, size, lambda_a, seed, rows, candidates, d)
                for rule in ("official", "valid"):
                    run = as_run(name, config, rule, seed, epochs, seconds, args.profile)
                    runs.append(run)
                    print(f"seed {seed} {run.variant}: epoch {run.best_epoch}, "
                          + ", ".join(f"{k} {v:.4f}" for k, v in run.metrics.items())
                          + f" ({seconds:.0f} s)", flush=True)
    verdicts = {}
    for config in configs:
        for rule in ("official", "valid"):
            for metric in ("ndcg@10", "sampled ndcg@10"):
                a, b = f"course UniCDR, {config}, {rule}", f"official UniCDR, {config}, {rule}"
                try:
                    gap = compare(runs, a, b, metric)
                except ValueError:  # the two kept different users on some seed
                    continue
                verdict = Verdict.not_worse(f"{a} vs official ({metric})", gap,
                                            margin=MARGIN * gap.mean_b)
                verdicts[f"{config}, {rule}, {metric}"] = verdict.to_dict()
                print(f"{config}, {rule}, {metric}: {gap} -> {verdict.text}", flush=True)
    write_report(args.out, {**header, "settings": {
        "profile": args.profile, "seeds": args.seeds, "size": dataclasses.asdict(size),
        "task": TASK, "domains": DOMAINS, "margin": MARGIN,
        "patches": [{"name": n, "file": f} for n, f, _, _ in PATCHES]},
        "runs": [run.to_dict() for run in runs], "verdicts": verdicts})


if __name__ == "__main__":
    main()
