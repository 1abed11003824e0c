"""The Dense layer of the twin: its forward pass next to its backward pass (pure NumPy).

For a layer with input `x`, kernel `W`, bias `b` and activation `f`, and the error
`delta = dL/dz` arriving from above:

```python
z = x @ W + b                 # (n, units)       forward
a = f(z)                      # (n, units)
dL/dW = x.T @ delta           # (units_in, units) backward, as the kernel
dL/db = delta.sum(axis=0)     # (units,), as the bias
dL/dx = delta @ W.T           # (n, units_in), the error passed down
```

`NumpyMLP` stacks these layers and turns `dL/dx` into the next `delta` down with the activation's
derivative. Mirrors `keras/src/layers/core/dense.py` (`matmul`, then bias, then activation;
Glorot-uniform kernels and zero biases).

Example:
    >>> import numpy as np
    >>> from kerasbp.reference.activations import get_activation
    >>> cache = dense_forward(np.ones((2, 3)), np.ones((3, 1)), np.zeros(1), get_activation("linear"))
    >>> cache.a.tolist()
    [[3.0], [3.0]]
    >>> [g.shape for g in dense_backward(cache, np.ones((2, 1)), np.ones((3, 1)), has_bias=True)]
    [(3, 1), (1,), (2, 3)]
"""

from typing import NamedTuple

import numpy as np

from kerasbp.checks import check_array
from kerasbp.reference.activations import get_activation


class LayerCache(NamedTuple):
    """What the forward pass keeps for one layer.

    Attributes:
        x: float array of shape `(n, units_in)`, the layer's input (`a` of the layer before).
        z: float array of shape `(n, units)`, the pre-activation `x @ W + b`.
        a: float array of shape `(n, units)`, the activation `f(z)`.
    """

    x: np.ndarray
    z: np.ndarray
    a: np.ndarray


def check_dense_layer(index, layer, dtype, units_in=None):
    """Check one `(kernel, bias, activation)` triple and copy its arrays in `dtype`.

    Args:
        index: int, the layer's position, used in messages.
        layer: `(kernel, bias, activation)`: a float array of shape `(units_in, units)`, a float
            array of shape `(units,)` or None (no bias), and an activation name or None.
        dtype: str, the float dtype of the copies.
        units_in: int or None, the units of the layer below, which must be the kernel's rows.
            Defaults to None (not checked).

    Returns:
        `(kernel, bias, activation)`: copies of the arrays (bias None when given None) and the
        `Activation`.

    Raises:
        TypeError: for non-numeric arrays or an activation that is not a string.
        ValueError: for a triple of the wrong length, arrays of the wrong rank or shape (naming
            the layer and both shapes), non-finite values or an unknown activation.
    """
    if len(layer) != 3:
        raise ValueError(f"`layers[{index}]` must be a (kernel, bias, activation) triple. Received: {layer!r}")
    kernel, bias, activation = layer
    kernel = check_array(f"layers[{index}] kernel", kernel, dtype=dtype, ndim=2).copy()
    if units_in is not None and kernel.shape[0] != units_in:
        raise ValueError(
            f"layer {index}'s kernel has {kernel.shape[0]} input rows, but layer {index - 1} has {units_in} units. "
            f"Received a kernel of shape {kernel.shape}"
        )
    if bias is not None:
        bias = check_array(f"layers[{index}] bias", bias, dtype=dtype, ndim=1).copy()
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"layer {index}'s bias must have shape ({kernel.shape[1]},) to match its kernel of shape "
                f"{kernel.shape}. Received a bias of shape {bias.shape}"
            )
    return kernel, bias, get_activation(activation, f"layers[{index}] activation")


def glorot_uniform(rng, fan_in, fan_out, dtype):
    """A kernel drawn as Keras's default `GlorotUniform`: `U(-limit, limit)`, `limit = sqrt(6 / (fan_in + fan_out))`.

    Args:
        rng: `np.random.Generator`.
        fan_in, fan_out: int, the kernel's rows and columns.
        dtype: float dtype of the result.

    Returns:
        Float array of shape `(fan_in, fan_out)`.

    References:
        Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
        networks".
    """
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


def dense_forward(x, kernel, bias, activation):
    """`a = f(x @ W + b)`, keeping `x`, `z` and `a`.

    Args:
        x: float array of shape `(n, units_in)`.
        kernel: float array of shape `(units_in, units)`.
        bias: float array of shape `(units,)`, or None for no bias.
        activation: `Activation`.

    Returns:
        `LayerCache(x, z, a)`, `z` and `a` of shape `(n, units)`.
    """
    z = x @ kernel  # (n, units)
    if bias is not None:
        z = z + bias
    return LayerCache(x, z, activation.forward(z))


def dense_backward(cache, delta, kernel, has_bias, input_grad=True):
    """The gradients of a Dense layer from `delta = dL/dz`, by the chain rule.

    Args:
        cache: `LayerCache` of the layer's forward pass.
        delta: float array of shape `(n, units)`, `dL/dz`.
        kernel: float array of shape `(units_in, units)`, the kernel the forward pass used.
        has_bias: bool, whether the layer has a bias.
        input_grad: bool, whether to compute `dL/dx` (the first layer needs none). Defaults to
            `True`.

    Returns:
        `(dL/dW, dL/db, dL/dx)`: float arrays of shapes `(units_in, units)`, `(units,)` (None
        without bias) and `(n, units_in)` (None unless `input_grad`).
    """
    grad_kernel = cache.x.T @ delta  # (units_in, units)
    grad_bias = delta.sum(axis=0) if has_bias else None  # (units,)
    grad_input = delta @ kernel.T if input_grad else None  # (n, units_in)
    return grad_kernel, grad_bias, grad_input
