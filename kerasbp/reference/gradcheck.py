"""`gradient_check`: the hand-written backward pass against central differences (pure NumPy).

The same check as scikit-learn's `neural_network/tests/test_mlp.py::test_gradient`: every
parameter is moved by `+eps` and `-eps` in turn, and `(L(w + eps) - L(w - eps)) / (2 * eps)` is
compared with the analytic gradient of `NumpyMLP.gradients`, all in float64.

Kinks: where the finite-difference window `[w - eps, w + eps]` crosses a point where the loss is
not differentiable, the central difference measures the average of two one-sided slopes, not
the derivative backprop takes (TensorFlow's convention: relu'(0) = 0). A relu net whose
pre-activation is exactly 0 (the `[0, 0]` row of XOR with zero biases) reports a relative error
of 1.0 there for a correct gradient. `gradient_check` detects these entries (a pre-activation
of relu, leaky_relu, elu or selu changing side of 0 across the window, a prediction crossing
cross-entropy's probability clip, an mae or huber error changing side, an L1-regularized weight
crossing 0), leaves them out of the error, and counts them in `result.kinks`.
"""

import numpy as np

from kerasbp.checks import check_positive_float
from kerasbp.reference.from_keras import get_loss
from kerasbp.reference.layers import kink_signature
from kerasbp.reference.mlp import NumpyMLP


class GradientCheck(list):
    """The relative error per parameter array (a list of float, as before), with kinks.

    Attributes:
        kinks: int, the number of parameter entries whose finite-difference window crosses a
            kink; they are left out of the errors.
        kink_masks: list of bool arrays shaped like each parameter, True at those entries.
    """

    def __init__(self, errors, kink_masks):
        super().__init__(errors)
        self.kink_masks = kink_masks
        self.kinks = int(sum(int(m.sum()) for m in kink_masks))

    def __repr__(self):
        return f"GradientCheck(errors={list(self)!r}, kinks={self.kinks})"


def gradient_check(mlp, X, y, loss="mse", eps=1e-6, sample_weight=None, dropout_masks=None):
    """Compare `mlp`'s analytic gradients with central differences, in float64.

    The error reported for a parameter array is its largest relative error in this sense:

    ```python
    max(abs(numeric - analytic)) / max(max(abs(numeric)), max(abs(analytic)))
    ```

    over the entries whose window crosses no kink (see the module docstring), i.e. the largest
    absolute difference measured against the array's own scale (0.0 when both are exactly zero).
    With `eps=1e-6` in float64, a correct backward pass gives errors around 1e-9 or below.

    Args:
        mlp: `NumpyMLP` (copied to float64; `mlp` itself is left untouched).
        X: float array of shape `(n, n_inputs)`.
        y: targets, as `NumpyMLP.gradients`.
        loss: as `NumpyMLP.gradients`. Defaults to `"mse"`.
        eps: positive float, the step of the central difference. Defaults to `1e-6`.
        sample_weight: None or float array `(n,)`. Defaults to None.
        dropout_masks: None or one mask per Dropout layer. Defaults to None.

    Returns:
        `GradientCheck`: a list of float, one per parameter array in the order of `mlp.params`,
        with `.kinks` (the count of entries left out) and `.kink_masks`.

    Raises:
        TypeError: if `mlp` is not a `NumpyMLP`.
        ValueError: for bad arrays, loss or `eps`.

    Example:
        >>> mlp = NumpyMLP.from_sizes([2, 3, 1], ["tanh", "sigmoid"], seed=0)
        >>> errors = gradient_check(mlp, [[0.5, -1.0], [1.5, 0.2]], [1.0, 0.0], loss="binary_crossentropy")
        >>> max(errors) < 1e-6, errors.kinks
        (True, 0)
    """
    if not isinstance(mlp, NumpyMLP):
        raise TypeError(f"`mlp` must be a NumpyMLP. Received: mlp={mlp!r}")
    eps = check_positive_float("eps", eps)
    net = mlp.astype("float64")
    loss = get_loss(loss)
    analytic = net.backward(X, y, loss, sample_weight, dropout_masks).grads
    params = net.params  # copies: each move is handed to the network with set_params

    def evaluate():
        value = net.backward(X, y, loss, sample_weight, dropout_masks).loss
        return value, kink_signature(net, y, loss)

    _, at_w = evaluate()
    errors, masks = [], []
    for k, p in enumerate(params):
        numeric = np.empty_like(p)
        kinked = np.zeros(p.shape, dtype=bool)
        for index in np.ndindex(p.shape):
            original = p[index]
            p[index] = original + eps
            net.set_params(params)
            plus, sig_plus = evaluate()
            p[index] = original - eps
            net.set_params(params)
            minus, sig_minus = evaluate()
            p[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
            kinked[index] = not (_same(sig_plus, sig_minus) and _same(sig_plus, at_w))
        net.set_params(params)
        ok = ~kinked
        scale = max(np.max(np.abs(numeric[ok]), initial=0.0), np.max(np.abs(analytic[k][ok]), initial=0.0))
        diff = np.max(np.abs(numeric[ok] - analytic[k][ok]), initial=0.0)
        errors.append(float(diff / scale) if scale > 0 else 0.0)
        masks.append(kinked)
    return GradientCheck(errors, masks)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
