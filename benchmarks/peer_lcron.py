"""The authors' LCRON code against the course's, on the same world days, losses and seeds.

The official code (``../shared/peers/lcron``, CC BY-SA 4.0, commit caa58ca) is copied into a
temporary folder next to the world's days written in RecFlow's layout (chapter 1's writer:
that the official loaders read them is itself a test of the format), and patched there,
never in place; each patch is named in ``PATCHES`` and recorded in the JSON:

* ``days``: ``file_1st.txt`` lists the world's training days (RecFlow's 22 days in the
  original), repeated once per pass, so that the official loop makes as many passes over the
  data as the course's training does; the test day replaces 2024-02-04 in ``run_test2.py``.
* ``seed``: the official training never seeds torch (its "epochs" argument only names the
  run); the patch seeds torch from ``LCRON_SEED`` so that runs are repeatable.
* ``cpu``: the BCE branch prints ``torch.cuda.memory_summary()``, which fails without CUDA;
  it prints nothing instead.

Each official run trains with its own script (``run_train2.py``: DSSM retrieval and DIN
ranking, embeddings 8, Adam 0.01, the course's batch size) and is tested twice: by its own
``run_test2.py`` (its printed joint recall: the official number, batches of 1,024 with the
last partial batch dropped, candidates shuffled), and by the course's metric
(``models.lcron.joint_recall``) on every test request, from the official models' logits
through the official data loader, so that both implementations are compared per request
on the same requests. The course's runs (``recipes.capstone.train_cascade``) read the same
files through ``data.cascade``; besides BCE and LCRON they train every loss of the
profile's ``losses`` and ``COURSE_ONLY`` on the same seeds, which chapter 11 reads at ``cpu``.

    python benchmarks/peer_lcron.py   # -> results/peer_lcron.json (about 25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recfunnel.data.cascade import CascadeData
from recfunnel.data.recflow import RecFlow
from recfunnel.models.lcron import joint_recall
from recfunnel.profiles import profile_for
from recfunnel.recipes.capstone import build_world, cascade_recall, split_days, train_cascade
from recfunnel.study import Verdict, paired_gap, provenance, write_report

RESULTS = Path(__file__).parent / "results"
PEER = Path("../shared/peers/lcron")  # from the repository's root (--peer)
MARGIN = 0.01  # ours may trail the official joint recall by at most 0.01 (declared)
LOSSES = {"bce": "bce", "lcron": "lcron"}  # official loss name -> the course's
# the course's other losses, trained on the same days and seeds for chapter 11's tables
COURSE_ONLY = ("lcron_detached",)

PATCHES = [  # (name, file, the official text, the replacement)
    ("days", "deep_components/run_test2.py", "eval_day_list = ['2024-02-04']",
     "eval_day_list = [os.environ['LCRON_TEST_DAY']]"),
    ("seed", "deep_components/run_train2.py",
     "        args = parse_args()\n",
     "        args = parse_args()\n        torch.manual_seed(int(os.environ['LCRON_SEED']))\n"),
    ("cpu", "deep_components/run_train2.py", 'print("PRE loss_cal, mem_sum=%s" % '
     "torch.cuda.memory_summary())", 'print("PRE loss_cal")'),
]


def patched_copy(peer: Path, root: Path, train_days: list[str], passes: int) -> Path:
    code = root / "LCRON"
    shutil.copytree(peer, code, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (code / "checkpoints").mkdir()
    (code / "logs").mkdir()
    for name, file, old, new in PATCHES:
        path = code / file
        text = path.read_text()
        if old not in text:
            raise RuntimeError(f"patch {name!r}: the official {file} has changed")
        path.write_text(text.replace(old, new))
    (code / "deep_components" / "file_1st.txt").write_text("\n".join(train_days * passes) + "\n")
    return code


def official_args(loss: str, tag: str, batch: int) -> list[str]:
    return ["--epochs=1", f"--loss_type={loss}", "--tau=50", f"--batch_size={batch}",
            f"--infer_realshow_batch_size={batch}", f"--infer_recall_batch_size={batch}",
            "--emb_dim=8", "--lr=0.01", "--seq_len=50", "--cuda=0", "--root_path=.",
            "--print_freq=100", f"--tag={tag}"]


def run_script(code: Path, script: str, args: list[str], env: dict) -> str:
    result = subprocess.run([sys.executable, "-B", "-u", f"deep_components/{script}", *args],
                            cwd=code, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the official {script} failed:\n{result.stdout[-2000:]}\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


@torch.no_grad()
def official_per_request(code: Path, loss: str, tag: str, batch: int, test_day: str
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(request ids, joint recall) of every test request, by the course's metric, from the
    official models' logits through the official loader."""
    sys.path[:0] = [str(code / "deep_components"), str(code)]
    try:
        models = importlib.import_module("models")
        dataset = importlib.import_module("dataset2")
        utils = importlib.import_module("utils")
        data = code / "data"
        id_cnt = utils.load_pkl(data / "others" / "id_cnt.pkl")
        device = torch.device("cpu")
        nets = {}
        for kind, cls in (("prerank", models.DIN), ("retrival", models.DSSM)):
            net = cls(8, 50, device, id_cnt, nn_units=128)
            net.load_state_dict(torch.load(
                code / "checkpoints" / f"{kind}_tau-50.0--bs-{batch}_lr-0.01_{tag}.pkl"))
            nets[kind] = net.eval()
        test = dataset.Rank_Train_All_BY_RANK_Dataset(
            str(data / "all_stage" / f"{test_day}.feather"), 50,
            str(data / "seq_effective_50_dict" / f"{test_day}.pkl"),
            str(data / "request_id_dict" / f"{test_day}.pkl"))
        loader = torch.utils.data.DataLoader(test, batch_size=1_024, shuffle=False)
        recalls = []
        for inputs in loader:
            features = [x.long() for x in inputs[:15]]
            ranking = torch.cat(nets["prerank"].forward_all_by_rank(features), 1)
            retrieval = torch.cat(nets["retrival"].forward_all_by_rank(features), 1)
            mask = torch.cat(inputs[-8:-4], 1).float()
            gain = torch.cat(inputs[-4:], 1).float()
            recalls.append(joint_recall(retrieval, ranking, gain, mask).numpy())
        return test.data[:, 0].astype(np.int64), np.concatenate(recalls)
    finally:
        del sys.path[:2]
        for name in ("models", "dataset2", "utils"):
            sys.modules.pop(name, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "peer_lcron.json")
    parser.add_argument("--peer", type=Path, default=PEER)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not (args.peer / "deep_components" / "run_train2.py").exists():
        raise SystemExit(f"the official LCRON code is not at {args.peer}")
    size = profile_for("capstone", args.profile)
    header = {"benchmark": "peer_lcron", **provenance(),
              "command": " ".join(["python", "benchmarks/peer_lcron.py", *sys.argv[1:]])}
    world, log = build_world(size, 0)
    train_days, test_day = split_days(log)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        code = patched_copy(args.peer.resolve(), root, train_days, size.cascade_epochs)
        log.write_recflow(code / "data")
        recflow = RecFlow(code / "data")
        train = CascadeData.from_recflow(recflow, train_days)
        test = CascadeData.from_recflow(recflow, [test_day])
        env = {**os.environ, "PYTHONPATH": str(code), "LCRON_TEST_DAY": test_day,
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        for seed in args.seeds:
            for official in LOSSES:
                tag = f"{official}-s{seed}"
                started = time.perf_counter()
                run_script(code, "run_train2.py", official_args(official, tag, size.cascade_batch),
                           {**env, "LCRON_SEED": str(seed)})
                seconds = time.perf_counter() - started
                printed = run_script(code, "run_test2.py",
                                     official_args(official, tag, size.cascade_batch), env)
                found = re.search(rf"metrics\t{official}\tjoint\t([0-9.]+)", printed)
                ids, values = official_per_request(code, official, tag, size.cascade_batch,
                                                   test_day)
                order = {int(r): i for i, r in enumerate(ids)}
                aligned = values[[order[int(r)] for r in test.request_ids]]
                runs[f"official {official}, seed {seed}"] = {
                    "implementation": "official", "loss": official, "seed": seed,
                    "printed": float(found.group(1)) if found else None,
                    "mean": float(aligned.mean()), "seconds": seconds,
                    "per_request": aligned.tolist()}
                print(f"seed {seed} official {official}: {aligned.mean():.4f} (its own print "
                      f"{found.group(1) if found else '?'}, {seconds:.0f} s)", flush=True)
            for loss in size.losses + COURSE_ONLY:
                if f"course {loss}, seed {seed}" in runs:
                    continue
                started = time.perf_counter()
                course = cascade_recall(train_cascade(train, loss, size, seed, progress=False),
                                        test)
                seconds = time.perf_counter() - started
                runs[f"course {loss}, seed {seed}"] = {
                    "implementation": "course", "loss": loss, "seed": seed, "printed": None,
                    "mean": float(course.mean()), "seconds": seconds,
                    "per_request": course.tolist()}
                print(f"seed {seed} course {loss}: {course.mean():.4f} ({seconds:.0f} s)",
                      flush=True)
    verdicts = {}

    def values(implementation: str, loss: str) -> list:
        return [r["per_request"] for r in runs.values()
                if r["implementation"] == implementation and r["loss"] == loss]

    for official, ours in LOSSES.items():
        gap = paired_gap(values("course", ours), values("official", official),
                         a=f"course {ours}", b=f"official {official}",
                         metric="joint recall@10@20", unit="requests")
        verdict = Verdict.not_worse(f"the course's {ours} is not worse than the official "
                                    f"{official}", gap, margin=MARGIN)
        verdicts[f"course vs official: {official}"] = verdict.to_dict()
        print(f"{official}: course - official {gap} -> {verdict.text}", flush=True)
    for implementation in ("official", "course"):
        gap = paired_gap(values(implementation, "lcron"), values(implementation, "bce"),
                         a=f"{implementation} LCRON", b=f"{implementation} BCE",
                         metric="joint recall@10@20", unit="requests")
        verdict = Verdict.better(f"{implementation} code: LCRON beats BCE", gap)
        verdicts[f"{implementation}: lcron vs bce"] = verdict.to_dict()
        print(f"{implementation}: LCRON - BCE {gap} -> {verdict.text}", flush=True)
    write_report(args.out, {**header, "settings": {
        "profile": args.profile, "seeds": args.seeds, "size": dataclasses.asdict(size),
        "train_days": train_days, "test_day": test_day, "test_requests": len(test),
        "train_requests": len(train), "margin": MARGIN, "losses": list(size.losses + COURSE_ONLY),
        "patches": [{"name": n, "file": f} for n, f, _, _ in PATCHES]},
        "runs": runs, "verdicts": verdicts})


if __name__ == "__main__":
    main()
