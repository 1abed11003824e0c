"""Matplotlib figures that make backpropagation visible.

Every function takes data (arrays, a Keras `History`, a `GradientLog`, a model) and returns the
`matplotlib.figure.Figure` it drew on. Functions that draw one panel accept `ax=`, an existing
`matplotlib.axes.Axes` to draw into (its figure is returned); without it they make a new figure
with `matplotlib.pyplot.subplots`. Nothing here calls `plt.show()`: in a notebook the figure
appears at the end of the cell, in a script call `fig.savefig(path)` and `plt.close(fig)`.

Every name below is importable from `kerasbp.plotting`; the modules group them by subject.

`kerasbp.plotting.curves`, training curves:

- `plot_loss_curves`: the loss per epoch of one or several runs (e.g. one per optimizer).
- `plot_gradient_norms`: each variable's gradient norm per optimizer step, from a `GradientLog`,
  on a log scale, so vanishing and exploding gradients show at a glance.
- `plot_gradient_profile`: a typical gradient norm per layer depth, for one or several logs.

`kerasbp.plotting.noise`, gradient noise:

- `plot_gradient_noise`: the per-example statistics of a `GradientLogger(per_example=True)` per
  step (norm, inner-product and orthogonality tests, mean GSNR, B_simple) and the noise scale.

`kerasbp.plotting.surfaces`, figures over a plane:

- `plot_decision_boundary`: what a 2-input classifier predicts over the plane, with the points.
- `plot_loss_surface`: the MSE of `y = w x + b` over `(w, b)`, with optimizer paths and the
  least-squares optimum; `weights_to_path` turns `GradientLog.weights()` into such a path.

`kerasbp.plotting.curvature`, the Hessian over training:

- `plot_curvature`: a `HessianProbe`'s largest eigenvalue per probed step against the stability
  threshold `2 / learning_rate`.

`kerasbp.plotting.twin`, Keras beside its NumPy twin:

- `plot_twin_comparison`: Keras's loss curve beside its NumPy twin's, and their difference.
- `plot_comparison`: a `kerasbp.compare` report, its loss curves and per-step differences.

Example:
    >>> import numpy as np
    >>> fig = plot_loss_curves({"sgd": np.linspace(1, 0.1, 50), "adam": np.geomspace(1, 1e-3, 50)})
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['sgd', 'adam']
"""

from kerasbp.plotting.curvature import plot_curvature
from kerasbp.plotting.curves import plot_gradient_norms, plot_gradient_profile, plot_loss_curves
from kerasbp.plotting.noise import plot_gradient_noise
from kerasbp.plotting.surfaces import plot_decision_boundary, plot_loss_surface, weights_to_path
from kerasbp.plotting.twin import plot_comparison, plot_twin_comparison

__all__ = [
    "plot_comparison",
    "plot_curvature",
    "plot_decision_boundary",
    "plot_gradient_noise",
    "plot_gradient_norms",
    "plot_gradient_profile",
    "plot_loss_curves",
    "plot_loss_surface",
    "plot_twin_comparison",
    "weights_to_path",
]
