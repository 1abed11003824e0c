"""The twin's layers (Dense, BatchNormalization, Dropout, Activation), forward beside backward (pure NumPy).

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


# ---------------------------------------------------------------- layer objects


def _reg_name(reg):
    return None if reg is None else repr(reg)


class Dense:
    """A Dense layer of the twin: `a = f(x @ kernel + bias)`, forward beside backward.

    Args:
        kernel: float array of shape `(units_in, units)`.
        bias: float array of shape `(units,)`, or None (Keras `use_bias=False`). Defaults to None.
        activation: a name of `ACTIVATIONS` or None for linear. Defaults to None.
        kernel_regularizer, bias_regularizer: None or a `kerasbp.reference.regularizers`
            object (`L1`, `L2`, `L1L2`). Defaults to None.

    Raises:
        TypeError, ValueError: as `check_dense_layer`.

    Example:
        >>> import numpy as np
        >>> layer = Dense(np.ones((2, 1)), np.zeros(1), "relu")
        >>> out, cache = layer.forward(np.array([[1.0, -3.0]]))
        >>> out.tolist(), [g.tolist() for g in layer.backward(cache, np.ones((1, 1)))[1]]
        ([[0.0]], [[[0.0], [0.0]], [0.0]])
    """

    kind = "Dense"

    def __init__(self, kernel, bias=None, activation=None, kernel_regularizer=None, bias_regularizer=None, dtype=None):
        if dtype is None:
            kind = np.asarray(kernel).dtype
            dtype = kind.name if kind.kind == "f" else "float32"
        self.kernel, self.bias, self.activation = check_dense_layer(0, (kernel, bias, activation), dtype)
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer

    @property
    def units(self):
        """int, the output width."""
        return self.kernel.shape[1]

    @property
    def params(self):
        """list of arrays (the layer's own, not copies): kernel, then bias if any."""
        return [self.kernel] if self.bias is None else [self.kernel, self.bias]

    def set_params(self, params):
        """Replace the parameters (arrays already checked, in `params` order)."""
        self.kernel = params[0]
        if self.bias is not None:
            self.bias = params[1]

    non_trainable = property(lambda self: [])

    def set_non_trainable(self, values):
        """No non-trainable weights: nothing to set."""

    def astype(self, dtype):
        """A copy computing in `dtype`."""
        return Dense(self.kernel, self.bias, self.activation.name, self.kernel_regularizer, self.bias_regularizer, dtype)

    def forward(self, x, training=False, mask=None):
        """`(a, LayerCache(x, z, a))` for input `x` of shape `(n, units_in)`."""
        cache = dense_forward(x, self.kernel, self.bias, self.activation)
        return cache.a, cache

    def backward(self, cache, grad_out=None, delta=None, input_grad=True):
        """`(dL/dx, [dL/dkernel, dL/dbias], dL/dz)` from `dL/da` (`grad_out`) or directly `dL/dz` (`delta`)."""
        if delta is None:
            delta = self.activation.vjp(cache.z, cache.a, grad_out)  # (n, units)
        grad_kernel, grad_bias, grad_input = dense_backward(cache, delta, self.kernel, self.bias is not None, input_grad)
        grads = [grad_kernel] if grad_bias is None else [grad_kernel, grad_bias]
        return grad_input, grads, delta

    def penalty(self):
        """`(value, grads)`: the regularization added to the loss and its gradient per parameter."""
        value = np.zeros((), self.kernel.dtype)
        grads = []
        for p, reg in zip(self.params, (self.kernel_regularizer, self.bias_regularizer), strict=False):
            if reg is None:
                grads.append(np.zeros_like(p))
            else:
                value = value + reg(p)
                grads.append(reg.gradient(p))
        return value, grads

    def __repr__(self):
        return f"Dense(units={self.units}, activation={self.activation.name!r})"


class BatchNormalization:
    """Batch normalization over the batch axis of `(n, units)` inputs, as `keras.layers.BatchNormalization`.

    Training mode (`fit`'s forward pass) normalizes with the batch's own statistics and moves the
    moving ones; inference mode uses the moving statistics:

    ```python
    mean = mean(x, axis=0); var = mean((x - mean)**2, axis=0)        # biased variance
    x_hat = (x - mean) / sqrt(var + epsilon);  y = gamma * x_hat + beta
    moving_mean = moving_mean * momentum + mean * (1 - momentum)    # likewise moving_variance
    # backward, g = dL/dy, N = batch size:
    dL/dgamma = sum(g * x_hat);  dL/dbeta = sum(g)
    dL/dx = gamma / sqrt(var + eps) / N * (N * g - sum(g) - x_hat * sum(g * x_hat))
    ```

    Args:
        gamma, beta: float arrays `(units,)`, or None (Keras `scale=False` / `center=False`).
        moving_mean, moving_variance: float arrays `(units,)`.
        momentum: float. Defaults to `0.99` (Keras's default).
        epsilon: float. Defaults to `0.001` (Keras's default).

    References:
        Ioffe & Szegedy (2015), "Batch Normalization", arXiv:1502.03167.
    """

    kind = "BatchNormalization"

    def __init__(self, gamma, beta, moving_mean, moving_variance, momentum=0.99, epsilon=1e-3, dtype=None):
        if dtype is None:
            kind = np.asarray(moving_mean).dtype
            dtype = kind.name if kind.kind == "f" else "float32"
        self.moving_mean = check_array("moving_mean", moving_mean, dtype=dtype, ndim=1).copy()
        units = self.moving_mean.shape[0]
        self.moving_variance = check_array("moving_variance", moving_variance, dtype=dtype, ndim=1).copy()
        self.gamma = None if gamma is None else check_array("gamma", gamma, dtype=dtype, ndim=1).copy()
        self.beta = None if beta is None else check_array("beta", beta, dtype=dtype, ndim=1).copy()
        for name, arr in (("moving_variance", self.moving_variance), ("gamma", self.gamma), ("beta", self.beta)):
            if arr is not None and arr.shape != (units,):
                raise ValueError(f"`{name}` must have shape ({units},) like `moving_mean`. Received shape {arr.shape}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    @property
    def units(self):
        return self.moving_mean.shape[0]

    @property
    def params(self):
        return [p for p in (self.gamma, self.beta) if p is not None]

    def set_params(self, params):
        it = iter(params)
        if self.gamma is not None:
            self.gamma = next(it)
        if self.beta is not None:
            self.beta = next(it)

    @property
    def non_trainable(self):
        """`[moving_mean, moving_variance]`."""
        return [self.moving_mean, self.moving_variance]

    def set_non_trainable(self, values):
        self.moving_mean, self.moving_variance = values

    def astype(self, dtype):
        return BatchNormalization(self.gamma, self.beta, self.moving_mean, self.moving_variance, self.momentum, self.epsilon, dtype)

    def forward(self, x, training=False, mask=None):
        """`(y, cache)`; in training, `cache["moving"]` holds the new moving statistics."""
        t = x.dtype.type
        if training:
            mean = np.mean(x, axis=0)
            var = np.mean(np.square(x - mean), axis=0)
        else:
            mean, var = self.moving_mean, self.moving_variance
        inv = t(1) / np.sqrt(var + t(self.epsilon))  # (units,)
        x_hat = (x - mean) * inv  # (n, units)
        y = x_hat if self.gamma is None else x_hat * self.gamma
        if self.beta is not None:
            y = y + self.beta
        cache = {"x_hat": x_hat, "inv": inv, "training": training}
        if training:
            m = t(self.momentum)
            cache["moving"] = [self.moving_mean * m + mean * t(1.0 - self.momentum), self.moving_variance * m + var * t(1.0 - self.momentum)]
        return y, cache

    def backward(self, cache, grad_out, delta=None, input_grad=True):
        """`(dL/dx, [dL/dgamma, dL/dbeta], None)` from `dL/dy` (`grad_out`, shape `(n, units)`)."""
        x_hat, inv = cache["x_hat"], cache["inv"]
        grads = []
        if self.gamma is not None:
            grads.append(np.sum(grad_out * x_hat, axis=0))
        if self.beta is not None:
            grads.append(np.sum(grad_out, axis=0))
        g = grad_out if self.gamma is None else grad_out * self.gamma  # dL/dx_hat
        if not input_grad:
            return None, grads, None
        if not cache["training"]:
            return g * inv, grads, None
        n = x_hat.dtype.type(x_hat.shape[0])
        grad_x = inv / n * (n * g - np.sum(g, axis=0) - x_hat * np.sum(g * x_hat, axis=0))
        return grad_x, grads, None

    def penalty(self):
        return np.zeros((), self.moving_mean.dtype), [np.zeros_like(p) for p in self.params]

    def __repr__(self):
        return f"BatchNormalization(units={self.units}, momentum={self.momentum}, epsilon={self.epsilon})"


class Dropout:
    """Dropout with a given mask: `y = x * (1 / (1 - rate)) * mask` in training, `y = x` otherwise.

    The twin draws no random numbers: `forward` takes the 0/1 mask `(n, units)` that Keras drew
    for that step (captured by `kerasbp.compare`), so both sides drop the same units. Keras's
    TensorFlow backend (`tf.nn.experimental.stateless_dropout`) scales first, then masks.

    Args:
        rate: float in `[0, 1)`, the fraction of units dropped.
    """

    kind = "Dropout"
    params = property(lambda self: [])
    non_trainable = property(lambda self: [])

    def __init__(self, rate):
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate!r}")
        self.rate = rate

    def set_params(self, params):
        pass

    def set_non_trainable(self, values):
        pass

    def astype(self, dtype):
        return Dropout(self.rate)

    def forward(self, x, training=False, mask=None):
        if not training or mask is None or self.rate == 0:
            return x, None
        mask = np.asarray(mask)
        if mask.shape != x.shape:
            raise ValueError(f"a dropout mask must have the shape of the layer's input {x.shape}. Received shape {mask.shape}")
        scale = x.dtype.type(1 / (1 - self.rate))
        mask = (mask != 0).astype(x.dtype)
        return x * scale * mask, scale * mask

    def backward(self, cache, grad_out, delta=None, input_grad=True):
        return (grad_out if cache is None else grad_out * cache), [], None

    def penalty(self):
        return 0.0, []

    def __repr__(self):
        return f"Dropout(rate={self.rate})"


class Activation:
    """An activation as a layer (`keras.layers.Activation`): `a = f(z)`, backward `f'(z) * g`.

    Args:
        activation: a name of `ACTIVATIONS` (or None for linear).
    """

    kind = "Activation"
    params = property(lambda self: [])
    non_trainable = property(lambda self: [])

    def __init__(self, activation):
        self.activation = get_activation(activation)

    def set_params(self, params):
        pass

    def set_non_trainable(self, values):
        pass

    def astype(self, dtype):
        return Activation(self.activation.name)

    def forward(self, x, training=False, mask=None):
        a = self.activation.forward(x)
        return a, LayerCache(x, x, a)

    def backward(self, cache, grad_out=None, delta=None, input_grad=True):
        if delta is None:
            delta = self.activation.vjp(cache.z, cache.a, grad_out)
        return delta, [], delta

    def penalty(self):
        return 0.0, []

    def __repr__(self):
        return f"Activation({self.activation.name!r})"


#: The twin's layer classes by Keras class name.
LAYERS = {cls.kind: cls for cls in (Dense, BatchNormalization, Dropout, Activation)}



def kink_signature(net, y, loss):
    """Which side of every kink the last forward pass of `net` (a `NumpyMLP`) is on.

    A tuple of arrays: for each Dense or Activation layer with a kinked activation (relu,
    leaky_relu, elu, selu), `sign(z)`; for the loss, the side of its kinks (mae's and huber's
    error, cross-entropy's probability clip, on the probability path only); for each L1
    regularized parameter, `sign(w)`. Two forward passes lie on the same smooth piece exactly
    when their signatures are equal.
    """
    sig = []
    for layer, cache in zip(net.layers, net._caches, strict=True):
        act = getattr(layer, "activation", None)
        if act is not None and act.kinks:
            sig.append(np.sign(cache.z))
        for p, reg in zip(layer.params, (getattr(layer, "kernel_regularizer", None), getattr(layer, "bias_regularizer", None)), strict=False):
            if reg is not None and reg.l1:
                sig.append(np.sign(p))
    out = net._caches[-1]
    last_a = out.a if isinstance(out, LayerCache) else None
    if last_a is None:
        return tuple(sig)
    if net._logits_loss(loss) is None:
        yy, _ = loss.prepare(y, last_a)
        name = loss.name
        if name == "mean_absolute_error":
            sig.append(np.sign(last_a - yy))
        elif name == "huber":
            sig.append(np.sign(np.abs(last_a - yy) - loss.delta))
        elif loss.crossentropy and not loss.from_logits:
            q = last_a / np.sum(last_a, axis=-1, keepdims=True) if name == "categorical_crossentropy" else last_a
            sig.append(np.sign(q - 1e-7))
            sig.append(np.sign(q - (1 - 1e-7)))
    return tuple(sig)
