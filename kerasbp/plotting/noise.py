"""Gradient noise: the per-example statistics of a `GradientLogger(per_example=True)` per step."""

import numpy as np
from matplotlib.ticker import MaxNLocator

from kerasbp.plotting._common import _legend, _new_axes, _positive
from kerasbp.plotting.curves import _check_log

#: How each entry of `GradientLog.noise` is named in the legend.
NOISE_LABELS = {
    "norm_test": "norm test",
    "inner_product_test": "inner-product test",
    "orthogonality_test": "orthogonality test",
    "gsnr": "mean GSNR",
    "b_simple": "B_simple (noise scale per step)",
}


def plot_gradient_noise(log, ax=None, title=None):
    """The per-example gradient statistics of each logged step, on a log scale.

    One line per entry of `log.noise` against the optimizer step: the norm, inner-product and
    orthogonality tests (Cockpit: above about 1, the batch gradient is dominated by the
    examples' disagreement and a larger batch would help), the mean gradient signal-to-noise
    ratio, and the per-step noise scale `b_simple`; with two horizontal lines, the noise scale
    over the run (`log.noise_scale()`, McCandlish et al.'s ratio of means) and the largest batch
    size logged. A batch well below the noise scale wastes steps on noise; well above it,
    examples. Values that a log axis cannot show (`b_simple` is negative at a step whose
    estimate of |G|^2 came out negative; everything is NaN for a batch of one) are not drawn,
    and a second title line counts those steps.

    Args:
        log: a `GradientLogger(per_example=True)` after training, or a `GradientLog` loaded
            from one, holding at least one logged step.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        title: str or None for a title naming the figure. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. Its axes hold one line per `NOISE_LABELS` entry, labelled
        with it and holding `(log.steps, log.noise[name])`, then the lines labelled
        `"noise scale ..."` and `"batch size ..."`.

    Raises:
        TypeError: if `log` is not a GradientLog, or `ax` not an Axes.
        ValueError: for an empty log or one recorded without `per_example=True`.

    References:
        Schneider, Dangel, Hennig 2021, "Cockpit"; McCandlish, Kaplan, Amodei et al. 2018, "An
        Empirical Model of Large-Batch Training".

    Example:
        >>> logger = GradientLogger(per_example=True)            # doctest: +SKIP
        >>> model.fit(X, y, epochs=5, callbacks=[logger])       # doctest: +SKIP
        >>> fig = plot_gradient_noise(logger)                   # doctest: +SKIP
    """
    log = _check_log(log)
    if not log.noise:
        raise ValueError("`log` holds no per-example statistics: record it with GradientLogger(per_example=True)")
    fig, ax = _new_axes(ax)
    steps = log.steps
    hidden = np.zeros(len(steps), bool)
    for name, label in NOISE_LABELS.items():
        values = log.noise[name]
        hidden |= ~(values > 0)
        ax.plot(steps, _positive(values), marker="." if len(steps) < 30 else None, label=label)
    scale = log.noise_scale()
    if np.isfinite(scale) and scale > 0:
        ax.axhline(scale, color="0.2", linestyle="--", linewidth=1, label=f"noise scale {scale:.3g} (run)")
    batch = log.per_example_norms().shape[1]
    ax.axhline(batch, color="0.5", linestyle=":", linewidth=1, label=f"batch size {batch}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_ylabel("per-example gradient statistic")
    title = title if title is not None else "Gradient noise from per-example gradients"
    if hidden.any():
        title += f"\nnot drawn: values <= 0 or NaN at {int(hidden.sum())} step(s)"
    ax.set_title(title, fontsize="small" if "\n" in title else None)
    _legend(ax, len(ax.get_lines()), outside=True)
    ax.grid(True, which="major", alpha=0.3)
    return fig
