"""The book's figure style and plot helpers."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tradeoffs import plots  # noqa: E402
from tradeoffs.errors import TradeoffsError  # noqa: E402


@pytest.fixture()
def ax() -> Iterator[plt.Axes]:
    with matplotlib.rc_context():
        plots.set_style()
        fig, axes = plt.subplots()
        yield axes
        plt.close(fig)


def test_set_style() -> None:
    with matplotlib.rc_context():
        plots.set_style()
        assert plt.rcParams["figure.dpi"] == 110
        sizes = ("font.size", "axes.labelsize", "xtick.labelsize", "ytick.labelsize", "legend.fontsize")
        assert min(plt.rcParams[k] for k in sizes) >= 12, "text under 12 pt is illegible at page width"
        cycle = [matplotlib.colors.to_hex(c["color"]) for c in plt.rcParams["axes.prop_cycle"]]
        assert cycle[:3] == [matplotlib.colors.to_hex(c) for c in sns.color_palette("colorblind")[:3]]


def test_linear_fit_recovers_line_and_band_covers_it(ax: plt.Axes) -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(60, 90, 30)
    y = 0.5 - 0.01 * x + rng.normal(0, 0.005, x.size)
    fit = plots.scatter_fit(ax, x, y, xlabel="ImageNet top-1 (%)", ylabel="2AFC score")
    assert fit is not None and fit.params[1] == pytest.approx(-0.01, abs=0.002)
    assert ax.get_xlabel() == "ImageNet top-1 (%)" and ax.get_ylabel() == "2AFC score"
    band = ax.collections[-1].get_paths()[0].vertices
    assert band[:, 1].min() < (0.5 - 0.01 * 90) and band[:, 1].max() > (0.5 - 0.01 * 60)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["linear fit", "95% band"]


def test_quadratic_fit_finds_vertex(ax: plt.Axes) -> None:
    x = np.linspace(0, 1, 12)
    fit = plots.scatter_fit(ax, x, 1 - (x - 0.4) ** 2, fit="quadratic")
    c0, c1, c2 = fit.params
    assert -c1 / (2 * c2) == pytest.approx(0.4)


def test_hue_and_point_labels(ax: plt.Axes) -> None:
    plots.scatter_fit(ax, [1, 2, 3, 4], [1, 3, 2, 4], hue=["cnn", "vit", "cnn", "vit"], fit=None,
                      point_labels=["a", "b", "c", "d"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cnn", "vit"]
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(x=[1, 2], y=[1, 2, 3]), "differ in length"),
    (dict(x=[1, 2, np.nan], y=[1, 2, 3]), "NaN"),
    (dict(x=[1, 2, 3], y=[1, 2, 3], fit="cubic"), "fit must be"),
    (dict(x=[1, 2, 3], y=[1, 2, 3], hue=["a"]), "hue has 1"),
])
def test_scatter_fit_refuses_bad_input(ax: plt.Axes, kwargs: dict, message: str) -> None:
    with pytest.raises(TradeoffsError, match=message):
        plots.scatter_fit(ax, **kwargs)


def test_too_few_points_for_the_fit_are_drawn_and_said(ax: plt.Axes) -> None:
    assert plots.scatter_fit(ax, [1, 2, 3], [1, 2, 3], fit="quadratic") is None
    assert [t.get_text() for t in ax.texts] == ["too few points (3) for a quadratic fit"]
    assert not ax.lines and len(ax.collections) == 1  # the points, no curve or band
    with pytest.raises(TradeoffsError, match="at least 4 points"):
        plots.polyfit_band(np.array([1.0, 2, 3]), np.array([1.0, 2, 3]), 2, np.array([1.0, 2]))


@settings(max_examples=25, deadline=None)
@given(lo=st.floats(-10, 10), width=st.floats(0, 5))
def test_human_band_spans_the_range(lo: float, width: float) -> None:
    fig, ax = plt.subplots()
    try:
        plots.human_band(ax, lo, lo + width, label="humans (range)")
        ys = ax.patches[-1].get_path().transformed(ax.patches[-1].get_patch_transform()).vertices[:, 1]
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(lo + width)
        assert ax.patches[-1].get_label() == "humans (range)"
    finally:
        plt.close(fig)


def test_human_band_refuses_reversed_range(ax: plt.Axes) -> None:
    with pytest.raises(TradeoffsError, match="lo <= hi"):
        plots.human_band(ax, 0.9, 0.8)


def test_label_points_leaves_no_two_labels_overlapping(ax: plt.Axes) -> None:
    x, y = np.array([1.0, 1.01, 1.02, 2.0, 2.01]), np.array([1.0, 1.0, 1.01, 2.0, 2.0])
    ax.scatter(x, y)
    plots.label_points(ax, x, y, ["resnet20", "resnet32", "resnet44", "vgg16", "vgg19"])
    ax.figure.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) >= 3  # a label that cannot be placed clear of the others is dropped
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_one_colour_per_model_across_pages() -> None:
    assert plots.model_color("resnet20") == plots.model_color("cifar10_resnet20")
    assert plots.model_color("resnet8") != plots.model_color("resnet20")
    assert plots.model_color("vit_base_patch16_224.augreg_in21k") == plots.model_color("vit_base_patch16_224")


def test_scatter_fit_takes_each_model_colour(ax: plt.Axes) -> None:
    plots.scatter_fit(ax, [1, 2, 3, 4], [1, 3, 2, 4], hue=["pretrained", "resnet8", "pretrained", "resnet8"], fit=None,
                      palette={"resnet8": plots.model_color("resnet8")})
    colours = [tuple(c.get_facecolor()[0][:3]) for c in ax.collections]
    assert colours[1] == pytest.approx(plots.model_color("resnet8"))  # the level the palette names
    assert colours[0] == pytest.approx(sns.color_palette(plots.PALETTE)[0])  # the others: the book palette


def test_chance_line_is_in_the_legend(ax: plt.Axes) -> None:
    plots.chance_line(ax, 0.1)
    ax.legend()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance"]
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.1)
