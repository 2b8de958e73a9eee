"""Student copies (``make student``): every chapter without its exercises' solutions. The
copies keep every exercise prompt, leak no solution text, and still run top to bottom at
the smoke profile: the exercises' scaffolding must not depend on a removed solution.

That every student copy runs is shown by the chapters' one execution (conftest's
``executed``): it runs each solution isolated, so no later cell can read what a solution
defined, and a chapter that passes is a student copy that passes. One copy is also
executed as it is, here, as a check of that argument."""

import re
from pathlib import Path

import nbformat
import pytest

from recfunnel.book import SOLUTION_TAG, execute, student, student_notebook
from test_notebooks import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]


def solution_texts(notebook) -> list[str]:
    """The substantial lines of every solution: its markdown and its code cells."""
    texts = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            texts += cell.source.splitlines()
        elif cell.cell_type == "markdown":
            for block in re.findall(r"^:::\{solution\}.*?^:::$", cell.source, re.S | re.M):
                texts += block.splitlines()[2:-1]
    return [t.strip() for t in texts if len(t.strip()) >= 25]


def test_student_copy_of_a_small_notebook():
    cells = [nbformat.v4.new_markdown_cell(
                 "Intro.\n\n:::{exercise} Warm up\n:label: ex-1\nAdd two numbers.\n:::\n\n"
                 ":::{solution} ex-1\n:class: dropdown\nThe answer is four, said plainly.\n:::"),
             nbformat.v4.new_code_cell("print(2 + 2)", metadata={"tags": ["hide-cell",
                                                                          SOLUTION_TAG]}),
             nbformat.v4.new_code_cell("x = 1")]
    cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    copy = student_notebook(nbformat.v4.new_notebook(cells=cells))
    sources = [c.source for c in copy.cells]
    assert sources[0].startswith("Intro.") and "**Exercise 1 (Warm up).** Add two numbers." \
        in sources[0]
    assert "four" not in "".join(sources) and "print(2 + 2)" not in sources
    assert sources[1] == "# Exercise 1: your answer here\n" and copy.cells[2].outputs == []


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    return {path.stem: path for path in student(CHAPTERS, out, root=ROOT)}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_student_copy_keeps_prompts_and_leaks_no_solution(chapter, copies):
    full = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    text = nbformat.read(copies[chapter], as_version=4)
    body = "\n".join(cell.source for cell in text.cells)
    n_exercises = sum(cell.source.count(":::{exercise}") for cell in full.cells)
    assert n_exercises >= 2, f"{chapter} has {n_exercises} exercises"
    assert body.count("**Exercise ") == n_exercises
    elsewhere = "\n".join(  # lines a solution shares with the rest of the chapter
        re.sub(r"^:::\{solution\}.*?^:::$", "", c.source, flags=re.S | re.M) for c in full.cells
        if SOLUTION_TAG not in c.metadata.get("tags", []))
    leaked = [line for line in solution_texts(full) if line in body and line not in elsewhere]
    assert not leaked, f"solution text in the student copy of {chapter}: {leaked[:3]}"
    assert ":::{solution}" not in body and not any(c.outputs for c in text.cells
                                                   if c.cell_type == "code")


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS[:1])
def test_student_copy_runs_at_smoke(chapter, copies, tmp_path):
    run = execute(chapter, tmp_path, profile="smoke", root=ROOT, source=copies[chapter],
                  isolate_solutions=False)
    assert run.error is None, f"the student copy of {chapter} fails:\n{run.error[-3000:]}"
