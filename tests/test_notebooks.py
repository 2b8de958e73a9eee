"""Tier 2: every chapter in _toc.yml runs at the smoke profile and shows what it must.

Each chapter is executed once, with papermill (the ``executed`` fixture of conftest.py; a
cell that raises fails the tests below). From that one execution, its glued values are
read back and checked against ``expectations.py``, and nbval's own comparison (as
``--nbval-lax`` runs it) checks the cells marked ``# NBVAL_CHECK_OUTPUT`` against the
outputs stored in the committed notebook; the smoke book (test_book.py) is built from the
same executed copies.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml
from nbval.plugin import IPyNbCell, coalesce_streams, nocolors

from expectations import EXPECTATIONS
from recfunnel.book import toc_chapters
from recfunnel.notebook import is_checked, pair_problems, read_glue

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


CHAPTERS = toc_chapters(ROOT)


def test_every_notebook_is_in_the_toc_and_has_expectations():
    on_disk = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(CHAPTERS) == on_disk, "a notebook is missing from _toc.yml, or vice versa"
    assert sorted(EXPECTATIONS) == sorted(CHAPTERS), "every chapter needs expectations"


def test_toc_parts_follow_the_course_order():
    order = ["Foundations", "Data", "Retrieval", "Ranking", "Multi-modal and live streaming",
             "Cross-domain", "Capstone", "Appendix"]
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    captions = [part["caption"] for part in toc["parts"]]
    assert all(c in order for c in captions), captions
    assert captions == sorted(captions, key=order.index)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_pair_in_sync_and_outputs_stripped(chapter):
    assert pair_problems(NOTEBOOKS / f"{chapter}.py") == []


SAFE_GLOBALS = {"__builtins__": {}, "math": math, "abs": abs, "min": min, "max": max}


def check_expectations(chapter: str, glued: dict) -> list[str]:
    failures = []
    for claim, expression in EXPECTATIONS[chapter]:
        names = [n for n in glued if n in expression]
        try:
            held = eval(expression, SAFE_GLOBALS, dict(glued))  # noqa: S307
        except NameError as error:
            failures.append(f"{claim}: {error} (not glued by the chapter)")
            continue
        if not held:
            values = ", ".join(f"{n}={glued[n]}" for n in names)
            failures.append(f"{claim}: `{expression}` is false ({values})")
    return failures


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_at_smoke_and_shows_its_claims(chapter, executed):
    glued = read_glue(executed.ok(chapter).path)
    assert glued, f"{chapter} glued nothing"
    failures = check_expectations(chapter, glued)
    assert not failures, "\n".join(failures)


class _NbvalCell:
    """What nbval's ``IPyNbCell.compare_outputs`` reads from the cell it checks: the
    comparison settings of a ``--nbval-lax`` run (images and run-time keys skipped, no
    sanitising file) and pytest's assertion hooks for the report."""

    compare_outputs = IPyNbCell.compare_outputs
    sanitize = IPyNbCell.sanitize
    format_output_compare = IPyNbCell.format_output_compare
    colors = nocolors

    def __init__(self, request):
        self.parent = SimpleNamespace(
            skip_compare=("metadata", "traceback", "prompt_number", "output_type", "name",
                          "execution_count", "application/vnd.jupyter.widget-view+json",
                          "image/png", "image/jpeg"),
            sanitize_patterns={})
        self.config, self.ihook = request.config, request.node.ihook


def marked_cell_mismatches(committed, executed_nb, request) -> list[str]:
    """nbval's verdict on every marked cell: the executed outputs against the stored ones."""
    ran = {cell.get("id"): cell for cell in executed_nb.cells}
    problems = []
    for index, cell in enumerate(committed.cells):
        if cell.cell_type != "code" or not is_checked(cell):
            continue
        if cell.get("id") not in ran:
            problems.append(f"marked cell {index} was not executed")
            continue
        checker = _NbvalCell(request)
        if not checker.compare_outputs(coalesce_streams(ran[cell["id"]].outputs),
                                       coalesce_streams(cell.outputs)):
            problems.append(f"marked cell {index}:\n" + "\n".join(checker.comparison_traceback))
    return problems


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_marked_cells_reproduce_their_stored_outputs(chapter, executed, request):
    committed = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    ran = nbformat.read(executed.ok(chapter).path, as_version=4)
    problems = marked_cell_mismatches(committed, ran, request)
    assert not problems, "\n".join(problems)


def test_the_output_check_fails_on_a_changed_output(request):
    """The comparison itself can fail: a stored output that the run no longer prints."""
    cell = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2 + 2)", id="c1")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="4\n")]
    cell.execution_count = 1
    committed = nbformat.v4.new_notebook(cells=[cell])
    same, changed = nbformat.from_dict(committed), nbformat.from_dict(committed)
    changed.cells[0].outputs[0].text = "5\n"
    assert marked_cell_mismatches(committed, same, request) == []
    [problem] = marked_cell_mismatches(committed, changed, request)
    assert "marked cell 0" in problem and "5" in problem


def test_expectations_fail_when_the_model_is_no_better_than_popularity():
    """The check itself can fail: feed it a run where the model merely ties popularity."""
    tie = {"gs_mf_ndcg10": 0.1, "gs_pop_ndcg10": 0.1, "gs_mf_recall10": 0.2,
           "gs_pop_recall10": 0.2, "gs_oracle_ndcg10": 0.4, "gs_index_agreement": 1.0,
           "gs_best_epoch": 3, "gs_claim1": "not resolved"}
    failures = check_expectations("00_getting_started", tie)
    assert len(failures) == 3 and "NDCG@10" in failures[0] and "rule" in failures[2]
