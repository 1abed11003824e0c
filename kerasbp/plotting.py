"""Matplotlib figures that make backpropagation visible.

Every function takes data (arrays, a Keras `History`, a `GradientLog`, a model) and returns the
`matplotlib.figure.Figure` it drew on. Functions that draw one panel accept `ax=`, an existing
`matplotlib.axes.Axes` to draw into (its figure is returned); without it they make a new figure
with `matplotlib.pyplot.subplots`, imported only then. Nothing here calls `plt.show()`: in a
notebook the figure appears at the end of the cell, in a script call `fig.savefig(path)` and
`plt.close(fig)`.

- `plot_loss_curves`: the loss per epoch of one or several runs (e.g. one per optimizer).
- `plot_gradient_norms`: each variable's gradient norm per optimizer step, from a `GradientLog`,
  on a log scale, so vanishing and exploding gradients show at a glance.
- `plot_gradient_profile`: a typical gradient norm per layer depth, for one or several logs.
- `plot_decision_boundary`: what a 2-input classifier predicts over the plane, with the points.
- `plot_loss_surface`: the MSE of `y = w x + b` over `(w, b)`, with optimizer paths and the
  least-squares optimum; `weights_to_path` turns `GradientLog.weights()` into such a path.
- `plot_twin_comparison`: Keras's loss curve beside its NumPy twin's, and their difference.
- `plot_comparison`: a `kerasbp.compare` report, its loss curves and per-step differences.

Example:
    >>> import numpy as np
    >>> fig = plot_loss_curves({"sgd": np.linspace(1, 0.1, 50), "adam": np.geomspace(1, 1e-3, 50)})
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['sgd', 'adam']
"""

import warnings

import numpy as np

__all__ = [
    "plot_comparison",
    "plot_decision_boundary",
    "plot_gradient_norms",
    "plot_gradient_profile",
    "plot_loss_curves",
    "plot_loss_surface",
    "plot_twin_comparison",
    "weights_to_path",
]


# ---------------------------------------------------------------------------- helpers


def _new_axes(ax, figsize=(6.4, 4.2)):
    """`(figure, ax)`: the figure of a given Axes, or a new figure with one Axes."""
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes or None. Received: ax={ax!r}")
    return ax.figure, ax


def _two_panels(axes):
    """`(figure, ax_top, ax_bottom)`: the given pair of Axes, or a new figure with two panels
    sharing the x axis. Raises TypeError for anything else."""
    if axes is None:
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 5.6), layout="constrained", height_ratios=(3, 2))
        return fig, top, bottom
    from matplotlib.axes import Axes

    if not (hasattr(axes, "__len__") and len(axes) == 2 and all(isinstance(a, Axes) for a in axes)):
        raise TypeError(f"`axes` must be a pair (ax_loss, ax_diff) of matplotlib Axes, or None. Received: axes={axes!r}")
    return axes[0].figure, axes[0], axes[1]


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


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


def _check_log(log):
    from kerasbp.callbacks import GradientLog

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
    import matplotlib

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
    log_scale = _check_bool("log_scale", log_scale)
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
        ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- gradients


def plot_gradient_norms(log, ax=None, stat="norm", variables=None, log_scale=True, title=None):
    """Each variable's gradient statistic (L2 norm by default) against the optimizer step.

    One line per variable, coloured by layer: kernels solid, biases dashed. On the log scale a
    layer whose gradients are orders of magnitude below the others (vanishing) or climbing
    (exploding) stands out; zero and non-finite values are not drawn.

    Args:
        log: a `GradientLogger` after training, or a `GradientLog` (e.g. `load_gradient_log`),
            holding at least one logged step.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        stat: str, one of `kerasbp.callbacks.STATS` (`"norm"`, `"max_abs"`, `"update_ratio"`,
            ...). Defaults to `"norm"`.
        variables: None for every variable, `"kernels"` for the variables with 2 or more
            dimensions, or a list of variable names (`log.names` entries, or short names such as
            `"dense_0/kernel"`). Defaults to None.
        log_scale: bool, a logarithmic y axis. Defaults to True.
        title: str or None for a title naming `stat`. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. Each line is labelled `"<layer>/<variable>"`, e.g.
        `"dense_0/kernel"`, and holds `(log.steps, log.stats[name][stat])`.

    Raises:
        TypeError: if `log` is not a GradientLog, or `stat` is not a string.
        ValueError: for an empty log, an unknown `stat`, or a variable name not in the log.

    Example:
        >>> logger = GradientLogger()                      # doctest: +SKIP
        >>> train(model, X, y, epochs=100, callbacks=[logger])  # doctest: +SKIP
        >>> fig = plot_gradient_norms(logger)              # doctest: +SKIP
    """
    from kerasbp.callbacks import STATS
    from kerasbp.checks import check_choice

    log = _check_log(log)
    stat = check_choice("stat", stat, STATS)
    log_scale = _check_bool("log_scale", log_scale)
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
            _positive(values) if log_scale else values,
            color=colors[log.layers[j]],
            linestyle="-" if kernel else "--",
            label=_short_name(log, j),
        )
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"gradient {stat}")
    ax.set_title(title if title is not None else f"gradient {stat} per variable")
    ax.legend(fontsize="small", ncol=2 if len(indices) > 8 else 1)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def _select_variables(log, variables):
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
        stat: str, one of `kerasbp.callbacks.STATS`. Defaults to `"norm"`.
        reduce: `"median"`, `"mean"`, `"max"` over the logged steps (non-finite rows ignored), or
            `"first"` or `"last"` logged step (`"first"`: at the initial weights, when the log
            started with training). Defaults to `"median"`.
        log_scale: bool, a logarithmic y axis. Defaults to True.
        title: str or None. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`, one line with markers per log, x = 1..n_kernels.

    Raises:
        TypeError: if a log is not a GradientLog.
        ValueError: for an empty dict or log, a log without kernels, an unknown `stat` or
            `reduce`.
    """
    from kerasbp.callbacks import STATS
    from kerasbp.checks import check_choice

    if isinstance(logs, dict):
        if not logs:
            raise ValueError("`logs` must hold at least one log. Received: logs={}")
        items = list(logs.items())
    else:
        items = [(None, logs)]
    stat = check_choice("stat", stat, STATS)
    reduce = check_choice("reduce", reduce, ("median", "mean", "max", "first", "last"))
    log_scale = _check_bool("log_scale", log_scale)
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
    ax.set_xlabel("layer (1 = input side)")
    what = {"first": "first step's", "last": "last step's"}.get(reduce, reduce)
    ax.set_ylabel(f"{what} kernel gradient {stat}")
    ax.set_title(title if title is not None else f"{what} kernel gradient {stat} per layer")
    if any(label is not None for label, _ in profiles):
        ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- decision boundary


def _predict(model, grid):
    """The model's output on `grid` `(m, 2)` as a float array `(m,)`."""
    if not callable(model):
        raise TypeError(
            "`model` must be a Keras model, a NumpyMLP or a callable mapping an (n, 2) array to predictions. "
            f"Received: model={model!r}"
        )
    out = model(grid)
    if hasattr(out, "numpy"):
        out = out.numpy()
    out = np.asarray(out, dtype=np.float64)
    if out.shape not in ((len(grid),), (len(grid), 1)):
        raise ValueError(
            f"`model` must return one prediction per point, shape ({len(grid)},) or ({len(grid)}, 1). "
            f"Received an output of shape {out.shape}"
        )
    return out.reshape(-1)


def plot_decision_boundary(model, X, y, ax=None, resolution=200, margin=0.5, threshold=0.5, colorbar=True, title=None):
    """A 2-input classifier's output over the plane, its decision boundary, and the points.

    The model is evaluated on a `resolution x resolution` grid covering the points plus `margin`
    on each side; the output is shown as filled contours, the level `threshold` as a black
    line, and the points coloured by class (class 1 where `y > threshold`) with a circle for
    class 0 and a square for class 1.

    Args:
        model: a Keras model, a `kerasbp.reference.NumpyMLP`, or any callable mapping a float
            array of shape `(m, 2)` to predictions of shape `(m,)` or `(m, 1)` (e.g.
            probabilities). It is called once, on the whole grid.
        X: float array of shape `(n_samples, 2)`, e.g. the XOR inputs.
        y: float array of shape `(n_samples,)` or `(n_samples, 1)`, the targets.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        resolution: int >= 2, grid points per axis. Defaults to 200.
        margin: float >= 0, how far the grid reaches beyond the points. Defaults to 0.5.
        threshold: float, the output level drawn as the boundary. Defaults to 0.5.
        colorbar: bool, add a colour bar beside `ax`. Defaults to True.
        title: str or None. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`.

    Raises:
        TypeError: if `model` is not callable, or `X`, `y` do not hold numbers.
        ValueError: if `X` is not `(n, 2)`, `y` does not have one target per row of `X`, or the
            model's output does not have one value per grid point.

    Example:
        >>> import numpy as np
        >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]]); y = np.array([0, 1, 1, 0])
        >>> fig = plot_decision_boundary(lambda g: np.abs(g[:, 0] - g[:, 1]), X, y)
    """
    from kerasbp.checks import check_array, check_positive_int, check_range

    X = check_array("X", X, dtype="float64")
    if X.shape[1] != 2:
        raise ValueError(f"`X` must have shape (n_samples, 2): a decision boundary needs 2 inputs. Received an array of shape {X.shape}")
    y = check_array("y", y, dtype="float64")
    if y.shape != (len(X), 1):
        raise ValueError(
            f"`y` must hold one target per row of `X`: shape ({len(X)},) or ({len(X)}, 1). Received an array of shape {np.shape(y)}"
        )
    resolution = check_positive_int("resolution", resolution)
    if resolution < 2:
        raise ValueError(f"`resolution` must be at least 2. Received: resolution={resolution}")
    margin = check_range("margin", margin, 0.0, np.inf)
    threshold = check_range("threshold", threshold, -np.inf, np.inf, low_inclusive=False)
    colorbar = _check_bool("colorbar", colorbar)
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    g0, g1 = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    G0, G1 = np.meshgrid(g0, g1)  # (resolution, resolution) each
    grid = np.column_stack([G0.ravel(), G1.ravel()])  # (resolution**2, 2)
    Z = _predict(model, grid.astype(np.float32) if _is_keras(model) else grid).reshape(G0.shape)
    fig, ax = _new_axes(ax, figsize=(5.2, 4.2))
    filled = ax.contourf(G0, G1, Z, levels=20, cmap="RdBu_r", alpha=0.8)
    if Z.min() < threshold < Z.max():
        ax.contour(G0, G1, Z, levels=[threshold], colors="black", linewidths=2)
    positive = y.ravel() > threshold
    for cls, marker in ((False, "o"), (True, "s")):
        pts = X[positive == cls]
        if len(pts):
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                c="tab:red" if cls else "tab:blue",
                marker=marker,
                edgecolors="black",
                s=80,
                zorder=3,
                label=f"class {int(cls)} (target {'>' if cls else '<='} {threshold:g})",
            )
    if colorbar:
        fig.colorbar(filled, ax=ax, label="model output")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(title if title is not None else f"decision boundary (output = {threshold:g})")
    ax.legend(loc="upper center", fontsize="small", framealpha=0.9)
    return fig


def _is_keras(model):
    return type(model).__module__.split(".")[0] == "keras"


# ---------------------------------------------------------------------------- loss surface


def weights_to_path(weights):
    """A `(w, b)` path for `plot_loss_surface` from the weights of a one-input `Dense(1)` model.

    Args:
        weights: `GradientLog.weights()` of a `GradientLogger(snapshots=True)` on
            `linear_model()`: a list `[kernels, biases]` of float arrays of shapes
            `(n_steps, 1, 1)` and `(n_steps, 1)` (the weights before each logged step). A list of
            `model.get_weights()` results, one per epoch, `[[kernel (1, 1), bias (1,)], ...]`,
            is also accepted.

    Returns:
        float64 array of shape `(n_steps, 2)`: `w` then `b` per row.

    Raises:
        TypeError: if `weights` is not a list of arrays.
        ValueError: if the arrays do not describe one weight and one bias per step.

    Example:
        >>> import numpy as np
        >>> weights_to_path([np.array([[[0.5]], [[0.7]]]), np.array([[0.0], [0.1]])]).tolist()
        [[0.5, 0.0], [0.7, 0.1]]
    """
    if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__len__"):
        raise TypeError(f"`weights` must be a list [kernels, biases]. Received: weights={weights!r}")
    weights = list(weights)
    if len(weights) == 2 and all(isinstance(w, np.ndarray) and w.ndim in (2, 3) for w in weights):
        kernels, biases = weights
        n = kernels.shape[0]
        if kernels.shape[1:] not in ((1, 1), (1,)) or biases.shape[1:] != (1,) or biases.shape[0] != n:
            raise ValueError(
                "`weights` must be [kernels of shape (n_steps, 1, 1), biases of shape (n_steps, 1)] of a one-input "
                f"Dense(1). Received shapes {kernels.shape} and {biases.shape}"
            )
        return np.column_stack([kernels.reshape(n), biases.reshape(n)]).astype(np.float64)
    rows = []
    for i, pair in enumerate(weights):
        if not hasattr(pair, "__len__") or len(pair) != 2 or np.size(pair[0]) != 1 or np.size(pair[1]) != 1:
            raise ValueError(
                f"`weights[{i}]` must be a [kernel (1, 1), bias (1,)] pair of a one-input Dense(1) "
                f"(or pass GradientLog.weights()). Received: {pair!r}"
            )
        rows.append([float(np.ravel(pair[0])[0]), float(np.ravel(pair[1])[0])])
    if not rows:
        raise ValueError("`weights` must hold at least one step. Received an empty list")
    return np.array(rows, dtype=np.float64)


def _mse_grid(x, t, W, B):
    """MSE of `w x + b` for every `(w, b)` on the grid, from the sums (no (grid, n) array)."""
    n = len(x)
    sx, sxx, st, stt, sxt = x.sum(), (x * x).sum(), t.sum(), (t * t).sum(), (x * t).sum()
    # sum (w x + b - t)^2 expanded
    total = W * W * sxx + 2 * W * B * sx + n * B * B - 2 * W * sxt - 2 * B * st + stt
    return np.maximum(total / n, 0.0)


def plot_loss_surface(X, y, paths=None, ax=None, w_range=None, b_range=None, resolution=150, levels=25, title=None):
    """The MSE of the linear model `y = w x + b` over `(w, b)`, with optimizer paths on it.

    Contours are log-spaced from the least-squares loss up, so the long, flat valley of this
    problem (inputs in `[0, 1]` couple `w` and `b`) is visible. Each path is a line from its
    start (a hollow circle) to its end (a filled dot), labelled with its key; the least-squares
    optimum is a star labelled `"least squares"`.

    Args:
        X: float array of shape `(n_samples, 1)` or `(n_samples,)`, the one input.
        y: float array of shape `(n_samples, 1)` or `(n_samples,)`, the targets.
        paths: None, or a dict `{label: path}` with each path a float array of shape
            `(n_steps, 2)` of `(w, b)` per step (see `weights_to_path` for a GradientLogger's
            snapshots). Defaults to None.
        ax: `matplotlib.axes.Axes` to draw in, or None for a new figure. Defaults to None.
        w_range, b_range: `(low, high)` of each axis, or None to cover the optimum and every
            path with a margin. Defaults to None.
        resolution: int >= 2, grid points per axis. Defaults to 150.
        levels: int >= 2, the number of contour levels. Defaults to 25.
        title: str or None. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. The optimum is the line labelled `"least squares"`, at
        `kerasbp.cli.ols(X, y)`.

    Raises:
        TypeError: for non-numeric arrays or `paths` that is not a dict.
        ValueError: for an `X` with more than one column, lengths that differ, a path that is
            not `(n_steps, 2)` or holds NaN/Inf, or a range whose low is not below its high.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 1, 20); fig = plot_loss_surface(x, 2 * x + 1, {"sgd": [[0.0, 0.0], [1.0, 1.5]]})
    """
    from kerasbp.checks import check_array, check_positive_int, check_xy
    from kerasbp.cli import ols

    X, y = check_xy(X, y, n_features=1, dtype="float64")
    if y.shape[1] != 1:
        raise ValueError(f"`y` must have one column. Received an array of shape {y.shape}")
    x, t = X[:, 0], y[:, 0]
    resolution = check_positive_int("resolution", resolution)
    levels = check_positive_int("levels", levels)
    if resolution < 2 or levels < 2:
        raise ValueError(f"`resolution` and `levels` must be at least 2. Received: resolution={resolution}, levels={levels}")
    if paths is None:
        paths = {}
    if not isinstance(paths, dict):
        raise TypeError(f"`paths` must be None or a dict {{label: (n_steps, 2) array}}. Received: paths={paths!r}")
    checked = {}
    for label, path in paths.items():
        p = check_array(f"paths[{label!r}]", path, dtype="float64")
        if p.shape[1] != 2:
            raise ValueError(f"`paths[{label!r}]` must have shape (n_steps, 2): (w, b) per step. Received an array of shape {p.shape}")
        checked[str(label)] = p
    coef, intercept = ols(X, y)
    w_star, b_star = float(coef[0]), float(intercept)
    points = np.vstack([[w_star, b_star]] + list(checked.values()))  # (n_points, 2)
    ranges = []
    for name, given, col in (("w_range", w_range, 0), ("b_range", b_range, 1)):
        if given is None:
            low, high = points[:, col].min(), points[:, col].max()
            pad = max(0.5, 0.15 * (high - low))
            ranges.append((low - pad, high + pad))
        else:
            r = check_array(name, given, dtype="float64", ndim=1)
            if r.shape != (2,) or not r[0] < r[1]:
                raise ValueError(f"`{name}` must be (low, high) with low < high. Received: {name}={given!r}")
            ranges.append((float(r[0]), float(r[1])))
    W, B = np.meshgrid(np.linspace(*ranges[0], resolution), np.linspace(*ranges[1], resolution))
    L = _mse_grid(x, t, W, B)  # (resolution, resolution)
    low = max(float(_mse_grid(x, t, w_star, b_star)), 1e-12)
    high = max(float(L.max()), low * 10)
    fig, ax = _new_axes(ax, figsize=(6.4, 5.0))
    from matplotlib.colors import LogNorm

    contours = ax.contour(
        W, B, np.maximum(L, low), levels=np.geomspace(low * 1.05, high, levels), cmap="viridis", norm=LogNorm(low, high), linewidths=0.8
    )
    ax.clabel(contours, contours.levels[::4], fmt="%.3g", fontsize="x-small")
    for label, p in checked.items():
        (line,) = ax.plot(p[:, 0], p[:, 1], linewidth=1.5, label=label)
        ax.plot(p[0, 0], p[0, 1], marker="o", markerfacecolor="none", color=line.get_color(), linestyle="none")
        ax.plot(p[-1, 0], p[-1, 1], marker="o", color=line.get_color(), linestyle="none")
    ax.plot(
        [w_star], [b_star], marker="*", markersize=16, color="red", markeredgecolor="black", linestyle="none", label="least squares", zorder=4
    )
    ax.set_xlim(*ranges[0])
    ax.set_ylim(*ranges[1])
    ax.set_xlabel("w (kernel)")
    ax.set_ylabel("b (bias)")
    ax.set_title(title if title is not None else "MSE loss surface of y = w x + b")
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------- Keras vs NumPy twin


def plot_twin_comparison(keras_losses, numpy_losses, axes=None, log_scale=True, title=None):
    """Keras's loss curve beside the NumPy twin's (top), and their absolute difference (bottom).

    Keras is drawn as a solid line, the twin as dashed over it; where they agree the two
    coincide, so the bottom panel (log scale) shows how close: about 1e-7 relative in float32
    (rounding), 0 where identical (not drawn on a log scale; the title says so).

    Args:
        keras_losses: 1-D array-like `(n_epochs,)` of per-epoch losses or a Keras `History`;
            or a dict `{label: losses or History}` to compare several runs.
        numpy_losses: 1-D array-like `(n_epochs,)`, e.g. from `NumpyMLP.fit`; or a dict with
            the same labels as `keras_losses`.
        axes: a pair `(ax_loss, ax_diff)` of `matplotlib.axes.Axes` to draw in, or None for a
            new figure with two panels sharing the x axis. Defaults to None.
        log_scale: bool, a logarithmic loss axis on the top panel (the difference panel is
            always logarithmic). Defaults to True.
        title: str or None, the top panel's title. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. The top axes hold, per run, lines labelled `"<label> Keras"`
        and `"<label> NumPy twin"` (or `"Keras"` and `"NumPy twin"`); the bottom axes hold per
        run the line `|keras - numpy|` labelled with the run's label (or `"|Keras - NumPy|"`).

    Raises:
        TypeError: if only one of the two is a dict, or a curve is not numeric.
        ValueError: for dicts with different labels, curves of different lengths (naming both),
            or empty curves.

    Example:
        >>> fig = plot_twin_comparison([1.0, 0.5, 0.25], [1.0, 0.5000001, 0.25])
        >>> fig.axes[1].get_yscale()
        'log'
    """
    if isinstance(keras_losses, dict) != isinstance(numpy_losses, dict):
        raise TypeError(
            "`keras_losses` and `numpy_losses` must both be dicts {label: losses} or both single curves. "
            f"Received: {type(keras_losses).__name__} and {type(numpy_losses).__name__}"
        )
    keras_runs = _runs("keras_losses", keras_losses)
    numpy_runs = _runs("numpy_losses", numpy_losses)
    if list(keras_runs) != list(numpy_runs):
        raise ValueError(
            f"`keras_losses` and `numpy_losses` must have the same labels. Received: {list(keras_runs)} and {list(numpy_runs)}"
        )
    for label in keras_runs:
        k, n = keras_runs[label], numpy_runs[label]
        if k.shape != n.shape:
            where = "" if label is None else f"[{label!r}]"
            raise ValueError(
                f"`keras_losses{where}` and `numpy_losses{where}` must have the same length (one loss per epoch). "
                f"Received {len(k)} and {len(n)}"
            )
    log_scale = _check_bool("log_scale", log_scale)
    fig, ax_loss, ax_diff = _two_panels(axes)
    worst = 0.0
    for label, k in keras_runs.items():
        n = numpy_runs[label]
        x = np.arange(1, len(k) + 1)
        prefix = "" if label is None else f"{label} "
        (line,) = ax_loss.plot(x, _positive(k) if log_scale else k, linewidth=2.5, alpha=0.6, label=f"{prefix}Keras")
        twin_color = "black" if label is None else line.get_color()
        ax_loss.plot(x, _positive(n) if log_scale else n, linestyle="--", color=twin_color, linewidth=1, label=f"{prefix}NumPy twin")
        diff = np.abs(k - n)
        finite = diff[np.isfinite(diff)]
        worst = max(worst, float(finite.max())) if finite.size else worst
        ax_diff.plot(x, _positive(diff), color=line.get_color(), label=label if label is not None else "|Keras - NumPy|")
    if log_scale:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(title if title is not None else "Keras vs NumPy twin")
    ax_loss.legend(fontsize="small", ncol=2 if len(keras_runs) > 2 else 1)
    ax_loss.grid(True, which="major", alpha=0.3)
    ax_diff.set_yscale("log")
    ax_diff.set_xlabel("epoch")
    ax_diff.set_ylabel("|Keras - NumPy|")
    ax_diff.set_title(f"largest difference {worst:.3g}" + (" (identical)" if worst == 0 else ""), fontsize="small")
    ax_diff.legend(fontsize="small")
    ax_diff.grid(True, which="major", alpha=0.3)
    return fig


def plot_comparison(report, axes=None, title=None):
    """A `kerasbp.compare` report: loss curves per step (top), per-step differences (bottom).

    The top panel draws Keras's batch loss at each optimizer step and the free-running twin's.
    The bottom panel (log scale) draws, per step, the worst relative difference over the
    variables of the teacher-forced gradients and weights and of the free-running weights, with
    the report's tolerances as dotted lines: a teacher-forced curve above its line is a step that
    differs; a free-running curve that climbs while the teacher-forced ones stay low is rounding
    amplified along the trajectory.

    Args:
        report: `kerasbp.ComparisonReport`.
        axes: a pair `(ax_loss, ax_diff)` of `matplotlib.axes.Axes`, or None for a new figure.
            Defaults to None.
        title: str or None for a title naming the optimizer and dtype. Defaults to None.

    Returns:
        `matplotlib.figure.Figure`. The bottom axes hold lines labelled `"teacher-forced
        gradient"`, `"teacher-forced weights"` and `"free-running weights"`.

    Raises:
        TypeError: if `report` is not a `ComparisonReport` or `axes` is not a pair of Axes.
    """
    from kerasbp.comparison import ComparisonReport

    if not isinstance(report, ComparisonReport):
        raise TypeError(f"`report` must be a kerasbp.ComparisonReport. Received: report={report!r}")
    fig, ax_loss, ax_diff = _two_panels(axes)
    steps = np.arange(report.steps)
    ax_loss.plot(steps, _positive(report.keras_losses), linewidth=2.5, alpha=0.6, label="Keras")
    ax_loss.plot(steps, _positive(report.twin_losses), linestyle="--", color="black", linewidth=1, label="NumPy twin (free-running)")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("batch loss before the step")
    ax_loss.set_title(title if title is not None else f"{report.optimizer.split('(')[0]}, {report.loss}, {report.dtype}: {'ok' if report.ok else 'NOT OK'}")
    ax_loss.legend(fontsize="small")
    curves = [
        ("teacher-forced gradient", report.teacher["gradient_rel"], report.tolerances["gradient"], "-"),
        ("teacher-forced weights", report.teacher["weights_rel"], report.tolerances["weights"], "-"),
        ("free-running weights", report.free["weights_rel"], None, "--"),
    ]
    for label, values, tolerance, style in curves:
        worst = values.max(axis=1) if values.size else values.reshape(-1)
        (line,) = ax_diff.plot(steps, _positive(worst), linestyle=style, label=label)
        if tolerance is not None:
            ax_diff.axhline(tolerance, color=line.get_color(), linestyle=":", linewidth=1)
    ax_diff.set_yscale("log")
    ax_diff.set_xlabel("optimizer step")
    ax_diff.set_ylabel("relative difference")
    ax_diff.legend(fontsize="small")
    ax_diff.grid(True, which="major", alpha=0.3)
    return fig
