"""explain_backprop: one backward pass written out layer by layer, Keras beside NumPy.

For a Sequential stack of Dense layers, backpropagation (Rumelhart, Hinton & Williams 1986) runs
from the output to the input. For layer l with input `a_prev`, pre-activation
`z = a_prev @ W + b` and activation `a = f(z)`:

    dL/da      the error arriving from above (for the last layer: dL/d(output))
    delta      = dL/dz = dL/da * f'(z)                    (n, units)
    dL/dW      = a_prev^T @ delta                         (units_in, units)
    dL/db      = sum of delta over the batch              (units,)
    dL/da_prev = delta @ W^T, the error passed down       (n, units_in)

Keras computes each of these by automatic differentiation of the same forward pass, with the
model's compiled loss, on its own backend: a `tf.GradientTape` on TensorFlow; on JAX (`jax.grad`)
and torch (`torch.autograd.grad`) the gradient with respect to zeros added to each layer's
input, pre-activation and activation, which is the gradient at those points. The NumPy twin
(`kerasbp.reference.NumpyMLP`) computes them by hand. With a sigmoid output and binary
cross-entropy, Keras's TensorFlow backend differentiates the logits formula, so
`delta = (sigmoid(z) - y) / (n * d)` for the last layer; JAX and torch go through the clipped
probability, as the twin does for them (`NumpyMLP(backend=...)`).
"""

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np
from keras import ops

from kerasbp.checks import check_xy
from kerasbp.comparison_report import relative_difference
from kerasbp.models import keras_loss
from kerasbp.reference import NumpyMLP, get_loss

#: The quantities of each layer, in the order the backward pass produces them.
QUANTITIES = ("dL/da", "delta = dL/dz", "dL/dW", "dL/db", "dL/da_prev")


class Term:
    """One quantity of one layer, computed two ways.

    Attributes:
        layer: str, the layer's name.
        name: str, one of `QUANTITIES`.
        keras: float array, by Keras autodiff; None for `dL/da` of a sigmoid output under
            binary cross-entropy, which Keras's TensorFlow backend differentiates through the logits.
        numpy: float array, by the NumPy twin.
        max_abs_diff: float, the largest absolute difference.
        max_rel_diff: float, `max_abs_diff` divided by the largest magnitude of the Keras value
            (`kerasbp.comparison_report.relative_difference`: 0 when both are 0, inf when only the
            Keras value is all zeros).
    """

    def __init__(self, layer, name, keras_value, numpy_value):
        self.layer, self.name = layer, name
        self.numpy = np.asarray(numpy_value)
        self.keras = None if keras_value is None else np.asarray(keras_value)
        if self.keras is None:
            self.max_abs_diff = self.max_rel_diff = float("nan")
            return
        self.max_abs_diff = float(np.max(np.abs(self.keras.astype(np.float64) - self.numpy)))
        self.max_rel_diff = relative_difference(self.max_abs_diff, float(np.max(np.abs(self.keras))))

    @property
    def shape(self):
        """tuple, the quantity's shape."""
        return self.numpy.shape


class BackpropExplanation:
    """What `explain_backprop` returns: the loss, and every term of every layer, output first.

    Attributes:
        loss_keras, loss_numpy: float, the batch loss by each side.
        terms: list of `Term`, grouped by layer from the output layer down to the first.
        layers: list of str, layer names from the output down.
    """

    def __init__(self, loss_keras, loss_numpy, terms, layers, activations):
        self.loss_keras, self.loss_numpy = float(loss_keras), float(loss_numpy)
        self.terms, self.layers, self.activations = terms, layers, activations

    @property
    def max_rel_diff(self):
        """float, the largest relative difference over all terms that Keras computes."""
        return max(t.max_rel_diff for t in self.terms if t.keras is not None)

    def term(self, layer, name):
        """The `Term` called `name` of the layer called `layer`.

        Raises:
            KeyError: if there is no such term.
        """
        for t in self.terms:
            if t.layer == layer and t.name == name:
                return t
        raise KeyError(f"no term {name!r} for layer {layer!r}; layers: {self.layers}, terms: {list(QUANTITIES)}")

    def to_dict(self):
        """A JSON-ready dict: loss, and per term its layer, name, shape and differences."""
        return {
            "loss_keras": self.loss_keras,
            "loss_numpy": self.loss_numpy,
            "terms": [
                {"layer": t.layer, "name": t.name, "shape": list(t.shape), "max_abs_diff": t.max_abs_diff, "max_rel_diff": t.max_rel_diff}
                for t in self.terms
            ],
        }

    def __str__(self):
        lines = [
            f"loss: Keras {self.loss_keras:.8g}, NumPy {self.loss_numpy:.8g}",
            f"{'layer':14}{'quantity':16}{'shape':>12}  {'|Keras|max':>11}  {'max |diff|':>10}  {'rel':>8}",
        ]
        for name, activation in zip(self.layers, self.activations, strict=True):
            lines.append(f"{name} ({activation}), backward:")
            for t in self.terms:
                if t.layer == name:
                    if t.keras is None:
                        lines.append(f"{'':14}{t.name:16}{str(t.shape):>12}  {'(Keras differentiates the logits here)':>33}")
                        continue
                    magnitude = float(np.max(np.abs(t.keras)))
                    lines.append(f"{'':14}{t.name:16}{str(t.shape):>12}  {magnitude:11.4g}  {t.max_abs_diff:10.2e}  {t.max_rel_diff:8.1e}")
        lines.append(f"largest relative difference Keras vs NumPy: {self.max_rel_diff:.2e}")
        return "\n".join(lines)

    __repr__ = __str__


def explain_backprop(model, X, y, loss=None):
    """Write out one backward pass of `model` on `(X, y)`, Keras autodiff beside the NumPy twin.

    Args:
        model: a `keras.Sequential` of Dense layers with activations `linear`, `sigmoid`, `tanh`
            or `relu` (as `NumpyMLP.from_keras` accepts).
        X: float array of shape `(n, n_inputs)`.
        y: float array of shape `(n, n_outputs)` (or `(n,)` for one output).
        loss: a loss `kerasbp.reference.get_loss` accepts: `"mse"` or `"binary_crossentropy"`,
            a Keras loss, or a twin loss (`kerasbp.reference.MeanSquaredError()`, ...); None
            uses the model's compiled loss, or `"mse"` for an uncompiled model. Defaults to None.

    Returns:
        `BackpropExplanation`: printable as a table; `.terms` holds the arrays.

    Raises:
        ValueError, TypeError: for an unsupported model or loss (naming it) or bad arrays.

    Example:
        >>> import kerasbp as kb
        >>> X, y = kb.xor_data()
        >>> model = kb.compile_model(kb.xor_model(seed=0), "sgd", loss="binary_crossentropy")
        >>> explanation = kb.explain_backprop(model, X, y)
        >>> explanation.max_rel_diff < 1e-5  # float32: a few ulps after cancellation in the sums
        True
    """
    twin = NumpyMLP.from_keras(model)  # refuses unsupported layers and activations
    for layer in model.layers:
        if type(layer) is not keras.layers.Dense:
            raise ValueError(
                f"explain_backprop supports Dense layers only (use kerasbp.compare for the others). "
                f"Unsupported layer {layer.name!r} of class {type(layer).__name__}"
            )
        if layer.kernel_regularizer is not None or layer.bias_regularizer is not None:
            raise ValueError(f"explain_backprop does not show regularizers (use kerasbp.compare). Unsupported in layer {layer.name!r}")
    if loss is None:
        loss = getattr(model, "loss", None) or "mse"
    twin_loss = get_loss(loss)  # refuses unsupported losses
    keras_loss_fn = keras_loss(twin_loss)  # the same loss on the Keras side
    X, y = check_xy(X, y, n_features=twin.n_inputs, n_outputs=twin.n_outputs, dtype=keras.config.floatx())
    layers = list(model.layers)
    value, keras_terms = _keras_backward(layers, X, y, keras_loss_fn)
    back = twin.backward(X, y, twin_loss)
    terms = []
    grads = iter(back.grads)
    twin_grads = []
    twin_kernels = [np.asarray(layer.kernel.numpy(), dtype=twin.dtype) for layer in layers]
    for layer in layers:
        twin_grads.append((next(grads), next(grads) if layer.bias is not None else None))
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        k = keras_terms[i]
        delta = back.deltas[i]  # (n, units)
        kernel = twin_kernels[i]  # (units_in, units)
        if i == len(layers) - 1:
            numpy_dL_da = _output_error(twin, y, twin_loss)  # (n, n_outputs)
        else:
            numpy_dL_da = back.deltas[i + 1] @ twin_kernels[i + 1].T  # (n, units)
        name = layer.name
        # With a sigmoid output and cross-entropy, Keras's TensorFlow backend differentiates the
        # logits formula, so the output activation is not on its path: no Keras dL/da to show.
        terms.append(Term(name, "dL/da", k["dL/da"], numpy_dL_da))
        terms.append(Term(name, "delta = dL/dz", k["delta = dL/dz"], delta))
        terms.append(Term(name, "dL/dW", k["dL/dW"], twin_grads[i][0]))
        if layer.bias is not None:
            terms.append(Term(name, "dL/db", k["dL/db"], twin_grads[i][1]))
        terms.append(Term(name, "dL/da_prev", k["dL/da_prev"], delta @ kernel.T))  # (n, units_in)
    activations = [layer.activation.__name__ for layer in reversed(layers)]
    return BackpropExplanation(value, back.loss, terms, [layer.name for layer in reversed(layers)], activations)


def _output_error(twin, y, loss):
    """`dL/d(output)` by the twin's loss gradient (the probability-space formula)."""
    out = twin.cache[-1].a  # (n, n_outputs)
    return loss.gradient(np.asarray(y, out.dtype).reshape(out.shape), out, check_input=False)


def _keras_backward(layers, X, y, loss_fn):
    """Keras's loss and its gradients on `(X, y)`, by the backend's automatic differentiation.

    Args:
        layers: list of Dense layers, first to last.
        X: float array `(n, n_inputs)`; y: float array `(n, n_outputs)`.
        loss_fn: the Keras loss, called as `loss_fn(y, output)`.

    Returns:
        `(loss, terms)`: the loss (float) and, per layer, a dict of NumPy arrays keyed by
        `QUANTITIES` (`"dL/db"` only for a layer with a bias; `"dL/da"` None where Keras's
        TensorFlow backend differentiates a sigmoid output's logits instead).
    """
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_backward(layers, X, y, loss_fn)
    # JAX and torch: the gradient with respect to zeros added at each point of the forward pass
    has_bias = [layer.bias is not None for layer in layers]
    kernels = [layer.kernel.value for layer in layers]
    biases = [layer.bias.value for layer in layers if layer.bias is not None]
    shapes = [(len(X), int(layer.kernel.shape[0])) for layer in layers] + [(len(X), int(layer.kernel.shape[1])) for layer in layers]
    zeros = [ops.zeros(shape, X.dtype) for shape in shapes]  # inputs' then outputs' (= pre-activations')
    n = len(layers)

    def loss_of(kernels, biases, at_inputs, at_zs, at_outputs):
        a, b = ops.convert_to_tensor(X), iter(biases)
        for i, layer in enumerate(layers):
            z = ops.matmul(a + at_inputs[i], kernels[i])
            if has_bias[i]:
                z = z + next(b)
            a = layer.activation(z + at_zs[i]) + at_outputs[i]
        return loss_fn(ops.convert_to_tensor(y), a)

    points = (kernels, biases, zeros[:n], zeros[n:], [ops.zeros_like(z) for z in zeros[n:]])
    if keras.backend.backend() == "jax":
        import jax

        value, grads = jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1, 2, 3, 4)))(*points)  # one compilation, not one per operation
    else:
        import torch

        leaves = [t for group in points for t in group]
        for t in leaves:
            t.requires_grad_(True)
        value = loss_of(*points)
        flat = iter(torch.autograd.grad(value, leaves))
        grads = tuple([next(flat) for _ in group] for group in points)
    dW, db, da_prev, dz, da = ([ops.convert_to_numpy(g) for g in group] for group in grads)
    db, terms = iter(db), []
    for i in range(n):
        terms.append({"dL/da": da[i], "delta = dL/dz": dz[i], "dL/dW": dW[i], "dL/db": next(db) if has_bias[i] else None, "dL/da_prev": da_prev[i]})
    return float(ops.convert_to_numpy(value)), terms


def _tensorflow_backward(layers, X, y, loss_fn):
    """`_keras_backward` on TensorFlow: a `tf.GradientTape` over the forward pass, asked for the
    gradient at each layer's input, pre-activation and activation."""
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        a = tf.constant(X)
        inputs, zs, outputs = [], [], []
        for layer in layers:
            tape.watch(a)
            inputs.append(a)
            z = tf.matmul(a, layer.kernel)
            if layer.bias is not None:
                z = z + layer.bias
            a = layer.activation(z)  # on TF, sigmoid keeps `z` as `_keras_logits` for the loss
            zs.append(z)
            outputs.append(a)
        value = loss_fn(tf.constant(y), a)
    terms = []
    for i, layer in enumerate(layers):
        dz, da, da_prev, dW = tape.gradient(value, [zs[i], outputs[i], inputs[i], layer.kernel])
        db = tape.gradient(value, layer.bias) if layer.bias is not None else None
        terms.append(
            {
                "dL/da": None if da is None else da.numpy(),
                "delta = dL/dz": dz.numpy(),
                "dL/dW": dW.numpy(),
                "dL/db": None if db is None else db.numpy(),
                "dL/da_prev": da_prev.numpy(),
            }
        )
    del tape
    return float(value.numpy()), terms
