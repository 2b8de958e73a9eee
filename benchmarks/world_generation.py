"""How long the synthetic world takes to build, simulate and write, and its peak memory.

Each preset runs in its own process (so peak resident memory is that preset's alone), one
after the other on the same machine. Target from the data issue: the ``cpu`` world in under
30 s on 2 cores.

    .venv/bin/python benchmarks/world_generation.py --presets smoke cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from recfunnel.study import provenance, write_report

RUN_ONE = """
import json, resource, sys, tempfile, time
from pathlib import Path
from recfunnel.data.funnel import simulate
from recfunnel.data.world import WORLD_PRESETS, World
cfg = WORLD_PRESETS[sys.argv[1]]
started = time.perf_counter()
world = World.build(cfg)
built = time.perf_counter()
log = simulate(world, progress=False)
simulated = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    log.write_recflow(folder)
    written = time.perf_counter()
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
rows = sum(len(frame) for frame in log.rows.values())
print(json.dumps({
    "preset": sys.argv[1], "users": cfg.n_users, "items": cfg.n_items, "days": cfg.n_days,
    "requests": int(sum(frame["request_id"].nunique() for frame in log.rows.values())),
    "rows": rows, "build_s": built - started, "simulate_s": simulated - built,
    "write_s": written - simulated, "total_s": written - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "disk_mb": size / 2**20,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["smoke", "cpu"])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "world_generation.json")
    args = parser.parse_args()
    origin = provenance()
    rows = []
    for preset in args.presets:
        result = subprocess.run([sys.executable, "-c", RUN_ONE, preset], check=True,
                                capture_output=True, text=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{preset:>6}: {row['requests']:>7} requests, {row['rows']:>9} rows, "
              f"simulate {row['simulate_s']:6.1f} s, total {row['total_s']:6.1f} s, "
              f"peak {row['peak_rss_mb']:7.0f} MB, disk {row['disk_mb']:6.0f} MB")
    write_report(args.out, {"benchmark": "world_generation", **origin,
                            "cores": os.cpu_count(), "rows": rows})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
