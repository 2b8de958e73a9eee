"""Tier 3: the book builds strictly from the chapters executed once at the smoke profile
(conftest's ``executed``), and every chapter page shows its outputs and figures, no error
output, no printed object repr and no table wider than the page; the reproduction ledger
lists every claim that the chapters recorded.

The build runs through the Makefile's ``book`` recipe with ``EXECUTED`` set (warnings are
errors; the executed copies are rendered as they ran, not executed again), into
``_build/smoke`` so it never overwrites the reader's book.
"""

import html
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import EXECUTED

from recfunnel.book import ledger_rows
from recfunnel.notebook import read_glue
from test_notebooks import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "smoke" / "_build" / "html"


@pytest.fixture(scope="module")
def built_book(executed):
    failed = [run.chapter for run in executed.all().values() if run.error]
    assert not failed, f"chapters failed at smoke: {failed} (test_notebooks.py shows why)"
    env = {**os.environ, "RECFUNNEL_PROFILE": "smoke"}
    result = subprocess.run(["make", "--no-print-directory", "book", "BOOK_OUT=_build/smoke",
                             f"EXECUTED={EXECUTED.relative_to(ROOT)}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, f"the strict book build failed:\n{log}"
    return HTML


def page_text(page: str) -> str:
    """The words of a page, tags removed and whitespace collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    text = text.translate(str.maketrans("\u2018\u2019\u201c\u201d", "''\"\""))  # smart quotes
    return " ".join(text.split())


@pytest.mark.book
def test_book_has_an_index_and_every_chapter(built_book):
    assert (built_book / "index.html").exists()
    for chapter in CHAPTERS:
        assert (built_book / "notebooks" / f"{chapter}.html").exists(), chapter


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_shows_outputs_and_figures_and_no_errors(built_book, chapter):
    page = (built_book / "notebooks" / f"{chapter}.html").read_text()
    figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"[^>]*>', page)
    assert len(figures) >= 2, f"{chapter} shows {len(figures)} figures"
    number = int(chapter[:2])
    numbered = re.findall(rf"<strong>Figure {number}\.(\d+)</strong> \w", page)
    assert numbered == [str(k) for k in range(1, len(figures) + 1)], \
        f"{chapter}: figures numbered {numbered}, {len(figures)} shown"
    assert 'caption-number">Fig.' not in page, "no figure numbered across the book"
    for figure in figures:
        alt = re.search(r'alt="([^"]*)"', figure)
        assert alt and len(alt.group(1)) >= 10, f"a figure without alt text: {figure[:120]}"
    assert page.count('class="output stream highlight-myst-ansi') + page.count(
        "cell_output") >= 3, "executed outputs are missing"
    for error_sign in ("Traceback (most recent call last)", "output traceback", "stderr"):
        assert error_sign not in page, f"{chapter} shows error output ({error_sign!r})"
    assert "colab.research.google.com" in page, "the Colab launch button is missing"
    assert "_static/recfunnel.css" in page, "the course's stylesheet (wrapping code) is missing"
    assert f'href="../student/{chapter}.ipynb"' in page, "no student copy offered"
    assert (built_book / "student" / f"{chapter}.ipynb").exists()
    assert f'href="../_sources/notebooks/{chapter}.ipynb"' in page, "no notebook download"


PAGE_CHARACTERS = 100  # what a table row may hold, in characters, at the book's width


def _cells(row: str) -> list[str]:
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split())
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)]


def _longest_word(text: str) -> int:
    """What a cell cannot shrink below: its longest run without a space or a hyphen (where
    browsers break lines), inline math counted at a third of its source."""
    text = re.sub(r"\\\((.*?)\\\)", lambda m: "x" * (len(m.group(1)) // 3), text)
    return max((len(word) for word in re.split(r"[\s-]+", text)), default=0)


def page_defects(page: str) -> list[str]:
    """What a reader should never see: a printed object repr (``<matplotlib.legend.Legend
    at 0x...>``); the ``glue(...)`` bookkeeping in a code cell; a table wider than the text
    column (text wraps only at spaces and hyphens, so each column is as wide as its longest
    word, and together they must fit in a row); a raw float such as 665.558227; a column
    with nothing but NaN."""
    defects = [f"printed object repr {m!r}" for m in
               re.findall(r"&lt;[\w.]+ (?:at|object at) 0x[0-9a-f]+&gt;", page)]
    shown_glue = len(re.findall(r'<span class="n">glue</span><span class="p">\(</span>', page))
    if shown_glue:
        defects.append(f"{shown_glue} glue(...) calls shown in code cells")
    for table in re.findall(r"<table.*?</table>", page, flags=re.S):
        rows = [_cells(row) for row in re.findall(r"<tr.*?</tr>", table, flags=re.S)]
        rows = [row for row in rows if row]
        n = max((len(row) for row in rows), default=0)
        widths = [max((_longest_word(row[i]) for row in rows if i < len(row)), default=0)
                  for i in range(n)]
        if sum(w + 3 for w in widths) > PAGE_CHARACTERS:
            defects.append(f"a table {sum(w + 3 for w in widths)} characters wide")
        cut = [c for row in rows for c in row if c.endswith("...")]
        if cut:
            defects.append(f"a table cell cut short: {cut[0][-40:]!r}")
        raw = sorted({c for row in rows for c in row if re.fullmatch(r"-?\d+\.\d{5,}", c)})
        if raw:
            defects.append(f"raw floats {raw[:3]}")
        body = [row for row in rows[1:] if len(row) == n]
        for i in range(n):
            if body and all(row[i] in ("NaN", "nan", "None") for row in body):
                defects.append(f"an all-NaN column {rows[0][i] if i < len(rows[0]) else i}")
    return defects


def test_page_defects_are_found():
    cut = "<table><tr><td>the verdict is within two standa...</td></tr></table>"
    assert any("cut short" in d for d in page_defects(cut))
    wide = "<table><tr>" + "<th>a_column_header</th>" * 7 + "</tr></table>"
    floats = "<table><tr><th>x</th><th>y</th></tr><tr><td>665.558227</td><td>NaN</td></tr></table>"
    glue = '<span class="n">glue</span><span class="p">(</span>'
    found = page_defects("<pre>&lt;matplotlib.legend.Legend at 0x7f3a2c&gt;</pre>" + glue
                         + wide + floats)
    assert found == ["printed object repr '&lt;matplotlib.legend.Legend at 0x7f3a2c&gt;'",
                     "1 glue(...) calls shown in code cells",
                     "a table 126 characters wide", "raw floats ['665.558227']",
                     "an all-NaN column y"]
    assert page_defects("<table><tr><th>a</th><th>b</th></tr><tr><td>0.25</td><td>1</td>"
                        "</tr></table>") == []


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_has_no_reader_visible_defects(built_book, chapter):
    page = (built_book / "notebooks" / f"{chapter}.html").read_text()
    assert page_defects(page) == []


@pytest.mark.book
def test_execution_page_lists_every_chapter_with_its_runtime(built_book):
    text = page_text((built_book / "book" / "execution.html").read_text())
    for chapter in CHAPTERS:
        assert re.search(rf"{chapter} \d+ papermill ok", text), f"no runtime for {chapter}"


@pytest.mark.book
def test_ledger_lists_every_claim_of_every_chapter(built_book, executed):
    text = page_text((built_book / "book" / "ledger.html").read_text())
    rows = ledger_rows({c: read_glue(run.path) for c, run in executed.all().items()})
    recording = {row["chapter"] for row in rows}
    assert recording >= {c for c in CHAPTERS if c[:2] >= "02"}, "a model chapter has no claims"
    for row in rows:
        for key in ("claim", "verdict"):
            assert " ".join(row[key].split()) in text, f"{row['chapter']}: {row[key]!r}"
    intro = (built_book / "book" / "intro.html").read_text()
    assert 'href="ledger.html"' in intro, "the introduction does not link the ledger"


@pytest.mark.book
def test_colab_buttons_open_the_published_colab_copies(built_book, executed, tmp_path):
    """The button points to the branch that the book workflow fills with ``make colab``, at
    the path where ``recfunnel.book.colab`` writes each chapter's copy."""
    import yaml

    from recfunnel.book import colab

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    branch = config["sphinx"]["config"]["recfunnel_colab_branch"]
    workflow = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    assert "make colab" in workflow and f"-b {branch}" in workflow, "the workflow publishes it"
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    written = {p.relative_to(tmp_path).as_posix() for p in colab(EXECUTED, tmp_path, "smoke")}
    for chapter in CHAPTERS:
        page = (built_book / "notebooks" / f"{chapter}.html").read_text()
        links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
        path = f"notebooks/{chapter}.ipynb"
        assert links == [f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path}"
                         ], f"{chapter}: {links}"
        assert path in written
