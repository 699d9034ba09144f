"""The book's figure style, one colour per model across the book, and the plot helpers every claim page uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import seaborn as sns
from adjustText import adjust_text
import statsmodels.api as sm
from matplotlib.axes import Axes
from statsmodels.regression.linear_model import RegressionResultsWrapper

from .errors import TradeoffsError

PALETTE = "colorblind"  # seaborn's colour-blind-safe palette, the only one the book uses
Fit = Literal["linear", "quadratic"] | None
_DEGREE = {"linear": 1, "quadratic": 2}
# Networks the book plots on more than one page, each with one colour everywhere (pretrained CIFAR-10 ResNets take the
# colour of the architecture trained here at the same depth).
MODEL_ORDER = ("resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def model_color(name: str) -> tuple[float, float, float]:
    """The colour of a network on every page: by its architecture in `MODEL_ORDER`, else by a stable hash of its name."""
    arch = name.removeprefix("cifar10_").split(".")[0]
    colours = sns.color_palette(PALETTE, 10)
    if arch in MODEL_ORDER:
        return colours[MODEL_ORDER.index(arch)]
    return colours[int.from_bytes(arch.encode(), "little") % len(colours)]


def label_points(ax: Axes, x: Sequence[float], y: Sequence[float], labels: Sequence[str]) -> None:
    """Annotate points with short labels moved apart by adjustText; a label that still overlaps one kept before it
    (in a dense cluster) is dropped, so no two labels ever overlap."""
    texts = [ax.text(xi, yi, str(t), fontsize="small", color="0.3") for xi, yi, t in zip(x, y, labels)]
    if not texts:
        return
    _, arrows = adjust_text(texts, x=np.asarray(x, float), y=np.asarray(y, float), ax=ax, expand=(1.1, 1.4),
                            arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5))
    renderer, kept, dropped = ax.figure.canvas.get_renderer(), [], []
    for text in texts:
        box = text.get_window_extent(renderer)
        if any(box.overlaps(k) for k in kept):
            dropped.append(text)
        else:
            kept.append(box)
    for arrow in arrows:  # an arrow patch (or an annotation holding one) that starts at its text
        if getattr(getattr(arrow, "arrow_patch", arrow), "patchA", None) in dropped:
            arrow.remove()
    for text in dropped:
        text.remove()


def chance_line(ax: Axes, value: float, label: str = "chance", axis: Literal["x", "y"] = "y") -> None:
    """A dotted line at chance level (e.g. 10% for ten balanced classes), labelled in the legend."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(value, color="0.4", linestyle=":", linewidth=1, label=label, zorder=1)


def set_style() -> None:
    """Seaborn whitegrid/notebook theme, colour-blind palette, 110 dpi, and text of at least 12 pt.

    A 1×2 grid at (11, 4.5) inches is shown at about 0.56× on the book's page, so 12 pt is the smallest size that
    stays legible there; point labels use the relative size "small" (10 pt).
    """
    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE, rc={
        "figure.dpi": 110,
        "figure.figsize": (6.4, 4.2),
        "font.size": 12,
        "axes.titlesize": 13,
        "axes.labelsize": 12,
        "xtick.labelsize": 12,
        "ytick.labelsize": 12,
        "legend.fontsize": 12,
        "legend.title_fontsize": 12,
        "figure.titlesize": 14,
        "legend.frameon": False,
    })


def _as_1d(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise TradeoffsError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise TradeoffsError(f"{name} has NaN or infinite values; drop those points before plotting")
    return arr


def polyfit_band(x: np.ndarray, y: np.ndarray, degree: int, grid: np.ndarray,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, RegressionResultsWrapper]:
    """OLS polynomial fit of `degree`: (mean, lower, upper) of the fitted curve on `grid`, and the fit."""
    if len(x) < degree + 2:
        raise TradeoffsError(f"a degree-{degree} fit with a band needs at least {degree + 2} points; got {len(x)}")
    result = sm.OLS(y, np.vander(x, degree + 1, increasing=True)).fit()
    frame = result.get_prediction(np.vander(grid, degree + 1, increasing=True)).summary_frame(alpha=1 - level)
    return (frame["mean"].to_numpy(), frame["mean_ci_lower"].to_numpy(), frame["mean_ci_upper"].to_numpy(), result)


def scatter_fit(ax: Axes, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                hue: Sequence[str] | None = None, fit: Fit = "linear", point_labels: Sequence[str] | None = None,
                xlabel: str = "", ylabel: str = "", title: str = "", fit_label: str | None = None,
                color: str = "0.25", palette: dict | None = None) -> RegressionResultsWrapper | None:
    """Points (coloured by `hue`, optionally annotated) and one OLS fit over all of them with its 95% band.

    `palette` maps hue levels to colours (e.g. `model_color` of each network); levels it lacks take the book palette.

    Returns the statsmodels fit (coefficients in increasing powers of x), or None when `fit` is None.
    """
    xs, ys = _as_1d("x", x), _as_1d("y", y)
    if len(xs) != len(ys):
        raise TradeoffsError(f"x and y differ in length ({len(xs)} vs {len(ys)})")
    if fit is not None and fit not in _DEGREE:
        raise TradeoffsError(f"fit must be 'linear', 'quadratic' or None; got {fit!r}")
    if hue is None:
        ax.scatter(xs, ys, s=28, color=sns.color_palette(PALETTE)[0], edgecolor="white", linewidth=0.5, zorder=3)
    else:
        groups = np.asarray(hue, dtype=object)
        if len(groups) != len(xs):
            raise TradeoffsError(f"hue has {len(groups)} entries for {len(xs)} points")
        levels = list(dict.fromkeys(groups.tolist()))
        for level, c in zip(levels, sns.color_palette(PALETTE, len(levels))):
            c = (palette or {}).get(level, c)
            sel = groups == level
            ax.scatter(xs[sel], ys[sel], s=28, color=c, edgecolor="white", linewidth=0.5, label=str(level), zorder=3)
    if point_labels is not None:
        if len(point_labels) != len(xs):
            raise TradeoffsError(f"point_labels has {len(point_labels)} entries for {len(xs)} points")
        label_points(ax, xs, ys, point_labels)
    result = None
    if fit is not None and len(xs) < _DEGREE[fit] + 2:  # a small run (e.g. a miniature `full`): points only
        ax.text(0.02, 0.02, f"too few points ({len(xs)}) for a {fit} fit", transform=ax.transAxes, fontsize="small")
        fit = None
    if fit is not None:
        grid = np.linspace(xs.min(), xs.max(), 200)
        mean, lo, hi, result = polyfit_band(xs, ys, _DEGREE[fit], grid)
        ax.plot(grid, mean, color=color, linewidth=1.5, label=fit_label or f"{fit} fit", zorder=2)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.15, linewidth=0, label="95% band", zorder=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if hue is not None or fit is not None:
        ax.legend(loc="best")
    return result


def highlight(ax: Axes, x: float, y: float, label: str, legend: bool = True) -> None:
    """One model marked on a figure of many: a large star at (x, y); when one coordinate is unknown (NaN), a dashed
    line at the other (a vertical line for an x alone, a horizontal one for a y alone); nothing when both are.
    `legend` redraws the axes' legend with it (leave it False where the figure has one legend for all axes)."""
    color = sns.color_palette(PALETTE)[3]
    if np.isfinite(x) and np.isfinite(y):
        ax.scatter([x], [y], marker="*", s=300, color=color, edgecolor="black", linewidth=0.8, zorder=6, label=label)
    elif np.isfinite(x) or np.isfinite(y):
        line = ax.axvline if np.isfinite(x) else ax.axhline
        line(x if np.isfinite(x) else y, color=color, linestyle="--", linewidth=2, zorder=5, label=label)
    else:
        return
    if legend:
        ax.legend(loc="best", fontsize="small")


def human_band(ax: Axes, lo: float, hi: float, label: str = "humans", color: str | None = None) -> None:
    """A shaded horizontal band from `lo` to `hi` (e.g. the range of human observers), behind the data."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise TradeoffsError(f"human band needs finite lo <= hi; got lo={lo}, hi={hi}")
    ax.axhspan(lo, hi, color=color or sns.color_palette(PALETTE)[2], alpha=0.2, linewidth=0, label=label, zorder=0)
    if ax.get_legend() is not None:
        ax.legend(loc="best")

