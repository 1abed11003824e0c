"""Losses and their gradients with respect to the prediction, as Keras computes them (pure NumPy).

Every loss here uses Keras's default reduction, `"sum_over_batch_size"`: the per-sample losses
(each the mean over the `d` outputs of a sample) are summed and divided by the number of samples
`n` of the batch in hand, so a last partial batch is averaged over its own size. The gradients are
those of that reduced scalar, hence the factor `1 / (n * d)` in each of them.

Shapes: predictions are `(n, d)`; targets must have the same shape, except that targets of shape
`(n,)` against predictions `(n, 1)` are reshaped to a column first. Nothing ever broadcasts
`(n,)` against `(n, 1)` into `(n, n)`: any other mismatch raises a `ValueError` naming both shapes.

Mirrors `keras/src/losses/losses.py` (`mean_squared_error`, `binary_crossentropy`),
`keras/src/losses/loss.py` (`reduce_values`) and `keras/src/backend/tensorflow/nn.py`
(`binary_crossentropy`, `_get_logits`).

Example:
    >>> import numpy as np
    >>> y, p = np.array([1.0, 0.0]), np.array([[0.5], [0.5]])
    >>> float(mse(y, p)), mse_gradient(y, p).ravel().tolist()
    (0.25, [-0.5, 0.5])
"""

import numpy as np

from kerasbp.checks import check_array, check_choice
from kerasbp.reference.activations import sigmoid

#: Keras's fuzz factor `keras.config.epsilon()`: probabilities are clipped to `[EPSILON, 1 - EPSILON]`.
EPSILON = 1e-7


def _float_dtype(a, default="float32"):
    """`a`'s dtype as NumPy sees it when it is a float dtype (a list of Python floats is float64)."""
    try:
        dtype = np.asarray(a).dtype
    except ValueError:  # ragged: let check_array report it
        return default
    return dtype.name if dtype.kind == "f" else default


def align_targets(y_true, y_pred, dtype=None):
    """Check a pair (targets, predictions) and give the targets the predictions' shape.

    Args:
        y_true: array-like of shape `(n, d)`, or `(n,)` when `d == 1`.
        y_pred: array-like of shape `(n, d)`; a 1-D array is taken as one column `(n, 1)`.
        dtype: float dtype of the results, or None for `y_pred`'s dtype when it is a float array
            (float64 for a list of Python floats; float32 for integers or booleans). Defaults to
            None.

    Returns:
        `(y_true, y_pred)`: arrays of `dtype`, both of shape `(n, d)`.

    Raises:
        TypeError: for non-numeric contents.
        ValueError: for empty or non-finite arrays, or shapes that disagree (the message names
            both shapes); `(n,)` against `(n, 1)` is reshaped, never broadcast to `(n, n)`.
    """
    if dtype is None:
        dtype = _float_dtype(y_pred)
    y_pred = check_array("y_pred", y_pred, dtype=dtype)
    true_shape = np.shape(y_true)
    y_true = check_array("y_true", y_true, dtype=dtype)  # (n,) becomes (n, 1)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape (targets of shape (n,) are accepted "
            f"for predictions of shape (n, 1)). Received: y_true of shape {true_shape}, "
            f"y_pred of shape {y_pred.shape}"
        )
    return y_true, y_pred


def _scale(y_pred):
    """`(1 / n) / d` in the dtype of `y_pred` of shape `(n, d)`: the gradient of the mean of means."""
    n, d = y_pred.shape
    one = np.ones((), dtype=y_pred.dtype)
    return one / y_pred.dtype.type(n) / y_pred.dtype.type(d)


def _reduce(per_element):
    """Keras's `mean(..., axis=-1)` then `"sum_over_batch_size"`: `sum(mean(x, -1)) / n`."""
    per_sample = np.mean(per_element, axis=-1)  # (n,)
    return np.sum(per_sample) / per_element.dtype.type(per_sample.shape[0])


# ---------------------------------------------------------------- mean squared error


def mse(y_true, y_pred):
    """Mean squared error `L = sum_i mean_j (y_true - y_pred)**2 / n`.

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`).
        y_pred: float array of shape `(n, d)`.

    Returns:
        0-d float array in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: see `align_targets`.
    """
    y_true, y_pred = align_targets(y_true, y_pred)
    return _mse(y_true, y_pred)


def _mse(y_true, y_pred):
    return _reduce(np.square(y_true - y_pred))


def mse_gradient(y_true, y_pred):
    """Gradient of `mse` with respect to `y_pred`: `dL/dy_pred = 2 * (y_pred - y_true) / (n * d)`.

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`).
        y_pred: float array of shape `(n, d)`.

    Returns:
        Float array of shape `(n, d)` in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: see `align_targets`.
    """
    y_true, y_pred = align_targets(y_true, y_pred)
    return _mse_gradient(y_true, y_pred)


def _mse_gradient(y_true, y_pred):
    # TensorFlow's autodiff of mean(square(y_true - y_pred)) forms ((1/n)/d) * (2 * diff).
    return _scale(y_pred) * (2 * (y_pred - y_true))


# ---------------------------------------------------------------- binary cross-entropy


def _bce_probabilities(y_true, p):
    one = np.ones((), dtype=p.dtype)
    p = np.clip(p, p.dtype.type(EPSILON), p.dtype.type(1.0 - EPSILON))
    bce = y_true * np.log(p)
    bce += (one - y_true) * np.log(one - p)
    return -bce


def _bce_logits(y_true, z):
    # tf.nn.sigmoid_cross_entropy_with_logits: max(z, 0) - z * y + log1p(exp(-|z|)), stable for any z.
    zero = np.zeros((), dtype=z.dtype)
    return (np.where(z >= 0, z, zero) - z * y_true) + np.log1p(np.exp(np.where(z >= 0, -z, z)))


def binary_crossentropy(y_true, y_pred, from_logits=False):
    """Binary cross-entropy, mean over the outputs of a sample, then over the batch.

    From probabilities (`from_logits=False`), exactly as Keras's TensorFlow backend when the
    prediction does not come straight out of a sigmoid:

    ```python
    p = clip(y_pred, 1e-7, 1 - 1e-7)
    loss = -(y_true * log(p) + (1 - y_true) * log(1 - p))
    ```

    From logits (`from_logits=True`, `y_pred` is the pre-activation `z`), as
    `tf.nn.sigmoid_cross_entropy_with_logits`, with no clipping:

    ```python
    loss = max(z, 0) - z * y_true + log1p(exp(-abs(z)))
    ```

    Note: a Keras model whose output layer has a sigmoid activation takes the logits formula even
    with `from_logits=False` (the sigmoid output carries its logits in `_keras_logits`).
    `NumpyMLP` reproduces that; this function, given probabilities only, cannot.

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`), targets in `[0, 1]`.
        y_pred: float array of shape `(n, d)`: probabilities, or logits when `from_logits`.
        from_logits: bool. Defaults to `False`.

    Returns:
        0-d float array in `y_pred`'s dtype.

    Raises:
        TypeError: if `from_logits` is not a bool, or for non-numeric arrays.
        ValueError: see `align_targets`.

    Example:
        >>> round(float(binary_crossentropy([1.0], [[1 / (1 + np.exp(20.0))]])), 3)  # clipped
        16.118
        >>> float(binary_crossentropy([1.0], [[-20.0]], from_logits=True))
        20.000000002061153
    """
    from_logits = _check_bool("from_logits", from_logits)
    y_true, y_pred = align_targets(y_true, y_pred)
    return _bce(y_true, y_pred, from_logits)


def _bce(y_true, y_pred, from_logits):
    if from_logits:
        return _reduce(_bce_logits(y_true, y_pred))
    return _reduce(_bce_probabilities(y_true, y_pred))


def binary_crossentropy_gradient(y_true, y_pred, from_logits=False):
    """Gradient of `binary_crossentropy` with respect to `y_pred` (the logits when `from_logits`).

    ```python
    # from logits z: the sigmoid and the cross-entropy collapse into one term
    dL/dz = (sigmoid(z) - y_true) / (n * d)
    # from probabilities p: zero where the clip is active (p < 1e-7 or p > 1 - 1e-7)
    dL/dp = ((1 - y_true) / (1 - p) - y_true / p) / (n * d)
    ```

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`).
        y_pred: float array of shape `(n, d)`: probabilities, or logits when `from_logits`.
        from_logits: bool. Defaults to `False`.

    Returns:
        Float array of shape `(n, d)` in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: as `binary_crossentropy`.
    """
    from_logits = _check_bool("from_logits", from_logits)
    y_true, y_pred = align_targets(y_true, y_pred)
    return _bce_gradient(y_true, y_pred, from_logits)


def _bce_gradient(y_true, y_pred, from_logits):
    scale = _scale(y_pred)
    if from_logits:
        return (sigmoid(y_pred) - y_true) * scale
    one = np.ones((), dtype=y_pred.dtype)
    low, high = y_pred.dtype.type(EPSILON), y_pred.dtype.type(1.0 - EPSILON)
    p = np.clip(y_pred, low, high)
    grad = ((one - y_true) / (one - p) - y_true / p) * scale
    # tf.clip_by_value passes the gradient on the bounds and blocks it strictly outside.
    return np.where((y_pred < low) | (y_pred > high), np.zeros((), dtype=y_pred.dtype), grad)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


# ---------------------------------------------------------------- loss objects


class MeanSquaredError:
    """Mean squared error as an object: `loss(y_true, y_pred)` and `loss.gradient(y_true, y_pred)`.

    Mirrors `keras.losses.MeanSquaredError()` with its default reduction. See `mse`.
    """

    name = "mean_squared_error"
    from_logits = False

    def __call__(self, y_true, y_pred):
        return mse(y_true, y_pred)

    def gradient(self, y_true, y_pred):
        """`dL/dy_pred`, see `mse_gradient`."""
        return mse_gradient(y_true, y_pred)

    # Unchecked fast paths for arrays already aligned by the caller.
    def _value(self, y_true, y_pred):
        return _mse(y_true, y_pred)

    def _gradient(self, y_true, y_pred):
        return _mse_gradient(y_true, y_pred)

    def __repr__(self):
        return "MeanSquaredError()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


class BinaryCrossentropy:
    """Binary cross-entropy as an object. See `binary_crossentropy`.

    Mirrors `keras.losses.BinaryCrossentropy(from_logits=...)` with its default reduction, no
    label smoothing and `axis=-1`.

    Args:
        from_logits: bool, whether predictions are logits. Defaults to `False`.

    Raises:
        TypeError: if `from_logits` is not a bool.
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = _check_bool("from_logits", from_logits)

    def __call__(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    def gradient(self, y_true, y_pred):
        """`dL/dy_pred` (logits when `from_logits`), see `binary_crossentropy_gradient`."""
        return binary_crossentropy_gradient(y_true, y_pred, from_logits=self.from_logits)

    # Unchecked fast paths for arrays already aligned by the caller.
    def _value(self, y_true, y_pred, from_logits=None):
        return _bce(y_true, y_pred, self.from_logits if from_logits is None else from_logits)

    def _gradient(self, y_true, y_pred, from_logits=None):
        return _bce_gradient(y_true, y_pred, self.from_logits if from_logits is None else from_logits)

    def __repr__(self):
        return f"BinaryCrossentropy(from_logits={self.from_logits})"

    def __eq__(self, other):
        return type(other) is type(self) and other.from_logits == self.from_logits

    def __hash__(self):
        return hash((type(self), self.from_logits))


#: Loss names accepted by `get_loss` (Keras's names and aliases).
LOSS_NAMES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
}


def get_loss(loss):
    """Return a loss object for `loss`.

    Args:
        loss: a name (`"mse"`, `"mean_squared_error"`, `"binary_crossentropy"`, `"bce"`; any
            case), a `MeanSquaredError` / `BinaryCrossentropy` of this module, or a Keras loss
            (see `loss_from_keras`).

    Returns:
        `MeanSquaredError` or `BinaryCrossentropy`.

    Raises:
        TypeError: for anything else that is not a string.
        ValueError: for an unknown name or an unsupported Keras loss.
    """
    if isinstance(loss, (MeanSquaredError, BinaryCrossentropy)):
        return loss
    if isinstance(loss, str):
        return LOSS_NAMES[check_choice("loss", loss, LOSS_NAMES)]()
    if type(loss).__module__.startswith("keras") or getattr(loss, "__module__", "").startswith("keras"):
        return loss_from_keras(loss)
    raise TypeError(
        f"`loss` must be one of {list(LOSS_NAMES)}, a kerasbp.reference loss or a Keras loss. Received: loss={loss!r}"
    )


def loss_from_keras(loss):
    """The NumPy twin of a Keras loss (as passed to `model.compile(loss=...)`).

    Imports Keras when called.

    Args:
        loss: a loss name, `keras.losses.MeanSquaredError()`, `keras.losses.BinaryCrossentropy()`,
            or the functions `keras.losses.mean_squared_error` / `binary_crossentropy`.

    Returns:
        `MeanSquaredError` or `BinaryCrossentropy`.

    Raises:
        ValueError: for another loss class, a reduction other than `"sum_over_batch_size"`,
            `label_smoothing != 0`, or `axis != -1`, naming the option.
    """
    import keras

    if isinstance(loss, str):
        return get_loss(loss)
    if loss is keras.losses.mean_squared_error:
        return MeanSquaredError()
    if loss is keras.losses.binary_crossentropy:
        return BinaryCrossentropy()
    if type(loss) not in (keras.losses.MeanSquaredError, keras.losses.BinaryCrossentropy):
        raise ValueError(
            "kerasbp.reference supports the Keras losses MeanSquaredError and BinaryCrossentropy. "
            f"Received: loss={loss!r}"
        )
    config = loss.get_config()
    if config.get("reduction") != "sum_over_batch_size":
        raise ValueError(
            "kerasbp.reference supports reduction='sum_over_batch_size' only. "
            f"Received: reduction={config.get('reduction')!r}"
        )
    if isinstance(loss, keras.losses.MeanSquaredError):
        return MeanSquaredError()
    if config.get("label_smoothing", 0.0):
        raise ValueError(
            f"kerasbp.reference does not support label smoothing. Received: label_smoothing={config['label_smoothing']!r}"
        )
    if config.get("axis", -1) != -1:
        raise ValueError(f"kerasbp.reference supports axis=-1 only. Received: axis={config['axis']!r}")
    return BinaryCrossentropy(from_logits=bool(config.get("from_logits", False)))
