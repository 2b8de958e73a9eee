"""Colab readiness: installing the package (with its ``faiss`` and ``text`` extras) on top
of Colab's stack must not replace Colab's torch, numpy or pandas, and every chapter's
install cell points at the one repository of ``_config.yml``.

The Colab-like environment is a fresh virtual environment that holds the three packages
at Colab's usual versions, as installed distributions (their metadata, which is all that
pip's resolver reads; the check never imports them). ``pip install --dry-run --report``
then says what pip would install there. The registry must be reachable; when it is not,
the test skips and says so.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from test_notebooks import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
COLAB = {"torch": "2.5.1+cu121", "numpy": "2.0.2", "pandas": "2.2.2"}  # Colab, late 2025
EXTRAS = "faiss,text"


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("colab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    [site] = (venv / "lib").glob("python*/site-packages")
    for name, version in COLAB.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n")
        (info / "INSTALLER").write_text("colab\n")
        (info / "RECORD").write_text("")
    return venv


def replaced(venv: Path, project: Path) -> dict[str, str]:
    """Colab's packages that installing ``project[faiss,text]`` would replace, with the
    version pip would put in their place."""
    report = venv.parent / "report.json"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet",
         "--disable-pip-version-check", "--report", str(report), f"{project}[{EXTRAS}]"],
        capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        if re.search(r"connection|network|resolve host|No matching distribution", result.stderr,
                     re.I):
            pytest.skip(f"the package registry is not reachable: {result.stderr[-300:]}")
        raise AssertionError(f"pip could not resolve the install:\n{result.stderr[-3000:]}")
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs
            if item["metadata"]["name"].lower() in COLAB}


@pytest.mark.colab
def test_installing_the_package_keeps_colabs_torch_numpy_and_pandas(colab_env):
    assert replaced(colab_env, ROOT) == {}


@pytest.mark.colab
def test_the_check_catches_a_pin_that_would_downgrade_numpy(colab_env, tmp_path):
    project = tmp_path / "pinned"
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(ROOT / "README.md", project)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '    "numpy>=1.24",\n' in pyproject
    (project / "pyproject.toml").write_text(
        pyproject.replace('    "numpy>=1.24",\n', '    "numpy>=1.24,<2",\n'))
    changed = replaced(colab_env, project)
    assert list(changed) == ["numpy"] and changed["numpy"].startswith("1.")


def install_cells() -> dict[str, str]:
    cells = {}
    for chapter in CHAPTERS:
        notebook = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
        [cell] = [c for c in notebook.cells if "google.colab" in c.source][:1]
        cells[chapter] = cell.source
    return cells


def test_every_install_cell_names_the_books_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for chapter, source in install_cells().items():
        found = re.findall(r"git\+(https://\S+?)\"", source)
        assert found == [url], f"{chapter} installs from {found}, the book is at {url}"


@pytest.mark.notebooks
def test_the_colab_copy_of_a_chapter_reads_like_its_page(executed):
    from recfunnel.book import colab_notebook
    from recfunnel.notebook import read_glue

    chapter = "00_getting_started"
    source = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    glued = read_glue(executed.ok(chapter).path)
    copy = colab_notebook(source, glued, "smoke", "https://example.org/00.html")
    text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
    for raw in ("{glue", ":::{solution}", ":::{exercise}", "{footcite}", "{footbibliography}"):
        assert raw not in text, f"{raw} is left in the Colab copy"
    assert f"{glued['gs_top_share']:.1%}" in text, "a glued value with its format"
    n_solutions = sum(c.source.count(":::{solution}") for c in source.cells)
    assert text.count("<details><summary>Solution</summary>") == n_solutions
    code = [c for c in copy.cells if c.cell_type == "code"]
    assert [c.source for c in code] == [c.source for c in source.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code)
    with pytest.raises(KeyError, match="gs_top_share"):
        colab_notebook(source, {k: v for k, v in glued.items() if k != "gs_top_share"},
                       "smoke", "https://example.org/00.html")


@pytest.mark.colab
def test_a_non_editable_install_carries_the_benchmark_results(tmp_path):
    """Colab installs a wheel, where ``benchmarks/results`` is not: the wheel carries the
    committed results to where ``recfunnel.study.results_dir`` looks for them."""
    import zipfile

    project = tmp_path / "project"  # a copy, so that the build leaves the checkout clean
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "benchmarks" / "results", project / "benchmarks" / "results")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(project)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = tmp_path.glob("recfunnel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/share/recfunnel/results/" in n}
    committed = {p.name for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert committed and shipped == committed
