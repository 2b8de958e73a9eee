"""The synthetic world's log written in RecFlow's layout (``data.recflow``'s writers), with
``_truth/`` holding each row's true relevance, so that chapters read the world and the real
RecFlow with the same reader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from recfunnel.data import recflow
from recfunnel.data.tables import write_table

if TYPE_CHECKING:
    from recfunnel.data.funnel import WorldLog


def write_recflow(log: WorldLog, root: str | Path) -> Path:
    """Write ``log`` in the RecFlow layout (plus ``_truth/`` with each row's true relevance);
    returns ``root``."""
    root = Path(root)
    days = list(log.rows)
    exposed_so_far: list[np.ndarray] = []
    daily = {}
    for day in tqdm(days, desc="writing RecFlow files", leave=False):
        rows = log.rows[day]
        recflow.write_day(root, day, rows, log.seqs[day], log.requests[day],
                          log.ubm[day])
        write_table(root / "_truth" / f"{day}.feather",
                            rows.assign(relevance_e6=(rows["relevance"] * 1e6).round()
                                        .astype(np.int64)),
                            ("request_id", "video_id", "relevance_e6", "is_live", "gift"))
        exposed_so_far.append(rows.loc[rows["realshow"] == 1, "video_id"].to_numpy())
        daily[day] = np.unique(np.concatenate(exposed_so_far))
    last = log.rows[days[-1]]
    shown = last[last["realshow"] == 1]
    tests = {
        "retrieval": shown.groupby("request_id").head(recflow.TEST_CAPS["retrieval"]),
        "coarse_rank": last.groupby("request_id").head(recflow.TEST_CAPS["coarse_rank"]),
        "rank": last[(last["rank_index"] > 0) | (last["realshow"] == 1)]
        .groupby("request_id").head(recflow.TEST_CAPS["rank"]),
    }
    world = log.world
    id_cnt = {
        "user_id": world.cfg.n_users, "device_id": world.cfg.n_users, "age": 7,
        "gender": 2, "province": 31, "video_id": world.cfg.n_items,
        "author_id": world.cfg.n_creators, "category_level_one": world.cfg.n_topics // 4 + 1,
        "category_level_two": world.cfg.n_topics, "upload_type": 5,
    }
    recflow.write_others(root, id_cnt, tests, daily[days[-1]], daily)
    return root
