"""Keras beside its NumPy twin: two loss curves and their difference, or a `compare` report."""

import numpy as np

from kerasbp.checks import check_bool
from kerasbp.comparison_report import ComparisonReport
from kerasbp.plotting._common import _legend, _positive, _runs, _two_panels


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
    log_scale = check_bool("log_scale", log_scale)
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
    _legend(ax_loss, 2 * len(keras_runs))
    ax_loss.grid(True, which="major", alpha=0.3)
    ax_diff.set_yscale("log")
    ax_diff.set_xlabel("epoch")
    ax_diff.set_ylabel("|Keras - NumPy|")
    ax_diff.set_title(f"largest difference {worst:.3g}" + (" (identical)" if worst == 0 else ""), fontsize="small")
    _legend(ax_diff, len(keras_runs))
    ax_diff.grid(True, which="major", alpha=0.3)
    return fig


def _optimizer_name(report):
    """The optimizer's class name for a title (`"Adam"`), without its settings."""
    name = vars(report).get("optimizer_name")  # set by reports that carry it
    return name if name else str(report.optimizer).split("(", 1)[0].strip()


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
    if not isinstance(report, ComparisonReport):
        raise TypeError(f"`report` must be a kerasbp.ComparisonReport. Received: report={report!r}")
    fig, ax_loss, ax_diff = _two_panels(axes)
    steps = np.arange(report.steps)
    ax_loss.plot(steps, _positive(report.keras_losses), linewidth=2.5, alpha=0.6, label="Keras")
    ax_loss.plot(steps, _positive(report.twin_losses), linestyle="--", color="black", linewidth=1, label="NumPy twin (free-running)")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("batch loss before the step")
    ax_loss.set_title(title if title is not None else f"{_optimizer_name(report)}, {report.loss}, {report.dtype}: {'ok' if report.ok else 'NOT OK'}")
    _legend(ax_loss, 2)
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
    _legend(ax_diff, 3)
    ax_diff.grid(True, which="major", alpha=0.3)
    return fig
