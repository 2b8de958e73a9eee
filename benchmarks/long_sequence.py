"""Long sequences: ELASTIC's linear dispatcher attention against SASRec's self-attention.

Three sequence encoders of the same width (D = 64, 2 heads, 2 layers, FFN 256) read a
batch of histories of length L = 128 ... 8,192:

* ``SASRec (eager)``: softmax(QK^T)V written out, the [B, H, L, L] map held in memory;
* ``SASRec (SDPA)``: the same model through ``scaled_dot_product_attention`` with
  ``is_causal``, so fused kernels (Flash / memory-efficient on a GPU) never store the map;
* ``ELASTIC``: k = 32 experts drawn from a 65,536-slot product-key memory.

For each length, the three run side by side in one process run: inference (eval mode, no
gradients) and one training step's forward + backward, each timed as the median of
``--repeats`` runs after a warm-up, and the peak memory of each pass above what the model
and its inputs already hold (CUDA: ``max_memory_allocated``; CPU: the growth of the peak
resident set of a fresh worker process, one per model and length).

    python benchmarks/long_sequence.py                # -> results/long_sequence_cpu.json
    python benchmarks/long_sequence.py --device cuda  # -> results/long_sequence_cuda.json

A pass that runs out of memory is recorded as such (null time and memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from recfunnel.models.baselines import SASRec, SASRecConfig
from recfunnel.models.elastic import Elastic, ElasticConfig
from recfunnel.runtime import resolve_device
from recfunnel.study import provenance, write_report

RESULTS = Path(__file__).parent / "results"
MODELS = ("SASRec (eager)", "SASRec (SDPA)", "ELASTIC")
N_ITEMS, D_MODEL, N_HEADS, N_LAYERS, D_FFN = 10_000, 64, 2, 2, 256
N_EXPERTS, MEMORY_SIZE, TOP_C = 32, 65_536, 32


def build(name: str, length: int) -> torch.nn.Module:
    if name == "ELASTIC":
        return Elastic(ElasticConfig(n_items=N_ITEMS, max_len=length, d_model=D_MODEL,
                                     n_heads=N_HEADS, n_layers=N_LAYERS, d_ffn=D_FFN,
                                     n_experts=N_EXPERTS, memory_size=MEMORY_SIZE,
                                     top_c=TOP_C, p_dropout=0.0))
    attention = "eager" if "eager" in name else "sdpa"
    return SASRec(SASRecConfig(n_items=N_ITEMS, max_len=length, d_model=D_MODEL,
                               n_heads=N_HEADS, n_layers=N_LAYERS, d_ffn=D_FFN,
                               p_dropout=0.0, attention=attention))


def newest_state(model: torch.nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """[B, D]: the encoder's output that scores the next item."""
    is_pad = seq == 0
    if isinstance(model, Elastic):
        return model.encode(seq, is_pad).user
    return model.encode(seq, is_pad)[:, -1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, length: int, batch_size: int, repeats: int, device: torch.device
            ) -> dict[str, float | None]:
    """Time and peak memory of inference and of a training step, for one model."""
    torch.manual_seed(0)
    model = build(name, length).to(device)
    seq = torch.randint(1, N_ITEMS, (batch_size, length), device=device)
    result: dict[str, float | None] = {}
    rss_base = peak_rss_mib()  # CPU: model and inputs; inference's peak <= training's
    for mode in ("inference", "train"):
        def step(mode: str = mode) -> None:
            if mode == "inference":
                with torch.no_grad():
                    newest_state(model.eval(), seq)
            else:
                model.train()
                newest_state(model, seq).square().mean().backward()
                model.zero_grad(set_to_none=True)
        try:
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            step()  # warm-up, and the pass whose peak memory is read
            synchronize(device)
            if device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
            else:
                peak = peak_rss_mib() - rss_base
            times = []
            for _ in range(repeats):
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                times.append(time.perf_counter() - start)
            result[f"{mode}_ms"] = 1000 * statistics.median(times)
            result[f"{mode}_peak_mib"] = peak
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            result[f"{mode}_ms"] = result[f"{mode}_peak_mib"] = None
            result[f"{mode}_error"] = "out of memory"
    return result


def measure_in_worker(name: str, length: int, batch_size: int, repeats: int) -> dict:
    """CPU: a fresh process per model and length, so its peak resident set is its own."""
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--lengths", str(length),
                          "--batch-size", str(batch_size), "--repeats", str(repeats)],
                         capture_output=True, text=True)
    if out.returncode:
        return {"inference_ms": None, "train_ms": None, "inference_peak_mib": None,
                "train_peak_mib": None, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[128, 256, 512, 1_024, 2_048, 4_096, 8_192])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="histories per batch (default: 4 on a CPU, 32 on a GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    batch_size = args.batch_size or (4 if device.type == "cpu" else 32)
    if args.worker:  # one model, one length, this process: print its JSON line
        print(json.dumps(measure(args.worker, args.lengths[0], batch_size, args.repeats,
                                 device)))
        return 0
    origin = provenance()  # taken before the runs, so later edits do not mark it dirty
    rows = []
    for length in args.lengths:
        for name in MODELS:
            if device.type == "cpu":
                row = measure_in_worker(name, length, batch_size, args.repeats)
            else:
                row = measure(name, length, batch_size, args.repeats, device)
            rows.append({"model": name, "length": length} | row)
            print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    report = {
        "benchmark": "long_sequence", **origin,
        "device": device.type, "device_name": name or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "batch_size": batch_size, "repeats": args.repeats,
        "config": {"d_model": D_MODEL, "n_heads": N_HEADS, "n_layers": N_LAYERS,
                   "d_ffn": D_FFN, "n_items": N_ITEMS, "n_experts": N_EXPERTS,
                   "memory_size": MEMORY_SIZE, "top_c": TOP_C},
        "memory": ("growth of the peak resident set of a fresh process (MiB)"
                   if device.type == "cpu" else "torch.cuda.max_memory_allocated above the "
                   "model and inputs (MiB)"),
        "rows": rows,
    }
    out = args.out or RESULTS / f"long_sequence_{device.type}.json"
    print(f"wrote {write_report(out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
