"""Figures over a plane: a classifier's decision boundary, and the loss surface of `y = w x + b`."""

import numpy as np
from matplotlib.colors import LogNorm

from kerasbp.checks import check_array, check_bool, check_positive_int, check_range, check_xy
from kerasbp.data import least_squares
from kerasbp.plotting._common import _legend, _new_axes


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
    colorbar = check_bool("colorbar", colorbar)
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
    _legend(ax, 2, framealpha=0.9)
    return fig


def _is_keras(model):
    """True for a Keras object (fed float32 grids)."""
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
        `kerasbp.data.least_squares(X, y)`.

    Raises:
        TypeError: for non-numeric arrays or `paths` that is not a dict.
        ValueError: for an `X` with more than one column, lengths that differ, a path that is
            not `(n_steps, 2)` or holds NaN/Inf, or a range whose low is not below its high.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 1, 20); fig = plot_loss_surface(x, 2 * x + 1, {"sgd": [[0.0, 0.0], [1.0, 1.5]]})
    """
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
    coef, intercept = least_squares(X, y)
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
    _legend(ax, len(checked) + 1)
    return fig
