"""The one assertion of the bad-input tests: the call is refused with a clear error.

``refused(call, *names)`` runs ``call`` and checks that it raised one of the package's
errors for bad input (a ``ValueError``, a ``TypeError`` or a ``FloatingPointError``, never a
bare KeyError, IndexError or AttributeError from pandas or torch) whose message names every
one of ``names``: the argument, file, column or row that is wrong.
"""

import pytest

CLEAR = (ValueError, TypeError, FloatingPointError)
INTERNAL = (KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError)


def refused(call, *names: str) -> Exception:
    with pytest.raises(Exception) as caught:  # noqa: PT011 (the type is checked below)
        call()
    error = caught.value
    assert isinstance(error, CLEAR) and not isinstance(error, INTERNAL), \
        f"an internal error, not a clear refusal: {type(error).__name__}: {error}"
    message = str(error)
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"
    return error


def snapshot(folder):
    """Every path under ``folder`` with its size and modification time (to show that a
    refused write left nothing behind)."""
    if not folder.exists():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))
