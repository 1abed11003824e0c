"""Input checks shared by every public entry point.

Each check validates at the boundary and raises a `ValueError` or `TypeError` whose message names
the argument, what was expected and what was received, in the style of Keras's
`keras/src/layers/core/dense.py` and scikit-learn's `utils/validation.py`. Only NumPy is imported
here, so the NumPy reference can use these checks without importing Keras.
"""

import math
import numbers
import os

import numpy as np

_FLOAT_DTYPES = ("float16", "float32", "float64")


def check_positive_int(name, value):
    """Return `value` as an `int` if it is an integer >= 1.

    Args:
        name: str, the argument's name, used in the message.
        value: the received value. Booleans are refused.

    Returns:
        int.

    Raises:
        TypeError: if `value` is not an integer.
        ValueError: if `value` < 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_seed(seed):
    """Return `seed` as an `int` in `[0, 2**31)` (what TensorFlow's random ops take), or None.

    Raises:
        TypeError: if `seed` is neither None nor an integer.
        ValueError: if `seed` is out of that range.
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be None or an integer >= 0. Received: seed={seed!r}")
    if not 0 <= seed < 2**31:
        raise ValueError(f"`seed` must be None or an integer in [0, 2**31). Received: seed={seed!r}")
    return int(seed)


def check_layers(layer_sizes, activations):
    """Check a stack of Dense layers given as sizes and activations.

    Args:
        layer_sizes: sequence of ints `[n_inputs, units_1, ..., units_L]`.
        activations: one activation for every layer (a string or None), or a sequence of L.

    Returns:
        `(sizes, activations)`: a list of L + 1 ints and a list of L activations (not checked
        against a list of names: the caller does that).

    Raises:
        TypeError: if `layer_sizes` is not a sequence or holds non-integers.
        ValueError: for fewer than two sizes, a size < 1, or a number of activations that is not L.
    """
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(f"`layer_sizes` must be a list of positive integers. Received: layer_sizes={layer_sizes!r}")
    if len(layer_sizes) < 2:
        raise ValueError(
            "`layer_sizes` must give the input width and at least one layer, e.g. [2, 4, 1]. "
            f"Received: layer_sizes={list(layer_sizes)!r}"
        )
    sizes = [check_positive_int(f"layer_sizes[{i}]", s) for i, s in enumerate(layer_sizes)]
    n_layers = len(sizes) - 1
    if isinstance(activations, str) or activations is None:
        activations = [activations] * n_layers
    activations = list(activations)
    if len(activations) != n_layers:
        raise ValueError(
            f"`activations` must hold one name per Dense layer ({n_layers}). "
            f"Received {len(activations)}: activations={activations!r}"
        )
    return sizes, activations


def check_output_path(name, path):
    """Return `path` as a string if a file can be created there (its folder exists).

    Raises:
        TypeError: if `path` is not a string or path-like.
        ValueError: if its folder does not exist or `path` is a folder.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`{name}` must be a file path. Received: {name}={path!r}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or os.path.isdir(path):
        raise ValueError(f"`{name}` must be a file path in an existing folder. Received: {name}={path!r}")
    return path


def check_bool(name, value):
    """Return `value` as a `bool` if it is `True` or `False` (Python or NumPy).

    Args:
        name: str, the argument's name, used in the message.
        value: the received value. Integers such as 0 and 1 are refused.

    Returns:
        bool.

    Raises:
        TypeError: if `value` is not a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_positive_float(name, value):
    """Return `value` as a `float` if it is a finite real number > 0.

    Args:
        name: str, the argument's name, used in the message.
        value: the received value. Booleans and strings are refused.

    Returns:
        float.

    Raises:
        TypeError: if `value` is not a real number.
        ValueError: if `value` is not finite or not > 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def check_range(name, value, low, high, *, low_inclusive=True, high_inclusive=False):
    """Return `value` as a `float` if it lies in the interval between `low` and `high`.

    Args:
        name: str, the argument's name, used in the message.
        value: the received value, a real number.
        low, high: float, the bounds of the interval.
        low_inclusive, high_inclusive: bool, whether each bound belongs to the interval.
            Default to `[low, high)`.

    Returns:
        float.

    Raises:
        TypeError: if `value` is not a real number.
        ValueError: if `value` is outside the interval or not finite.
    """
    left, right = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
    expected = f"a number in {left}{low}, {high}{right}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (math.isfinite(value) and ok_low and ok_high):
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return float(value)


def check_choice(name, value, choices):
    """Return `value` lower-cased if it is one of `choices` (any case).

    Raises:
        TypeError: if `value` is not a string.
        ValueError: if `value` is not one of `choices`.
    """
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    if value.lower() not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    return value.lower()


def check_dtype(name, value):
    """Return the float dtype name (`"float16"`, `"float32"` or `"float64"`) of `value`.

    Raises:
        ValueError: if `value` is not a floating dtype.
    """
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in _FLOAT_DTYPES:
        raise ValueError(f"`{name}` must be one of {list(_FLOAT_DTYPES)}. Received: {name}={value!r}")
    return dtype.name


def check_array(name, a, *, dtype="float32", ndim=2):
    """Convert `a` to a finite, non-empty float array.

    A 1-D array becomes a column `(n, 1)` when `ndim=2`. Booleans and integers are converted to
    `dtype`; strings, objects and complex numbers are refused.

    Args:
        name: str, the argument's name, used in the message.
        a: array-like of numbers.
        dtype: float dtype of the result. Defaults to `"float32"`.
        ndim: 1 or 2, the number of dimensions of the result. Defaults to 2.

    Returns:
        `np.ndarray` of `dtype`, 2-D of shape `(n, k)` (or 1-D when `ndim=1`).

    Raises:
        TypeError: for non-numeric contents.
        ValueError: for an empty array, the wrong number of dimensions, or NaN/Inf (naming the
            first bad row and column).
    """
    dtype = check_dtype("dtype", dtype)
    try:
        arr = np.asarray(a)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular array of numbers. Received: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold numbers (bool, int or float). Received an array of dtype "
            f"{arr.dtype} (for example {arr.ravel()[:1].tolist()})"
        )
    if arr.ndim == 1 and ndim == 2:
        arr = arr.reshape(-1, 1)
    if arr.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D. Received an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty. Received an array of shape {arr.shape}")
    if arr.dtype.kind == "f":
        _refuse_nonfinite(name, arr, ~np.isfinite(arr), "must be finite")
    with np.errstate(over="ignore"):
        cast = arr.astype(dtype, copy=False)
    _refuse_nonfinite(name, arr, ~np.isfinite(cast), f"must fit in {dtype} (too large in magnitude)")
    return cast


def _refuse_nonfinite(name, arr, bad, problem):
    """Raise a ValueError naming the first row (and column) where `bad` holds."""
    if bad.any():
        index = tuple(int(i[0]) for i in np.nonzero(bad))
        where = f"row {index[0]}" + (f", column {index[1]}" if arr.ndim == 2 else "")
        raise ValueError(f"`{name}` {problem}. Received {arr[index].item()!r} at {where} ({int(bad.sum())} such value(s) in all)")


def check_xy(X, y, *, n_features=None, n_outputs=None, dtype="float32"):
    """Check and normalize a pair of training arrays.

    Normalization: a 1-D `y` of length n becomes `(n, 1)`; a 1-D `X` becomes `(n, 1)` only when the
    model has one input (`n_features` is None or 1). Booleans and integers become `dtype`.

    Args:
        X: array-like of shape `(n_samples, n_features)`, or `(n_samples,)` for one feature.
        y: array-like of shape `(n_samples, n_outputs)` or `(n_samples,)`.
        n_features: int or None, the model's input width; checked when given.
        n_outputs: int or None, the model's output width; checked against `y` when given.
        dtype: float dtype of the results. Defaults to `"float32"`.

    Returns:
        `(X, y)`: arrays of `dtype` of shapes `(n, k)` and `(n, m)`.

    Raises:
        TypeError: for non-numeric contents.
        ValueError: for empty arrays, NaN/Inf, lengths that differ, or a width that does not
            match `n_features`; the message names the argument and both shapes.
    """
    if n_features is not None and n_features > 1 and np.ndim(X) == 1:
        raise ValueError(
            f"`X` must be 2-D of shape (n_samples, {n_features}) for a model with {n_features} "
            f"inputs. Received a 1-D array of shape {np.shape(X)}"
        )
    X = check_array("X", X, dtype=dtype)
    y = check_array("y", y, dtype=dtype)
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"`X` and `y` must have the same number of rows. Received: X with {X.shape[0]} rows "
            f"(shape {X.shape}), y with {y.shape[0]} rows (shape {y.shape})"
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"`X` has {X.shape[1]} features, but the model expects {n_features}. "
            f"Received: X of shape {X.shape}"
        )
    if n_outputs is not None and y.shape[1] != n_outputs:
        raise ValueError(
            f"`y` has {y.shape[1]} columns, but the model has {n_outputs} output(s). "
            f"Received: y of shape {y.shape}"
        )
    return X, y
