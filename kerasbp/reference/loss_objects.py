"""The twin's loss objects: value and gradient, with `sample_weight`, as Keras computes them.

Every loss is Keras's per-sample loss followed by its default reduction
`"sum_over_batch_size"` with sample weights `w` (all ones when None):

```python
l_i = per_sample(y_true_i, y_pred_i)     # (n,): a mean over the d outputs (mse, mae, huber, bce)
                                         #       or a sum over the classes (categorical)
L = sum_i(w_i * l_i) / n                 # n: the samples of the batch in hand, not sum(w)
dL/dy_pred_i = w_i / n * dl_i/dy_pred_i  # (n, d)
```

`class_weight` is turned into sample weights as `fit` does it
(`class_weight_to_sample_weight`). The cross-entropies also take the logits path: with a
sigmoid or softmax output layer, Keras's TensorFlow backend computes any cross-entropy from the
layer's logits (`_keras_logits`; `keras/src/backend/tensorflow/nn.py`, `_get_logits`) without
clipping; `with_logits()` gives that loss, and `NumpyMLP` uses it on the TensorFlow backend. JAX
and torch take the clipped-probability path.

Mirrors `keras/src/losses/losses.py` and `keras/src/losses/loss.py` (`reduce_weighted_values`).

Example:
    >>> import numpy as np
    >>> cce = CategoricalCrossentropy(from_logits=True)
    >>> z, y = np.array([[2.0, 1.0, 0.1]]), np.array([[1.0, 0.0, 0.0]])
    >>> np.round(cce.gradient(y, z), 4).tolist()  # softmax(z) - y
    [[-0.341, 0.2424, 0.0986]]
"""

import numpy as np

from kerasbp.checks import check_bool, check_positive_float
from kerasbp.reference.activations import sigmoid, softmax
from kerasbp.reference.configured import Configured
from kerasbp.reference.losses import EPSILON, _bce_logits, _bce_probabilities, _float_dtype, align_targets


def check_sample_weight(sample_weight, n, dtype, argname="sample_weight"):
    """`sample_weight` as a float array of shape `(n,)` in `dtype`, or None.

    Args:
        sample_weight: None, or an array-like of shape `(n,)` or `(n, 1)` of finite numbers >= 0.
        n: int, the number of samples.
        dtype: float dtype of the result.
        argname: str, used in messages. Defaults to `"sample_weight"`.

    Returns:
        None or float array of shape `(n,)`.

    Raises:
        ValueError: for another shape, non-finite or negative weights.
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"`{argname}` must be numeric. Received dtype {w.dtype}")
    if w.shape not in ((n,), (n, 1)):
        raise ValueError(f"`{argname}` must have shape ({n},) (one weight per sample). Received shape {w.shape}")
    w = w.reshape(n).astype(dtype)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"`{argname}` must hold finite numbers >= 0. Received: {w!r}")
    return w


def class_weight_to_sample_weight(y, class_weight, dtype="float32"):
    """Sample weights from a `class_weight` dict, as `fit` makes them.

    The class of a sample is its label (`y` of shape `(n,)` or `(n, 1)`, rounded), or the argmax
    of a one-hot row (`y` of shape `(n, k)`, k > 1); classes missing from the dict weigh 1.
    Mirrors `keras/src/trainers/data_adapters/data_adapter_utils.py`
    (`class_weight_to_sample_weights`).

    Args:
        y: array-like of shape `(n,)`, `(n, 1)` or `(n, k)`.
        class_weight: dict `{class index: weight}`.
        dtype: float dtype of the result (Keras uses `floatx`). Defaults to `"float32"`.

    Returns:
        Float array of shape `(n,)`.

    Raises:
        TypeError: if `class_weight` is not a dict.

    Example:
        >>> class_weight_to_sample_weight([0, 1, 1], {1: 3.0}).tolist()
        [1.0, 3.0, 3.0]
    """
    if not isinstance(class_weight, dict):
        raise TypeError(f"`class_weight` must be a dict {{class: weight}}. Received: class_weight={class_weight!r}")
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else np.squeeze(y, axis=-1)
    labels = np.round(y).astype("int32")
    return np.array([class_weight.get(int(c), 1.0) for c in labels], dtype=dtype)


class Loss(Configured):
    """Base of the twin's losses: `loss(y_true, y_pred, sample_weight)` and `loss.gradient(...)`.

    Subclasses define `per_sample(y, p)` (shape `(n,)`) and `per_sample_gradient(y, p)` (shape
    `(n, d)`, the gradient of the summed per-element terms), and `mean_over_outputs` (whether
    the per-sample loss is a mean over the `d` outputs).

    Attributes:
        name: str, the Keras name (its key in `LOSSES`).
        from_logits: bool.
        crossentropy: bool, whether Keras takes the logits of a sigmoid or softmax output.
    """

    name = None
    from_logits = False
    crossentropy = False
    mean_over_outputs = True

    def prepare(self, y_true, y_pred):
        """Check and align `(y_true, y_pred)`: both `(n, d)` in `y_pred`'s float dtype."""
        return align_targets(y_true, y_pred)

    def _weights(self, sample_weight, y_pred):
        return check_sample_weight(sample_weight, y_pred.shape[0], y_pred.dtype)

    def __call__(self, y_true, y_pred, sample_weight=None, check_input=True):
        """The reduced loss, a 0-d float array in `y_pred`'s dtype.

        Args:
            y_true: targets, shape `(n, d)` (`(n,)` when `d == 1`; labels `(n,)` for the sparse loss).
            y_pred: float array of shape `(n, d)` (logits when `from_logits`).
            sample_weight: None or float array of shape `(n,)`. Defaults to None.
            check_input: bool, whether to check and align the arrays. Defaults to `True`.
        """
        if check_bool("check_input", check_input):
            y_true, y_pred = self.prepare(y_true, y_pred)
        values = self.per_sample(y_true, y_pred)  # (n,)
        w = self._weights(sample_weight, y_pred)
        if w is not None:
            values = values * w
        return np.sum(values) / y_pred.dtype.type(y_pred.shape[0])

    def gradient(self, y_true, y_pred, sample_weight=None, check_input=True):
        """`dL/dy_pred` (the logits when `from_logits`), float array of shape `(n, d)`."""
        if check_bool("check_input", check_input):
            y_true, y_pred = self.prepare(y_true, y_pred)
        n, d = y_pred.shape
        t = y_pred.dtype.type
        scale = t(1) / t(n) / t(d) if self.mean_over_outputs else t(1) / t(n)
        w = self._weights(sample_weight, y_pred)
        factor = scale if w is None else (w * scale)[:, None]  # (n, 1)
        return factor * self.per_sample_gradient(y_true, y_pred)

    def kinks(self, y_true, y_pred, width):
        """A bool array `(n, d)`: predictions within `width` of a point where the loss is not
        differentiable (none by default)."""
        return np.zeros(np.shape(y_pred), dtype=bool)

    def with_logits(self):
        """The same loss computed from logits (Keras's path for a sigmoid or softmax output)."""
        raise ValueError(f"{type(self).__name__} has no logits form")

    def get_config(self):
        """The constructor's keyword arguments as a dict, as Keras's `Loss.get_config`."""
        return {"from_logits": self.from_logits} if self.crossentropy else {}


class MeanSquaredError(Loss):
    """Mean squared error: `l_i = mean_j (y_pred - y_true)**2`, `dl/dy_pred = 2 * (y_pred - y_true) / d`."""

    name = "mean_squared_error"

    def per_sample(self, y, p):
        return np.mean(np.square(y - p), axis=-1)

    def per_sample_gradient(self, y, p):
        return 2 * (p - y)


class MeanAbsoluteError(Loss):
    """Mean absolute error: `l_i = mean_j |y_pred - y_true|`, `dl/dy_pred = sign(y_pred - y_true) / d`.

    At `y_pred == y_true` the gradient is 0 (TensorFlow's `sign(0)`): a kink.
    """

    name = "mean_absolute_error"

    def per_sample(self, y, p):
        return np.mean(np.abs(y - p), axis=-1)

    def per_sample_gradient(self, y, p):
        return np.sign(p - y)

    def kinks(self, y_true, y_pred, width):
        return np.abs(y_pred - y_true) <= width


class Huber(Loss):
    """Huber loss with threshold `delta`, per element `e = y_pred - y_true`:

    ```python
    0.5 * e**2                      if |e| <= delta   (gradient e)
    delta * |e| - 0.5 * delta**2    otherwise         (gradient delta * sign(e))
    ```

    Args:
        delta: positive float. Defaults to `1.0`.
    """

    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = check_positive_float("delta", delta)

    def per_sample(self, y, p):
        t = p.dtype.type
        e = p - y
        a = np.abs(e)
        delta, half = t(self.delta), t(0.5)
        return np.mean(np.where(a <= delta, half * np.square(e), delta * a - half * np.square(delta)), axis=-1)

    def per_sample_gradient(self, y, p):
        e = p - y
        delta = p.dtype.type(self.delta)
        return np.where(np.abs(e) <= delta, e, delta * np.sign(e))

    def get_config(self):
        return {"delta": self.delta}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, mean over the outputs (see `binary_crossentropy` for the formulas).

    Args:
        from_logits: bool, whether predictions are logits. Defaults to `False`.
    """

    name = "binary_crossentropy"
    crossentropy = True

    def __init__(self, from_logits=False):
        self.from_logits = check_bool("from_logits", from_logits)

    def per_sample(self, y, p):
        return np.mean(_bce_logits(y, p) if self.from_logits else _bce_probabilities(y, p), axis=-1)

    def per_sample_gradient(self, y, p):
        if self.from_logits:
            return sigmoid(p) - y  # sigmoid and cross-entropy collapse into one term
        one = np.ones((), dtype=p.dtype)
        low, high = p.dtype.type(EPSILON), p.dtype.type(1.0 - EPSILON)
        q = np.clip(p, low, high)
        grad = (one - y) / (one - q) - y / q
        # tf.clip_by_value passes the gradient on the bounds and blocks it strictly outside.
        return np.where((p < low) | (p > high), np.zeros((), dtype=p.dtype), grad)

    def kinks(self, y_true, y_pred, width):
        if self.from_logits:
            return super().kinks(y_true, y_pred, width)
        return (np.abs(y_pred - EPSILON) <= width) | (np.abs(y_pred - (1 - EPSILON)) <= width)

    def with_logits(self):
        return type(self)(from_logits=True)


class CategoricalCrossentropy(Loss):
    """Categorical cross-entropy, a sum over the `k` classes, one-hot (or soft) targets `(n, k)`.

    ```python
    # from logits z (tf.nn.softmax_cross_entropy_with_logits):
    l = -sum(y * log_softmax(z));  dl/dz = softmax(z) * sum(y) - y   # = p - y for one-hot y
    # from probabilities o: p = o / sum(o); q = clip(p, 1e-7, 1 - 1e-7); l = -sum(y * log(q))
    ```

    Args:
        from_logits: bool. Defaults to `False`.
    """

    name = "categorical_crossentropy"
    crossentropy = True
    mean_over_outputs = False

    def __init__(self, from_logits=False):
        self.from_logits = check_bool("from_logits", from_logits)

    def _normalized(self, p):
        s = np.sum(p, axis=-1, keepdims=True)  # (n, 1)
        return p / s, s

    def per_sample(self, y, p):
        if self.from_logits:
            shifted = p - np.max(p, axis=-1, keepdims=True)
            log_softmax = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
            return -np.sum(y * log_softmax, axis=-1)
        q, _ = self._normalized(p)
        q = np.clip(q, q.dtype.type(EPSILON), q.dtype.type(1 - EPSILON))
        return -np.sum(y * np.log(q), axis=-1)

    def per_sample_gradient(self, y, p):
        if self.from_logits:
            return softmax(p) * np.sum(y, axis=-1, keepdims=True) - y
        q, s = self._normalized(p)
        low, high = q.dtype.type(EPSILON), q.dtype.type(1 - EPSILON)
        g = np.where((q < low) | (q > high), np.zeros((), q.dtype), -y / np.clip(q, low, high))  # dl/dq
        return (g - np.sum(g * q, axis=-1, keepdims=True)) / s  # through q = o / sum(o)

    def kinks(self, y_true, y_pred, width):
        if self.from_logits:
            return super().kinks(y_true, y_pred, width)
        q, _ = self._normalized(y_pred)
        return (np.abs(q - EPSILON) <= width) | (np.abs(q - (1 - EPSILON)) <= width)

    def with_logits(self):
        return type(self)(from_logits=True)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer labels `(n,)` (or `(n, 1)`) in `[0, k)`.

    From logits it is `CategoricalCrossentropy` on one-hot targets. From probabilities Keras
    clips first and then normalizes inside `sparse_softmax_cross_entropy_with_logits(log(q))`:
    `l = -log(q_label) + log(sum(q))` with `q = clip(o, 1e-7, 1 - 1e-7)`.

    Args:
        from_logits: bool. Defaults to `False`.
    """

    name = "sparse_categorical_crossentropy"

    def prepare(self, y_true, y_pred):
        dtype = _float_dtype(y_pred)
        y_pred = np.asarray(y_pred, dtype=dtype)
        if y_pred.ndim != 2:
            raise ValueError(f"`y_pred` must be 2-D of shape (n, n_classes). Received shape {y_pred.shape}")
        labels = np.asarray(y_true)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.shape != (y_pred.shape[0],):
            raise ValueError(
                f"`y_true` must hold one integer label per sample, shape ({y_pred.shape[0]},). Received shape {np.shape(y_true)}"
            )
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError("`y_true` must hold integer class labels. Received non-integer values")
        labels = labels.astype(np.int64)
        k = y_pred.shape[1]
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"`y_true` labels must be in [0, {k}). Received labels from {labels.min()} to {labels.max()}")
        return np.eye(k, dtype=dtype)[labels], y_pred  # one-hot (n, k)

    def per_sample(self, y, p):
        if self.from_logits:
            return super().per_sample(y, p)
        q = np.clip(p, p.dtype.type(EPSILON), p.dtype.type(1 - EPSILON))
        return -np.sum(y * np.log(q), axis=-1) + np.log(np.sum(q, axis=-1))

    def per_sample_gradient(self, y, p):
        if self.from_logits:
            return super().per_sample_gradient(y, p)
        low, high = p.dtype.type(EPSILON), p.dtype.type(1 - EPSILON)
        q = np.clip(p, low, high)
        g = -y / q + 1 / np.sum(q, axis=-1, keepdims=True)
        return np.where((p < low) | (p > high), np.zeros((), p.dtype), g)

    def kinks(self, y_true, y_pred, width):
        if self.from_logits:
            return np.zeros(np.shape(y_pred), dtype=bool)
        return (np.abs(y_pred - EPSILON) <= width) | (np.abs(y_pred - (1 - EPSILON)) <= width)
