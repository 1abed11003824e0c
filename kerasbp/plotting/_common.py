"""Helpers shared by the figures of `kerasbp.plotting`: axes, curves, log-scale values."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes


def _new_axes(ax, figsize=(6.4, 4.2)):
    """`(figure, ax)`: the figure of a given Axes, or a new figure with one Axes."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes or None. Received: ax={ax!r}")
    return ax.figure, ax


def _two_panels(axes):
    """`(figure, ax_top, ax_bottom)`: the given pair of Axes, or a new figure with two panels
    sharing the x axis. Raises TypeError for anything else."""
    if axes is None:
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 5.6), layout="constrained", height_ratios=(3, 2))
        return fig, top, bottom
    if not (hasattr(axes, "__len__") and len(axes) == 2 and all(isinstance(a, Axes) for a in axes)):
        raise TypeError(f"`axes` must be a pair (ax_loss, ax_diff) of matplotlib Axes, or None. Received: axes={axes!r}")
    return axes[0].figure, axes[0], axes[1]


def _curve(name, values, key="loss"):
    """A 1-D float64 array from an array-like or a Keras `History` (its `history[key]`).

    Non-finite values are kept (a diverged run is worth seeing); an empty or non-numeric
    curve is refused.
    """
    history = getattr(values, "history", None)
    if isinstance(history, dict):
        if key not in history:
            raise ValueError(f"`{name}` is a History without a {key!r} entry. Received entries: {sorted(history)}")
        values = history[key]
    if isinstance(values, (str, bytes)) or isinstance(values, dict):
        raise TypeError(f"`{name}` must be a 1-D array of losses or a keras History. Received: {name}={values!r}")
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a 1-D array of losses or a keras History. Received: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers. Received an array of dtype {arr.dtype}: {name}={values!r}")
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one loss per epoch). Received an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one loss. Received an empty array")
    return arr.astype(np.float64)


def _runs(name, runs, key="loss"):
    """`{label: 1-D array}` from a dict of curves, or `{None: array}` from a single curve."""
    if isinstance(runs, dict):
        if not runs:
            raise ValueError(f"`{name}` must hold at least one run. Received: {name}={{}}")
        return {str(label): _curve(f"{name}[{label!r}]", v, key) for label, v in runs.items()}
    return {None: _curve(name, runs, key)}


def _positive(a):
    """`a` with the values a log axis cannot show (<= 0, non-finite) replaced by NaN."""
    a = np.array(a, dtype=np.float64)
    a[~(a > 0) | ~np.isfinite(a)] = np.nan
    return a


def _legend(ax, n_entries, outside=False, **kwargs):
    """The legend of `ax`, placed off the data.

    Inside the axes at matplotlib's "best" spot (the corner with the fewest data points under it)
    for a few entries; outside, to the right of the axes, for `outside=True` or more than 4 entries,
    where it cannot hide a line (constrained layout makes room for it).
    """
    if outside or n_entries > 4:
        return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small", **kwargs)
    return ax.legend(loc="best", fontsize="small", **kwargs)
