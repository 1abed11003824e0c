"""Curvature over training: the Hessian's largest eigenvalue beside the stability threshold `2 / lr`."""

import numpy as np
from matplotlib.ticker import MaxNLocator

from kerasbp.checks import check_bool
from kerasbp.plotting._common import _legend, _new_axes, _positive


def _check_probe(probe):
    """`(steps, lambda_max, stability_threshold, trace)` as float64 arrays from a HessianProbe."""
    names = ("steps", "lambda_max", "stability_threshold", "trace")
    if not all(hasattr(probe, name) for name in names):
        raise TypeError(f"`probe` must be a kerasbp.HessianProbe (after training). Received: probe={probe!r}"[:300])
    arrays = [np.asarray(getattr(probe, name), dtype=np.float64) for name in names]
    if arrays[0].ndim != 1 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"`probe`'s steps, lambda_max, stability_threshold and trace must be 1-D of one length. Received shapes {[a.shape for a in arrays]}")
    if arrays[0].size == 0:
        raise ValueError("`probe` holds no measurements: train with the HessianProbe in `callbacks` first")
    return arrays


def plot_curvature(probe, ax=None, log_scale=True, trace=False, title=None):
    """The Hessian's largest eigenvalue `lambda_max` against the train step, with `2 / learning_rate`.

    Plain gradient descent on a quadratic is stable only while `lambda_max < 2 / learning_rate`
    (LeCun et al. 1993): where the solid curve crosses the dashed threshold, the step overshoots
    along the top eigenvector and the loss can grow; training that hovers just below it is at the
    "edge of stability" (Cohen et al. 2021). The area above the threshold is shaded.

    Args:
        probe: a `kerasbp.HessianProbe` after training (any object with 1-D `steps`, `lambda_max`,
            `stability_threshold` and `trace`), holding at least one measurement.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        log_scale: bool, a logarithmic y axis (values <= 0, e.g. a negative `lambda_max`, are not
            drawn there). Defaults to True.
        trace: bool, also draw the Hessian's trace (the sum of all eigenvalues), dotted.
            Defaults to False.
        title: str or None for a default title. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. Lines labelled `"lambda_max"`, `"2 / learning rate"` and (with
        `trace`) `"trace"`, each holding `(probe.steps, values)`.

    Raises:
        TypeError: if `probe` is not a HessianProbe or `ax` not an Axes.
        ValueError: if `probe` holds no measurements.

    Example:
        >>> probe = kb.HessianProbe(every_n_steps=10)      # doctest: +SKIP
        >>> model.fit(X, y, callbacks=[probe])             # doctest: +SKIP
        >>> fig = plot_curvature(probe)                    # doctest: +SKIP
    """
    steps, lam, threshold, tr = _check_probe(probe)
    log_scale = check_bool("log_scale", log_scale)
    trace = check_bool("trace", trace)
    fig, ax = _new_axes(ax)

    def shown(values):
        return _positive(values) if log_scale else np.where(np.isfinite(values), values, np.nan)

    marker = "o" if len(steps) <= 30 else None
    ax.plot(steps, shown(lam), color="C0", marker=marker, markersize=4, label="lambda_max")
    ax.plot(steps, shown(threshold), color="C3", linestyle="--", label="2 / learning rate")
    if trace:
        ax.plot(steps, shown(tr), color="C2", linestyle=":", label="trace")
    finite = threshold[np.isfinite(threshold)]
    if finite.size:
        top = np.nanmax(np.concatenate([shown(lam)[np.isfinite(shown(lam))], finite]))
        ax.fill_between(steps, shown(threshold), np.full(len(steps), top * (3 if log_scale else 1.5)), color="C3", alpha=0.08, linewidth=0)
        ax.set_ylim(top=top * (2 if log_scale else 1.2))
    if log_scale:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("train step")
    ax.set_ylabel("Hessian eigenvalue")
    above = int(np.sum(lam > threshold))
    default = "Sharpness against the stability threshold"
    if above:
        default += f"\n{above} of {len(steps)} probed steps above 2 / lr: SGD overshoots there"
    ax.set_title(default if title is None else title)
    _legend(ax, 3 if trace else 2)
    return fig
