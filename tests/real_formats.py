"""Small files in the exact layout of the real datasets, for the loaders' tests."""

import numpy as np
import pandas as pd

from recfunnel.data import kuairand


def write_kuairand(folder, n=400, seed=0):
    """KuaiRand-Pure's two standard logs and its user and video features, as published."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(kuairand.LOG_FILES):
        day = np.sort(rng.integers(0, 5, n)) + 10 * k
        log = pd.DataFrame({
            "user_id": rng.integers(0, 30, n), "video_id": rng.integers(0, 80, n),
            "date": 20220408 + day, "hourmin": rng.integers(0, 24, n) * 100,
            "time_ms": 1_649_376_000_000 + day * 86_400_000 + rng.integers(0, 86_400_000, n),
            **{c: (rng.random(n) < 0.3).astype(int) for c in
               ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate",
                "long_view", "is_profile_enter")},
            "play_time_ms": rng.integers(0, 30_000, n), "duration_ms": rng.integers(5_000,
                                                                                   60_000, n),
            "profile_stay_time": 0, "comment_stay_time": 0,
            "is_rand": (rng.random(n) < 0.1).astype(int), "tab": rng.integers(0, 4, n)})
        log.to_csv(folder / name, index=False)
    pd.DataFrame({"user_id": range(30), "user_active_degree": ["high_active"] * 29 + [None],
                  "is_lowactive_period": 0, "is_live_streamer": 0, "is_video_author": 1,
                  "follow_user_num_range": "0", "fans_user_num_range": "[1,10)",
                  "register_days_range": "31-60"}).to_csv(folder / kuairand.USER_FILE,
                                                          index=False)
    pd.DataFrame({"video_id": range(80), "author_id": rng.integers(0, 20, 80),
                  "video_type": "NORMAL", "upload_type": "ShortImport",
                  "music_type": 4.0}).to_csv(folder / kuairand.VIDEO_FILE, index=False)


def write_ml1m(folder, ratings=None, movies=None):
    """MovieLens-1M's ``ratings.dat`` and ``movies.dat`` (``::``-separated, Latin-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = ratings if ratings is not None else [
        f"{u}::{i}::{(u + i) % 5 + 1}::{978_300_000 + 60 * (u * 7 + i)}"
        for u in range(1, 6) for i in range(1, 8)]
    movies = movies if movies is not None else [
        f"{i}::Film {i} ({1990 + i})::{'Comedy|Drama' if i % 2 else 'Action'}"
        for i in range(1, 8)]
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    (folder / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return folder
