"""Activations and their derivatives, side by side (pure NumPy).

Each activation `f` comes with `f_derivative`, its derivative `f'(z)`. Where TensorFlow's own
gradient kernel reads the op's output (`SigmoidGrad`, `TanhGrad`, `ReluGrad`, `EluGrad`,
`SeluGrad`), the derivative takes the cached output `a = f(z)` (`Activation.from_output` is
True); otherwise (leaky_relu, gelu, silu, softplus) it takes `z`. `softmax` is not elementwise:
its backward pass is the Jacobian-vector product `a * (g - sum(g * a, axis=-1))`
(`Activation.vjp`). The exact `gelu` needs `erfc`, from SciPy, imported only when it is called.

Mirrors `keras/src/activations/activations.py` and `keras/src/backend/tensorflow/nn.py` (the
TensorFlow backend: `tf.nn.sigmoid`, `tf.nn.tanh`, `tf.nn.relu`, `tf.nn.leaky_relu`, `tf.nn.elu`,
`tf.nn.selu`, `tf.nn.gelu`, `tf.nn.silu`, `tf.math.softplus`, `tf.nn.softmax`). Where a value
differs from the textbook, it is Keras's: `leaky_relu`'s slope is 0.2 (not 0.01), and the
string `"gelu"` is the exact (erf) form.

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



# ---------------------------------------------------------------- leaky relu, elu, selu

#: Keras's default slope of `keras.activations.leaky_relu` (the string `"leaky_relu"`).
LEAKY_RELU_SLOPE = 0.2
#: `tf.nn.selu`'s constants (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _slope(z):
    # tf.nn.leaky_relu takes alpha as a float32 attribute: in float64 it is float32-rounded.
    return np.asarray(z).dtype.type(np.float32(LEAKY_RELU_SLOPE))


def leaky_relu(z):
    """`a = z if z > 0 else 0.2 * z` (Keras's default `negative_slope=0.2`)."""
    z = np.asarray(z)
    return np.where(z > 0, z, z * _slope(z))


def leaky_relu_derivative(z):
    """`f'(z) = 1 if z > 0 else 0.2`, from `z` (TensorFlow's `LeakyReluGrad` tests `z > 0`)."""
    z = np.asarray(z)
    return np.where(z > 0, np.ones((), z.dtype), _slope(z))


def elu(z):
    """Exponential linear unit, `alpha = 1`: `a = z if z > 0 else exp(z) - 1`."""
    z = np.asarray(z)
    with np.errstate(over="ignore"):
        return np.where(z < 0, np.expm1(np.minimum(z, 0)), z)


def elu_derivative(a):
    """`f'(z) = a + 1 if a < 0 else 1`, from the output (TensorFlow's `EluGrad`)."""
    a = np.asarray(a)
    return np.where(a < 0, a + 1, np.ones((), a.dtype))


def selu(z):
    """Scaled ELU: `a = scale * z if z > 0 else scale * alpha * (exp(z) - 1)`."""
    z = np.asarray(z)
    t = z.dtype.type
    return np.where(z < 0, t(SELU_SCALE * SELU_ALPHA) * np.expm1(np.minimum(z, 0)), t(SELU_SCALE) * z)


def selu_derivative(a):
    """`f'(z) = a + scale * alpha if a < 0 else scale`, from the output (TensorFlow's `SeluGrad`)."""
    a = np.asarray(a)
    t = a.dtype.type
    return np.where(a < 0, a + t(SELU_SCALE * SELU_ALPHA), t(SELU_SCALE))


# ---------------------------------------------------------------- gelu, silu, softplus


def _cast(value, dtype):
    # tf.cast of a Python float goes through float32: in float64 TensorFlow's gelu uses
    # float32-rounded constants (see kerasbp.reference.rounding.via_float32).
    return np.dtype(dtype).type(np.float32(value))


def gelu(z):
    """Exact GELU, `a = z * Phi(z) = 0.5 * z * erfc(-z / sqrt(2))` (Keras's `"gelu"`).

    As `tf.nn.gelu(approximate=False)`, with `1 / sqrt(2)` float32-rounded (TensorFlow casts the
    Python constant). Needs `scipy.special.erfc`.

    References:
        Hendrycks & Gimpel (2016), "Gaussian Error Linear Units (GELUs)", arXiv:1606.08415.
    """
    from scipy.special import erfc  # only the exact gelu needs SciPy

    z = np.asarray(z)
    t = z.dtype.type
    return t(0.5) * z * erfc(-z * _cast(0.7071067811865476, z.dtype))


def gelu_derivative(z):
    """`f'(z) = 0.5 * erfc(-c z) + z * c * exp(-(c z)**2) / sqrt(pi)`, `c = 1 / sqrt(2)`, from `z`."""
    from scipy.special import erfc

    z = np.asarray(z)
    t = z.dtype.type
    c = _cast(0.7071067811865476, z.dtype)
    return t(0.5) * erfc(-z * c) + z * c * np.exp(-np.square(c * z)) * t(1 / np.sqrt(np.pi))


def gelu_approximate(z):
    """Tanh approximation of GELU: `0.5 * z * (1 + tanh(sqrt(2 / pi) * (z + 0.044715 * z**3)))`.

    Keras's `keras.activations.gelu(x, approximate=True)` (`0.044715` float32-rounded, as
    TensorFlow casts it).
    """
    z = np.asarray(z)
    t = z.dtype.type
    return t(0.5) * z * (t(1) + np.tanh(t(0.7978845608028654) * (z + _cast(0.044715, z.dtype) * z**3)))


def gelu_approximate_derivative(z):
    """Derivative of `gelu_approximate`, from `z`."""
    z = np.asarray(z)
    t = z.dtype.type
    c, k = t(0.7978845608028654), _cast(0.044715, z.dtype)
    th = np.tanh(c * (z + k * z**3))
    return t(0.5) * (t(1) + th) + t(0.5) * z * (t(1) - th * th) * c * (t(1) + t(3) * k * z * z)


def silu(z):
    """SiLU (swish), `a = z * sigmoid(z)`."""
    z = np.asarray(z)
    return z * sigmoid(z)


def silu_derivative(z):
    """`f'(z) = s * (1 + z * (1 - s))` with `s = sigmoid(z)`, from `z`."""
    s = sigmoid(z)
    return s * (1 + np.asarray(z) * (1 - s))


def softplus(z):
    """`a = log(1 + exp(z))`, computed stably."""
    z = np.asarray(z)
    return np.logaddexp(np.zeros((), z.dtype), z)


def softplus_derivative(z):
    """`f'(z) = sigmoid(z)`, from `z`."""
    return sigmoid(z)


# ---------------------------------------------------------------- softmax


def softmax(z):
    """`a = exp(z - max z) / sum exp(z - max z)` over the last axis (Keras's `axis=-1`)."""
    z = np.asarray(z)
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def softmax_vjp(a, upstream):
    """`dL/dz = a * (g - sum(g * a, axis=-1))` for `g = dL/da`: the softmax Jacobian `diag(a) - a a^T`
    times `g`, row by row, without forming the `(d, d)` matrix."""
    return a * (upstream - np.sum(upstream * a, axis=-1, keepdims=True))


class Activation(NamedTuple):
    """An activation and its derivative.

    Attributes:
        name: str, the Keras name (`"linear"`, `"sigmoid"`, `"tanh"`, `"relu"`, ...).
        forward: callable `z -> a`.
        derivative: callable giving `f'(z)`: from the cached output `a` when `from_output`,
            else from `z`. None for `softmax`, which is not elementwise.
        from_output: bool, whether `derivative` takes `a` (True) or `z` (False).
        kinks: tuple of float, the points of `z` where `f` is not differentiable (relu and
            leaky_relu at 0; elu and selu at 0, where the slope jumps for selu and the
            second derivative jumps for elu).
    """

    name: str
    forward: Callable
    derivative: Callable
    from_output: bool = True
    kinks: tuple = ()

    def vjp(self, z, a, upstream):
        """`dL/dz` from `dL/da` (`upstream`), all float arrays of shape `(n, units)`."""
        if self.name == "linear":
            return upstream
        if self.name == "softmax":
            return softmax_vjp(a, upstream)
        return upstream * self.derivative(a if self.from_output else z)


#: The supported activations by Keras name: the registry `kerasbp.models.dense_model` and the
#: Keras readers of `kerasbp.reference.from_keras` check names against. `"gelu_approximate"` is
#: the twin's name for `keras.activations.gelu(x, approximate=True)`.
ACTIVATIONS = {
    "linear": Activation("linear", linear, linear_derivative),
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_derivative),
    "tanh": Activation("tanh", tanh, tanh_derivative),
    "relu": Activation("relu", relu, relu_derivative, kinks=(0.0,)),
    "leaky_relu": Activation("leaky_relu", leaky_relu, leaky_relu_derivative, False, (0.0,)),
    "elu": Activation("elu", elu, elu_derivative, kinks=(0.0,)),
    "selu": Activation("selu", selu, selu_derivative, kinks=(0.0,)),
    "gelu": Activation("gelu", gelu, gelu_derivative, False),
    "gelu_approximate": Activation("gelu_approximate", gelu_approximate, gelu_approximate_derivative, False),
    "silu": Activation("silu", silu, silu_derivative, False),
    "softplus": Activation("softplus", softplus, softplus_derivative, False),
    "softmax": Activation("softmax", softmax, None),
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
        ValueError: if `name` is not a key of `ACTIVATIONS`.
    """
    if name is None:
        name = "linear"
    if name == "swish":  # Keras's other name for silu
        name = "silu"
    return ACTIVATIONS[check_choice(argname, name, ACTIVATIONS)]
