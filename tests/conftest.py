"""Shared fixtures. ``executed`` runs each chapter once per test session (papermill, at
the smoke profile, into ``_build/smoke/executed``); every test that looks at a chapter's
outputs (its glued claims, the cells nbval compares, the smoke book, the student copy's
baseline) reads that one execution.

The chapters share one run cache (``recfunnel.runcache``), emptied when the session
starts: the first chapter that trains a model trains it, and a later chapter that trains
the very same one (chapter 2's SASRec in chapters 3 and 4) loads it, as it would for a
reader running the chapters in order."""

import os
import shutil
import sys
from pathlib import Path

import pytest

# the tests import expectations.py and ddp_worker.py from this folder
sys.path.insert(0, str(Path(__file__).parent))

from recfunnel.book import Execution, execute, toc_chapters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "smoke" / "executed"
RUN_CACHE = ROOT / "_build" / "smoke" / "runs"
shutil.rmtree(RUN_CACHE, ignore_errors=True)
os.environ["RECFUNNEL_RUN_CACHE"] = str(RUN_CACHE)  # the kernels inherit it
_runs: dict[str, Execution] = {}


class Executions:
    """Chapters executed on first request and kept for the rest of the session."""

    def get(self, chapter: str) -> Execution:
        if chapter not in _runs:
            _runs[chapter] = execute(chapter, EXECUTED, profile="smoke", root=ROOT)
        return _runs[chapter]

    def ok(self, chapter: str) -> Execution:
        """The chapter's execution; the calling test fails when a cell raised."""
        run = self.get(chapter)
        if run.error:
            pytest.fail(f"{chapter} failed at smoke (see {run.path}):\n{run.error[-3000:]}")
        return run

    def all(self) -> dict[str, Execution]:
        return {chapter: self.get(chapter) for chapter in toc_chapters(ROOT)}


@pytest.fixture(scope="session")
def executed() -> Executions:
    return Executions()


def pytest_terminal_summary(terminalreporter):
    if not _runs:
        return
    terminalreporter.section("chapters executed at smoke (one papermill run each)")
    for chapter, run in _runs.items():
        status = "ok" if run.error is None else "FAILED"
        terminalreporter.write_line(f"{chapter:<24} {run.seconds:7.1f} s  {status}")
    total = sum(run.seconds for run in _runs.values())
    terminalreporter.write_line(f"{'total':<24} {total:7.1f} s")


@pytest.fixture(scope="module")
def smoke_log():
    """The smoke world's simulated log, built once per test module."""
    from recfunnel.data.funnel import make_world

    return make_world("smoke")[1]


@pytest.fixture
def root(tmp_path, smoke_log):
    """A fresh RecFlow folder written from the smoke world."""
    return smoke_log.write_recflow(tmp_path / "recflow")
