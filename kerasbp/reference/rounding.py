"""How Keras rounds a Python-float hyperparameter on its way into a computation (pure NumPy).

The twin's optimizers compute each update in the dtype of its parameter, with the
hyperparameters rounded as Keras rounds them on the TensorFlow backend
(`keras/src/optimizers/{sgd,adam,rmsprop}.py`). In float32 every road gives the same number; in
float64 they differ, and reproducing them is what makes float64 parity exact:

- `as_dtype`: where Keras combines a Python float with a tensor directly (`1 - beta_1` in Adam's
  moment updates, `epsilon`, everything in RMSprop), the float is rounded once, to the
  parameter's dtype. The learning rate is a Keras variable of dtype `keras.config.floatx()` at
  the time the optimizer was made, cast to the parameter's dtype at each step: `as_dtype` of it
  is the same number when the parameters have that floatx dtype, and
  `kerasbp.reference.optimizer_from_keras` reads the stored value, so it is exact in every case.
- `via_float32`: `ops.cast(python_float, "float64")` goes through a float32 tensor first
  (`tf.cast` converts a Python float to float32 before casting). Keras uses it for Adam's
  `beta_1`, `beta_2` in the bias correction and for SGD's `momentum`: in float64 these are the
  float32-rounded values (`float64(float32(0.9))` is 0.8999999761581421).
- `scalar_power`: Adam's `beta**t` is TensorFlow's scalar `pow`, which is (nearly always)
  correctly rounded, while `np.power` is one ulp off for about one exponent in five.

Example:
    >>> float(via_float32(0.9, "float64")), float(as_dtype(0.9, "float64"))
    (0.8999999761581421, 0.9)
"""

import numpy as np


def as_dtype(value, dtype):
    """A Python float rounded once to `dtype`, as `convert_to_tensor(value, dtype)` does.

    Args:
        value: float (or int).
        dtype: float dtype, e.g. `"float32"` or `np.float64`.

    Returns:
        NumPy scalar of `dtype`.
    """
    return np.dtype(dtype).type(value)


def via_float32(value, dtype):
    """A Python float as `keras.ops.cast(value, dtype)` gives it: rounded to float32, then to `dtype`.

    Args:
        value: float.
        dtype: float dtype.

    Returns:
        NumPy scalar of `dtype` (in float64, the float32-rounded value).
    """
    return np.dtype(dtype).type(np.float32(value))


def scalar_power(base, exponent, dtype):
    """`base ** exponent` rounded once to `dtype`, as TensorFlow's scalar `tf.pow` gives it.

    `np.power` in float32 (and, less often, float64) is off by one ulp for about one exponent in
    five; TensorFlow's scalar `pow` is correctly rounded in nearly all cases. Computing in a wider
    type (float64 for float32; `np.longdouble` for float64, which is 80-bit on x86-64 Linux and
    plain float64 elsewhere) and rounding once reproduces it. An occasional one-ulp difference
    remains (about 1 in 100 exponents in float64).

    Args:
        base: float or NumPy float scalar.
        exponent: float or NumPy float scalar (Adam's step count `t`).
        dtype: float dtype of the result.

    Returns:
        NumPy scalar of `dtype`.

    Example:
        >>> float(scalar_power(0.9, 2.0, "float64"))
        0.81
    """
    wide = np.float64 if np.dtype(dtype).itemsize < 8 else np.longdouble
    return np.dtype(dtype).type(np.power(wide(base), wide(exponent)))
