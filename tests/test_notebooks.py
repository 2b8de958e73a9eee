"""Tier 2: every chapter in _toc.yml runs at the smoke profile and shows what it must.

Each chapter is executed with papermill (a cell that raises fails the test); its glued
values are read back and checked against ``expectations.py``. nbval, run by ``make test``
with ``--nbval-lax``, separately compares the stored outputs of cells marked
``# NBVAL_CHECK_OUTPUT``.
"""

from __future__ import annotations

import math
from pathlib import Path

import papermill
import pytest
import yaml

from expectations import EXPECTATIONS
from recfunnel.notebook import pair_problems, read_glue

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


CHAPTERS = toc_chapters()


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
def test_chapter_runs_at_smoke_and_shows_its_claims(chapter, tmp_path):
    executed = papermill.execute_notebook(
        str(NOTEBOOKS / f"{chapter}.ipynb"), str(tmp_path / f"{chapter}.ipynb"),
        parameters={"PROFILE": "smoke"}, cwd=str(NOTEBOOKS), kernel_name="python3",
        progress_bar=False,
    )
    glued = read_glue(executed)
    assert glued, f"{chapter} glued nothing"
    failures = check_expectations(chapter, glued)
    assert not failures, "\n".join(failures)


def test_expectations_fail_when_the_model_is_no_better_than_popularity():
    """The check itself can fail: feed it a run where the model merely ties popularity."""
    tie = {"gs_mf_ndcg10": 0.1, "gs_pop_ndcg10": 0.1, "gs_mf_recall10": 0.2,
           "gs_pop_recall10": 0.2, "gs_oracle_ndcg10": 0.4, "gs_index_agreement": 1.0,
           "gs_best_epoch": 3}
    failures = check_expectations("00_getting_started", tie)
    assert len(failures) == 2 and "NDCG@10" in failures[0]
