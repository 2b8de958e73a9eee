"""Helpers for the chapters and for the people who write them.

In a chapter: ``device, size = setup("kuaiformer", PROFILE, SEED, DEVICE)`` is the third
cell of every chapter (the course's plot style, the seed, the device, the chapter's run
sizes at the profile, and a report of the machine); ``show_source(obj)`` prints package
code in the book (the notebook shows the package's code instead of copying it),
``glue(name, value)`` records a result that
the prose cites with ``{glue:}`` and the tests read back (it falls back to a plain
display where ``myst_nb`` is not installed, e.g. on Colab).

For authors (``python -m recfunnel.notebook ...``):

* ``sync notebooks/NN_name.py``: write the paired ``.ipynb`` from the reviewed
  ``py:percent`` file, keeping only the stored outputs of cells marked for nbval;
* ``record notebooks/NN_name.ipynb``: execute at the ``smoke`` profile and store the
  outputs of the marked cells (``# NBVAL_CHECK_OUTPUT``), which nbval then compares;
* ``check``: report pairs out of sync and outputs committed in unmarked cells;
* ``stamp PROFILE``: a hash of everything outside the notebooks that an executed
  chapter depends on (the package sources, the project file, the profile); ``make``
  clears the book's execution cache when it changes.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

CHECK_MARK = "NBVAL_CHECK_OUTPUT"
GLUE_PREFIX = "application/papermill.record/"
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- in a chapter


def setup(chapter: str, profile: str, seed: int, device: str = "auto"):
    """Start a chapter: the course's plot style, every random generator seeded, the device
    resolved ("auto": cuda, then mps, then cpu), and the chapter's sizes at ``profile``
    (``profiles.profile_for``); prints the environment and the sizes. Returns
    ``(device, size)``."""
    import pandas as pd

    from recfunnel import plots
    from recfunnel.profiles import profile_for
    from recfunnel.runtime import environment_report, resolve_device, set_seed

    pd.set_option("display.max_colwidth", None)  # no cell cut to "...": the page wraps it
    plots.use_style()
    plots.describe_figures()
    figures = os.environ.get("RECFUNNEL_FIGURES")  # set by `make book`
    if figures:
        named = sorted((ROOT / "notebooks").glob(f"[0-9][0-9]_{chapter}.ipynb"))
        plots.export_figures(Path(figures) / (named[0].stem if named else chapter))
    set_seed(seed)
    resolved = resolve_device(device)
    size = profile_for(chapter, profile)
    print(environment_report(resolved))
    print(f"profile     {profile}: {size}")
    return resolved, size


def show_source(obj: Any):
    """Display the source of a package class or function as a highlighted code block."""
    from IPython.display import Markdown

    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def plural(count: int, noun: str) -> str:
    """"1 seed", "3 seeds": a count with its noun, for the prose."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the book's ``{glue:}`` roles and the tests.
    NumPy scalars become Python ones, so the page shows ``0.25``, not ``np.float64(0.25)``."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab: nothing to glue into, show it if asked
        if display:
            from IPython.display import display as ipy_display

            ipy_display(value)
        return
    myst_glue(name, value, display=display)


# --------------------------------------------------------------------------- solutions


def run_isolated(cell: str) -> None:
    """Run ``cell`` in the kernel, then put back every variable and random generator as
    they were, so that nothing after it depends on it (the tests run each exercise's
    solution cells so: a chapter that still runs then also runs without them, as the
    student copy does)."""
    import random

    import torch
    from IPython import get_ipython

    shell = get_ipython()
    names = dict(shell.user_ns)
    generators = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        result = shell.run_cell(cell)
    finally:
        for name in [n for n in shell.user_ns if n not in names]:
            del shell.user_ns[name]
        shell.user_ns.update(names)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.set_rng_state(generators[2])
    result.raise_error()


def load_ipython_extension(shell) -> None:
    """``%load_ext recfunnel.notebook``: the ``%%isolated`` cell magic (``run_isolated``)."""
    shell.register_magic_function(lambda line, cell: run_isolated(cell), "cell", "isolated")


# --------------------------------------------------------------------------- executed notebooks


def _parse(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_glue(notebook) -> dict[str, Any]:
    """The glued values of an executed notebook (a path or a ``nbformat`` node), parsed
    back from their ``text/plain`` form (numbers come back as numbers)."""
    if not hasattr(notebook, "cells"):
        notebook = json.loads(Path(notebook).read_text())
        cells = notebook["cells"]
    else:
        cells = notebook.cells
    values: dict[str, Any] = {}
    for cell in cells:
        for output in cell.get("outputs", []):
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if not scrapbook:
                continue
            data = output.get("data", {})
            text = data.get(scrapbook.get("mime_prefix", "") + "text/plain")
            if text is None:
                continue
            values[scrapbook["name"]] = _parse("".join(text) if isinstance(text, list) else text)
    return values


def is_checked(cell) -> bool:
    """True for a cell whose outputs nbval compares (``# NBVAL_CHECK_OUTPUT``)."""
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return CHECK_MARK in source or "nbval-check-output" in cell.get("metadata", {}).get("tags", [])


def strip_outputs(notebook):
    """A copy without outputs and execution counts, except in cells marked for nbval."""
    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if not is_checked(cell):
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    for key in ("papermill", "widgets"):  # run-time state, not content
        notebook.metadata.pop(key, None)
    return notebook


def pair_problems(py_path: str | Path) -> list[str]:
    """What is wrong with one chapter's pair (``NN_name.py`` and ``NN_name.ipynb``)."""
    import jupytext

    py_path = Path(py_path)
    nb_path = py_path.with_suffix(".ipynb")
    if not nb_path.exists():
        return [f"{py_path.name} has no paired {nb_path.name}"]
    from_py = jupytext.read(py_path)
    committed = jupytext.read(nb_path)
    problems = []
    if len(from_py.cells) != len(committed.cells):
        problems.append(f"{nb_path.name} has {len(committed.cells)} cells, "
                        f"{py_path.name} {len(from_py.cells)}: run sync")
    for i, (a, b) in enumerate(zip(from_py.cells, committed.cells, strict=False)):
        if (a.cell_type, a.source.strip()) != (b.cell_type, b.source.strip()):
            problems.append(f"cell {i} differs between {py_path.name} and {nb_path.name}: "
                            "run sync")
        elif sorted(a.metadata.get("tags", [])) != sorted(b.metadata.get("tags", [])):
            problems.append(f"cell {i} has different tags in the two files: run sync")
    for i, cell in enumerate(committed.cells):
        if cell.cell_type == "code" and cell.outputs and not is_checked(cell):
            problems.append(f"cell {i} of {nb_path.name} has outputs but is not marked "
                            f"{CHECK_MARK}: strip it (sync)")
    return problems


# --------------------------------------------------------------------------- authoring commands


def sync(py_path: str | Path) -> Path:
    """Write ``NN_name.ipynb`` from ``NN_name.py``. Cell ids, and the stored outputs of
    cells marked for nbval, are kept from the existing ``.ipynb`` where the cell is unchanged
    (jupytext's own merge); every other output is stripped."""
    import jupytext
    from jupytext.combine import combine_inputs_with_outputs

    py_path = Path(py_path)
    nb_path = py_path.with_suffix(".ipynb")
    notebook = jupytext.read(py_path)
    if nb_path.exists():
        notebook = combine_inputs_with_outputs(notebook, jupytext.read(nb_path), fmt="ipynb")
    notebook.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                "language": "python"})
    jupytext.write(strip_outputs(notebook), nb_path)
    return nb_path


def record(nb_path: str | Path) -> Path:
    """Execute a chapter at ``smoke`` and store the outputs of its marked cells only."""
    import nbformat
    from nbclient import NotebookClient

    nb_path = Path(nb_path).with_suffix(".ipynb")
    notebook = nbformat.read(nb_path, as_version=4)
    os.environ["RECFUNNEL_PROFILE"] = "smoke"
    NotebookClient(notebook, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    nbformat.write(strip_outputs(notebook), nb_path)
    return nb_path


def execution_stamp(profile: str, root: Path = ROOT) -> str:
    """Hash of the package sources, the project file and the profile."""
    digest = hashlib.sha256(profile.encode())
    files = sorted((root / "src").rglob("*.py")) + [root / "pyproject.toml"]
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sync", "record", "check", "stamp"):
        print(__doc__)
        return 2
    command, args = argv[0], argv[1:]
    if command == "stamp":
        print(execution_stamp(args[0] if args else "cpu"))
        return 0
    if command == "check":
        problems = [p for py in sorted((ROOT / "notebooks").glob("*.py"))
                    for p in pair_problems(py)]
        print("\n".join(problems) or "all notebook pairs in sync")
        return 1 if problems else 0
    for path in args:
        done = sync(Path(path).with_suffix(".py")) if command == "sync" else record(path)
        print(f"{command}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
