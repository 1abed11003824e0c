"""Per-example gradients and the exact Hessian of the twin (pure NumPy).

**Per-example gradients.** Keras's losses reduce with `"sum_over_batch_size"`, so the batch loss is
the mean of the examples' own losses, `L = (1/n) sum_i w_i l_i`, and `delta = dL/dz` of the batch
is `1/n` times each example's own `delta_i`. A Dense layer's per-example gradients are then outer
products (the trick BackPACK uses), with no loop over the examples:

```python
own_i = n * delta[i]                         # (units,): example i's own dL_i/dz
grad_i kernel = outer(x[i], own_i)           # (units_in, units)
grad_i bias = own_i                          # (units,)
```

A regularization penalty belongs to every example's loss (a one-row batch's loss includes it), so
its gradient is added to each `grad_i`; the mean over `i` is then the batch gradient exactly.

**Hessian-vector products** by Pearlmutter's R-operator (the directional derivative
`R{.} = d/dt (.)(theta + t v)` at `t = 0`), carried through the forward and the backward pass of
a stack of Dense layers beside the quantities it differentiates. For a direction
`v = (V_l, c_l)` over the kernels and biases:

```python
# forward, l = 1..L (R{x_1} = 0: the inputs do not move)
z_l = x_l @ W_l + b_l                  R{z_l} = R{x_l} @ W_l + x_l @ V_l + c_l
a_l = f(z_l)                           R{a_l} = f'(z_l) * R{z_l}
# the loss, at the output (or at the logits: sigmoid/softmax + cross-entropy on TensorFlow)
delta_L = f'(z_L) * dL/da              R{delta_L} = f''(z_L) * R{z_L} * dL/da + f'(z_L) * (d2L/da2 @ R{a_L})
# backward, l = L..1
g_{l-1} = delta_l @ W_l.T              R{g_{l-1}} = R{delta_l} @ W_l.T + delta_l @ V_l.T
delta_{l-1} = f'(z_{l-1}) * g_{l-1}    R{delta_{l-1}} = f''(z_{l-1}) * R{z_{l-1}} * g_{l-1} + f'(z_{l-1}) * R{g_{l-1}}
dL/dW_l = x_l.T @ delta_l              (H v) for W_l = R{x_l}.T @ delta_l + x_l.T @ R{delta_l}
dL/db_l = sum(delta_l)                 (H v) for b_l = sum(R{delta_l})
```

`hessian` applies it to every basis vector. Nothing is approximated: the result is the Hessian of
the twin's loss up to float64 rounding (about 1e-15 relative; it is symmetric to that), at every
point where the activations and the loss are twice differentiable. At a kink (relu at `z = 0`,
mae at zero error, a clipped probability, an L1 penalty at `w = 0`) the second derivative is taken
as 0, as the first derivative there is taken by TensorFlow.

**The flat order** of `hessian`'s rows and columns (and of `flatten_params`): the variables in
`NumpyMLP.params` order (that of `model.trainable_weights`: layer by layer, kernel then bias), each
raveled in C (row-major) order. Entry `(i, j)` of layer `l`'s kernel of `units` columns is at
`offset_l + i * units + j`, where `offset_l` counts the parameters before it.

References:
    Pearlmutter (1994), "Fast Exact Multiplication by the Hessian", Neural Computation 6(1).
    Dangel, Kunstner & Hennig (2020), "BackPACK: Packing more into Backprop", ICLR.
"""

import math

import numpy as np

from kerasbp.reference.from_keras import get_loss
from kerasbp.reference.layers import BatchNormalization, Dense
from kerasbp.reference.rounding import via_float32

# ---------------------------------------------------------------- second derivatives


def _sigmoid_of(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


#: `f''(z)` of each activation the Hessian supports, as a function of `(z, a)` with `a = f(z)`,
#: beside the first derivatives of `kerasbp.reference.activations`. Zero on the linear pieces of
#: relu and leaky_relu (and at their kink).
SECOND_DERIVATIVES = {
    "linear": lambda z, a: np.zeros_like(z),
    "relu": lambda z, a: np.zeros_like(z),
    "leaky_relu": lambda z, a: np.zeros_like(z),
    "sigmoid": lambda z, a: a * (1 - a) * (1 - 2 * a),  # d/dz a(1 - a)
    "tanh": lambda z, a: -2 * a * (1 - a * a),  # d/dz (1 - a^2)
    "elu": lambda z, a: np.where(z < 0, a + 1, 0.0),  # exp(z) for z < 0
    "softplus": lambda z, a: _sigmoid_of(z) * (1 - _sigmoid_of(z)),  # d/dz sigmoid(z)
    "silu": lambda z, a: _sigmoid_of(z) * (1 - _sigmoid_of(z)) * (2 + z * (1 - 2 * _sigmoid_of(z))),
}


def _first(activation, cache):
    """`f'(z)` of a Dense layer's activation, `(n, units)`."""
    if activation.name == "linear":
        return np.ones_like(cache.z)
    return activation.derivative(cache.a if activation.from_output else cache.z)


def _second(activation, cache):
    """`f''(z)` of a Dense layer's activation, `(n, units)`."""
    return SECOND_DERIVATIVES[activation.name](cache.z, cache.a).astype(cache.z.dtype)


def _loss_hvp(loss, y, out, r, sample_weight):
    """`(d2L/dout2) r`, row by row: the loss's curvature at the output `out` (the logits on the
    logits path) times the direction `r`, both `(n, d)`, with the batch reduction's factor
    `w_i / n` (and `1 / d` for the losses that average over the outputs)."""
    n, d = out.shape
    t = out.dtype.type
    factor = np.full((n, 1), t(1) / t(n))
    if loss.mean_over_outputs:
        factor = factor / t(d)
    if sample_weight is not None:
        factor = factor * sample_weight[:, None]
    name = loss.name
    if name == "mean_squared_error":
        curv = 2 * r
    elif name == "mean_absolute_error":
        curv = np.zeros_like(r)  # piecewise linear
    elif name == "huber":
        curv = np.where(np.abs(out - y) <= t(loss.delta), r, 0.0)
    elif name == "binary_crossentropy" and loss.from_logits:
        s = _sigmoid_of(out)
        curv = s * (1 - s) * r
    elif name == "binary_crossentropy":
        from kerasbp.reference.losses import EPSILON

        low, high = t(EPSILON), t(1.0 - EPSILON)
        p = np.clip(out, low, high)
        curv = np.where((out < low) | (out > high), 0.0, (y / (p * p) + (1 - y) / ((1 - p) * (1 - p))) * r)
    elif loss.crossentropy and loss.from_logits:  # categorical: softmax Jacobian diag(s) - s s^T
        e = np.exp(out - out.max(axis=-1, keepdims=True))
        s = e / e.sum(axis=-1, keepdims=True)
        curv = np.sum(y, axis=-1, keepdims=True) * (s * r - s * np.sum(s * r, axis=-1, keepdims=True))
    else:
        raise ValueError(
            f"the twin's Hessian does not support {type(loss).__name__}(from_logits={loss.from_logits}) on probabilities; "
            "use a softmax output layer (its logits are used on TensorFlow) or from_logits=True"
        )
    return (factor * curv).astype(out.dtype)


# ---------------------------------------------------------------- flat vectors


def flatten_params(arrays):
    """Concatenate arrays into one flat vector, in the flat order of `hessian`.

    Args:
        arrays: list of float arrays, one per variable (e.g. `NumpyMLP.params` or gradients).

    Returns:
        Float array of shape `(n_params,)`: each array raveled in C order, in list order.

    Example:
        >>> flatten_params([np.array([[1.0, 2.0]]), np.array([3.0])]).tolist()
        [1.0, 2.0, 3.0]
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        return np.zeros(0)
    return np.concatenate([a.ravel() for a in arrays])


def unflatten_params(vector, shapes):
    """Split a flat vector into arrays of the given shapes (the inverse of `flatten_params`).

    Args:
        vector: float array of shape `(n_params,)`, `n_params = sum(prod(shape))`.
        shapes: list of tuples, e.g. `NumpyMLP.param_shapes`.

    Returns:
        list of float arrays (views of `vector`) of the given shapes.

    Raises:
        ValueError: if `vector` is not 1-D of length `n_params`.

    Example:
        >>> [a.tolist() for a in unflatten_params(np.arange(3.0), [(1, 2), (1,)])]
        [[[0.0, 1.0]], [2.0]]
    """
    vector = np.asarray(vector)
    sizes = [math.prod(s) for s in shapes]
    if vector.ndim != 1 or vector.shape[0] != sum(sizes):
        raise ValueError(f"`vector` must be 1-D of length {sum(sizes)} (the parameters of shapes {list(shapes)}). Received shape {vector.shape}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(vector[start : start + size].reshape(shape))
        start += size
    return out


# ---------------------------------------------------------------- per-example gradients


def per_example_gradients(net, X, y, loss="mse", sample_weight=None, dropout_masks=None):
    """Each example's own gradient: that of the loss of a one-row batch holding only that example.

    With Keras's `"sum_over_batch_size"` reduction the batch gradient is exactly their mean. Dense
    layers use the outer-product form of the module docstring (no loop over the examples);
    Dropout (with the given masks) and Activation layers act row by row and need nothing more.

    Args:
        net: `NumpyMLP`.
        X: float array of shape `(n, n_inputs)`.
        y: targets, as `NumpyMLP.backward` takes them.
        loss: a loss name, twin loss or Keras loss. Defaults to `"mse"`.
        sample_weight: None or float array `(n,)`: example i's loss is weighted by `w_i` (its
            one-row batch with weight `w_i`). Defaults to None.
        dropout_masks: None or one 0/1 array `(n, units)` per Dropout layer. Defaults to None.

    Returns:
        list over the variables (in `net.params` order) of float arrays `(n, *variable.shape)` in
        the network's dtype; entry `[j][i]` is example i's gradient for variable j.

    Raises:
        ValueError: for a BatchNormalization layer (in training mode it normalizes with the batch's
            statistics, so the examples are coupled and have no gradient of their own), and for bad
            arrays as `NumpyMLP.backward`.
    """
    for i, layer in enumerate(net.layers):
        if isinstance(layer, BatchNormalization):
            raise ValueError(
                f"per-example gradients are not defined with BatchNormalization (layer {i}): in training mode it normalizes "
                "with the batch's statistics, which couples the examples. Received a network with a BatchNormalization layer"
            )
    result = net.backward(X, y, loss, sample_weight, dropout_masks)
    grads = []
    for layer, cache, delta in zip(net._dense, net.cache, result.deltas, strict=True):
        n = delta.shape[0]
        own = delta * delta.dtype.type(n)  # (n, units): each example's own dL_i/dz
        layer_grads = [np.einsum("ni,nj->nij", cache.x, own)]  # (n, units_in, units)
        if layer.bias is not None:
            layer_grads.append(own.copy())  # (n, units)
        _, penalty_grads = layer.penalty()
        grads += [g + pg[None] for g, pg in zip(layer_grads, penalty_grads, strict=True)]
    return grads


# ---------------------------------------------------------------- Hessian


def _check_dense_stack(net, what):
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Dense):
            raise ValueError(
                f"{what} supports networks of Dense layers only. Received layer {i}: {layer!r}"
                + (" (per-example gradients are not defined with it)" if isinstance(layer, BatchNormalization) else "")
            )
        if layer.activation.name not in SECOND_DERIVATIVES:
            last = i == len(net.layers) - 1
            if not (last and layer.activation.name in ("sigmoid", "softmax")):
                raise ValueError(
                    f"{what} supports the activations {sorted(SECOND_DERIVATIVES)} (and softmax on the output layer with a "
                    f"cross-entropy). Received layer {i} with activation {layer.activation.name!r}"
                )


def _direction(net, vector):
    """The direction as a list of arrays of the parameters' shapes, in the network's dtype."""
    shapes = net.param_shapes
    if isinstance(vector, np.ndarray) and vector.ndim == 1:
        parts = unflatten_params(vector, shapes)
    else:
        parts = list(vector)
        if len(parts) != len(shapes):
            raise ValueError(f"`vector` must be flat (n_params,) or hold {len(shapes)} arrays of shapes {shapes}. Received {len(parts)} arrays")
    out = []
    for j, (p, shape) in enumerate(zip(parts, shapes, strict=True)):
        p = np.asarray(p, dtype=net.dtype)
        if p.shape != shape:
            raise ValueError(f"`vector[{j}]` must have shape {shape}. Received shape {p.shape}")
        out.append(p)
    return out


def hessian_vector_product(net, X, y, vector, loss="mse", sample_weight=None):
    """`H v`, the Hessian of the twin's training loss times a direction, by the R-operator.

    One forward and one backward pass, each carrying its R-quantities (module docstring), in the
    network's dtype. Exact up to rounding.

    Args:
        net: `NumpyMLP` of Dense layers.
        X: float array of shape `(n, n_inputs)`.
        y: targets, as `NumpyMLP.backward` takes them.
        vector: the direction `v`: a flat float array `(n_params,)` (order of `flatten_params`) or
            a list of arrays shaped like `net.params`.
        loss: a loss name, twin loss or Keras loss. Defaults to `"mse"`.
        sample_weight: None or float array `(n,)`. Defaults to None.

    Returns:
        list of float arrays shaped like `net.params`: `H v`.

    Raises:
        ValueError: for a layer other than Dense, an activation without a second derivative here
            (see `SECOND_DERIVATIVES`), a categorical cross-entropy on probabilities, or bad arrays.

    References:
        Pearlmutter (1994), "Fast Exact Multiplication by the Hessian".
    """
    _check_dense_stack(net, "the twin's Hessian")
    loss = get_loss(loss)
    X, y, w = net._prepare(X, y, loss, sample_weight)
    direction = _direction(net, vector)
    layers = net.layers
    net._forward(X, training=True)
    caches = net.cache  # one LayerCache(x, z, a) per Dense layer
    V, c = [], []  # the direction's part for each layer's kernel and bias
    it = iter(direction)
    for layer in layers:
        V.append(next(it))
        c.append(next(it) if layer.bias is not None else None)

    # Forward: R{z_l}, and R{x_l} (the R of the layer's input).
    r_x, r_z = [np.zeros_like(X)], []
    for l, (layer, cache) in enumerate(zip(layers, caches, strict=True)):
        rz = r_x[l] @ layer.kernel + cache.x @ V[l]  # (n, units)
        if c[l] is not None:
            rz = rz + c[l]
        r_z.append(rz)
        if l + 1 < len(layers):
            r_x.append(_first(layer.activation, cache) * rz)  # R{a_l}

    # The loss at the output: delta_L and R{delta_L}.
    last, out = layers[-1], caches[-1]
    logits_loss = net._logits_loss(loss)
    if logits_loss is not None:  # sigmoid/softmax + cross-entropy from the logits z
        delta = logits_loss.gradient(y, out.z, w, check_input=False)
        r_delta = _loss_hvp(logits_loss, y, out.z, r_z[-1], w)
    else:
        if last.activation.name not in SECOND_DERIVATIVES:
            raise ValueError(f"the twin's Hessian needs a cross-entropy on the logits with a {last.activation.name} output layer. Received loss {loss!r}")
        g = loss.gradient(y, out.a, w, check_input=False)  # dL/da, (n, d)
        f1 = _first(last.activation, out)
        r_g = _loss_hvp(loss, y, out.a, f1 * r_z[-1], w)
        delta = f1 * g
        r_delta = _second(last.activation, out) * r_z[-1] * g + f1 * r_g

    # Backward.
    hv = [None] * len(layers)
    for l in range(len(layers) - 1, -1, -1):
        layer, cache = layers[l], caches[l]
        h_kernel = r_x[l].T @ delta + cache.x.T @ r_delta  # (units_in, units)
        h_bias = r_delta.sum(axis=0) if layer.bias is not None else None  # (units,)
        for reg, h, v in ((layer.kernel_regularizer, h_kernel, V[l]), (layer.bias_regularizer, h_bias, c[l])):
            if reg is not None and reg.l2 and h is not None:
                h += 2 * via_float32(reg.l2, h.dtype) * v  # the L2 penalty's Hessian 2 * l2 * I; L1's is 0
        hv[l] = [h_kernel] if h_bias is None else [h_kernel, h_bias]
        if l > 0:
            below = caches[l - 1]
            g = delta @ layer.kernel.T  # dL/da_{l-1}, (n, units_in)
            r_g = r_delta @ layer.kernel.T + delta @ V[l].T
            f1 = _first(layers[l - 1].activation, below)
            r_delta = _second(layers[l - 1].activation, below) * r_z[l - 1] * g + f1 * r_g
            delta = f1 * g
    return [h for pair in hv for h in pair]


def hessian(net, X, y, loss="mse", sample_weight=None):
    """The exact Hessian of the twin's training loss, in float64.

    Column `j` is `hessian_vector_product` of the `j`-th basis vector, computed on a float64 copy
    of the network: `n_params` passes, each a forward and a backward pass, so it is meant for
    small networks (a few thousand parameters at most).

    Args:
        net: `NumpyMLP` of Dense layers.
        X: float array of shape `(n, n_inputs)`.
        y: targets, as `NumpyMLP.backward` takes them.
        loss: a loss name, twin loss or Keras loss. Defaults to `"mse"`.
        sample_weight: None or float array `(n,)`. Defaults to None.

    Returns:
        float64 array of shape `(n_params, n_params)` in the flat order of `flatten_params`
        (module docstring); symmetric up to rounding.

    Raises:
        ValueError: as `hessian_vector_product`.

    Example:
        >>> from kerasbp.reference import NumpyMLP
        >>> net = NumpyMLP([([[0.5]], [0.0], "linear")], dtype="float64")
        >>> hessian(net, [[1.0], [3.0]], [0.0, 0.0]).tolist()  # (2/n) [X 1]^T [X 1]
        [[10.0, 4.0], [4.0, 2.0]]
    """
    net64 = net.astype("float64")
    n_params = sum(math.prod(s) for s in net64.param_shapes)
    columns = []
    for j in range(n_params):
        e = np.zeros(n_params)
        e[j] = 1.0
        columns.append(flatten_params(hessian_vector_product(net64, X, y, e, loss, sample_weight)))
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))
