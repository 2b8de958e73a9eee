"""Input checks shared by every loader, generator and entry point: one idiom, one error.

A check runs before anything is computed or written, and its message names *where* the
input is wrong (an argument, a file, a column of a file) and *what* is wrong with it, with
the first offending row. Bad input therefore never passes silently and never surfaces as a
pandas or torch internal error. A new loader copies this pattern:

    where = f"{path.name}"
    checks.columns(frame, ("user_id", "item_id", "timestamp"), where)
    users = checks.id_column(frame, "user_id", where)          # int64, no NaN, >= 0
    times = checks.finite_column(frame, "timestamp", where)    # float64, no NaN or inf
    n = checks.positive_int("n_users", n_users)

Every failure raises ``InvalidInputError``, a ``ValueError`` (and a ``TypeError``, for
inputs of the wrong type), so callers catch one thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch

INT64_MAX = int(np.iinfo(np.int64).max)
# ids are looked up in dense tables (embeddings, bincounts): an id space this much larger
# than the number of distinct ids is refused rather than allocated
SPARSE_ID_FACTOR, SPARSE_ID_SLACK = 16, 1_000_000


class InvalidInputError(ValueError, TypeError):
    """Bad input: the message names the argument, file or column, and what is wrong."""


def _fail(where: str, what: str) -> InvalidInputError:
    return InvalidInputError(f"{where}: {what}")


# --------------------------------------------------------------------------- arguments


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; floats, bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise _fail(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise _fail(name, f"must be at least {minimum}, got {value}")
    return int(value)


def real(name: str, value: Any, low: float | None = None, high: float | None = None,
         *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float inside [low, high] (``*_open``: the bound excluded)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _fail(name, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _fail(name, f"must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise _fail(name, f"must lie in {bounds}, got {value}")
    return value


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise _fail(name, f"must be one of {choices}, got {value!r}")
    return value


# --------------------------------------------------------------------------- tables


def first_bad(mask: np.ndarray) -> int:
    """The position of the first True of a boolean array."""
    return int(np.flatnonzero(np.asarray(mask))[0])


def columns(frame: Any, required: Sequence[str], where: str) -> None:
    """``frame`` is a DataFrame with every column of ``required``."""
    if not isinstance(frame, pd.DataFrame):
        raise _fail(where, f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise _fail(where, f"column {missing[0]!r} is missing (it has {list(frame.columns)})")


def not_empty(n_rows: int, where: str) -> None:
    if n_rows == 0:
        raise _fail(where, "has no rows")


def id_column(frame: pd.DataFrame, column: str, where: str, minimum: int = 0) -> np.ndarray:
    """An id column as int64: integer values (whole floats are accepted), no NaN, no
    strings, none below ``minimum`` and none beyond int64."""
    series = frame[column]
    where = f"{where}: column {column!r}"
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype) and \
            pd.api.types.is_numeric_dtype(series.dtype):  # pandas' nullable Int64, Float64
        if series.isna().any():
            raise _fail(where, f"row {first_bad(series.isna().to_numpy())} is missing; ids "
                               "must not be missing")
        kind = np.int64 if pd.api.types.is_integer_dtype(series.dtype) else np.float64
        return ids(series.to_numpy(dtype=kind), where, minimum)
    return ids(series.to_numpy(), where, minimum)


def ids(values: Any, where: str, minimum: int = 0) -> np.ndarray:
    """Integer ids as an int64 array, refused (naming ``where`` and the first bad row) when
    a value is missing, fractional, not a number, below ``minimum`` or beyond int64."""
    array = np.asarray(values)
    if array.dtype.kind == "O":
        kinds = sorted({type(v).__name__ for v in array.ravel()})
        if any(isinstance(v, (str, bytes, bool)) for v in array.ravel()):
            raise _fail(where, f"ids must be integers, found {kinds}")
        try:
            array = array.astype(np.float64)  # None becomes NaN, refused below
        except (TypeError, ValueError):
            raise _fail(where, f"ids must be integers, found {kinds}") from None
    if array.dtype.kind not in "iuf":
        raise _fail(where, f"ids must be integers, found {array.dtype}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise _fail(where, f"row {first_bad(bad)} is {array.ravel()[first_bad(bad)]}; "
                               "ids must not be missing")
        bad = array != np.floor(array)
        if bad.any():
            raise _fail(where, f"row {first_bad(bad)} is {array.ravel()[first_bad(bad)]}; "
                               "ids must be whole numbers")
        bad = np.abs(array) > INT64_MAX
        if bad.any():
            raise _fail(where, f"row {first_bad(bad)} is beyond int64")
    elif array.dtype.kind == "u":
        bad = array > INT64_MAX
        if bad.any():
            raise _fail(where, f"row {first_bad(bad)} is {array.ravel()[first_bad(bad)]}, "
                               "beyond int64 (it would wrap to a negative id)")
    out = array.astype(np.int64)
    bad = out < minimum
    if bad.any():
        raise _fail(where, f"row {first_bad(bad)} is {out.ravel()[first_bad(bad)]}; ids "
                           f"start at {minimum}")
    return out


def finite_column(frame: pd.DataFrame, column: str, where: str,
                  minimum: float | None = None) -> np.ndarray:
    """A numeric column as float64 with no NaN or infinity (and none below ``minimum``)."""
    where = f"{where}: column {column!r}"
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(np.float64)
    except (TypeError, ValueError):
        raise _fail(where, f"must be numeric, found {frame[column].dtype}") from None
    return finite(values, where, minimum)


def finite(values: Any, where: str, minimum: float | None = None) -> np.ndarray:
    """Numbers as a float64 array, refused (naming ``where`` and the first bad row) when one
    is not a number, NaN, infinite or below ``minimum``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(where, "values must be numbers") from None
    bad = ~np.isfinite(array).ravel()
    if bad.any():
        row = first_bad(bad)
        raise _fail(where, f"row {row} is {array.ravel()[row]}; values must be finite")
    if minimum is not None and (array < minimum).any():
        row = first_bad((array < minimum).ravel())
        raise _fail(where, f"row {row} is {array.ravel()[row]}; values must be >= {minimum}")
    return array


def binary_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A 0/1 label column as int8."""
    values = frame[column].to_numpy()
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    bad = ~np.isin(numeric, (0.0, 1.0))
    if bad.any():
        value = values[first_bad(bad)]
        value = value.item() if isinstance(value, np.generic) else value
        raise _fail(where, f"column {column!r} must be 0 or 1; row {first_bad(bad)} has "
                           f"{value!r}")
    return numeric.astype(np.int8)


def dense_id_space(values: np.ndarray, where: str) -> int:
    """The size (max id + 1) of a dense table indexed by ``values``, refused when the ids
    are so sparse that the table would be mostly empty: remap them first (``remap``)."""
    if len(values) == 0:
        return 0
    size = int(values.max()) + 1
    distinct = len(np.unique(values))
    if size > SPARSE_ID_FACTOR * distinct + SPARSE_ID_SLACK:
        raise _fail(where, f"ids run up to {size - 1:,} but only {distinct:,} are distinct; a "
                           f"table indexed by them would hold {size:,} rows: remap them to "
                           "1..n first (recfunnel.checks.remap)")
    return size


def remap(frame: pd.DataFrame, column: str, start: int = 1) -> pd.DataFrame:
    """A copy of ``frame`` whose ``column`` holds ``start``, ``start``+1, ... in the order
    of the original ids (so id order, and RecBole's tie-breaking, is kept)."""
    values = ids(frame[column].to_numpy(), f"column {column!r}", minimum=-INT64_MAX)
    codes = np.unique(values, return_inverse=True)[1].astype(np.int64)
    return frame.assign(**{column: codes.reshape(-1) + start})


# --------------------------------------------------------------------------- tensors


def finite_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` unchanged, refused when a value is NaN or infinite (naming the row)."""
    if not isinstance(tensor, torch.Tensor):
        raise _fail(name, f"must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = ~torch.isfinite(tensor)
        row = int(bad.reshape(len(tensor), -1).any(1).nonzero()[0]) if tensor.dim() else 0
        raise _fail(name, f"row {row} holds NaN or infinity")
    return tensor


def no_nan(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` unchanged, refused when a value is NaN (infinities are allowed: -inf is
    how a score masks an item)."""
    if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
        row = int(torch.isnan(tensor).reshape(len(tensor), -1).any(1).nonzero()[0])
        raise _fail(name, f"row {row} holds NaN")
    return tensor
