"""The book's machinery: execute each chapter once, build the book from executed copies,
write the reproduction ledger, and derive the student copies.

* ``execute(chapter, out_dir)`` runs one chapter with papermill and times it; the tests
  execute every chapter once this way and read everything from that one output: the glued
  values, the cells that nbval compares, and the smoke book built from them;
* ``stage(executed_dir, site_dir)`` lays out a copy of the book whose chapters are the
  executed notebooks, with execution switched off, so Jupyter Book renders them as they ran;
* ``setup(app)`` is a Sphinx extension (listed in ``_config.yml``): it writes the
  reproduction ledger (``book/ledger.md``) and the runtime table of the execution page from
  the chapters executed in the same build, so neither can disagree with the chapters;
* ``student(chapter)`` writes ``student/NN_name.ipynb`` without the exercises' solutions.

* ``colab(executed_dir, out_dir, profile)`` writes the copies that the Colab buttons open.

Command line (``python -m recfunnel.book ...``): ``stage EXECUTED SITE``,
``student [NN_name ...]`` (``make student``) and ``colab EXECUTED OUT PROFILE``
(``make colab``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recfunnel.notebook import ROOT, read_glue

LEDGER_DOC = "book/ledger"
EXECUTION_DOC = "book/execution"
WORKSHOP_DOC = "book/workshop"
GENERATED = {LEDGER_DOC: "<!-- ledger -->", EXECUTION_DOC: "<!-- runtimes -->",
             WORKSHOP_DOC: "<!-- runtimes -->"}  # page -> where its generated part goes
LEDGER_KEY = "ledger"  # the glued JSON record of a chapter's claims
SOLUTION_TAG = "solution"  # a code cell that belongs to an exercise's solution
_LOADER_TAG = "recfunnel-loader"  # the cell that execute() adds, and takes away again


def toc_chapters(root: Path = ROOT) -> list[str]:
    """The chapters of ``_toc.yml`` in book order, as ``NN_name``."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


# --------------------------------------------------------------------------- one execution


@dataclass
class Execution:
    """One papermill run of a chapter: where its executed copy is, how long it took, and
    the error it stopped on (``None`` when every cell ran)."""

    chapter: str
    path: Path
    seconds: float
    error: str | None = None


def _solutions_isolated(notebook):
    """A copy whose solution cells run under ``%%isolated`` (``recfunnel.notebook``)."""
    import nbformat

    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = "%%isolated\n" + cell.source
    notebook.cells.insert(0, nbformat.v4.new_code_cell(
        "%load_ext recfunnel.notebook", metadata={"tags": [_LOADER_TAG]}))
    return notebook


def _restore(executed, original) -> None:
    """Undo ``_solutions_isolated`` in the executed copy: its outputs, the chapter's cells."""
    added = {_LOADER_TAG, "papermill-error-cell-tag"}  # papermill's banner on a failure
    executed.cells = [c for c in executed.cells
                      if not added & set(c.metadata.get("tags", []))]
    for ran, cell in zip(executed.cells, original.cells, strict=True):
        ran.source = cell.source


def execute(chapter: str, out_dir: str | Path, profile: str = "smoke", root: Path = ROOT,
            source: str | Path | None = None, isolate_solutions: bool = True) -> Execution:
    """Execute ``notebooks/<chapter>.ipynb`` (or ``source``, a copy of it) top to bottom at
    ``profile``, in the chapters' folder, into ``out_dir/notebooks/<chapter>.ipynb``
    (written also when a cell fails).

    With ``isolate_solutions``, each exercise's solution cells run isolated
    (``recfunnel.notebook.run_isolated``): no later cell can see what they defined, so a
    chapter that runs is also a student copy that runs, in the same single execution."""
    import nbformat
    import papermill

    out = Path(out_dir) / "notebooks" / f"{chapter}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    original = nbformat.read(source or root / "notebooks" / f"{chapter}.ipynb", as_version=4)
    os.environ["RECFUNNEL_PROFILE"] = profile  # the kernel inherits it
    error = None
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / f"{chapter}.ipynb"
        nbformat.write(_solutions_isolated(original) if isolate_solutions else original,
                       prepared)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(prepared), str(out), cwd=str(root / "notebooks"),
                                       kernel_name="python3", progress_bar=False)
        except Exception as failure:  # papermill raises on the first failing cell
            error = f"{type(failure).__name__}: {failure}"
        seconds = time.perf_counter() - start
    executed = nbformat.read(out, as_version=4)
    if isolate_solutions:
        _restore(executed, original)
    nbformat.write(executed, out)
    return Execution(chapter, out, seconds, error)


def stage(executed_dir: str | Path, site_dir: str | Path, root: Path = ROOT) -> Path:
    """A copy of the book in ``site_dir`` whose chapters are the executed notebooks of
    ``executed_dir`` and whose configuration does not execute them again."""
    import yaml

    executed_dir, site = Path(executed_dir), Path(site_dir)
    missing = [c for c in toc_chapters(root)
               if not (executed_dir / "notebooks" / f"{c}.ipynb").exists()]
    if missing:
        raise FileNotFoundError(f"{executed_dir} lacks executed chapters: {', '.join(missing)}")
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(root / "book", site / "book")
    shutil.copytree(root / "_static", site / "_static")
    shutil.copy(root / "_toc.yml", site / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (site / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (site / "notebooks").mkdir()
    for chapter in toc_chapters(root):
        shutil.copy(executed_dir / "notebooks" / f"{chapter}.ipynb", site / "notebooks")
    return site


# --------------------------------------------------------------------------- the ledger


def ledger_rows(glued: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every claim recorded by the executed chapters (``chapter -> its glued values``), in
    book order; a chapter that records no claims contributes none."""
    rows = []
    for chapter, values in glued.items():
        record = values.get(LEDGER_KEY)
        if record is None:
            continue
        entry = json.loads(record)
        for claim in entry["claims"]:
            rows.append({"chapter": chapter, "title": entry["title"],
                         "scale": entry["scale"], **claim})
    return rows


def _cell(text: str) -> str:
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def ledger_markdown(glued: dict[str, dict[str, Any]], profile: str) -> str:
    """The ledger page's generated part: one table per chapter."""
    rows = ledger_rows(glued)
    lines = [f"*Generated from the chapters executed in this build, at the `{profile}` "
             f"profile: {len(rows)} claims from "
             f"{len({r['chapter'] for r in rows})} chapters.*", ""]
    for chapter in glued:
        chapter_rows = [r for r in rows if r["chapter"] == chapter]
        if not chapter_rows:
            continue
        first = chapter_rows[0]
        lines += [f"## {first['title']}", "",
                  f"The paper's scale: {_cell(first['scale'])}. "
                  f"Chapter: {{doc}}`../notebooks/{chapter}`.", "",
                  "| # | the paper | this book tests | measured (a − b ± s.e.) | noise "
                  "| verdict |", "|---|---|---|---|---|---|"]
        for r in chapter_rows:
            lines.append("| " + " | ".join(_cell(r[k]) for k in (
                "key", "paper", "claim", "measured", "noise", "verdict")) + " |")
        lines.append("")
    return "\n".join(lines)


def runtime_markdown(app, executed: dict[str, Path]) -> str:
    """Each chapter's runtime in this build: Jupyter Book's own timing when it executed
    the chapter, papermill's when the book was built from executed copies."""
    from myst_nb.sphinx_ import NbMetadataCollector

    lines = ["| chapter | notebook | seconds | executed by | status |", "|---|---|---|---|---|"]
    for chapter, path in executed.items():
        data = NbMetadataCollector.get_exec_data(app.env, f"notebooks/{chapter}") or {}
        if data.get("runtime") is not None:
            seconds, by = data["runtime"], f"Jupyter Book ({data.get('method', '')})"
            status = "ok" if data.get("succeeded") else "failed"
        else:
            meta = json.loads(path.read_text())["metadata"].get("papermill", {})
            seconds, by = meta.get("duration"), "papermill"
            status = "ok" if not meta.get("exception") else "failed"
        shown = "—" if seconds is None else f"{seconds:.0f}"
        lines.append(f"| {{doc}}`../notebooks/{chapter}` | {chapter} | {shown} | {by} "
                     f"| {status} |")
    return "\n".join(lines)


def read_build_glue(executed_copy: Path) -> dict[str, Any]:
    """The glued values of a chapter as a book build keeps them: Jupyter Book moves them
    out of its executed copy (``NN_name.ipynb``) into ``NN_name.glue.json`` beside it."""
    from recfunnel.notebook import _parse

    path = executed_copy.with_suffix(".glue.json")
    if not path.exists():
        return {}
    return {name: _parse(output["data"]["text/plain"])
            for name, output in json.loads(path.read_text()).items()
            if "text/plain" in output.get("data", {})}


def _executed_copies(app) -> dict[str, Path]:
    folder = Path(app.outdir).parent / "jupyter_execute" / "notebooks"
    srcdir = Path(app.srcdir)
    chapters = toc_chapters(srcdir)
    return {c: folder / f"{c}.ipynb" for c in chapters if (folder / f"{c}.ipynb").exists()}


def _read_generated_pages_last(app, env, docnames: list[str]) -> None:
    for doc in GENERATED:
        if doc in docnames:
            docnames.remove(doc)
            docnames.append(doc)


def _always_regenerate(app, env, added, changed, removed) -> list[str]:
    return [doc for doc in GENERATED if doc in env.found_docs]


def _fill_generated_pages(app, docname: str, source: list[str]) -> None:
    marker = GENERATED.get(docname)
    if marker is None or marker not in source[0]:
        return
    executed = _executed_copies(app)
    profile = os.environ.get("RECFUNNEL_PROFILE", "cpu")
    generated = (ledger_markdown({c: read_build_glue(p) for c, p in executed.items()}, profile)
                 if docname == LEDGER_DOC else runtime_markdown(app, executed))
    source[0] = source[0].replace(marker, generated)


# --------------------------------------------------------------------------- bookkeeping


def _is_bookkeeping(node) -> bool:
    """A ``glue(...)`` call, or a block of statements that are all bookkeeping."""
    import ast

    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return isinstance(node.value.func, ast.Name) and node.value.func.id == "glue"
    if isinstance(node, (ast.For, ast.If, ast.With)):
        return all(map(_is_bookkeeping, node.body + getattr(node, "orelse", [])))
    return False


def hide_bookkeeping(source: str) -> str:
    """A code cell as the page shows it: without the ``glue(...)`` calls that record values
    for the prose and the tests (and blocks made only of them). The notebook still runs
    them; the page just does not make the reader read them."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: show as written
        return source
    drop: set[int] = set()

    def visit(body: list) -> None:
        for node in body:
            if _is_bookkeeping(node):
                drop.update(range(node.lineno, node.end_lineno + 1))
                continue
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and not all(map(_is_bookkeeping, inner)):
                    visit(inner)
            for handler in getattr(node, "handlers", []):
                visit(handler.body)

    lines = source.splitlines()

    def visit_else(node) -> None:  # an else: branch of nothing but bookkeeping goes whole
        orelse = getattr(node, "orelse", [])
        if orelse and all(map(_is_bookkeeping, orelse)) and not all(
                map(_is_bookkeeping, node.body)):
            start = orelse[0].lineno
            header = next((n for n in range(start - 1, node.lineno, -1)
                           if lines[n - 1].strip().startswith("else")), None)
            drop.update(range(header or start, orelse[-1].end_lineno + 1))

    visit(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.For, ast.While, ast.Try)):
            visit_else(node)
    lines = [line for number, line in enumerate(lines, 1) if number not in drop]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _hide_bookkeeping_in_pages(app, doctree) -> None:
    from docutils import nodes

    for block in list(doctree.findall(nodes.literal_block)):
        parent = block.parent
        if "cell_input" not in parent.get("classes", []):
            continue
        shown = hide_bookkeeping(block.astext())
        if shown == block.astext():
            continue
        if shown.strip():
            block.children = [nodes.Text(shown)]
            block.rawsource = shown
        else:  # nothing but bookkeeping: the page shows the cell's outputs only
            parent.parent.remove(parent)


def _figure_descriptions(executed_copy: Path) -> list[dict[str, str]]:
    """The caption and alt text of every image output, in order (``plots.describe``)."""
    import nbformat

    notebook = nbformat.read(executed_copy, as_version=4)
    return [output.get("metadata", {}).get("image/png", {})
            for cell in notebook.cells for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})]


def _caption_figures(app, doctree) -> None:
    """Every figure of a chapter page numbered within its chapter ("Figure 3.2": chapter 3's
    second figure, ``fig-02`` of its slide exports), captioned and given alt text, from
    what ``plots.describe_figures`` stored with the figure's output. The number is part of
    the caption's text, so Sphinx's own figure numbering, which counts across the whole
    book, leaves these figures alone."""
    from docutils import nodes

    docname = app.env.docname
    copy = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.ipynb"
    if not docname.startswith("notebooks/") or not copy.exists():
        return
    images = [image for image in doctree.findall(nodes.image)
              if any(a.get("nb_element") == "cell_code_output" for a in _ancestors(image))]
    descriptions = _figure_descriptions(copy)
    if len(images) != len(descriptions):  # not one to one: leave the page as it is
        return
    chapter = docname.split("/")[-1]
    for number, (image, described) in enumerate(zip(images, descriptions, strict=True), 1):
        if not described.get("caption"):
            continue
        image["alt"] = described["alt"]
        figure = nodes.figure("", ids=[f"fig-{chapter}-{number}"], classes=["chapter-figure"])
        image.parent.replace(image, figure)
        figure += image
        label = f"Figure {int(chapter[:2])}.{number}"
        text = nodes.paragraph("", "", nodes.strong(label, label),
                               nodes.Text(f" {described['caption']}"))
        figure += nodes.legend("", text, classes=["chapter-figure-caption"])


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def setup(app) -> dict[str, Any]:
    """Sphinx extension: the ledger and the runtimes are read after every chapter."""
    app.connect("env-before-read-docs", _read_generated_pages_last)
    app.connect("env-get-outdated", _always_regenerate)
    app.connect("source-read", _fill_generated_pages)
    app.connect("doctree-read", _hide_bookkeeping_in_pages)
    app.connect("doctree-read", _caption_figures)
    app.connect("html-page-context", _offer_downloads)
    app.add_config_value("recfunnel_colab_branch", "", "html")
    # after sphinx-book-theme has made its launch buttons (priority 501)
    app.connect("html-page-context", _colab_from_published_branch, priority=600)
    app.connect("build-finished", _publish_student_copies)
    return {"parallel_read_safe": False, "parallel_write_safe": True}


# --------------------------------------------------------------------------- student copies

_EXERCISE = re.compile(r"^:::\{exercise\} ?(?P<title>[^\n]*)\n:label: (?P<label>\S+)\n"
                       r"(?P<body>.*?)^:::$", re.S | re.M)
_SOLUTION = re.compile(r"^:::\{solution\}.*?^:::$\n?", re.S | re.M)


def _plain_exercises(source: str, done: int) -> tuple[str, list[int]]:
    """``{exercise}`` directives as bold-numbered paragraphs, numbered on from ``done``."""
    numbers: list[int] = []

    def plain(match: re.Match) -> str:
        numbers.append(done + len(numbers) + 1)
        title = f" ({match['title'].strip()})" if match["title"].strip() else ""
        return f"**Exercise {numbers[-1]}{title}.** {match['body'].strip()}\n"

    return _EXERCISE.sub(plain, source).rstrip() + "\n", numbers


def student_notebook(notebook):
    """A copy of a chapter for students: solution cells and every output removed, each
    ``{solution}`` block cut from the markdown, the ``{exercise}`` prompts kept (written as
    plain Markdown, which Jupyter and Colab render) and an empty cell to answer in."""
    import nbformat

    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)  # a deep copy
    cells, number = [], 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            if SOLUTION_TAG in cell.metadata.get("tags", []):
                continue
            cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            continue
        cell.source, prompts = _plain_exercises(_SOLUTION.sub("", cell.source), number)
        number += len(prompts)
        cells.append(cell)
        for k in prompts:
            cells.append(nbformat.v4.new_code_cell(f"# Exercise {k}: your answer here\n"))
    notebook.cells = cells
    return notebook


def student(chapters: list[str] | None = None, out_dir: str | Path = ROOT / "student",
            root: Path = ROOT) -> list[Path]:
    """Write ``student/NN_name.ipynb`` for each chapter (all of ``_toc.yml`` by default)."""
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in chapters or toc_chapters(root):
        notebook = nbformat.read(root / "notebooks" / f"{chapter}.ipynb", as_version=4)
        path = out_dir / f"{chapter}.ipynb"
        nbformat.write(student_notebook(notebook), path)
        written.append(path)
    return written


def _publish_student_copies(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        student(toc_chapters(Path(app.srcdir)), Path(app.outdir) / "student",
                root=Path(app.srcdir))


def _offer_downloads(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Each chapter page links its executed notebook and its student copy."""
    if not pagename.startswith("notebooks/") or "body" not in context:
        return
    chapter = pagename.split("/")[-1]
    context["body"] = (
        f'<p class="chapter-downloads">Download this chapter as a notebook: '
        f'<a href="../_sources/{pagename}.ipynb" download>with solutions</a> or '
        f'<a href="../student/{chapter}.ipynb" download>the student copy</a> '
        f"(exercises without their solutions).</p>\n" + context["body"])


def _colab_from_published_branch(app, pagename: str, templatename: str, context: dict,
                                 doctree) -> None:
    """The Colab button opens the chapter's Colab copy, which the book workflow publishes to
    the ``recfunnel_colab_branch`` branch (``make colab``), instead of main's notebook."""
    branch = app.config.recfunnel_colab_branch
    source = app.config.html_theme_options.get("repository_branch", "main")
    if not branch:
        return

    def point(buttons: list) -> None:
        for button in buttons:
            if isinstance(button, dict) and "colab.research.google.com" in button.get("url", ""):
                button["url"] = button["url"].replace(f"/blob/{source}/", f"/blob/{branch}/", 1)
            if isinstance(button, dict):
                point(button.get("buttons", []))

    point(context.get("header_buttons", []))


# --------------------------------------------------------------------------- Colab copies

_GLUE = re.compile(r"\{glue(?::text)?\}`(?P<name>[^`:]+)(?::(?P<spec>[^`]+))?`")
_INCLUDE = re.compile(r"```\{include\} (?P<path>\S+)\n(?P<options>(?::[^\n]*\n)*)```")
_ADMONITION = re.compile(r"```\{(?:admonition|warning|note|tip)\}(?P<title>[^\n]*)\n"
                         r"(?::[^\n]*\n)*(?P<body>.*?)^```", re.S | re.M)
_BIBLIOGRAPHY = re.compile(r"```\{footbibliography\}\n```")
_CITE = re.compile(r"\{footcite[tp]?\}`(?P<keys>[^`]+)`")
_SOLUTION_BLOCK = re.compile(r"^:::\{solution\}[^\n]*\n(?::[^\n]*\n)*(?P<body>.*?)^:::$",
                             re.S | re.M)


def _glued_text(value: Any, spec: str | None) -> str:
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    return str(value)


def _include(match: re.Match, chapter_dir: Path) -> str:
    text = (chapter_dir / match["path"]).read_text()
    options = dict(re.findall(r":([\w-]+): ([^\n]*)", match["options"]))
    if "start-after" in options:
        text = text.split(options["start-after"], 1)[1]
    if "end-before" in options:
        text = text.split(options["end-before"], 1)[0]
    return text.strip()


def colab_notebook(notebook, glued: dict[str, Any], profile: str, book_url: str,
                   chapter_dir: Path = ROOT / "notebooks"):
    """The notebook that a Colab button opens: what the book's page says, in Markdown that
    Jupyter renders: every ``{glue}`` role replaced by the value of the published run,
    included files inlined, admonitions as quotes, citations pointing to the page,
    solutions collapsed in ``<details>``; code cells as in the chapter, without outputs."""
    import nbformat

    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)
    missing = set()

    def glue_value(match: re.Match) -> str:
        if match["name"] not in glued:
            missing.add(match["name"])
            return match[0]
        return _glued_text(glued[match["name"]], match["spec"])

    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            continue
        text = _INCLUDE.sub(lambda m: _include(m, chapter_dir), cell.source)
        text = _GLUE.sub(glue_value, text)
        text = _SOLUTION_BLOCK.sub(lambda m: "<details><summary>Solution</summary>\n\n"
                                   f"{m['body'].strip()}\n\n</details>", text)
        text, _ = _plain_exercises(text, 0)
        text = _ADMONITION.sub(lambda m: "\n".join(
            [f"> **{m['title'].strip() or 'Note'}**", ">"]
            + [f"> {line}".rstrip() for line in m["body"].strip().splitlines()]), text)
        text = _CITE.sub(lambda m: f"[{m['keys']}]", text)
        text = _BIBLIOGRAPHY.sub(f"The references are listed at the end of [this chapter's "
                                 f"page in the book]({book_url}).", text)
        cell.source = text.rstrip() + "\n"
    if missing:
        raise KeyError(f"the published run glued no value for: {sorted(missing)}")
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"*This is the Colab copy of a chapter of The Recommendation Funnel; its page in the "
        f"book is [here]({book_url}). Numbers in the text are those of the published run "
        f"(the `{profile}` profile); the cells recompute them at the profile you choose.*"))
    return notebook


def colab(executed_dir: str | Path, out_dir: str | Path, profile: str,
          root: Path = ROOT) -> list[Path]:
    """Write ``out_dir/notebooks/NN_name.ipynb`` for every chapter executed in
    ``executed_dir`` (a book build's ``jupyter_execute`` folder, or the tests' executed
    copies): the notebooks to publish where the Colab buttons point."""
    import nbformat
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    base = config.get("html", {}).get("baseurl") or config["repository"]["url"]
    written = []
    for chapter in toc_chapters(root):
        executed = Path(executed_dir) / "notebooks" / f"{chapter}.ipynb"
        if not executed.exists():
            raise FileNotFoundError(f"{chapter} was not executed in {executed_dir}")
        source = nbformat.read(root / "notebooks" / f"{chapter}.ipynb", as_version=4)
        copy = colab_notebook(source, read_build_glue(executed) or read_glue(executed), profile,
                              f"{base.rstrip('/')}/notebooks/{chapter}.html",
                              root / "notebooks")
        path = Path(out_dir) / "notebooks" / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(copy, path)
        written.append(path)
    return written


# --------------------------------------------------------------------------- command line


def _main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "stage":
        print(f"staged: {stage(argv[1], argv[2])}")
        return 0
    if len(argv) == 4 and argv[0] == "colab":
        for path in colab(argv[1], argv[2], argv[3]):
            print(f"Colab copy: {path}")
        return 0
    if argv[:1] == ["student"]:
        for path in student(argv[1:] or None):
            print(f"student copy: {path.relative_to(ROOT)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
