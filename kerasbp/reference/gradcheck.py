"""`gradient_check`: the hand-written backward pass against central differences (pure NumPy).

The same check as scikit-learn's `neural_network/tests/test_mlp.py::test_gradient`: every
parameter is moved by `+eps` and `-eps` in turn, and `(L(w + eps) - L(w - eps)) / (2 * eps)` is
compared with the analytic gradient of `NumpyMLP.gradients`, all in float64.
"""

import numpy as np

from kerasbp.checks import check_positive_float
from kerasbp.reference.from_keras import get_loss
from kerasbp.reference.mlp import NumpyMLP


def gradient_check(mlp, X, y, loss="mse", eps=1e-6):
    """Compare `mlp`'s analytic gradients with central differences, in float64.

    The error reported for a parameter array is its largest relative error in this sense:

    ```python
    max(abs(numeric - analytic)) / max(max(abs(numeric)), max(abs(analytic)))
    ```

    i.e. the largest absolute difference measured against the array's own scale (0.0 when both
    are exactly zero). Dividing each entry by its own magnitude instead would report the rounding
    noise of entries that are zero up to rounding (e.g. a dead ReLU unit) as huge relative errors.
    With `eps=1e-6` in float64, a correct backward pass gives errors around 1e-9 or below;
    rounding alone limits the numeric gradient to about `1e-16 * L / eps`.

    Args:
        mlp: `NumpyMLP` (copied to float64; `mlp` itself is left untouched).
        X: float array of shape `(n, n_inputs)`.
        y: float array of shape `(n, n_outputs)`, or `(n,)` when `n_outputs == 1`.
        loss: as `NumpyMLP.gradients` (`"mse"`, `"binary_crossentropy"`, a loss object).
            Defaults to `"mse"`.
        eps: positive float, the step of the central difference. Defaults to `1e-6`.

    Returns:
        list of float, one per parameter array, in the order of `mlp.params`.

    Raises:
        TypeError: if `mlp` is not a `NumpyMLP`.
        ValueError: for bad arrays, loss or `eps`.

    Example:
        >>> mlp = NumpyMLP.from_sizes([2, 3, 1], ["tanh", "sigmoid"], seed=0)
        >>> errors = gradient_check(mlp, [[0.5, -1.0], [1.5, 0.2]], [1.0, 0.0], loss="binary_crossentropy")
        >>> max(errors) < 1e-6
        True
    """
    if not isinstance(mlp, NumpyMLP):
        raise TypeError(f"`mlp` must be a NumpyMLP. Received: mlp={mlp!r}")
    eps = check_positive_float("eps", eps)
    net = mlp.astype("float64")
    loss = get_loss(loss)
    analytic = net.backward(X, y, loss).grads
    params = net.params  # copies: each move is handed to the network with set_params
    errors = []
    for k, p in enumerate(params):
        numeric = np.empty_like(p)
        for index in np.ndindex(p.shape):
            original = p[index]
            p[index] = original + eps
            net.set_params(params)
            plus = net.evaluate(X, y, loss)
            p[index] = original - eps
            net.set_params(params)
            minus = net.evaluate(X, y, loss)
            p[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        net.set_params(params)
        scale = max(np.max(np.abs(numeric)), np.max(np.abs(analytic[k])))
        diff = np.max(np.abs(numeric - analytic[k]))
        errors.append(float(diff / scale) if scale > 0 else 0.0)
    return errors
