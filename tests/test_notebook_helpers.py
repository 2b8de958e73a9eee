"""Helpers the chapters and their tests rely on: glue reading, stripping, pair checks."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from recfunnel.notebook import (
    execution_stamp,
    glue,
    pair_problems,
    read_glue,
    strip_outputs,
    sync,
)


def glued_output(name, text, display):
    prefix = "" if display else "application/papermill.record/"
    return new_output("display_data", data={prefix + "text/plain": text},
                      metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def test_read_glue_parses_numbers_and_keeps_text():
    cell = new_code_cell("glue(...)", outputs=[
        glued_output("auc", "0.8125", display=False),
        glued_output("size", "'300 users'", display=True),
        glued_output("epochs", "12", display=False),
    ])
    assert read_glue(new_notebook(cells=[cell])) == {"auc": 0.8125, "size": "300 users",
                                                    "epochs": 12}


def test_strip_keeps_only_marked_outputs():
    marked = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)", execution_count=3,
                           outputs=[new_output("stream", name="stdout", text="1\n")])
    plain = new_code_cell("print(2)", execution_count=4,
                          outputs=[new_output("stream", name="stdout", text="2\n")])
    stripped = strip_outputs(new_notebook(cells=[marked, plain]))
    assert stripped.cells[0].outputs and stripped.cells[0].execution_count == 3
    assert stripped.cells[1].outputs == [] and stripped.cells[1].execution_count is None


def test_pair_problems_finds_drift_and_committed_outputs(tmp_path):
    py = tmp_path / "01_demo.py"
    py.write_text("# %% [markdown]\n# # Demo\n\n# %%\nx = 1\n")
    sync(py)
    assert pair_problems(py) == []
    py.write_text("# %% [markdown]\n# # Demo\n\n# %%\nx = 2\n")
    assert any("cell 1 differs" in p for p in pair_problems(py))
    sync(py)
    notebook = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    notebook.cells[1].outputs = [new_output("stream", name="stdout", text="2\n")]
    nbformat.write(notebook, py.with_suffix(".ipynb"))
    assert any("not marked" in p for p in pair_problems(py))
    assert pair_problems(tmp_path / "02_missing.py") == ["02_missing.py has no paired "
                                                         "02_missing.ipynb"]


def test_stamp_changes_with_sources_and_profile(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = execution_stamp("smoke", tmp_path)
    assert execution_stamp("cpu", tmp_path) != first
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    assert execution_stamp("smoke", tmp_path) != first


def test_markdown_only_cells_are_ignored_by_read_glue():
    assert read_glue(new_notebook(cells=[new_markdown_cell("# title")])) == {}


def test_glue_records_numpy_scalars_as_plain_numbers(monkeypatch):
    import myst_nb
    import numpy as np

    recorded = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: recorded.update(
        {name: repr(value)}))
    glue("ndcg", np.float64(0.25))
    glue("epochs", np.int64(12))
    assert recorded == {"ndcg": "0.25", "epochs": "12"}


def test_an_isolated_cell_leaves_no_trace_and_still_fails_loudly():
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell

    from recfunnel.notebook import load_ipython_extension

    shell = InteractiveShell.instance()
    try:
        load_ipython_extension(shell)
        shell.run_cell("import numpy as np\nnp.random.seed(0)\nx = 1")
        expected_draw = np.random.RandomState(0).rand()
        shell.run_cell("%%isolated\nx = 2\ny = 3\nnp.random.rand(5)")
        assert shell.user_ns["x"] == 1 and "y" not in shell.user_ns
        assert shell.run_cell("z = np.random.rand()").success
        assert shell.user_ns["z"] == expected_draw, "the generators are put back"
        failed = shell.run_cell("%%isolated\nraise ValueError('in a solution')")
        assert not failed.success and isinstance(failed.error_in_exec, ValueError)
        assert not shell.run_cell("print(y)").success, "a later cell cannot read it"
    finally:
        InteractiveShell.clear_instance()


def test_the_page_hides_glue_bookkeeping_but_keeps_the_code():
    from recfunnel.book import hide_bookkeeping

    cell = ("gap = a - b\nglue('gap', gap)\nif ok:\n    glue('x', 1)\nelse:\n    glue('x', 2)\n"
            "for k in keys:\n    glue(f'k_{k}', k)\n    total += k\nprint(gap)\n")
    assert hide_bookkeeping(cell) == ("gap = a - b\nfor k in keys:\n    total += k\n"
                                      "print(gap)")
    assert hide_bookkeeping("glue('only', 1)") == ""
    branch = "if data:\n    x = 1\n    glue('x', x)\nelse:\n    glue('x', 'n/a')\nprint(1)"
    assert hide_bookkeeping(branch) == "if data:\n    x = 1\nprint(1)"
    assert hide_bookkeeping("%matplotlib inline\nglue('x', 1)") == \
        "%matplotlib inline\nglue('x', 1)"
