"""Cross-domain data: several domains that share their users (or their items), each split
leave-last-out, as chapter 10's UniCDR+ reads them.

Three sources, one container (``CrossDomain``):

* ``cross_domain_world``: the course's two Kuaishou-like domains, "short-video" (the
  source) and "living-room" (the target), drawn from one latent taste per user plus a
  taste offset per domain (card section 8). 60 % of users are in both; among those a
  *target-sparse* group has 1-3 living-room interactions in training and a *cold* group
  none (they are evaluated on living-room items all the same). Each living-room
  interaction also says whether it was *liked* (a sparse second behaviour).
* ``movielens_genre_domains``: MovieLens-1M cut into domains by genre; users overlap
  (the multi-domain scenario).
* ``movielens_item_overlap``: MovieLens-100K and MovieLens-1M as two domains with different
  users and shared films (matched by "Title (Year)"): the item-overlap scenario.

Ids: users 0..n_users-1, global (the same id is the same person in every domain); items
1..n_items per domain, 0 is padding. Every domain is split per user in time order: the last
interaction is the test item, the one before it the validation item, the rest train.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recfunnel import checks
from recfunnel.data.movielens import MovieLens

TARGET_SPARSE = (1, 3)  # target-domain training interactions of a target-sparse user


@dataclass(frozen=True)
class Domain:
    """One domain: ``train`` [N, 2] (user, item) rows in time order within each user,
    ``valid`` and ``test`` [U_d, 2] one held-out item per user; ``item_features`` [I + 1, F]
    side-feature ids per item (from 1; row 0 is padding); ``likes`` [N] and ``test_likes``
    [U_d] the sparse second behaviour where the domain has one; ``shared_items`` [I + 1]
    each item's id in the shared item space (the item-overlap scenario)."""

    name: str
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    item_features: np.ndarray
    likes: np.ndarray | None = None
    test_likes: np.ndarray | None = None
    shared_items: np.ndarray | None = None

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            rows = getattr(self, split)
            where = f"domain {self.name!r}, {split}"
            if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[1] != 2:
                raise checks.InvalidInputError(f"{where}: must be an [N, 2] array of (user, "
                                               "item) rows")
            for column, name in enumerate(("user", "item")):
                values = rows[:, column]
                if values.size and (values.min() < (0 if name == "user" else 1)
                                    or (name == "item" and values.max() > self.n_items)):
                    bad = checks.first_bad((values < 0) if name == "user" else
                                           (values < 1) | (values > self.n_items))
                    raise checks.InvalidInputError(
                        f"{where}: column {name}, row {bad}: {values[bad]} is out of range"
                        + ("" if name == "user" else f" 1..{self.n_items}"))
        if self.item_features.ndim != 2 or len(self.item_features) != self.n_items + 1:
            raise checks.InvalidInputError(f"domain {self.name!r}, item_features: must be "
                                           f"[{self.n_items + 1}, F], got "
                                           f"{self.item_features.shape}")
        for name, rows in (("likes", "train"), ("test_likes", "test")):
            values = getattr(self, name)
            if values is not None and len(values) != len(getattr(self, rows)):
                raise checks.InvalidInputError(f"domain {self.name!r}, {name}: one value per "
                                               f"{rows} row expected, got {len(values)}")

    @property
    def feature_sizes(self) -> tuple[int, ...]:
        """The embedding-table size of every side feature (its largest id + 1)."""
        return tuple(int(v) + 1 for v in self.item_features.max(axis=0))

    def train_counts(self, n_users: int) -> np.ndarray:
        """[n_users] training interactions of every user in this domain."""
        return np.bincount(self.train[:, 0], minlength=n_users)

    def item_popularity(self) -> np.ndarray:
        """[I + 1] training interactions per item."""
        return np.bincount(self.train[:, 1], minlength=self.n_items + 1)


@dataclass(frozen=True)
class CrossDomain:
    """Domains that overlap in their users (``overlap="users"``) or in their items
    (``"items"``: each domain maps its items into ``n_shared_items`` shared ids)."""

    name: str
    overlap: str
    n_users: int
    domains: tuple[Domain, ...]
    n_shared_items: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.one_of("overlap", self.overlap, ("users", "items"))
        if len(self.domains) < 2:
            raise checks.InvalidInputError(f"{self.name}: cross-domain data need at least two "
                                           f"domains, got {len(self.domains)}")
        for domain in self.domains:
            for split in ("train", "valid", "test"):
                users = getattr(domain, split)[:, 0]
                if users.size and users.max() >= self.n_users:
                    raise checks.InvalidInputError(
                        f"domain {domain.name!r}, {split}: column user, user {users.max()} "
                        f">= n_users {self.n_users}")
            if self.overlap == "items" and (domain.shared_items is None or
                                            len(domain.shared_items) != domain.n_items + 1):
                raise checks.InvalidInputError(f"domain {domain.name!r}: the item-overlap "
                                               "scenario needs shared_items [I + 1]")

    def index(self, name: str) -> int:
        names = [d.name for d in self.domains]
        if name not in names:
            raise KeyError(f"no domain {name!r}; the data have {names}")
        return names.index(name)

    def summary(self) -> pd.DataFrame:
        """One row per domain: users, items, train / valid / test rows."""
        return pd.DataFrame([{
            "domain": d.name, "users": len(np.unique(d.train[:, 0])), "items": d.n_items,
            "train": len(d.train), "valid": len(d.valid), "test": len(d.test),
            "density %": 100 * len(d.train) / max(1, len(np.unique(d.train[:, 0])) * d.n_items),
        } for d in self.domains]).set_index("domain")


def leave_last_out(frame: pd.DataFrame, where: str, min_train: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``user, item, time`` rows per user in time order (ties kept in row order): the
    last row is the test item, the one before the validation item, the rest train. A user
    with fewer than ``min_train + 2`` rows stays in training only."""
    checks.columns(frame, ("user", "item", "time"), where)
    ordered = frame.sort_values(["user", "time"], kind="stable")
    position_from_end = ordered.groupby("user").cumcount(ascending=False).to_numpy()
    size = ordered.groupby("user")["user"].transform("size").to_numpy()
    evaluated = size >= min_train + 2
    pairs = ordered[["user", "item"]].to_numpy(dtype=np.int64)
    test = evaluated & (position_from_end == 0)
    valid = evaluated & (position_from_end == 1)
    return pairs[~(test | valid)], pairs[valid], pairs[test]


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class CrossWorldConfig:
    """The two-domain world: user counts and shares, items per domain, topics, and how far a
    user's taste in one domain strays from the other (``offset``, relative to the shared
    taste)."""

    n_users: int
    n_items: tuple[int, int]  # short-video, living-room
    n_topics: int = 20
    dim: int = 16
    overlap: float = 0.6  # share of users in both domains
    sparse: float = 0.25  # of the overlapping users: 1-3 living-room train interactions
    cold: float = 0.15  # of the overlapping users: none
    mean_source: float = 30.0  # mean short-video interactions of a user (log-normal)
    mean_target: float = 12.0  # mean living-room interactions of a warm user
    offset: float = 0.3
    taste: float = 6.0  # the scale of a user's taste against the Gumbel noise of a choice
    popularity: float = 0.3  # item bias -popularity * log(1 + popularity rank)
    like_base: float = -2.5  # logit of a like at mean affinity
    like_slope: float = 1.5


CROSS_WORLD_PRESETS = {
    "smoke": CrossWorldConfig(n_users=1_000, n_items=(600, 500)),
    "cpu": CrossWorldConfig(n_users=3_000, n_items=(2_000, 2_000)),
    "gpu": CrossWorldConfig(n_users=50_000, n_items=(20_000, 20_000), n_topics=60, dim=32),
}
SOURCE, TARGET = "short-video", "living-room"


def _user_groups(cfg: CrossWorldConfig, rng: np.random.Generator) -> np.ndarray:
    """[U] one group per user: both-warm, both-sparse, both-cold, source-only, target-only."""
    shares = {"warm": cfg.overlap * (1 - cfg.sparse - cfg.cold), "sparse": cfg.overlap *
              cfg.sparse, "cold": cfg.overlap * cfg.cold, "source only": (1 - cfg.overlap) / 2,
              "target only": (1 - cfg.overlap) / 2}
    names = np.array(list(shares))
    return names[rng.choice(len(names), cfg.n_users, p=np.array(list(shares.values())))]


def _draw(taste: np.ndarray, items: np.ndarray, bias: np.ndarray, counts: np.ndarray,
          rng: np.random.Generator, chunk: int = 2_048) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``counts[u]`` distinct items by Gumbel top-k on affinity + bias; the
    (user, item) rows in a random time order, and each row's affinity."""
    users_out, items_out, affinity_out = [], [], []
    for start in range(0, len(taste), chunk):
        block = slice(start, start + chunk)
        score = taste[block] @ items.T + bias  # [b, I]
        noisy = score + rng.gumbel(size=score.shape)
        order = np.argsort(-noisy, axis=1)
        for row, n in enumerate(counts[block]):
            if n == 0:
                continue
            chosen = rng.permutation(order[row, :n])
            users_out.append(np.full(n, start + row))
            items_out.append(chosen)
            affinity_out.append(score[row, chosen])
    return (np.stack([np.concatenate(users_out), np.concatenate(items_out) + 1], axis=1),
            np.concatenate(affinity_out))


def cross_domain_world(preset: str | CrossWorldConfig = "cpu", seed: int = 0) -> CrossDomain:
    """The short-video / living-room world (module docstring); ``user_groups(data)`` gives
    every user's group."""
    cfg = CROSS_WORLD_PRESETS[preset] if isinstance(preset, str) else preset
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(cfg.n_topics, cfg.dim)) / np.sqrt(cfg.dim)
    mix = rng.dirichlet(np.full(cfg.n_topics, 0.1), size=cfg.n_users)  # [U, K] few topics
    shared_taste = cfg.taste * mix @ centres
    groups = _user_groups(cfg, rng)
    domains = []
    for d, (name, n_items) in enumerate(zip((SOURCE, TARGET), cfg.n_items, strict=True)):
        topic = rng.integers(cfg.n_topics, size=n_items)
        vectors = centres[topic] + 0.4 * rng.normal(size=(n_items, cfg.dim)) / np.sqrt(cfg.dim)
        bias = -cfg.popularity * np.log1p(rng.permutation(n_items))  # a long tail
        taste = shared_taste + cfg.offset * np.linalg.norm(shared_taste, axis=1, keepdims=True) \
            * rng.normal(size=shared_taste.shape) / np.sqrt(cfg.dim)
        mean = cfg.mean_source if d == 0 else cfg.mean_target
        counts = np.maximum(3, rng.lognormal(np.log(mean), 0.6, cfg.n_users).astype(int))
        absent = "target only" if d == 0 else "source only"
        counts[groups == absent] = 0
        if d == 1:  # held-out valid + test on top of 1-3 or no training interactions
            counts[groups == "sparse"] = 2 + rng.integers(TARGET_SPARSE[0], TARGET_SPARSE[1] + 1,
                                                          size=(groups == "sparse").sum())
            counts[groups == "cold"] = 2
        counts = np.minimum(counts, n_items // 2)
        rows, affinity = _draw(taste, vectors, bias, counts, rng)
        frame = pd.DataFrame({"user": rows[:, 0], "item": rows[:, 1],
                              "time": np.arange(len(rows)),
                              "affinity": affinity})
        train, valid, test = leave_last_out(frame, f"world {name}", min_train=0)
        popularity = np.bincount(train[:, 1], minlength=n_items + 1)
        quintile = np.searchsorted(np.quantile(popularity[1:], [0.2, 0.4, 0.6, 0.8]),
                                   popularity, side="right") + 1
        features = np.stack([np.concatenate([[0], topic + 1]), quintile], axis=1)
        features[0] = 0
        likes = test_likes = None
        if name == TARGET:
            z = (affinity - affinity.mean()) / affinity.std()
            liked = rng.random(len(z)) < 1 / (1 + np.exp(-(cfg.like_base + cfg.like_slope * z)))
            by_pair = dict(zip(map(tuple, rows.tolist()), liked, strict=True))
            likes = np.array([by_pair[tuple(r)] for r in train.tolist()], dtype=np.int64)
            test_likes = np.array([by_pair[tuple(r)] for r in test.tolist()], dtype=np.int64)
        domains.append(Domain(name, n_items, train, valid, test, features.astype(np.int64),
                              likes, test_likes))
    return CrossDomain("world", "users", cfg.n_users, tuple(domains),
                       notes={"groups": ",".join(groups)})


def user_groups(data: CrossDomain) -> np.ndarray:
    """[U] the world's group of every user (warm, sparse, cold, source only, target only)."""
    if "groups" not in data.notes:
        raise KeyError(f"{data.name}: only the cross-domain world has user groups")
    return np.array(data.notes["groups"].split(","))


# --------------------------------------------------------------------------- MovieLens

GENRE_DOMAINS = {  # a film belongs to the first of its genres found here, in this order
    "comedy": ("Comedy", "Animation", "Children's", "Musical"),
    "drama": ("Drama", "Romance", "Documentary", "War"),
    "thriller": ("Action", "Thriller", "Crime", "Horror", "Sci-Fi", "Adventure", "Mystery",
                 "Film-Noir", "Western", "Fantasy"),
}


def _decade(data: MovieLens) -> np.ndarray:
    year = data.items["year"].fillna(1900).astype(int).to_numpy()
    return (np.clip((year - 1900) // 10, 0, 12) + 1).astype(np.int64)


def _sample_users(frame: pd.DataFrame, users: int | None, seed: int) -> pd.DataFrame:
    if users is None:
        return frame
    ids = np.unique(frame["user_id"])
    keep = np.random.default_rng(seed).choice(ids, min(users, len(ids)), replace=False)
    return frame[frame["user_id"].isin(keep)]


def movielens_genre_domains(data: MovieLens, users: int | None = None, seed: int = 0,
                            genres: dict[str, tuple[str, ...]] = GENRE_DOMAINS) -> CrossDomain:
    """MovieLens cut into one domain per genre group (``GENRE_DOMAINS``): a film goes to the
    group of its first listed genre that any group names; films of no group are dropped.
    Users overlap; ``users`` keeps a random subset of them (the cpu profile)."""
    checks.columns(data.interactions, ("user_id", "item_id", "timestamp"), data.name)
    frame = _sample_users(data.interactions, users, seed)
    user_index = {u: i for i, u in enumerate(np.unique(frame["user_id"]))}
    group_of = {}
    for item_id, film_genres in zip(data.items["item_id"], data.items["genres"], strict=True):
        for genre in film_genres:
            found = [name for name, members in genres.items() if genre in members]
            if found:
                group_of[int(item_id)] = found[0]
                break
    decade = dict(zip(data.items["item_id"].astype(int), _decade(data), strict=True))
    first_genre = {g: i + 1 for i, g in enumerate(sorted({g for gs in genres.values()
                                                          for g in gs}))}
    domains = []
    for name, members in genres.items():
        rows = frame[frame["item_id"].map(group_of) == name]
        films = np.unique(rows["item_id"])
        number = {int(f): i + 1 for i, f in enumerate(films)}
        split = pd.DataFrame({"user": rows["user_id"].map(user_index).to_numpy(),
                              "item": rows["item_id"].map(number).to_numpy(),
                              "time": rows["timestamp"].to_numpy()})
        train, valid, test = leave_last_out(split, f"{data.name} {name}", min_train=3)
        genre_ids = data.items.set_index("item_id")["genres"]
        features = np.zeros((len(films) + 1, 2), dtype=np.int64)
        for film, i in number.items():
            features[i] = (next(first_genre[g] for g in genre_ids[film] if g in members),
                           decade[film])
        domains.append(Domain(name, len(films), train, valid, test, features))
    return CrossDomain(f"{data.name} by genre", "users", len(user_index), tuple(domains))


def movielens_item_overlap(first: MovieLens, second: MovieLens, users: int | None = None,
                           seed: int = 0) -> CrossDomain:
    """Two title-keyed MovieLens copies (``load_ml100k_titles``, ``load_ml1m``) as two
    domains whose users differ and whose films are matched by their "Title (Year)" key;
    ``users`` keeps a random subset of each copy's users."""
    for data in (first, second):
        checks.columns(data.items, ("item_id", "key", "genres"), f"{data.name} items")
    keys = sorted(set(first.items["key"]) | set(second.items["key"]))
    shared = {k: i + 1 for i, k in enumerate(keys)}
    genre_index = {g: i + 1 for i, g in enumerate(sorted({g for data in (first, second)
                                                          for gs in data.items["genres"]
                                                          for g in gs}))}
    domains, offset = [], 0
    for data in (first, second):
        frame = _sample_users(data.interactions, users, seed)
        own_users = np.unique(frame["user_id"])
        user_index = {u: offset + i for i, u in enumerate(own_users)}
        films = np.unique(frame["item_id"])
        number = {int(f): i + 1 for i, f in enumerate(films)}
        split = pd.DataFrame({"user": frame["user_id"].map(user_index).to_numpy(),
                              "item": frame["item_id"].map(number).to_numpy(),
                              "time": frame["timestamp"].to_numpy()})
        train, valid, test = leave_last_out(split, data.name, min_train=3)
        items = data.items.set_index("item_id")
        decade = dict(zip(data.items["item_id"].astype(int), _decade(data), strict=True))
        features = np.zeros((len(films) + 1, 2), dtype=np.int64)
        shared_items = np.zeros(len(films) + 1, dtype=np.int64)
        for film, i in number.items():
            genres = items.loc[film, "genres"]
            features[i] = (genre_index[genres[0]] if genres else 0, decade[film])
            shared_items[i] = shared[items.loc[film, "key"]]
        domains.append(Domain(data.name, len(films), train, valid, test, features,
                              shared_items=shared_items))
        offset += len(own_users)
    return CrossDomain(f"{first.name} + {second.name}", "items", offset, tuple(domains),
                       n_shared_items=len(keys))
