"""`NumpyMLP`: a stack of Dense layers with the chain rule written out by hand (pure NumPy).

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

These are the seed notebook's `d_output` and `d_hidden`, up to the sign and the loss's factor
`2 / (n * d)` (the notebook uses `targets - output` and no mean). Everything is vectorized over the
batch, and computed in the dtype of the parameters (float32 or float64; inputs are cast to it).

Each layer's own forward and backward are in `kerasbp.reference.layers`. Mirrors
`keras/src/layers/core/dense.py` (`matmul`, then bias, then activation) and the loss conventions
of `kerasbp.reference.losses`.
"""

from typing import NamedTuple

import numpy as np

from kerasbp.checks import check_array, check_dtype, check_layers, check_positive_int, check_seed, check_xy
from kerasbp.data import batch_slices
from kerasbp.reference.from_keras import get_loss, get_optimizer, layers_from_keras
from kerasbp.reference.layers import check_dense_layer, dense_backward, dense_forward, glorot_uniform
from kerasbp.reference.losses import BinaryCrossentropy, binary_crossentropy, binary_crossentropy_gradient


class Backward(NamedTuple):
    """Result of one forward and backward pass.

    Attributes:
        loss: 0-d float array, the loss of the batch (before any update).
        deltas: list of float arrays `dL/dz_l` of shapes `(n, units_l)`, one per layer.
        grads: list of float arrays in the order and shapes of `model.trainable_weights`.
    """

    loss: np.ndarray
    deltas: list
    grads: list


class NumpyMLP:
    """A multilayer perceptron (Dense layers only) with a hand-written backward pass.

    Args:
        layers: sequence of `(kernel, bias, activation)` triples, one per Dense layer: `kernel`
            a float array of shape `(units_in, units)`, `bias` a float array of shape `(units,)`
            or None for a layer without bias (Keras `use_bias=False`), `activation` one of
            `"linear"`, `"sigmoid"`, `"tanh"`, `"relu"` (None means `"linear"`).
        dtype: float dtype to compute in, or None for the first kernel's dtype (float32 if it is
            not a float array). Parameters are copied and cast to it. Defaults to None.

    Attributes:
        cache: list of `kerasbp.reference.LayerCache`, one per layer, set by the last `forward`
            (None before).
        optimizer_state: the optimizer state left by the last `fit` (None before).

    Raises:
        TypeError: for non-numeric arrays or an activation that is not a string.
        ValueError: for an empty `layers`, a triple of the wrong length, arrays of the wrong
            rank, shapes that do not chain (naming the layer and both shapes), non-finite values or
            an unknown activation.

    Example:
        >>> import numpy as np
        >>> mlp = NumpyMLP([(np.ones((2, 3)), np.zeros(3), "relu"), (np.ones((3, 1)), np.zeros(1), "linear")])
        >>> mlp.forward(np.array([[1.0, 2.0]])).tolist()
        [[9.0]]
        >>> [g.shape for g in mlp.gradients([[1.0, 2.0]], [0.0])[1]]
        [(2, 3), (3,), (3, 1), (1,)]
    """

    def __init__(self, layers, dtype=None):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__"):
            raise TypeError(f"`layers` must be a list of (kernel, bias, activation). Received: layers={layers!r}")
        layers = list(layers)
        if not layers:
            raise ValueError("`layers` must hold at least one (kernel, bias, activation). Received: layers=[]")
        if dtype is None:
            first = layers[0][0] if len(layers[0]) else None
            kind = getattr(np.asarray(first), "dtype", np.dtype("O"))
            dtype = kind.name if kind.kind == "f" else "float32"
        self._dtype = np.dtype(check_dtype("dtype", dtype))
        self._kernels, self._biases, self._activations = [], [], []
        for i, layer in enumerate(layers):
            units_in = self._kernels[-1].shape[1] if i > 0 else None
            kernel, bias, activation = check_dense_layer(i, layer, self._dtype.name, units_in)
            self._kernels.append(kernel)
            self._biases.append(bias)
            self._activations.append(activation)
        self.cache = None
        self.optimizer_state = None

    # ------------------------------------------------------------ constructors

    @classmethod
    def from_sizes(cls, layer_sizes, activations, seed=None, dtype="float32"):
        """A fresh network with Glorot-uniform kernels and zero biases, as `keras.layers.Dense`.

        Args:
            layer_sizes: sequence of ints `[n_inputs, units_1, ..., units_L]`.
            activations: one activation name for all layers, or a sequence of L names.
            seed: int >= 0 or None, seed of `np.random.default_rng`. Defaults to None.
            dtype: float dtype. Defaults to `"float32"`.

        Returns:
            `NumpyMLP`. Its weights are not Keras's for the same seed (the generators differ):
            use `from_keras` to copy a Keras model.

        Raises:
            TypeError, ValueError: for sizes that are not positive integers, fewer than two
                sizes, a wrong number of activations or an unknown activation.

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
        """Copy the architecture and current weights of a Keras `Sequential` of `Dense` layers.

        Imports Keras. The twin computes in the layers' variable dtype (float32 unless the model
        was built under a float64 dtype policy); see `kerasbp.reference.layers_from_keras`, which
        reads the layers, for what is supported.

        Args:
            model: a built `keras.Sequential` whose layers are all exactly `keras.layers.Dense`
                with activation `"linear"` (or None), `"sigmoid"`, `"tanh"` or `"relu"`.
                `use_bias=False` is supported (the layer has no bias parameter).

        Returns:
            `NumpyMLP` with copies of the weights, whose `params` follow
            `model.trainable_weights`.

        Raises:
            TypeError: if `model` is not a Keras model.
            ValueError: if the model is not a built `Sequential` of plain trainable `Dense`
                layers on 2-D inputs, naming the layer and what is unsupported.

        Example:
            >>> from kerasbp import xor_model
            >>> mlp = NumpyMLP.from_keras(xor_model(seed=0))
            >>> mlp.layer_sizes, mlp.activations
            ([2, 4, 1], ['sigmoid', 'sigmoid'])
        """
        layers, dtype = layers_from_keras(model)
        return cls(layers, dtype=dtype)

    # ------------------------------------------------------------ description

    @property
    def dtype(self):
        """str, the float dtype the network computes in."""
        return self._dtype.name

    @property
    def n_layers(self):
        """int, the number of Dense layers."""
        return len(self._kernels)

    @property
    def layer_sizes(self):
        """list of int, `[n_inputs, units_1, ..., units_L]`."""
        return [self._kernels[0].shape[0]] + [k.shape[1] for k in self._kernels]

    @property
    def activations(self):
        """list of str, the activation name of each layer."""
        return [a.name for a in self._activations]

    @property
    def n_inputs(self):
        """int, the input width."""
        return self._kernels[0].shape[0]

    @property
    def n_outputs(self):
        """int, the output width `d`."""
        return self._kernels[-1].shape[1]

    def __repr__(self):
        return f"NumpyMLP(layer_sizes={self.layer_sizes}, activations={self.activations}, dtype={self.dtype!r})"

    # ------------------------------------------------------------ parameters

    @property
    def params(self):
        """list of float arrays (copies), in the order and shapes of Keras's `model.trainable_weights`:
        per layer the kernel `(units_in, units)`, then the bias `(units,)` if the layer has one."""
        out = []
        for kernel, bias in zip(self._kernels, self._biases, strict=True):
            out.append(kernel.copy())
            if bias is not None:
                out.append(bias.copy())
        return out

    @property
    def param_shapes(self):
        """list of tuples, the shapes of `params`."""
        return [p.shape for p in self._iter_params()]

    def _iter_params(self):
        for kernel, bias in zip(self._kernels, self._biases, strict=True):
            yield kernel
            if bias is not None:
                yield bias

    def set_params(self, params):
        """Replace the parameters (copied and cast to the network's dtype).

        Args:
            params: list of arrays with the shapes of `params` (e.g. `model.get_weights()` of the
                Keras model the twin came from).

        Raises:
            TypeError: for non-numeric arrays.
            ValueError: for a wrong number of arrays, a wrong shape (naming the index and both
                shapes) or non-finite values.
        """
        params = list(params)
        shapes = self.param_shapes
        if len(params) != len(shapes):
            raise ValueError(f"`params` must hold {len(shapes)} arrays (shapes {shapes}). Received {len(params)}")
        checked = []
        for i, (p, shape) in enumerate(zip(params, shapes, strict=True)):
            arr = np.asarray(p)
            if arr.shape != shape:
                raise ValueError(f"`params[{i}]` must have shape {shape}. Received an array of shape {arr.shape}")
            checked.append(check_array(f"params[{i}]", arr, dtype=self.dtype, ndim=len(shape)).copy())
        self._set_params_unchecked(checked)

    def _set_params_unchecked(self, params):
        it = iter(params)
        for i in range(self.n_layers):
            self._kernels[i] = next(it)
            if self._biases[i] is not None:
                self._biases[i] = next(it)

    def copy(self):
        """A deep copy (parameters only; no cache, no optimizer state)."""
        return self.astype(self.dtype)

    def astype(self, dtype):
        """A copy of the network that computes in `dtype` (`"float32"` or `"float64"`)."""
        layers = [(k, b, a.name) for k, b, a in zip(self._kernels, self._biases, self._activations, strict=True)]
        return NumpyMLP(layers, dtype=check_dtype("dtype", dtype))

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

    def _check_Xy(self, X, y):
        X, y = check_xy(X, y, n_features=self.n_inputs, dtype=self.dtype)
        if y.shape[1] != self.n_outputs:
            raise ValueError(
                f"`y` must have shape (n_samples, {self.n_outputs}) to match the network's output. "
                f"Received: y of shape {np.shape(y)}, output of shape ({X.shape[0]}, {self.n_outputs})"
            )
        return X, y

    def forward(self, X):
        """The network's output, keeping each layer's `x`, `z` and `a` in `self.cache`.

        Args:
            X: float array of shape `(n, n_inputs)` (1-D `(n,)` when `n_inputs == 1`), cast to
                the network's dtype.

        Returns:
            Float array of shape `(n, n_outputs)`.

        Raises:
            TypeError, ValueError: for a bad `X` (see `kerasbp.checks.check_array`) or a width
                other than `n_inputs`.
        """
        return self._forward(self._check_X(X))

    def __call__(self, X):
        """Same as `forward`."""
        return self.forward(X)

    def _forward(self, X):
        cache = []
        a = X
        for kernel, bias, act in zip(self._kernels, self._biases, self._activations, strict=True):
            cache.append(dense_forward(a, kernel, bias, act))
            a = cache[-1].a  # (n, units)
        self.cache = cache
        return a

    def _output_delta(self, y, loss):
        """Loss value and `dL/dz_L` for the last layer, following Keras's TensorFlow backend."""
        last = self.cache[-1]
        act = self._activations[-1]
        if isinstance(loss, BinaryCrossentropy) and act.name == "sigmoid":
            # Keras (TF backend) finds the sigmoid's input in `_keras_logits` and uses the logits
            # formula, unclipped, even with from_logits=False; the sigmoid and the cross-entropy then
            # collapse: dL/dz = (sigmoid(z) - y) / (n * d), exact even when saturated.
            value = binary_crossentropy(y, last.z, from_logits=True, check_input=False)
            return value, binary_crossentropy_gradient(y, last.z, from_logits=True, check_input=False)
        value = loss(y, last.a, check_input=False)
        dL_da = loss.gradient(y, last.a, check_input=False)  # (n, d)
        if act.name == "linear":
            return value, dL_da
        return value, dL_da * act.derivative(last.a)

    def _backward(self, X, y, loss):
        self._forward(X)
        value, delta = self._output_delta(y, loss)
        deltas = [None] * self.n_layers
        layer_grads = [None] * self.n_layers
        for i in range(self.n_layers - 1, -1, -1):
            deltas[i] = delta
            grad_kernel, grad_bias, grad_input = dense_backward(
                self.cache[i], delta, self._kernels[i], self._biases[i] is not None, input_grad=i > 0
            )
            layer_grads[i] = (grad_kernel, grad_bias)
            if i > 0:
                delta = grad_input  # (n, units_in): dL/da_{i-1}
                act = self._activations[i - 1]
                if act.name != "linear":
                    delta = delta * act.derivative(self.cache[i - 1].a)
        grads = [g for pair in layer_grads for g in pair if g is not None]
        return Backward(value, deltas, grads)

    def backward(self, X, y, loss="mse"):
        """One forward and backward pass: loss, per-layer deltas and gradients.

        Args:
            X: float array of shape `(n, n_inputs)`.
            y: float array of shape `(n, n_outputs)`, or `(n,)` when `n_outputs == 1`.
            loss: `"mse"`, `"binary_crossentropy"`, a `kerasbp.reference.losses` object (e.g.
                `BinaryCrossentropy(from_logits=True)`) or a Keras loss. Defaults to `"mse"`.

        Returns:
            `Backward(loss, deltas, grads)`.

        Raises:
            TypeError, ValueError: for bad arrays, a `y` whose shape is not the output's (naming
                both shapes), or an unknown loss.
        """
        X, y = self._check_Xy(X, y)
        return self._backward(X, y, get_loss(loss))

    def gradients(self, X, y, loss="mse"):
        """The loss and its gradient with respect to every parameter.

        For binary cross-entropy on a sigmoid output layer this reproduces Keras's TensorFlow
        backend: the loss comes from the logits formula (no clipping), so a pre-activation of -20
        with target 1 gives 20.0, not the 16.118 of clipped probabilities, and
        `dL/dz = (sigmoid(z) - y) / (n * d)` even when saturated.

        Args:
            X: float array of shape `(n, n_inputs)`.
            y: float array of shape `(n, n_outputs)`, or `(n,)` when `n_outputs == 1`.
            loss: see `backward`. Defaults to `"mse"`.

        Returns:
            `(loss_value, grads)`: a 0-d float array, and a list of float arrays in the order and
            shapes of `model.trainable_weights` (kernel `(in, out)`, bias `(out,)`, layer by layer).

        Raises:
            TypeError, ValueError: as `backward`.
        """
        result = self.backward(X, y, loss)
        return result.loss, result.grads

    def deltas(self, X, y, loss="mse"):
        """`dL/dz_l` for each layer `l`: the error signals backpropagation sends down.

        For the seed notebook's 2-4-1 sigmoid net with MSE, `deltas[-1]` is
        `-2 / n * d_output` and `deltas[0]` is `-2 / n * d_hidden` (the notebook uses
        `targets - output` and no mean).

        Args:
            X, y, loss: see `backward`.

        Returns:
            list of float arrays of shapes `(n, units_l)`, first layer first.

        Raises:
            TypeError, ValueError: as `backward`.
        """
        return self.backward(X, y, loss).deltas

    def evaluate(self, X, y, loss="mse"):
        """The loss of the network on `(X, y)`, as Keras's `model.evaluate` with one batch.

        Args:
            X, y, loss: see `backward`.

        Returns:
            0-d float array.
        """
        return self.backward(X, y, loss).loss

    # ------------------------------------------------------------ training

    def train_step(self, X, y, optimizer, state, loss="mse"):
        """One step: forward, backward, optimizer update of the parameters (in place).

        Args:
            X, y, loss: see `backward`.
            optimizer: `SGD`, `Adam` or `RMSprop` of `kerasbp.reference.optimizers`.
            state: that optimizer's state.

        Returns:
            `(loss_value, state)`: the loss computed before the update, and the new state.
        """
        X, y = self._check_Xy(X, y)
        optimizer = get_optimizer(optimizer)
        value, _, grads = self._backward(X, y, get_loss(loss))
        params, state = optimizer.apply(list(self._iter_params()), grads, state)
        self._set_params_unchecked(params)
        return value, state

    def fit(self, X, y, optimizer, epochs=1, batch_size=None, loss="mse", state=None):
        """Train like `model.fit(X, y, epochs, batch_size, shuffle=False)` and return the epoch losses.

        Batches are consecutive slices `X[k*batch_size:(k+1)*batch_size]` in order, the last
        partial batch kept. The loss of an epoch is what Keras's History records: the mean of the
        batches' losses weighted by their sizes, each computed *before* that batch's update, so
        it differs from the loss of the weights at the end of the epoch (`evaluate`).

        Args:
            X: float array of shape `(n, n_inputs)`.
            y: float array of shape `(n, n_outputs)`, or `(n,)` when `n_outputs == 1`.
            optimizer: `SGD`, `Adam`, `RMSprop`, a name (`"sgd"`, `"adam"`, `"rmsprop"`, with
                Keras's defaults) or a Keras optimizer (copied with `optimizer_from_keras`).
            epochs: int >= 1. Defaults to 1.
            batch_size: int >= 1, or None for 32 as in Keras. Defaults to None.
            loss: see `backward`. Defaults to `"mse"`.
            state: optimizer state to start from, or None for `optimizer.init(params)`. The
                final state is left in `self.optimizer_state`. Defaults to None.

        Returns:
            Float array of shape `(epochs,)` in the network's dtype: the per-epoch losses.

        Raises:
            TypeError, ValueError: for bad arrays, hyperparameters, optimizer or loss.

        Example:
            >>> from kerasbp.reference import SGD
            >>> mlp = NumpyMLP([([[0.0]], [0.0], "linear")], dtype="float64")
            >>> mlp.fit([[1.0], [2.0]], [2.0, 4.0], SGD(0.1), epochs=2).round(4).tolist()
            [10.0, 1.06]
        """
        X, y = self._check_Xy(X, y)
        optimizer = get_optimizer(optimizer)
        loss = get_loss(loss)
        epochs = check_positive_int("epochs", epochs)
        batch_size = 32 if batch_size is None else check_positive_int("batch_size", batch_size)
        params = list(self._iter_params())
        if state is None:
            state = optimizer.init(params)
        batches = batch_slices(X.shape[0], batch_size)
        zero = np.zeros((), dtype=self._dtype)
        losses = np.empty(epochs, dtype=self._dtype)
        for epoch in range(epochs):
            total, count = zero, zero  # Keras's Mean metric: total += loss * batch size; count += batch size
            for batch in batches:
                xb, yb = X[batch], y[batch]
                value, _, grads = self._backward(xb, yb, loss)
                params, state = optimizer.apply(params, grads, state)
                self._set_params_unchecked(params)
                size = self._dtype.type(xb.shape[0])
                total = total + value * size
                count = count + size
            losses[epoch] = total / count
        self.optimizer_state = state
        return losses
