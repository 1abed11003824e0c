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

`LOSSES` is the registry of the supported losses by Keras name, read by `get_loss`, by the Keras
readers of `kerasbp.reference.from_keras` and by `kerasbp.models.keras_loss`.

Example:
    >>> import numpy as np
    >>> y, p = np.array([1.0, 0.0]), np.array([[0.5], [0.5]])
    >>> float(mse(y, p)), mse_gradient(y, p).ravel().tolist()
    (0.25, [-0.5, 0.5])
"""

from typing import NamedTuple

import numpy as np

from kerasbp.checks import check_array, check_bool, check_choice
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


def mse(y_true, y_pred, check_input=True):
    """Mean squared error `L = sum_i mean_j (y_true - y_pred)**2 / n`.

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`).
        y_pred: float array of shape `(n, d)`.
        check_input: bool, whether to check the arrays and align the targets (`align_targets`).
            Pass False only for arrays already aligned and of one dtype, as `NumpyMLP` does at
            every step. Defaults to `True`.

    Returns:
        0-d float array in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: see `align_targets`.
    """
    if check_bool("check_input", check_input):
        y_true, y_pred = align_targets(y_true, y_pred)
    return _reduce(np.square(y_true - y_pred))


def mse_gradient(y_true, y_pred, check_input=True):
    """Gradient of `mse` with respect to `y_pred`: `dL/dy_pred = 2 * (y_pred - y_true) / (n * d)`.

    Args:
        y_true: float array of shape `(n, d)` (or `(n,)` when `d == 1`).
        y_pred: float array of shape `(n, d)`.
        check_input: bool, whether to check the arrays and align the targets (`align_targets`).
            Pass False only for arrays already aligned and of one dtype, as `NumpyMLP` does at
            every step. Defaults to `True`.

    Returns:
        Float array of shape `(n, d)` in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: see `align_targets`.
    """
    if check_bool("check_input", check_input):
        y_true, y_pred = align_targets(y_true, y_pred)
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


def binary_crossentropy(y_true, y_pred, from_logits=False, check_input=True):
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
        check_input: bool, whether to check the arrays and align the targets (`align_targets`).
            Pass False only for arrays already aligned and of one dtype, as `NumpyMLP` does at
            every step. Defaults to `True`.

    Returns:
        0-d float array in `y_pred`'s dtype.

    Raises:
        TypeError: if `from_logits` or `check_input` is not a bool, or for non-numeric arrays.
        ValueError: see `align_targets`.

    Example:
        >>> round(float(binary_crossentropy([1.0], [[1 / (1 + np.exp(20.0))]])), 3)  # clipped
        16.118
        >>> float(binary_crossentropy([1.0], [[-20.0]], from_logits=True))
        20.000000002061153
    """
    from_logits = check_bool("from_logits", from_logits)
    if check_bool("check_input", check_input):
        y_true, y_pred = align_targets(y_true, y_pred)
    if from_logits:
        return _reduce(_bce_logits(y_true, y_pred))
    return _reduce(_bce_probabilities(y_true, y_pred))


def binary_crossentropy_gradient(y_true, y_pred, from_logits=False, check_input=True):
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
        check_input: bool, whether to check the arrays and align the targets (`align_targets`).
            Pass False only for arrays already aligned and of one dtype, as `NumpyMLP` does at
            every step. Defaults to `True`.

    Returns:
        Float array of shape `(n, d)` in `y_pred`'s dtype.

    Raises:
        TypeError, ValueError: as `binary_crossentropy`.
    """
    from_logits = check_bool("from_logits", from_logits)
    if check_bool("check_input", check_input):
        y_true, y_pred = align_targets(y_true, y_pred)
    scale = _scale(y_pred)
    if from_logits:
        return (sigmoid(y_pred) - y_true) * scale
    one = np.ones((), dtype=y_pred.dtype)
    low, high = y_pred.dtype.type(EPSILON), y_pred.dtype.type(1.0 - EPSILON)
    p = np.clip(y_pred, low, high)
    grad = ((one - y_true) / (one - p) - y_true / p) * scale
    # tf.clip_by_value passes the gradient on the bounds and blocks it strictly outside.
    return np.where((y_pred < low) | (y_pred > high), np.zeros((), dtype=y_pred.dtype), grad)


# loss objects: kerasbp/reference/loss_objects.py


# ---------------------------------------------------------------- registry


from kerasbp.reference.loss_objects import (  # noqa: E402  (the classes use the functions above)
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Huber,
    MeanAbsoluteError,
    MeanSquaredError,
    SparseCategoricalCrossentropy,
)


class LossSpec(NamedTuple):
    """A supported loss, by the names Keras knows it by (plain strings: no Keras needed).

    Attributes:
        name: str, Keras's name: the string `model.compile(loss=...)` takes and the function
            `keras.losses.<name>`.
        keras_class: str, the class `keras.losses.<keras_class>`.
        twin: the loss class of this module; `twin().get_config()` names the options of the
            Keras loss it reproduces (`from_logits`).
        aliases: tuple of str, other names Keras accepts for it.
    """

    name: str
    keras_class: str
    twin: type
    aliases: tuple


#: The supported losses by Keras name.
LOSSES = {
    "mean_squared_error": LossSpec("mean_squared_error", "MeanSquaredError", MeanSquaredError, ("mse",)),
    "mean_absolute_error": LossSpec("mean_absolute_error", "MeanAbsoluteError", MeanAbsoluteError, ("mae",)),
    "huber": LossSpec("huber", "Huber", Huber, ()),
    "binary_crossentropy": LossSpec("binary_crossentropy", "BinaryCrossentropy", BinaryCrossentropy, ("bce",)),
    "categorical_crossentropy": LossSpec(
        "categorical_crossentropy", "CategoricalCrossentropy", CategoricalCrossentropy, ()
    ),
    "sparse_categorical_crossentropy": LossSpec(
        "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", SparseCategoricalCrossentropy, ()
    ),
}

_BY_ANY_NAME = {alias: spec for spec in LOSSES.values() for alias in (spec.name, *spec.aliases)}

#: Every name a loss of `LOSSES` is known by (Keras's names, then their aliases).
ALL_LOSS_NAMES = tuple(_BY_ANY_NAME)

#: The names of the losses that fit a network of any output width, one target per output (not
#: the categorical cross-entropies, which need one output per class): what the single-output
#: jobs (`kerasbp.jobs`, the scripts) offer.
LOSS_NAMES = tuple(name for name, spec in _BY_ANY_NAME.items() if not spec.name.endswith("categorical_crossentropy"))


def loss_spec(name, argname="loss"):
    """The `LossSpec` of a Keras loss name or alias (any case).

    Args:
        name: str, a key of `LOSSES` or one of its aliases (`"mse"`, `"mae"`, `"bce"`, ...).
        argname: str, the argument's name used in error messages. Defaults to `"loss"`.

    Returns:
        `LossSpec`, an entry of `LOSSES`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: for another name, listing the names accepted.

    Example:
        >>> loss_spec("MSE").keras_class
        'MeanSquaredError'
    """
    return _BY_ANY_NAME[check_choice(argname, name, _BY_ANY_NAME)]
