"""Activations and their derivatives, side by side (pure NumPy).

Each activation `f` comes with `f_derivative(a)`, its derivative `f'(z)` written in terms of the
cached forward output `a = f(z)`, so the backward pass needs no second look at `z`. This is exact
for the four activations here, and it is what TensorFlow's own gradient kernels do
(`SigmoidGrad` and `TanhGrad` read the op's output; `ReluGrad` tests `output > 0`).

Mirrors `keras/src/activations/activations.py` and `keras/src/backend/tensorflow/nn.py` (the
TensorFlow backend: `tf.nn.sigmoid`, `tf.nn.tanh`, `tf.nn.relu`).

Example:
    >>> import numpy as np
    >>> z = np.array([-1.0, 0.0, 2.0])
    >>> a = relu(z)
    >>> a.tolist(), relu_derivative(a).tolist()
    ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
"""

from typing import Callable, NamedTuple

import numpy as np

from kerasbp.checks import check_choice


def linear(z):
    """Identity: `a = z`.

    Args:
        z: float array of any shape, the pre-activation.

    Returns:
        `z` itself (same shape and dtype).
    """
    return z


def linear_derivative(a):
    """`f'(z) = 1` for `linear`, as an array of ones shaped like `a`."""
    return np.ones_like(a)


def sigmoid(z):
    """Logistic function `a = 1 / (1 + exp(-z))`.

    Written as TensorFlow's CPU kernel writes it for float64 (Eigen's `scalar_logistic_op`), so
    float64 results agree to the last bit or two. For `z` below about -709 (float64) `exp(-z)`
    overflows to `inf` and `a` is exactly 0, as in TensorFlow; the overflow is silenced.

    Args:
        z: float array of any shape.

    Returns:
        Float array shaped like `z`, same dtype, in `[0, 1]`.
    """
    z = np.asarray(z)
    with np.errstate(over="ignore", under="ignore"):
        return 1 / (1 + np.exp(-z))


def sigmoid_derivative(a):
    """`f'(z) = a * (1 - a)` with `a = sigmoid(z)`; exact from the cached output."""
    return a * (1 - a)


def tanh(z):
    """Hyperbolic tangent `a = tanh(z)`."""
    return np.tanh(z)


def tanh_derivative(a):
    """`f'(z) = 1 - a**2` with `a = tanh(z)`; exact from the cached output."""
    return 1 - a * a


def relu(z):
    """Rectified linear unit `a = max(z, 0)`."""
    return np.maximum(z, 0)


def relu_derivative(a):
    """`f'(z) = 1 if z > 0 else 0`, from `a = relu(z)` (`a > 0` exactly when `z > 0`).

    At `z = 0` the derivative is taken as 0, as TensorFlow's `ReluGrad` does.
    """
    return (a > 0).astype(np.asarray(a).dtype)


class Activation(NamedTuple):
    """An activation and its derivative.

    Attributes:
        name: str, the Keras name (`"linear"`, `"sigmoid"`, `"tanh"`, `"relu"`).
        forward: callable `z -> a`.
        derivative: callable `a -> f'(z)`, taking the cached forward output.
    """

    name: str
    forward: Callable
    derivative: Callable


#: The supported activations by Keras name: the registry `kerasbp.models.dense_model` and the
#: Keras readers of `kerasbp.reference.from_keras` check names against.
ACTIVATIONS = {
    "linear": Activation("linear", linear, linear_derivative),
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_derivative),
    "tanh": Activation("tanh", tanh, tanh_derivative),
    "relu": Activation("relu", relu, relu_derivative),
}


def get_activation(name, argname="activation"):
    """Return the `Activation` named `name` (any case; `None` means `"linear"`).

    Args:
        name: str or None.
        argname: str, the argument's name used in error messages. Defaults to `"activation"`.

    Returns:
        `Activation`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: if `name` is not one of `"linear"`, `"sigmoid"`, `"tanh"`, `"relu"`.
    """
    if name is None:
        name = "linear"
    return ACTIVATIONS[check_choice(argname, name, ACTIVATIONS)]
