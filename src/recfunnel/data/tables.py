"""Integer tables (Arrow feather) and plain pickles, read and written safely.

The file formats under the course's data: RecFlow's days and dictionaries, the synthetic
world's copies of them, the benchmarks' caches. Tables are read one Arrow record batch at a
time (``iter_table``), so a multi-GB file is never in memory whole, and each column is
checked to be present and integer before a row is returned. Pickles are read with an
unpickler that accepts only plain containers and numpy arrays, so a tampered file cannot
run code. Every write goes to a temporary file that is renamed only when complete.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.feather as feather
import pyarrow.ipc as ipc

from recfunnel.checks import INT64_MAX, InvalidInputError

FEATHER_CHUNK_ROWS = 65_536  # pandas/pyarrow's default chunk size for feather files


class FileFormatError(InvalidInputError):
    """A file is not in the expected format; the message names the file and the field."""


# --------------------------------------------------------------------------- pickles


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers and numpy arrays, and refuses everything else."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "dict"), ("builtins", "list"), ("builtins", "int"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A pickled dict of plain values and numpy arrays; anything else is refused."""
    if not path.exists():
        raise FileFormatError(f"{path}: file is missing")
    try:
        with open(path, "rb") as handle:
            value = _PlainUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise FileFormatError(f"{path}: not a plain pickle ({error})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{path}: expected a dict, found {type(value).__name__}")
    return value


def atomic_write_bytes(path: Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(content)
    os.replace(tmp.name, path)


def write_pickle(path: Path, value: dict) -> None:
    """Protocol 4, insertion order kept: the same dict always gives the same bytes."""
    atomic_write_bytes(path, pickle.dumps(value, protocol=4))


# --------------------------------------------------------------------------- tables


def _check_schema(path: Path, schema: pa.Schema, required: Sequence[str]) -> None:
    names = set(schema.names)
    for column in required:
        if column not in names:
            raise FileFormatError(f"{path}: column {column!r} is missing")
        dtype = schema.field(column).type
        if not pa.types.is_integer(dtype):
            raise FileFormatError(
                f"{path}: column {column!r} must be an integer (int64), found {dtype}")


def _open_ipc(path: Path, memory_pool=None):
    if not path.exists():
        raise FileFormatError(f"{path}: file is missing")
    try:
        return ipc.open_file(pa.OSFile(str(path)), memory_pool=memory_pool)
    except (pa.ArrowInvalid, OSError) as error:
        raise FileFormatError(f"{path}: not a readable feather file ({error})") from None


def _to_frame(path: Path, batch: pa.RecordBatch, columns: Sequence[str],
              nullable: Sequence[str]) -> pd.DataFrame:
    frame = {}
    for column in columns:
        array = batch.column(column)
        if array.null_count:
            if column not in nullable:
                raise FileFormatError(f"{path}: column {column!r} has null values")
            array = array.fill_null(0)
        if pa.types.is_uint64(array.type) and len(array) and \
                pa.compute.max(array).as_py() > INT64_MAX:
            raise FileFormatError(f"{path}: column {column!r} holds "
                                  f"{pa.compute.max(array).as_py()}, beyond int64 (it would "
                                  "wrap to a negative id)")
        frame[column] = array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pd.DataFrame(frame)


def iter_table(path: Path, columns: Sequence[str], batch_rows: int = FEATHER_CHUNK_ROWS,
               required: Sequence[str] | None = None, memory_pool=None,
               nullable: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
    """Yield ``columns`` of a feather file as int64 DataFrames of at most ``batch_rows`` rows,
    reading one record batch at a time; nulls are refused except in ``nullable`` columns,
    where they are read as 0."""
    reader = _open_ipc(path, memory_pool)
    _check_schema(path, reader.schema, required if required is not None else columns)
    for index in range(reader.num_record_batches):
        try:
            batch = reader.get_batch(index).select(list(columns))
        except (pa.ArrowInvalid, OSError) as error:
            raise FileFormatError(f"{path}: record batch {index} is damaged ({error})") \
                from None
        for start in range(0, batch.num_rows, batch_rows):
            yield _to_frame(path, batch.slice(start, batch_rows), columns, nullable)


def read_table(path: Path, columns: Sequence[str], nullable: Sequence[str] = ()
               ) -> pd.DataFrame:
    """All of ``columns`` of a feather file as one int64 DataFrame."""
    parts = list(iter_table(path, columns, nullable=nullable))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {c: np.zeros(0, np.int64) for c in columns})


def check_integer_columns(where: str, frame: pd.DataFrame, columns: Sequence[str]
                          ) -> None:
    """Each of ``columns`` is present in ``frame``, integer, and within int64."""
    for column in columns:
        if column not in frame:
            raise FileFormatError(f"{where}: column {column!r} is missing")
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise FileFormatError(f"{where}: column {column!r} must be an integer (int64), "
                                  f"found {frame[column].dtype}")
        values = frame[column].to_numpy()
        if values.dtype.kind == "u" and len(values) and values.max() > INT64_MAX:
            raise FileFormatError(f"{where}: column {column!r} holds {values.max()}, beyond "
                                  "int64 (it would wrap to a negative id)")


def write_table(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Write ``columns`` of ``frame`` as int64 feather (lz4, 64K-row chunks), atomically."""
    check_integer_columns(f"{path}: cannot write", frame, columns)
    table = pa.table({c: pa.array(frame[c].to_numpy(np.int64)) for c in columns})
    sink = io.BytesIO()
    feather.write_feather(table, sink, compression="lz4", chunksize=FEATHER_CHUNK_ROWS)
    atomic_write_bytes(path, sink.getvalue())
