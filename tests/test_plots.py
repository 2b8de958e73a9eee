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
