"""The shared figures draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from recfunnel import plots  # noqa: E402
from recfunnel.train import History  # noqa: E402


def teardown_function():
    plt.close("all")


def test_training_curves_mark_the_best_epoch():
    history = History(
        steps=[{"step": s, "epoch": 1 + (s - 1) // 2, "loss": 1.0 / s} for s in range(1, 7)],
        epochs=[{"epoch": e, "train_loss": 1.0 / e, "ndcg@10": 0.1 * e, "seconds": 1.0}
                for e in (1, 2, 3)],
        monitor="ndcg@10", best_epoch=3, best_value=0.3,
    )
    fig = history.plot()
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in metric_ax.get_lines()] == ["ndcg@10",
                                                                    "best epoch (3)"]
    np.testing.assert_allclose(metric_ax.get_lines()[0].get_ydata(), [0.1, 0.2, 0.3])
    assert len(loss_ax.get_lines()) == 2  # per step and per epoch


def test_metric_bars_draw_one_bar_per_model_and_metric_with_error_bars():
    results = {"pop": {"a": 0.1, "b": 0.2}, "mf": {"a": 0.3, "b": 0.4}}
    fig = plots.metric_bars(results, errors={"mf": {"a": 0.01, "b": 0.02}}, baseline="pop")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.1, 0.2, 0.3, 0.4]
    assert ax.patches[0].get_facecolor()[:3] == pytest.approx(
        matplotlib.colors.to_rgb(plots.BASELINE_COLOR))


def test_heatmap_checks_its_labels():
    fig = plots.heatmap(np.eye(2), ["t1", "t2"], ["e1", "e2"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["1.00", "0.00", "0.00", "1.00"]
    with pytest.raises(ValueError, match="labels give"):
        plots.heatmap(np.eye(2), ["t1"], ["e1", "e2"])


def test_funnel_chart_highlights_one_stage():
    fig = plots.funnel_chart([8000, 3000, 500, 120, 10, 6], highlight="ranking")
    bars = fig.axes[0].patches
    colors = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colors.count(plots.PALETTE[0].lower()) == 1 and colors[3] == plots.PALETTE[0].lower()
    widths = [b.get_width() for b in bars]
    assert widths == sorted(widths, reverse=True)
    with pytest.raises(ValueError, match="not one of the stages"):
        plots.funnel_chart([1] * 6, highlight="recall")


def test_export_figures_saves_each_shown_figure_at_the_slide_size(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats
    from PIL import Image

    shell = InteractiveShell.instance()
    try:
        with pytest.raises(RuntimeError, match="inline"):
            monkeypatch.setattr("IPython.get_ipython", lambda: shell)
            plots.export_figures(tmp_path / "none")
        select_figure_formats(shell, {"png"})  # what %matplotlib inline sets up
        out = plots.export_figures(tmp_path / "02_kuaiformer")
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [1, 0])
        shown, _ = shell.display_formatter.format(fig)  # what plt.show() does
        assert "image/png" in shown, "the page still gets its figure"
        assert sorted(p.name for p in out.iterdir()) == ["fig-01.png", "fig-01.svg"]
        width, height = Image.open(out / "fig-01.png").size
        assert (width, height) == (round(plots.SLIDE_SIZE[0] * plots.SLIDE_DPI),
                                   round(plots.SLIDE_SIZE[1] * plots.SLIDE_DPI))
        assert tuple(fig.get_size_inches()) == (3, 2), "the page's figure keeps its size"
    finally:
        InteractiveShell.clear_instance()


def test_table_rounds_wraps_and_drops_empty_columns():
    import pandas as pd

    frame = pd.DataFrame({"train_seconds": [665.558227, 1234.7], "ndcg@10": [0.0427081, 0.1],
                          "empty": [np.nan, np.nan], "model": ["a", "b"]})
    styled = plots.table(frame)
    assert list(styled.data.columns) == ["train seconds", "ndcg@10", "model"]
    rendered = styled.to_html()
    for shown in (">665.5582<", ">1,235<", ">0.0427<", ">a<"):
        assert shown in rendered, shown
    assert "0.042708" not in rendered and "empty" not in rendered
    custom = plots.table(frame, formats={"ndcg@10": "{:.2f}"}).to_html()
    assert ">0.04<" in custom, "a column's own format wins"


def test_mean_std_folds_the_two_columns_of_each_metric():
    import pandas as pd

    runs = pd.DataFrame({"model": ["a", "a", "b"], "auc": [0.7, 0.8, 0.6]})
    folded = plots.mean_std(runs.groupby("model").agg(["mean", "std"]), digits=2)
    assert folded.to_dict() == {"auc": {"a": "0.75 ± 0.07", "b": "0.60"}}


def test_describe_gives_a_caption_and_alt_text_and_the_output_carries_them(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats

    fig, (left, right) = plt.subplots(1, 2)
    left.set(title="loss per epoch", xlabel="epoch", ylabel="loss")
    right.set(title="recall", xlabel="k")
    caption, alt = plots.describe(fig)
    assert caption == "Loss per epoch; recall"
    assert alt == ("Loss per epoch; recall. 2 panels: loss per epoch, x: epoch, y: loss; "
                   "recall, x: k.")
    shell = InteractiveShell.instance()
    try:
        monkeypatch.setattr("IPython.get_ipython", lambda: shell)
        select_figure_formats(shell, {"png"})
        plots.describe_figures()
        _, metadata = shell.display_formatter.format(fig)
        assert metadata["image/png"]["caption"] == caption
    finally:
        InteractiveShell.clear_instance()


def test_log_axis_labels_only_the_major_ticks():
    fig, ax = plt.subplots()
    ax.plot([16, 64, 96], [1, 2, 3])
    plots.log_axis(ax, ticks=[16, 64, 96])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "96"]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))


@pytest.mark.parametrize("n_groups", [3, 8, 12])
def test_metric_bars_labels_never_overlap_and_the_figure_fits_the_page(n_groups):
    names = [f"effective_view task {k}" for k in range(n_groups)]
    results = {model: {name: 0.7 + 0.01 * k for k, name in enumerate(names)}
               for model in ("MMoE", "HoME")}
    fig = plots.metric_bars(results, baseline="MMoE", title="per task")
    assert fig.get_figwidth() <= 10.0
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = (fig.axes[0].get_yticklabels() if n_groups > 8 else
              fig.axes[0].get_xticklabels())
    boxes = [label.get_window_extent(renderer) for label in labels]
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert not left.overlaps(right), "two group labels overlap"
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert legend.x0 >= fig.axes[0].get_window_extent(renderer).x1, "the legend is on the bars"
    plt.close(fig)
