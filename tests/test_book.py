"""Tier 3: the book builds strictly at the smoke profile, and every chapter page shows its
executed outputs and figures and no error output.

The build runs through the Makefile's own ``book`` recipe (warnings are errors, a failing
cell is an error), into ``_build/smoke`` so it never overwrites the reader's book.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from test_notebooks import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "smoke" / "_build" / "html"


@pytest.fixture(scope="module")
def built_book():
    env = {**os.environ, "RECFUNNEL_PROFILE": "smoke"}
    result = subprocess.run(["make", "--no-print-directory", "book", "BOOK_OUT=_build/smoke"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, f"the strict book build failed:\n{log}"
    return HTML


@pytest.mark.book
def test_book_has_an_index_and_every_chapter(built_book):
    assert (built_book / "index.html").exists()
    for chapter in CHAPTERS:
        assert (built_book / "notebooks" / f"{chapter}.html").exists(), chapter


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_shows_outputs_and_figures_and_no_errors(built_book, chapter):
    page = (built_book / "notebooks" / f"{chapter}.html").read_text()
    figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"', page)
    assert len(figures) >= 2, f"{chapter} shows {len(figures)} figures"
    assert page.count('class="output stream highlight-myst-ansi') + page.count(
        "cell_output") >= 3, "executed outputs are missing"
    for error_sign in ("Traceback (most recent call last)", "output traceback", "stderr"):
        assert error_sign not in page, f"{chapter} shows error output ({error_sign!r})"
    assert "colab.research.google.com" in page, "the Colab launch button is missing"


@pytest.mark.book
def test_execution_page_lists_every_chapter(built_book):
    page = (built_book / "book" / "execution.html").read_text()
    for chapter in CHAPTERS:
        assert chapter in page
