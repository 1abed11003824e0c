"""Training curves: the loss per epoch, and each layer's gradients per step from a `GradientLog`."""

import warnings

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from kerasbp.logger import STATS
from kerasbp.checks import check_bool, check_choice
from kerasbp.logger import GradientLog
from kerasbp.plotting._common import _legend, _new_axes, _positive, _runs

#: How each statistic of `kerasbp.logger.STATS` is named on an axis: what the value is.
STAT_LABELS = {
    "norm": "gradient L2 norm |g|",
    "mean": "mean gradient entry",
    "std": "std of the gradient entries",
    "min": "smallest gradient entry",
    "max": "largest gradient entry",
    "max_abs": "largest |gradient entry|",
    "nonfinite": "NaN/Inf gradient entries",
    "weight_norm": "weight L2 norm |w| (before the step)",
    "update_ratio": "update ratio |Δw|/|w|",
}


def _check_log(log):
    """`log` if it is a GradientLog (or GradientLogger) holding at least one logged step."""
    if not isinstance(log, GradientLog):
        raise TypeError(
            f"`log` must be a GradientLogger or a GradientLog (e.g. from load_gradient_log). Received: log={log!r}"
        )
    if len(log) == 0:
        raise ValueError("`log` holds no logged steps: train with the GradientLogger in `callbacks` first")
    return log


def _short_name(log, j):
    """`layer/variable`, e.g. `dense_0/kernel`, for variable `j` of a log."""
    leaf = log.names[j].rsplit("/", 1)[-1]
    return f"{log.layers[j]}/{leaf}" if log.layers[j] else log.names[j]


def _layer_colors(n):
    """`n` colours, one per layer: tab10 up to 10 layers, else evenly spaced on viridis."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "viridis"]
    if n <= 10:
        return [cmap(i) for i in range(n)]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


# ---------------------------------------------------------------------------- loss curves


def plot_loss_curves(runs, ax=None, log_scale=True, key="loss", xlabel="epoch", ylabel=None, title=None, first_x=1):
    """Loss against epoch for one run or several runs (e.g. one per optimizer), one line each.

    Args:
        runs: a 1-D array-like of losses of shape `(n_epochs,)` or a `keras.callbacks.History`
            (its `history[key]`), or a dict `{label: array or History}` whose labels (e.g. the
            optimizer names) become the legend. Runs may have different lengths. Non-finite
            values (a diverged run) are drawn as gaps.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        log_scale: bool, a logarithmic loss axis (non-positive losses are not drawn).
            Defaults to True.
        key: str, the History entry to plot, e.g. `"val_loss"`. Defaults to `"loss"`.
        xlabel: str, the x-axis label. Defaults to `"epoch"`.
        ylabel: str or None for `key`. Defaults to None.
        title: str or None. Defaults to None.
        first_x: int, the x value of each run's first loss: 1 for epoch numbers, 0 for 0-based
            optimizer steps (e.g. `GradientLog.losses` against `GradientLog.steps`). Defaults to 1.

    Returns:
        `matplotlib.figure.Figure`. Its axes hold one line per run, at x = `first_x`,
        `first_x + 1`, ...

    Raises:
        TypeError: if a run is neither an array of numbers nor a History, or `ax` is not an Axes.
        ValueError: for an empty dict, an empty run, a run that is not 1-D, or a History
            without `key`.

    Example:
        >>> fig = plot_loss_curves({"sgd": [1.0, 0.5, 0.3], "adam": [1.0, 0.2, 0.05]})
        >>> fig.axes[0].get_yscale()
        'log'
    """
    curves = _runs("runs", runs, key)
    log_scale = check_bool("log_scale", log_scale)
    if isinstance(first_x, bool) or not isinstance(first_x, (int, np.integer)):
        raise TypeError(f"`first_x` must be an integer. Received: first_x={first_x!r}")
    fig, ax = _new_axes(ax)
    for label, loss in curves.items():
        x = np.arange(len(loss)) + int(first_x)
        ax.plot(x, _positive(loss) if log_scale else loss, label=label if label is not None else key)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel if ylabel is not None else key)
    if title:
        ax.set_title(title)
    if len(curves) > 1 or None not in curves:
        _legend(ax, len(curves))
    ax.grid(True, which="major", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- gradients


def plot_gradient_norms(log, ax=None, stat="norm", variables=None, log_scale=True, title=None, applied=False):
    """Each variable's gradient statistic (L2 norm by default) against the optimizer step.

    One line per variable, coloured by layer: kernels solid, biases dashed. On the log scale a
    layer whose gradients are orders of magnitude below the others (vanishing) or climbing
    (exploding) stands out; zero and non-finite values are not drawn. The legend sits outside the
    axes, on the right, off the data. The y axis says what the statistic is (`STAT_LABELS`): for
    `"update_ratio"`, `|Δw|/|w|`, the size of the step's update relative to the weights before it,
    which is infinite where those weights were all zero (a zero-initialised bias at the first
    step): such steps are not drawn, and a second title line counts them.

    Args:
        log: a `GradientLogger` after training, or a `GradientLog` (e.g. `load_gradient_log`),
            holding at least one logged step.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        stat: str, one of `kerasbp.logger.STATS` (`"norm"`, `"max_abs"`, `"update_ratio"`,
            ...). Defaults to `"norm"`.
        variables: None for every variable, `"kernels"` for the variables with 2 or more
            dimensions, or a list of variable names (`log.names` entries, or short names such as
            `"dense_0/kernel"`). Defaults to None.
        log_scale: bool, a logarithmic y axis. Defaults to True.
        title: str or None for a title naming `stat`. Defaults to None.
        applied: bool, with `stat="norm"`: also draw, dotted in the same colour, the norm of the
            gradient the update rule received (`"applied_norm"`: after unscaling, clipping and
            accumulation), and the `clipnorm` threshold of the optimizer as a horizontal line
            (`global_clipnorm` is named in the title: it bounds the norm over all variables).
            Defaults to False.

    Returns:
        `matplotlib.figure.Figure`. Each line is labelled `"<layer>/<variable>"`, e.g.
        `"dense_0/kernel"`, and holds `(log.steps, log.stats[name][stat])`; with `applied`, the
        applied norms are labelled `"<layer>/<variable> applied"`.

    Raises:
        TypeError: if `log` is not a GradientLog, or `stat` is not a string.
        ValueError: for an empty log, an unknown `stat`, or a variable name not in the log.

    Example:
        >>> logger = GradientLogger()                      # doctest: +SKIP
        >>> train(model, X, y, epochs=100, callbacks=[logger])  # doctest: +SKIP
        >>> fig = plot_gradient_norms(logger)              # doctest: +SKIP
    """
    log = _check_log(log)
    stat = check_choice("stat", stat, STATS)
    log_scale = check_bool("log_scale", log_scale)
    applied = check_bool("applied", applied)
    if applied and stat != "norm":
        raise ValueError(f'`applied=True` draws applied norms beside `stat="norm"`. Received: stat={stat!r}')
    indices = _select_variables(log, variables)
    fig, ax = _new_axes(ax)
    layers = list(dict.fromkeys(log.layers[j] for j in range(len(log.names))))
    colors = dict(zip(layers, _layer_colors(len(layers)), strict=True))
    steps = log.steps
    stats = log.stats_array()
    column = STATS.index(stat)
    for j in indices:
        values = stats[:, j, column]
        kernel = len(log.shapes[j]) >= 2
        ax.plot(
            steps,
            _positive(values) if log_scale else np.where(np.isfinite(values), values, np.nan),
            color=colors[log.layers[j]],
            linestyle="-" if kernel else "--",
            label=_short_name(log, j),
        )
        if applied:
            values = stats[:, j, STATS.index("applied_norm")]
            ax.plot(steps, _positive(values) if log_scale else values, color=colors[log.layers[j]], linestyle=":", label=f"{_short_name(log, j)} applied")
    clipping = getattr(log, "clipping", {}) or {}
    if applied and clipping.get("clipnorm"):
        ax.axhline(clipping["clipnorm"], color="0.3", linestyle="-.", linewidth=1, label=f"clipnorm {clipping['clipnorm']:g}")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_ylabel(STAT_LABELS[stat])
    title = title if title is not None else f"{STAT_LABELS[stat]} per variable" + (", loss gradient and applied (dotted)" if applied else "")
    if applied and clipping.get("global_clipnorm"):
        title += f"\nglobal_clipnorm {clipping['global_clipnorm']:g} bounds the norm over all variables; clipped at {int(np.sum(log.clipped))} step(s)"
    if stat == "update_ratio":
        infinite = ~np.isfinite(stats[:, indices, column])  # (n_logged, n_drawn)
        if infinite.any():
            title += f"\nnot drawn: {int(infinite.any(axis=1).sum())} step(s) where it is not finite (|w| = 0, e.g. a zero-initialised bias)"
    ax.set_title(title, fontsize="small" if "\n" in title else None)
    _legend(ax, len(ax.get_lines()), outside=True)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def _select_variables(log, variables):
    """Indices into `log.names` of the variables `plot_gradient_norms` draws (see its `variables`)."""
    n = len(log.names)
    if variables is None:
        return list(range(n))
    if isinstance(variables, str):
        if variables == "kernels":
            return [j for j in range(n) if len(log.shapes[j]) >= 2]
        variables = [variables]
    short = {_short_name(log, j): j for j in range(n)}
    full = {name: j for j, name in enumerate(log.names)}
    indices = []
    for v in variables:
        if v in full:
            indices.append(full[v])
        elif v in short:
            indices.append(short[v])
        else:
            raise ValueError(
                f"`variables` must name variables of the log ({list(short)}), or be 'kernels' or None. Received: {v!r}"
            )
    if not indices:
        raise ValueError("`variables` must name at least one variable. Received an empty list")
    return indices


def plot_gradient_profile(logs, ax=None, stat="norm", reduce="median", log_scale=True, title=None):
    """A typical kernel-gradient statistic per layer depth: vanishing gradients as a falling line.

    For each log, each kernel (variable with 2 or more dimensions) gives one point: `reduce`
    over the logged steps of its gradient `stat`. Layer 1 is the first (input side). In a deep
    sigmoid stack the line falls towards layer 1 by orders of magnitude (each sigmoid scales the
    backward signal by at most 1/4); in a relu stack it stays roughly flat.

    Args:
        logs: a `GradientLog` (or `GradientLogger`), or a dict `{label: log}` to compare
            several (e.g. `{"sigmoid": log_a, "relu": log_b}`).
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        stat: str, one of `kerasbp.logger.STATS`. Defaults to `"norm"`.
        reduce: `"median"`, `"mean"`, `"max"` over the logged steps (non-finite rows ignored), or
            `"first"` or `"last"` logged step (`"first"`: at the initial weights, when the log
            started with training). Defaults to `"median"`.
        log_scale: bool, a logarithmic y axis. Defaults to True.
        title: str or None. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`, one line with markers per log, x = 1..n_kernels, with integer
        ticks only (one per layer up to 12 layers).

    Raises:
        TypeError: if a log is not a GradientLog.
        ValueError: for an empty dict or log, a log without kernels, an unknown `stat` or
            `reduce`.
    """
    if isinstance(logs, dict):
        if not logs:
            raise ValueError("`logs` must hold at least one log. Received: logs={}")
        items = list(logs.items())
    else:
        items = [(None, logs)]
    stat = check_choice("stat", stat, STATS)
    reduce = check_choice("reduce", reduce, ("median", "mean", "max", "first", "last"))
    log_scale = check_bool("log_scale", log_scale)
    reducers = {
        "median": lambda a: np.nanmedian(a, axis=0),
        "mean": lambda a: np.nanmean(a, axis=0),
        "max": lambda a: np.nanmax(a, axis=0),
        "first": lambda a: a[0],
        "last": lambda a: a[-1],
    }
    profiles = []
    for label, log in items:
        try:
            log = _check_log(log)
        except TypeError:
            raise TypeError(f"`logs` must hold GradientLog objects. Received for {label!r}: {log!r}") from None
        kernels = [j for j in range(len(log.names)) if len(log.shapes[j]) >= 2]
        if not kernels:
            raise ValueError(f"the log {label!r} holds no kernel (variable with 2 or more dimensions): {log.names}")
        a = log.stats_array()[:, kernels, STATS.index(stat)]  # (n_logged, n_kernels)
        a = np.where(np.isfinite(a), a, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a layer without gradients
            profiles.append((label, reducers[reduce](a)))
    fig, ax = _new_axes(ax)
    for label, profile in profiles:
        x = np.arange(1, len(profile) + 1)
        ax.plot(x, _positive(profile) if log_scale else profile, marker="o", label=label)
    if log_scale:
        ax.set_yscale("log")
    depth = max(len(profile) for _, profile in profiles)
    if depth <= 12:
        ax.set_xticks(np.arange(1, depth + 1))  # a tick per layer, none between
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel("layer (1 = input side)")
    what = {"first": "first step's", "last": "last step's"}.get(reduce, reduce)
    ax.set_ylabel(f"{what} {STAT_LABELS[stat]}")
    ax.set_title(title if title is not None else f"{what} kernel {STAT_LABELS[stat]} per layer")
    if any(label is not None for label, _ in profiles):
        _legend(ax, len(profiles))
    ax.grid(True, which="major", alpha=0.3)
    return fig
