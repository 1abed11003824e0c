"""`NumpyMLP`: a stack of twin layers (Dense, BatchNormalization, Dropout, Activation) with the chain
rule written out by hand (pure NumPy).

Forward pass, layer `l = 1..L` (`a_0 = X`):

```python
z_l = a_{l-1} @ W_l + b_l       # (n, units_l)
a_l = f_l(z_l)                  # (n, units_l)
```

Backward pass (backpropagation, Rumelhart, Hinton & Williams 1986), `delta_l = dL/dz_l`:

```python
delta_L = dL/da_L * f_L'(a_L)                    # or (a_L - y) / (n*d): sigmoid + cross-entropy
delta_l = (delta_{l+1} @ W_{l+1}.T) * f_l'(a_l)  # l = L-1, ..., 1
dL/dW_l = a_{l-1}.T @ delta_l                    # (units_{l-1}, units_l), as the kernel
dL/db_l = delta_l.sum(axis=0)                    # (units_l,), as the bias
```

These are the classic NumPy XOR example's `d_output` and `d_hidden`, up to the sign and the loss's factor
`2 / (n * d)` (the notebook uses `targets - output` and no mean). Everything is vectorized over the
batch, and computed in the dtype of the parameters (float32 or float64; inputs are cast to it).

Each layer's own forward and backward are in `kerasbp.reference.layers`; a BatchNormalization,
Dropout or Activation layer passes `dL/da` down through its own backward. Regularizers add their
penalty to the loss and its gradient to the parameter's. Mirrors
`keras/src/layers/core/dense.py` (`matmul`, then bias, then activation) and the loss conventions
of `kerasbp.reference.losses`.
"""

from typing import NamedTuple

import numpy as np

from kerasbp.checks import check_array, check_dtype, check_layers, check_positive_int, check_seed
from kerasbp.data import batch_slices
from kerasbp.reference import curvature
from kerasbp.reference.from_keras import get_loss, get_optimizer, layers_from_keras
from kerasbp.reference.layers import Activation, BatchNormalization, Dense, Dropout, glorot_uniform
from kerasbp.reference.loss_objects import class_weight_to_sample_weight

_LAYER_TYPES = (Dense, BatchNormalization, Dropout, Activation)


class Backward(NamedTuple):
    """Result of one forward and backward pass.

    Attributes:
        loss: 0-d float array, the loss of the batch (before any update), regularization included.
        deltas: list of float arrays `dL/dz_l` of shapes `(n, units_l)`, one per Dense layer.
        grads: list of float arrays in the order and shapes of `model.trainable_weights`.
    """

    loss: np.ndarray
    deltas: list
    grads: list


class NumpyMLP:
    """A stack of twin layers with a hand-written backward pass.

    Args:
        layers: sequence of twin layers (`kerasbp.reference.Dense`, `BatchNormalization`,
            `Dropout`, `Activation`) or `(kernel, bias, activation)` triples (each a Dense
            layer: `kernel` `(units_in, units)`, `bias` `(units,)` or None, an activation name).
        dtype: float dtype to compute in, or None for the first parameter's dtype (float32 if it
            is not a float array). Parameters are copied and cast to it. Defaults to None.
        backend: `"tensorflow"`, `"jax"` or `"torch"`: the Keras backend whose cross-entropy
            path the twin follows (TensorFlow takes the logits of a sigmoid or softmax output).
            Defaults to `"tensorflow"`.

    Attributes:
        layers: list of twin layers (copies).
        cache: list of `LayerCache`, one per Dense layer, set by the last forward pass.
        optimizer_state: the optimizer state left by the last `fit` (None before).

    Raises:
        TypeError, ValueError: for an empty `layers`, bad arrays, shapes that do not chain
            (naming the layer and both shapes) or an unknown activation.

    Example:
        >>> import numpy as np
        >>> mlp = NumpyMLP([(np.ones((2, 3)), np.zeros(3), "relu"), (np.ones((3, 1)), np.zeros(1), "linear")])
        >>> mlp.forward(np.array([[1.0, 2.0]])).tolist()
        [[9.0]]
        >>> [g.shape for g in mlp.gradients([[1.0, 2.0]], [0.0])[1]]
        [(2, 3), (3,), (3, 1), (1,)]
    """

    def __init__(self, layers, dtype=None, backend="tensorflow"):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__"):
            raise TypeError(f"`layers` must be a list of twin layers or (kernel, bias, activation). Received: layers={layers!r}")
        layers = list(layers)
        if not layers:
            raise ValueError("`layers` must hold at least one layer. Received: layers=[]")
        if dtype is None:
            first = next((l for l in layers if not isinstance(l, _LAYER_TYPES) or l.params), layers[0])
            arr = first.params[0] if isinstance(first, _LAYER_TYPES) and first.params else (first[0] if not isinstance(first, _LAYER_TYPES) and len(first) else None)
            kind = getattr(np.asarray(arr), "dtype", np.dtype("O"))
            dtype = kind.name if kind.kind == "f" else "float32"
        self._dtype = np.dtype(check_dtype("dtype", dtype))
        if backend not in ("tensorflow", "jax", "torch", "numpy"):
            raise ValueError(f"`backend` must be 'tensorflow', 'jax', 'torch' or 'numpy'. Received: backend={backend!r}")
        self.backend = backend
        self.layers, width = [], None
        for i, layer in enumerate(layers):
            if isinstance(layer, _LAYER_TYPES):
                layer = layer.astype(self._dtype.name)
            elif isinstance(layer, (tuple, list)):
                if len(layer) != 3:
                    raise ValueError(f"`layers[{i}]` must be a (kernel, bias, activation) triple. Received: {layer!r}")
                try:
                    layer = Dense(*layer, dtype=self._dtype.name)
                except (TypeError, ValueError) as e:
                    raise type(e)(str(e).replace("layers[0]", f"layers[{i}]")) from None
            else:
                raise TypeError(f"`layers[{i}]` must be a twin layer or a (kernel, bias, activation) triple. Received: {layer!r}")
            if isinstance(layer, Dense):
                if width is not None and layer.kernel.shape[0] != width:
                    raise ValueError(
                        f"layer {i}'s kernel has {layer.kernel.shape[0]} input rows, but the layer below has {width} units. "
                        f"Received a kernel of shape {layer.kernel.shape}"
                    )
                width = layer.units
            elif isinstance(layer, BatchNormalization):
                if width is not None and layer.units != width:
                    raise ValueError(f"layer {i} (BatchNormalization) has {layer.units} units, but the layer below has {width}")
                width = layer.units
            self.layers.append(layer)
        if not any(isinstance(l, Dense) for l in self.layers):
            raise ValueError("`layers` must hold at least one Dense layer")
        self.cache = None
        self.optimizer_state = None

    # ------------------------------------------------------------ constructors

    @classmethod
    def from_sizes(cls, layer_sizes, activations, seed=None, dtype="float32"):
        """A fresh stack of Dense layers with Glorot-uniform kernels and zero biases, as `keras.layers.Dense`.

        Args:
            layer_sizes: sequence of ints `[n_inputs, units_1, ..., units_L]`.
            activations: one activation name for all layers, or a sequence of L names.
            seed: int >= 0 or None, seed of `np.random.default_rng`. Defaults to None.
            dtype: float dtype. Defaults to `"float32"`.

        Returns:
            `NumpyMLP`. Its weights are not Keras's for the same seed: use `from_keras` to copy a model.

        Example:
            >>> mlp = NumpyMLP.from_sizes([2, 4, 1], ["tanh", "sigmoid"], seed=0)
            >>> [p.shape for p in mlp.params]
            [(2, 4), (4,), (4, 1), (1,)]
        """
        sizes, activations = check_layers(layer_sizes, activations)
        dtype = check_dtype("dtype", dtype)
        rng = np.random.default_rng(check_seed(seed))
        layers = []
        for fan_in, fan_out, activation in zip(sizes[:-1], sizes[1:], activations, strict=True):
            layers.append((glorot_uniform(rng, fan_in, fan_out, dtype), np.zeros(fan_out, dtype=dtype), activation))
        return cls(layers, dtype=dtype)

    @classmethod
    def from_keras(cls, model):
        """Copy the architecture and current weights of a Keras `Sequential`.

        Imports Keras. Reads Dense (with regularizers), BatchNormalization, Dropout and Activation
        layers (see `kerasbp.reference.layers_from_keras`); the twin computes in the layers'
        variable dtype and follows the model's Keras backend.

        Returns:
            `NumpyMLP` with copies of the weights, whose `params` follow `model.trainable_weights`.

        Raises:
            TypeError: if `model` is not a Keras model.
            ValueError: for a layer or option the twin does not reproduce, naming it.

        Example:
            >>> from kerasbp import xor_model
            >>> mlp = NumpyMLP.from_keras(xor_model(seed=0))
            >>> mlp.layer_sizes, mlp.activations
            ([2, 4, 1], ['sigmoid', 'sigmoid'])
        """
        import keras  # optional dependency of the twin

        layers, dtype = layers_from_keras(model)
        return cls(layers, dtype=dtype, backend=keras.backend.backend())

    # ------------------------------------------------------------ description

    @property
    def dtype(self):
        """str, the float dtype the network computes in."""
        return self._dtype.name

    @property
    def _dense(self):
        return [l for l in self.layers if isinstance(l, Dense)]

    @property
    def n_layers(self):
        """int, the number of Dense layers."""
        return len(self._dense)

    @property
    def layer_sizes(self):
        """list of int, `[n_inputs, units of each Dense layer]`."""
        dense = self._dense
        return [dense[0].kernel.shape[0]] + [d.units for d in dense]

    @property
    def activations(self):
        """list of str, the activation of each Dense layer."""
        return [d.activation.name for d in self._dense]

    @property
    def n_inputs(self):
        """int, the input width."""
        return self._dense[0].kernel.shape[0]

    @property
    def n_outputs(self):
        """int, the output width `d`."""
        return self._dense[-1].units

    @property
    def dropout_layers(self):
        """list of int, the positions in `layers` of the Dropout layers (one mask each)."""
        return [i for i, l in enumerate(self.layers) if isinstance(l, Dropout)]

    def __repr__(self):
        if all(isinstance(l, Dense) for l in self.layers):
            return f"NumpyMLP(layer_sizes={self.layer_sizes}, activations={self.activations}, dtype={self.dtype!r})"
        return f"NumpyMLP(layers={self.layers!r}, dtype={self.dtype!r})"

    # ------------------------------------------------------------ parameters

    def _iter_params(self):
        for layer in self.layers:
            yield from layer.params

    @property
    def params(self):
        """list of float arrays (copies), in the order and shapes of `model.trainable_weights`."""
        return [p.copy() for p in self._iter_params()]

    @property
    def param_shapes(self):
        """list of tuples, the shapes of `params`."""
        return [p.shape for p in self._iter_params()]

    @property
    def non_trainable(self):
        """list of float arrays (copies): each BatchNormalization's moving mean and variance."""
        return [v.copy() for layer in self.layers for v in layer.non_trainable]

    def set_params(self, params):
        """Replace the trainable parameters (copied and cast to the network's dtype).

        Raises:
            ValueError: for a wrong number of arrays, a wrong shape (naming the index) or non-finite values.
        """
        self._set_params_unchecked(self._checked("params", params, self.param_shapes))

    def set_non_trainable(self, values):
        """Replace the moving statistics (in `non_trainable` order), copied and checked."""
        values = iter(self._checked("non_trainable", values, [v.shape for v in self.non_trainable]))
        for layer in self.layers:
            if layer.non_trainable:
                layer.set_non_trainable([next(values) for _ in layer.non_trainable])

    def _checked(self, name, arrays, shapes):
        arrays = list(arrays)
        if len(arrays) != len(shapes):
            raise ValueError(f"`{name}` must hold {len(shapes)} arrays (shapes {shapes}). Received {len(arrays)}")
        out = []
        for i, (p, shape) in enumerate(zip(arrays, shapes, strict=True)):
            arr = np.asarray(p)
            if arr.shape != shape:
                raise ValueError(f"`{name}[{i}]` must have shape {shape}. Received an array of shape {arr.shape}")
            out.append(check_array(f"{name}[{i}]", arr, dtype=self.dtype, ndim=len(shape)).copy())
        return out

    def _set_params_unchecked(self, params):
        it = iter(params)
        for layer in self.layers:
            if layer.params:
                layer.set_params([next(it) for _ in layer.params])

    def copy(self):
        """A deep copy (weights only; no cache, no optimizer state)."""
        return self.astype(self.dtype)

    def astype(self, dtype):
        """A copy of the network that computes in `dtype` (`"float32"` or `"float64"`)."""
        return NumpyMLP(self.layers, dtype=check_dtype("dtype", dtype), backend=self.backend)

    # ------------------------------------------------------------ forward / backward

    def _check_X(self, X):
        if self.n_inputs > 1 and np.ndim(X) == 1:
            raise ValueError(
                f"`X` must be 2-D of shape (n_samples, {self.n_inputs}) for a network with {self.n_inputs} inputs. "
                f"Received a 1-D array of shape {np.shape(X)}"
            )
        X = check_array("X", X, dtype=self.dtype)
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"`X` has {X.shape[1]} features, but the network expects {self.n_inputs}. Received: X of shape {X.shape}")
        return X

    def _prepare(self, X, y, loss, sample_weight=None, class_weight=None):
        X = self._check_X(X)
        n = X.shape[0]
        if np.ndim(y) >= 1 and np.shape(y)[0] != n:
            raise ValueError(f"`X` and `y` must have the same number of rows. Received {n} and {np.shape(y)[0]}")
        y_arr, _ = loss.prepare(y, np.zeros((n, self.n_outputs), dtype=self.dtype))
        if class_weight is not None:
            cw = class_weight_to_sample_weight(np.asarray(y), class_weight, self.dtype)
            sample_weight = cw if sample_weight is None else np.asarray(sample_weight, self.dtype).reshape(n) * cw
        if sample_weight is not None:
            from kerasbp.reference.loss_objects import check_sample_weight

            sample_weight = check_sample_weight(sample_weight, n, self.dtype)
        return X, y_arr, sample_weight

    def _masks(self, dropout_masks):
        positions = self.dropout_layers
        if dropout_masks is None:
            return {}
        dropout_masks = list(dropout_masks)
        if len(dropout_masks) != len(positions):
            raise ValueError(
                f"`dropout_masks` must hold one mask per Dropout layer ({len(positions)}). Received {len(dropout_masks)}"
            )
        return dict(zip(positions, dropout_masks, strict=True))

    def forward(self, X, training=False, dropout_masks=None):
        """The network's output, keeping each Dense layer's `x`, `z` and `a` in `self.cache`.

        Args:
            X: float array of shape `(n, n_inputs)` (1-D `(n,)` when `n_inputs == 1`).
            training: bool, batch statistics in BatchNormalization and masks in Dropout (as
                Keras's `training=True`). Defaults to `False` (inference, as `model.predict`).
            dropout_masks: None, or one 0/1 array `(n, units)` per Dropout layer. Defaults to None.

        Returns:
            Float array of shape `(n, n_outputs)`.
        """
        return self._forward(self._check_X(X), training, self._masks(dropout_masks))

    def __call__(self, X):
        """Same as `forward(X)`."""
        return self.forward(X)

    def _forward(self, X, training=False, masks=None):
        masks = masks or {}
        a, caches = X, []
        for i, layer in enumerate(self.layers):
            a, cache = layer.forward(a, training=training, mask=masks.get(i))
            caches.append(cache)
        self._caches = caches
        self.cache = [c for l, c in zip(self.layers, caches, strict=True) if isinstance(l, Dense)]
        return a

    def _logits_loss(self, loss):
        """The loss taken from the output layer's logits (Keras on TensorFlow), or None."""
        last = self.layers[-1]
        act = getattr(last, "activation", None)
        if self.backend == "tensorflow" and loss.crossentropy and act is not None and act.name in ("sigmoid", "softmax"):
            return loss.with_logits()
        return None

    def _backward(self, X, y, loss, sample_weight=None, training=True, masks=None):
        out = self._forward(X, training, masks)
        last = len(self.layers) - 1
        logits_loss = self._logits_loss(loss)
        if logits_loss is not None:
            # Keras (TF backend) finds the sigmoid/softmax input in `_keras_logits` and uses the
            # logits formula, unclipped, even with from_logits=False; the activation and the
            # cross-entropy then collapse: dL/dz = (sigmoid(z) - y) / (n*d), or softmax(z) - y over n.
            z = self._caches[last].z
            value = logits_loss(y, z, sample_weight, check_input=False)
            delta, grad_a = logits_loss.gradient(y, z, sample_weight, check_input=False), None
        else:
            value = loss(y, out, sample_weight, check_input=False)
            delta, grad_a = None, loss.gradient(y, out, sample_weight, check_input=False)  # (n, d)
        layer_grads = [None] * len(self.layers)
        deltas = []
        for i in range(last, -1, -1):
            layer = self.layers[i]
            grad_a, grads, d = layer.backward(self._caches[i], grad_a, delta=delta, input_grad=i > 0)
            delta = None
            penalty, penalty_grads = layer.penalty()
            if penalty_grads:
                value = value + penalty
                grads = [g + pg for g, pg in zip(grads, penalty_grads, strict=True)]
            layer_grads[i] = grads
            if isinstance(layer, Dense):
                deltas.insert(0, d)
        grads = [g for gs in layer_grads for g in gs]
        return Backward(value, deltas, grads)

    def backward(self, X, y, loss="mse", sample_weight=None, dropout_masks=None, class_weight=None, training=True):
        """One forward and backward pass: loss, per-layer deltas and gradients.

        Args:
            X: float array of shape `(n, n_inputs)`.
            y: targets: float `(n, n_outputs)` (or `(n,)` when `n_outputs == 1`); integer labels
                `(n,)` for the sparse categorical loss.
            loss: a name of `LOSSES`, a twin loss object or a Keras loss. Defaults to `"mse"`.
            sample_weight: None or float array `(n,)`. Defaults to None.
            dropout_masks: None (no dropout) or one 0/1 array `(n, units)` per Dropout layer.
            class_weight: None or dict `{class: weight}`, turned into sample weights as `fit`
                does (multiplied into `sample_weight` when both are given). Defaults to None.
            training: bool, batch statistics in BatchNormalization. Defaults to `True`.

        Returns:
            `Backward(loss, deltas, grads)`.
        """
        loss = get_loss(loss)
        X, y, sample_weight = self._prepare(X, y, loss, sample_weight, class_weight)
        return self._backward(X, y, loss, sample_weight, training, self._masks(dropout_masks))

    def gradients(self, X, y, loss="mse", sample_weight=None, dropout_masks=None, class_weight=None, training=True):
        """The loss and its gradient with respect to every trainable parameter.

        For a cross-entropy on a sigmoid or softmax output layer this reproduces Keras's
        TensorFlow backend: the loss comes from the logits (no clipping), so
        `dL/dz = (p - y) / n` (softmax) even when saturated. Regularization penalties are included.

        Args:
            X, y, loss, sample_weight, dropout_masks, class_weight, training: see `backward`.

        Returns:
            `(loss_value, grads)`: a 0-d float array, and a list of float arrays in the order
            and shapes of `model.trainable_weights`.
        """
        result = self.backward(X, y, loss, sample_weight, dropout_masks, class_weight, training)
        return result.loss, result.grads

    def deltas(self, X, y, loss="mse"):
        """`dL/dz_l` for each Dense layer `l` (first layer first): the error signals sent down."""
        return self.backward(X, y, loss).deltas

    def per_example_gradients(self, X, y, loss="mse", sample_weight=None, dropout_masks=None):
        """Each example's own gradient, `(n, *variable.shape)` per variable; their mean is the batch
        gradient. See `kerasbp.reference.curvature.per_example_gradients`."""
        return curvature.per_example_gradients(self, X, y, loss, sample_weight, dropout_masks)

    def hessian(self, X, y, loss="mse", sample_weight=None):
        """The exact Hessian of the loss, float64 `(n_params, n_params)` in the flat order of
        `kerasbp.reference.curvature.flatten_params`. See `kerasbp.reference.curvature.hessian`."""
        return curvature.hessian(self, X, y, loss, sample_weight)

    def evaluate(self, X, y, loss="mse", sample_weight=None):
        """The loss on `(X, y)` in inference mode, as `model.evaluate` with one batch."""
        return self.backward(X, y, loss, sample_weight, training=False).loss

    def _update_moving(self):
        for layer, cache in zip(self.layers, self._caches, strict=True):
            if isinstance(layer, BatchNormalization) and cache.get("moving") is not None:
                layer.set_non_trainable(cache["moving"])

    # ------------------------------------------------------------ training

    def train_step(self, X, y, optimizer, state, loss="mse", sample_weight=None, dropout_masks=None):
        """One step: forward (training mode), backward, optimizer update, moving statistics.

        Returns:
            `(loss_value, state)`: the loss computed before the update, and the new state.
        """
        optimizer, loss = get_optimizer(optimizer), get_loss(loss)
        X, y, sample_weight = self._prepare(X, y, loss, sample_weight)
        value, _, grads = self._backward(X, y, loss, sample_weight, True, self._masks(dropout_masks))
        self._update_moving()
        params, state = optimizer.apply(list(self._iter_params()), grads, state)
        self._set_params_unchecked(params)
        return value, state

    def fit(self, X, y, optimizer, epochs=1, batch_size=None, loss="mse", state=None, sample_weight=None, class_weight=None):
        """Train like `model.fit(X, y, epochs, batch_size, shuffle=False)` and return the epoch losses.

        Batches are consecutive slices in order, the last partial batch kept. The loss of an
        epoch is what Keras's History records: the batch-size weighted mean of the batches'
        losses, each computed *before* that batch's update. Dropout layers are inactive (the
        twin draws no random masks; use `train_step` with masks).

        Args:
            X, y: see `backward`.
            optimizer: a twin optimizer, a Keras optimizer name or a Keras optimizer.
            epochs: int >= 1. Defaults to 1.
            batch_size: int >= 1, or None for 32 as in Keras. Defaults to None.
            loss: see `backward`. Defaults to `"mse"`.
            state: optimizer state to start from, or None for `optimizer.init(params)`.
            sample_weight, class_weight: see `backward`. Defaults to None.

        Returns:
            Float array of shape `(epochs,)` in the network's dtype: the per-epoch losses.

        Example:
            >>> from kerasbp.reference import SGD
            >>> mlp = NumpyMLP([([[0.0]], [0.0], "linear")], dtype="float64")
            >>> mlp.fit([[1.0], [2.0]], [2.0, 4.0], SGD(0.1), epochs=2).round(4).tolist()
            [10.0, 1.06]
        """
        optimizer, loss = get_optimizer(optimizer), get_loss(loss)
        X, y, sample_weight = self._prepare(X, y, loss, sample_weight, class_weight)
        epochs = check_positive_int("epochs", epochs)
        batch_size = 32 if batch_size is None else check_positive_int("batch_size", batch_size)
        params = list(self._iter_params())
        if state is None:
            state = optimizer.init(params)
        zero = np.zeros((), dtype=self._dtype)
        losses = np.empty(epochs, dtype=self._dtype)
        for epoch in range(epochs):
            total, count = zero, zero  # Keras's Mean metric: total += loss * batch size; count += batch size
            for batch in batch_slices(X.shape[0], batch_size):
                sw = None if sample_weight is None else sample_weight[batch]
                value, _, grads = self._backward(X[batch], y[batch], loss, sw, True, {})
                self._update_moving()
                params, state = optimizer.apply(params, grads, state)
                self._set_params_unchecked(params)
                size = self._dtype.type(X[batch].shape[0])
                total, count = total + value * size, count + size
            losses[epoch] = total / count
        self.optimizer_state = state
        return losses
