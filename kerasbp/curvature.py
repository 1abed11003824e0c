"""`HessianProbe`: the curvature of the training loss inside `fit`, from Hessian-vector products.

A Keras callback sees neither the batch of a step nor the weights before its update. The probe
wraps the model's `train_step` (an instance attribute, for the duration of training), so that at
the probed steps the measurement runs inside the train step, on that step's batch and at the
weights before its update, then the step itself runs unchanged. This module is the callback and
what the backends share; each backend's module makes the measurement:

- TensorFlow (`curvature_tf.py`): traced into the compiled step, forward-over-reverse products
  (a `tf.autodiff.ForwardAccumulator` around a `tf.GradientTape`), the numbers kept in a ring
  buffer of variables that the callback reads back now and then; it works with
  `steps_per_execution > 1`, XLA and `kerasbp.train`.
- torch (`curvature_torch.py`): in the eager step, reverse-over-reverse products (the gradient
  built with `create_graph=True`, then differentiated along `v`), the numbers kept on the device.

Either way `H v` costs about two gradients, without forming `H` (Pearlmutter 1994).

From them, at each probed step:

```python
# lambda_max: power iteration, v_0 random (seeded), n_iterations products
lam_k = v_k . H v_k;  v_{k+1} = H v_k / |H v_k|          # |lam| grows to the largest |eigenvalue|
# if that eigenvalue is negative (mu < 0), the largest algebraic one is found by a second power
# iteration on the shifted H - mu I, whose eigenvalues lambda_i - mu are all >= 0:
lambda_max = (largest eigenvalue of H - mu I) + mu
# trace: Hutchinson, Rademacher probes z (entries +-1), E[z z^T] = I so E[z . H z] = tr H
trace = mean_k z_k . H z_k       # or, exactly, sum_j e_j . H e_j over the basis vectors
```

The Rayleigh quotient's error after `k` products shrinks like `(lambda_2 / lambda_1)^(2k)`: few
iterations suffice when the top eigenvalue stands out, many when it does not. Hutchinson's
estimator is unbiased, with a variance of `2 * sum_{i != j} H_ij^2` per probe.

The loss is the one `train_step` differentiates (`compute_loss`: the compiled loss with sample
weights, plus regularization penalties), computed in training mode. Whatever the measuring
forward passes change in the model is put back after each one (BatchNormalization's moving
statistics, the dropout seed generators, metric variables), so training runs exactly as without
the probe; and every product sees the same dropout mask, the one the step itself then draws.

References:
    Pearlmutter (1994), "Fast Exact Multiplication by the Hessian", Neural Computation 6(1).
    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Communications in Statistics - Simulation and Computation 18(3).
    LeCun, Simard & Pearlmutter (1993), "Automatic Learning Rate Maximization by On-Line Estimation
    of the Hessian's Eigenvectors", NIPS 5.
    Ghorbani, Krishnan & Xiao (2019), "An Investigation into Neural Net Optimization via Hessian
    Eigenvalue Density", ICML.
    Schneider, Dangel & Hennig (2021), "Cockpit: A Practical Debugging Tool for the Training of
    Deep Neural Networks", NeurIPS.
"""

import numbers

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_positive_int, check_seed
from kerasbp.logger.hooks import attached_capture

#: Rows of the device buffer at least: the host reads it only every few calls.
MIN_ROWS = 64

#: Columns of a buffer row.
COLUMNS = ("step", "lambda_max", "trace", "learning_rate")

#: The backends whose train step the probe can wrap.
BACKENDS = ("tensorflow", "jax", "torch")

_MISSING = object()


def _check_n_probes(n_probes):
    if isinstance(n_probes, str):
        if n_probes != "exact":
            raise ValueError(f"`n_probes` must be an integer >= 0 or 'exact'. Received: n_probes={n_probes!r}")
        return n_probes
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral):
        raise TypeError(f"`n_probes` must be an integer >= 0 or 'exact'. Received: n_probes={n_probes!r}")
    if n_probes < 0:
        raise ValueError(f"`n_probes` must be an integer >= 0 or 'exact'. Received: n_probes={n_probes!r}")
    return int(n_probes)


def _check_data(data):
    """`data` as a tuple of NumPy arrays `(X, y)` or `(X, y, sample_weight)`, or None."""
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        what = f"an array of shape {np.shape(data)}" if hasattr(data, "shape") else f"a {type(data).__name__}" + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
        raise TypeError(f"`data` must be None or a tuple (X, y) or (X, y, sample_weight). Received {what}")
    arrays = []
    for name, a in zip(("X", "y", "sample_weight"), data, strict=False):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"`data`'s {name} must be numeric. Received an array of dtype {a.dtype}")
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"`data`'s {name} must hold at least one row. Received an array of shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`data`'s {name} must be finite. Received NaN or Inf")
        arrays.append(a)
    rows = {a.shape[0] for a in arrays}
    if len(rows) != 1:
        raise ValueError(f"`data`'s arrays must have the same number of rows. Received shapes {[a.shape for a in arrays]}")
    return tuple(arrays)


def _data_for(model, data):
    """`data` checked against `model`'s input and output widths: a 1-D X becomes one column for a
    model with one input.

    Raises:
        ValueError: for an X whose width is not the model's input width, or a float y whose
            number of columns is not the model's number of outputs (integer labels are left to
            the loss), naming both shapes.
    """
    X, y = data[0], data[1]
    expects = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if expects is not None:
        if X.ndim == 1 and expects in ((1,), (None,)):
            X = X[:, None]
        if X.ndim != len(expects) + 1 or any(e not in (None, w) for e, w in zip(expects, X.shape[1:], strict=True)):
            raise ValueError(f"`data`'s X must have the model's input shape (n, {', '.join('any' if e is None else str(e) for e in expects)}). Received an X of shape {X.shape}")
    outputs = tuple(model.outputs[0].shape[1:]) if getattr(model, "outputs", None) else None
    if outputs and y.dtype.kind == "f" and y.ndim == 2 and outputs[-1] not in (None, y.shape[1]):
        raise ValueError(f"`data`'s y has {y.shape[1]} columns, but the model has {outputs[-1]} output(s). Received a y of shape {y.shape}")
    return (X, y, *data[2:])


def fixed_arrays(data, model):
    """`data` (checked `(X, y[, sample_weight])` NumPy arrays, or None) in the model's dtype:
    float arrays cast to the dtype of its first trainable weight, integer labels kept."""
    if data is None:
        return None
    dtype = model.trainable_weights[0].dtype if model.trainable_weights else keras.config.floatx()
    return [a if i == 1 and a.dtype.kind in "biu" else a.astype(dtype) for i, a in enumerate(data)]


def state_variables(model):
    """The model's variables that a measuring forward pass may move (BatchNormalization's moving
    statistics, dropout seed generators, metrics), each once: restored after every pass."""
    seen, variables = set(), []
    for v in list(model.non_trainable_variables) + list(model.metrics_variables):
        if id(v) not in seen:
            seen.add(id(v))
            variables.append(v)
    return variables


class ProbeState:
    """The device side of a `HessianProbe` for one model, made by the backend's module
    (`curvature_tf.TensorFlowProbeState`, `curvature_jax.JaxProbeState`,
    `curvature_torch.TorchProbeState`): it sets
    `self.train_step`, the wrapper that measures at the probed steps and then runs the model's
    own `train_step`, and implements `step`, `set_step`, `written` and `rows_at`. This base puts
    the wrapper on the model (an instance attribute, for the duration of training), gives `fit` a
    train function traced with it, and takes both off.

    Args:
        model: a compiled `keras.Model`.
        capacity: int, rows of the ring buffer of measurements.
    """

    #: Whether `fit` needs a train function traced with the wrapped step (TensorFlow, JAX: their
    #: train functions hold the `train_step` they were traced with; torch looks it up at each step).
    replaces_train_function = True

    def __init__(self, model, capacity):
        self.model, self.capacity = model, capacity
        self.train_step = None
        self.original = None  # the train_step being wrapped, set at install
        self.prior = _MISSING  # the model's own instance attribute train_step, if any
        self.functions = {}  # id(train function replaced) -> (it, the same traced with the probe)
        self.replaced = None  # while installed in fit: the train function ours replaced
        self.ours = None

    def step(self):
        """int: the number of the next train step."""
        raise NotImplementedError

    def set_step(self, step):
        """Number the next train step `step` (int)."""
        raise NotImplementedError

    def written(self):
        """int: the rows written since the state was made (the ring buffer keeps the last `capacity`)."""
        raise NotImplementedError

    def rows_at(self, slots):
        """float64 array `(len(slots), len(COLUMNS))`: the buffer's rows at `slots` (int array)."""
        raise NotImplementedError

    def install(self):
        """Put the wrapped `train_step` on the model."""
        model = self.model
        if model.__dict__.get("train_step") is self.train_step:
            return  # still installed (an interrupted fit): wrapping it again would recurse
        self.prior = model.__dict__.get("train_step", _MISSING)
        self.original = model.train_step
        object.__setattr__(model, "train_step", self.train_step)  # no Keras tracking of a function

    def use_in_fit(self):
        """Give `fit` a train function traced with the wrapped step (one per function it replaces),
        where `replaces_train_function`."""
        model = self.model
        current = model.train_function
        if not self.replaces_train_function or current is None or current is self.ours:
            return
        entry = self.functions.get(id(current))
        if entry is None:
            model.make_train_function(force=True)  # traced from model.train_step: ours
            entry = self.functions[id(current)] = (current, model.train_function)
        self.replaced, self.ours = current, entry[1]
        model.train_function = self.ours

    def uninstall(self):
        """Put back the model's own `train_step`, and the train function ours replaced. Where a
        `GradientLogger` wrapped our wrapper since (JAX) and is still attached, it will put back
        the model's own instead of ours when it detaches."""
        model = self.model
        if model.__dict__.get("train_step") is self.train_step:
            if self.prior is _MISSING:
                model.__dict__.pop("train_step", None)
            else:
                object.__setattr__(model, "train_step", self.prior)
        else:
            capture = attached_capture(model)
            if capture is not None:
                capture.replace_prior(model, "train_step", self.train_step, None if self.prior is _MISSING else self.prior)
        if self.ours is not None and model.train_function is self.ours:
            model.train_function = self.replaced  # else another callback has put its own back already
        self.replaced = self.ours = None


def _state_class():
    """The `ProbeState` class of Keras's backend, each imported only on its own backend (TensorFlow
    is not installed everywhere torch is)."""
    backend = keras.backend.backend()
    if backend == "torch":
        from kerasbp.curvature_torch import TorchProbeState

        return TorchProbeState
    if backend == "jax":
        from kerasbp.curvature_jax import JaxProbeState

        return JaxProbeState
    from kerasbp.curvature_tf import TensorFlowProbeState

    return TensorFlowProbeState


class HessianProbe(keras.callbacks.Callback):
    """Measures the Hessian's largest eigenvalue and its trace at every `every_n_steps`-th step of `fit`.

    At each probed train step (0-based number a multiple of `every_n_steps`), before the step's
    update and on its batch (or on fixed `data`), it estimates from Hessian-vector products
    (forward-over-reverse) the largest algebraic eigenvalue `lambda_max` of the Hessian of the
    training loss, by power iteration, and its trace, by Hutchinson's estimator. Gradient descent
    on a quadratic with curvature `lambda` is stable only while `learning_rate < 2 / lambda`
    (LeCun et al. 1993): `stability_threshold = 2 / learning_rate` is the sharpness beyond which
    plain SGD's step overshoots along the top eigenvector (with momentum `beta`, the bound is
    `2 (1 + beta) / learning_rate`; adaptive optimizers precondition `H` first).

    Power iteration finds the eigenvalue of largest magnitude. When that one is negative (`mu`), a
    second power iteration of `n_iterations` products on `H - mu I` (all eigenvalues >= 0) finds
    `lambda_max - mu`; then `lambda_max` costs twice as many products, and converges slowly if it
    lies close to the next eigenvalue.

    Works with `model.fit` (also with `steps_per_execution > 1` where the backend allows it) and
    `kerasbp.train`, on the TensorFlow, JAX and torch backends (the measurement of each:
    `curvature_tf.py`, `curvature_jax.py`, `curvature_torch.py`). The model is left exactly as it
    was: the wrapped `train_step` is removed at the end of training, and whatever the measuring
    passes change is restored after each.

    Args:
        every_n_steps: int >= 1, probe the train steps whose 0-based number is a multiple of it.
            Defaults to `100`.
        n_iterations: int >= 1, Hessian-vector products of the power iteration (twice that many
            when the dominant eigenvalue is negative). Defaults to `20`.
        n_probes: int >= 0, Rademacher probes of Hutchinson's trace estimator (0: no trace, NaN),
            or `"exact"`: the basis vectors, one product per parameter, which gives the exact
            trace (for tiny networks). Defaults to `10`.
        data: None, to use each probed step's own batch, or `(X, y)` or `(X, y, sample_weight)`:
            fixed arrays (all rows in one forward pass) on which to measure at every probe.
            Defaults to None.
        seed: int in `[0, 2**31)`, the seed of the power iteration's start and of the probes
            (stateless: the draws at step `s` depend on `(seed, s)` only). Defaults to `0`.

    Attributes:
        steps: int64 array `(n_probed,)`, the 0-based train step of each measurement (counted
            from the optimizer's iterations at the first fit, and on across fits).
        lambda_max: float64 array `(n_probed,)`, the largest eigenvalue of the Hessian.
        trace: float64 array `(n_probed,)`, the estimated trace (NaN with `n_probes=0`).
        learning_rate: float64 array `(n_probed,)`, the learning rate of that step's update.
        stability_threshold: float64 array `(n_probed,)`, `2 / learning_rate`.

    Raises:
        TypeError, ValueError: for bad arguments, naming the argument, what was expected and what
            was received.
        RuntimeError: at the start of training on a backend other than TensorFlow, JAX and
            torch, for a model that is not compiled, one under a distribution strategy
            (`tf.distribute` or `keras.distribution`), or one compiled with `jit_compile=True`
            on torch.
        ValueError: at the start of training, for a model without trainable weights or fixed
            `data` whose width is not the model's input width.

    Example:
        >>> import kerasbp as kb
        >>> X, y = kb.linear_data()
        >>> model = kb.compile_model(kb.linear_model(seed=0), "sgd", learning_rate=0.1)
        >>> probe = kb.HessianProbe(every_n_steps=2, n_probes="exact")
        >>> history = model.fit(X, y, batch_size=100, epochs=4, verbose=0, callbacks=[probe])
        >>> probe.steps.tolist()
        [0, 2]

    References:
        Pearlmutter (1994), "Fast Exact Multiplication by the Hessian".
        Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix".
        LeCun, Simard & Pearlmutter (1993), "Automatic Learning Rate Maximization by On-Line
        Estimation of the Hessian's Eigenvectors".
        Ghorbani, Krishnan & Xiao (2019), "An Investigation into Neural Net Optimization via
        Hessian Eigenvalue Density".
        Schneider, Dangel & Hennig (2021), "Cockpit".
    """

    #: `kerasbp.train` may run several epochs per call: the probe reads its buffer after each call.
    epochs_per_call_safe = True

    def __init__(self, every_n_steps=100, n_iterations=20, n_probes=10, data=None, seed=0):
        super().__init__()
        self.every_n_steps = check_positive_int("every_n_steps", every_n_steps)
        self.n_iterations = check_positive_int("n_iterations", n_iterations)
        self.n_probes = _check_n_probes(n_probes)
        self.data = _check_data(data)
        if seed is None:
            raise TypeError("`seed` must be an integer in [0, 2**31). Received: seed=None")
        self.seed = check_seed(seed)
        self.steps = np.zeros(0, np.int64)
        self.lambda_max = np.zeros(0)
        self.trace = np.zeros(0)
        self.learning_rate = np.zeros(0)
        self._state = None
        self._next_step = 0
        self._read = 0
        self._unread_calls = 0
        self._rows_per_call = 1

    @property
    def stability_threshold(self):
        """float64 array `(n_probed,)`: `2 / learning_rate` of each probed step."""
        with np.errstate(divide="ignore"):
            return 2.0 / self.learning_rate

    def __repr__(self):
        return (
            f"HessianProbe(every_n_steps={self.every_n_steps}, n_iterations={self.n_iterations}, n_probes={self.n_probes!r}, "
            f"data={'None' if self.data is None else 'fixed'}, seed={self.seed}; {len(self.steps)} probed steps)"
        )

    # ------------------------------------------------------------------ training hooks
    def on_train_begin(self, logs=None):
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise RuntimeError(
                f"HessianProbe supports the backends {BACKENDS}; Keras is running on {backend!r}. "
                "Set KERAS_BACKEND to one of them before importing keras."
            )
        model = self.model
        if backend == "torch" and getattr(model, "jit_compile", False) is True:
            raise RuntimeError(
                "HessianProbe on torch needs eager train steps. Received: a model compiled with jit_compile=True "
                "(torch.compile). Compile with jit_compile=False"
            )
        if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
            raise RuntimeError("HessianProbe needs a compiled model: call model.compile(...) before fit")
        if not model.trainable_weights:
            raise ValueError("HessianProbe needs a model with trainable weights. Received a model with none")
        if getattr(model, "_distribute_strategy", None) is not None:
            raise RuntimeError(
                "HessianProbe does not support distribution strategies yet. Received a model compiled under "
                f"{type(model._distribute_strategy).__name__}"
            )
        if keras.distribution.distribution() is not None:
            raise RuntimeError(
                f"HessianProbe does not support keras.distribution yet. Received: {type(keras.distribution.distribution()).__name__} in effect"
            )
        if self.data is not None:
            self.data = _data_for(model, self.data)
        steps_per_call = int(self.params.get("steps_per_call") or getattr(model, "steps_per_execution", 1) or 1)
        self._rows_per_call = steps_per_call // self.every_n_steps + 1
        capacity = max(MIN_ROWS, self._rows_per_call)
        state = self._state
        if state is not None:
            self._collect()  # what an interrupted fit left in the buffer
            self._next_step = max(self._next_step, state.step())
            if state.model is not model or state.capacity < self._rows_per_call:
                state.uninstall()  # left installed by an interrupted fit
                state = None
        if state is None:
            state = self._state = _state_class()(self, model, capacity)
            self._read = 0
        start = max(self._next_step, int(model.optimizer.iterations.numpy()))
        state.set_step(start)
        self._unread_calls = 0
        state.install()

    def on_train_batch_begin(self, batch, logs=None):
        self._state.use_in_fit()  # after every on_train_begin: other callbacks' functions are in place
        if (self._unread_calls + 1) * self._rows_per_call > self._state.capacity:
            self._collect()
        self._unread_calls += 1

    def on_epoch_end(self, epoch, logs=None):
        self._collect()

    def on_train_end(self, logs=None):
        self.detach()

    def detach(self):
        """Remove the wrapped `train_step` and read the last measurements. `on_train_end` calls it;
        call it yourself after an interrupted `fit`."""
        state = self._state
        if state is None:
            return
        self._collect()
        state.uninstall()
        self._next_step = state.step()

    def _collect(self):
        state = self._state
        count = state.written()
        if count - self._read > state.capacity:
            raise RuntimeError(f"HessianProbe lost {count - self._read - state.capacity} measurements: its buffer holds {state.capacity}")
        if count == self._read:
            self._unread_calls = 0
            return
        slots = np.arange(self._read, count) % state.capacity
        rows = state.rows_at(slots)  # (n, 4)
        self._read = count
        self._unread_calls = 0
        self.steps = np.concatenate([self.steps, rows[:, 0].astype(np.int64)])
        self.lambda_max = np.concatenate([self.lambda_max, rows[:, 1]])
        self.trace = np.concatenate([self.trace, rows[:, 2]])
        self.learning_rate = np.concatenate([self.learning_rate, rows[:, 3]])
