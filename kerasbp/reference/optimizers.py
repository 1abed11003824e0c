"""Keras's SGD, Adam and RMSprop as pure NumPy functions of `(params, grads, state)`.

Each optimizer is a small object holding its hyperparameters, with two pure methods in the style
of optax (`optax/_src/transform.py`):

```python
state = opt.init(params)                            # a NamedTuple; iterations = 0
params, state = opt.apply(params, grads, state)     # new arrays; nothing is modified in place
```

`params` and `grads` are lists of float arrays in the order of `model.trainable_weights`
(`NumpyMLP.params`); `state` holds the iteration count and one slot array per parameter for each
accumulator. Each update is computed in the dtype of its parameter (gradients are cast to it),
with the arithmetic in Keras's order and Keras's roundings of the hyperparameters
(`keras/src/optimizers/{sgd,adam,rmsprop}.py` on the TensorFlow backend):

- The learning rate is a Keras variable of dtype `keras.config.floatx()` at the time the optimizer
  was made, cast to the parameter's dtype at each step. Here it is `dtype(learning_rate)`, which
  is the same number when the parameters have that floatx dtype (float32 by default; float64
  when the optimizer was made after `keras.config.set_floatx("float64")`).
  `optimizer_from_keras` reads the stored value, so it is exact in every case.
- `ops.cast(python_float, "float64")` goes through a float32 tensor first (`tf.cast` converts a
  Python float to float32 before casting). Keras uses it for Adam's `beta_1`, `beta_2` in the
  bias correction and for SGD's `momentum`: in float64 these are the float32-rounded values
  (`float64(float32(0.9))` is 0.8999999761581421). Where Keras combines a Python float with a
  tensor directly (`1 - beta_1` in Adam's moment updates, `epsilon`, everything in RMSprop), the
  Python float is rounded once, to the parameter's dtype. In float32 both roads give the same.
- Adam's `beta**t` is TensorFlow's scalar `pow`, which is (nearly always) correctly rounded,
  while `np.power` is one ulp off for about one exponent in five; it is computed here in a wider
  type and rounded once. An occasional one-ulp difference remains (about 1 in 100 exponents in
  float64).

`optimizer_from_keras` builds the twin of a Keras optimizer, and `state_from_keras` reads a Keras
optimizer's current slots and iteration count, so a comparison can start from any step.

Example:
    >>> import numpy as np
    >>> opt = SGD(learning_rate=0.1, momentum=0.9)
    >>> params = [np.zeros(1)]
    >>> state = opt.init(params)
    >>> for _ in range(3):
    ...     params, state = opt.apply(params, [np.ones(1)], state)
    ...     print(round(float(params[0][0]), 6))
    -0.1
    -0.29
    -0.561
"""

import math
from typing import NamedTuple

import numpy as np

from kerasbp.checks import check_choice, check_positive_float, check_range


def _as_dtype(value, dtype):
    """A Python float rounded once to `dtype`, as `convert_to_tensor(value, dtype)` does."""
    return np.dtype(dtype).type(value)


def _via_float32(value, dtype):
    """A Python float as `keras.ops.cast(value, dtype)` gives it: rounded to float32, then to `dtype`."""
    return np.dtype(dtype).type(np.float32(value))


def _power(base, exponent, dtype):
    """`base ** exponent` rounded once to `dtype`, as TensorFlow's scalar `tf.pow` gives it.

    `np.power` in float32 (and, less often, float64) is off by one ulp for about one exponent in
    five; TensorFlow's scalar `pow` is correctly rounded in nearly all cases. Computing in a wider
    type (float64 for float32; `np.longdouble` for float64, which is 80-bit on x86-64 Linux and
    plain float64 elsewhere) and rounding once reproduces it.
    """
    wide = np.float64 if np.dtype(dtype).itemsize < 8 else np.longdouble
    return np.dtype(dtype).type(np.power(wide(base), wide(exponent)))


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


def _check_params_grads(params, grads):
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(
            f"`params` and `grads` must have the same length. Received {len(params)} params and {len(grads)} grads"
        )
    out_p, out_g = [], []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        p = np.asarray(p)
        if p.dtype.kind != "f":
            raise TypeError(f"`params[{i}]` must be a float array. Received dtype {p.dtype}")
        g = np.asarray(g)
        if g.shape != p.shape:
            raise ValueError(
                f"`grads[{i}]` must have the shape of `params[{i}]`. Received: grads[{i}] of shape {g.shape}, "
                f"params[{i}] of shape {p.shape}"
            )
        out_p.append(p)
        out_g.append(g.astype(p.dtype, copy=False))  # Keras: gradient = ops.cast(gradient, variable.dtype)
    return out_p, out_g


def _check_slots(name, slots, params):
    slots = tuple(slots)
    if len(slots) != len(params):
        raise ValueError(
            f"`state.{name}` must hold one array per parameter ({len(params)}). Received {len(slots)}"
        )
    for i, (s, p) in enumerate(zip(slots, params, strict=True)):
        if np.shape(s) != p.shape:
            raise ValueError(
                f"`state.{name}[{i}]` must have the shape of `params[{i}]`. Received: {np.shape(s)} and {p.shape}"
            )
    return slots


def _zeros(params):
    return tuple(np.zeros_like(np.asarray(p)) for p in params)


def _check_iterations(state):
    it = state.iterations
    if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
        raise ValueError(f"`state.iterations` must be an integer >= 0. Received: iterations={it!r}")
    return int(it)


# ---------------------------------------------------------------- SGD


class SGDState(NamedTuple):
    """State of `SGD`.

    Attributes:
        iterations: int, the number of steps applied so far (Keras's `optimizer.iterations`).
        momentums: tuple of arrays shaped like the parameters (the velocities `v`); empty when
            `momentum == 0`, as in Keras.
    """

    iterations: int
    momentums: tuple


class SGD:
    """Gradient descent with optional (Nesterov) momentum, as `keras.optimizers.SGD`.

    Update rule for a parameter `w` with gradient `g`:

    ```python
    w = w - learning_rate * g                  # momentum == 0
    v = momentum * v - learning_rate * g       # momentum > 0 (v starts at 0)
    w = w + v                                  #   nesterov=False
    w = w + momentum * v - learning_rate * g   #   nesterov=True, with the new v
    ```

    Textbook momentum (Rumelhart, Hinton & Williams 1986; Sutskever et al. 2013 for Nesterov) is
    the same rule. Keras-specific roundings: in float64, `momentum` is float32-rounded (Keras casts
    it with `ops.cast`). Keras's order of operations is kept: `v*momentum - g*lr`.

    Args:
        learning_rate: positive finite float. Defaults to `0.01`.
        momentum: float in `[0, 1)`. Defaults to `0.0`.
        nesterov: bool. Ignored when `momentum == 0`, as in Keras. Defaults to `False`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `nesterov`.
        ValueError: for a learning rate that is not positive and finite, or a momentum outside
            `[0, 1)`.

    Mirrors `keras/src/optimizers/sgd.py`.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = _check_bool("nesterov", nesterov)

    def get_config(self):
        """The hyperparameters as a dict (the constructor's keyword arguments)."""
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self), tuple(self.get_config().items())))

    def init(self, params):
        """A fresh state: iterations 0 and zero velocities (none when `momentum == 0`).

        Args:
            params: list of float arrays.

        Returns:
            `SGDState`.
        """
        return SGDState(0, _zeros(params) if self.momentum != 0 else ())

    def apply(self, params, grads, state):
        """One update. Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays (any shapes).
            grads: list of arrays shaped like `params`, cast to each parameter's dtype.
            state: `SGDState` from `init`, a previous `apply` or `state_from_keras`.

        Returns:
            `(params, state)`: a list of new arrays and the new `SGDState` (iterations + 1).

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        params, grads = _check_params_grads(params, grads)
        iterations = _check_iterations(state)
        use_momentum = self.momentum != 0
        momentums = _check_slots("momentums", state.momentums, params) if use_momentum else ()
        new_params, new_momentums = [], []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            lr = _as_dtype(self.learning_rate, w.dtype)
            if use_momentum:
                mom = _via_float32(self.momentum, w.dtype)
                v = momentums[i] * mom - g * lr
                if self.nesterov:
                    w = w + (v * mom - g * lr)
                else:
                    w = w + v
                new_momentums.append(v)
            else:
                w = w - g * lr
            new_params.append(w)
        return new_params, SGDState(iterations + 1, tuple(new_momentums))


# ---------------------------------------------------------------- Adam


class AdamState(NamedTuple):
    """State of `Adam`.

    Attributes:
        iterations: int, steps applied so far; the next step uses `t = iterations + 1`.
        momentums: tuple of arrays, the first moments `m`.
        velocities: tuple of arrays, the second moments `v`.
        velocity_hats: tuple of arrays, the running maximum of `v` (empty unless `amsgrad`).
    """

    iterations: int
    momentums: tuple
    velocities: tuple
    velocity_hats: tuple


class Adam:
    """Adam, as `keras.optimizers.Adam`, in Keras's "epsilon hat" form.

    Update rule (state starts at zero, `t = iterations + 1`):

    ```python
    alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
    m = m + (g - m) * (1 - beta_1)
    v = v + (g * g - v) * (1 - beta_2)
    v_hat = maximum(v_hat, v); v = v_hat        # amsgrad only
    w = w - m * alpha / (sqrt(v) + epsilon)
    ```

    Warning: this is not Algorithm 1 of Kingma & Ba (2014), which adds epsilon to
    `sqrt(v / (1 - beta_2**t))`. Keras folds the bias corrections into `alpha` and adds epsilon to
    the uncorrected `sqrt(v)` (the paper's "epsilon hat", in the formula just before its Section
    2.1). That equals Algorithm 1 with an epsilon of `epsilon / sqrt(1 - beta_2**t)`, about 32
    times larger at the first step, so early steps with tiny gradients move much less. With `learning_rate=1e-3` and a first gradient of `1e-6`, Keras moves
    by 2.4025e-4; Algorithm 1 with the same epsilon would move by 9.09e-4.

    Keras-specific roundings: in float64, `beta_1**t` and `beta_2**t` use float32-rounded betas
    (`ops.cast`), while `1 - beta_1` and `1 - beta_2` in the moment updates are rounded once.

    AMSGrad: Reddi, Kale & Kumar (2018), "On the Convergence of Adam and Beyond".

    Args:
        learning_rate: positive finite float. Defaults to `0.001`.
        beta_1: float in `[0, 1)`. Defaults to `0.9`.
        beta_2: float in `[0, 1)`. Defaults to `0.999`.
        epsilon: float >= 0. Defaults to `1e-7`.
        amsgrad: bool. Defaults to `False`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `amsgrad`.
        ValueError: for values outside those ranges.

    References:
        Kingma & Ba (2014), "Adam: A Method for Stochastic Optimization", arXiv:1412.6980.

    Mirrors `keras/src/optimizers/adam.py`.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        self.beta_1 = check_range("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = check_range("beta_2", beta_2, 0.0, 1.0)
        self.epsilon = check_range("epsilon", epsilon, 0.0, math.inf)
        self.amsgrad = _check_bool("amsgrad", amsgrad)

    def get_config(self):
        """The hyperparameters as a dict (the constructor's keyword arguments)."""
        return {
            "learning_rate": self.learning_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }

    __repr__ = SGD.__repr__
    __eq__ = SGD.__eq__
    __hash__ = SGD.__hash__

    def init(self, params):
        """A fresh state: iterations 0 and zero moments (`velocity_hats` only with amsgrad).

        Args:
            params: list of float arrays.

        Returns:
            `AdamState`.
        """
        return AdamState(0, _zeros(params), _zeros(params), _zeros(params) if self.amsgrad else ())

    def apply(self, params, grads, state):
        """One update. Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays.
            grads: list of arrays shaped like `params`.
            state: `AdamState`.

        Returns:
            `(params, state)`, the new state's iterations incremented by one.

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        params, grads = _check_params_grads(params, grads)
        iterations = _check_iterations(state)
        ms = _check_slots("momentums", state.momentums, params)
        vs = _check_slots("velocities", state.velocities, params)
        vhats = _check_slots("velocity_hats", state.velocity_hats, params) if self.amsgrad else ()
        scalars = {}  # per dtype: the step's scalars, computed once

        def step_scalars(dt):
            if dt not in scalars:
                one = np.ones((), dtype=dt)
                lr = _as_dtype(self.learning_rate, dt)
                local_step = _as_dtype(iterations + 1, dt)
                beta_1_power = _power(_via_float32(self.beta_1, dt), local_step, dt)
                beta_2_power = _power(_via_float32(self.beta_2, dt), local_step, dt)
                alpha = lr * np.sqrt(one - beta_2_power) / (one - beta_1_power)
                scalars[dt] = (
                    alpha,
                    _as_dtype(1 - self.beta_1, dt),
                    _as_dtype(1 - self.beta_2, dt),
                    _as_dtype(self.epsilon, dt),
                )
            return scalars[dt]

        new_params, new_ms, new_vs, new_vhats = [], [], [], []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            alpha, one_minus_beta_1, one_minus_beta_2, epsilon = step_scalars(w.dtype)
            m = ms[i] + (g - ms[i]) * one_minus_beta_1
            v = vs[i] + (g * g - vs[i]) * one_minus_beta_2
            new_ms.append(m)
            new_vs.append(v)
            if self.amsgrad:
                v = np.maximum(vhats[i], v)
                new_vhats.append(v)
            new_params.append(w - (m * alpha) / (np.sqrt(v) + epsilon))
        return new_params, AdamState(iterations + 1, tuple(new_ms), tuple(new_vs), tuple(new_vhats))


# ---------------------------------------------------------------- RMSprop


class RMSpropState(NamedTuple):
    """State of `RMSprop`.

    Attributes:
        iterations: int, steps applied so far.
        velocities: tuple of arrays, the running mean of `g * g`.
        momentums: tuple of arrays, the accumulated increments (empty unless `momentum > 0`).
        average_gradients: tuple of arrays, the running mean of `g` (empty unless `centered`).
    """

    iterations: int
    velocities: tuple
    momentums: tuple
    average_gradients: tuple


class RMSprop:
    """RMSprop, as `keras.optimizers.RMSprop`: epsilon inside the square root, no bias correction.

    Update rule (state starts at zero):

    ```python
    v = rho * v + (1 - rho) * g * g
    mg = rho * mg + (1 - rho) * g                # centered only
    denominator = v - mg * mg + epsilon          # centered
    denominator = v + epsilon                    # otherwise
    increment = learning_rate * g / sqrt(denominator)
    mom = momentum * mom + increment; w = w - mom   # momentum > 0
    w = w - increment                               # otherwise
    ```

    Warning: many texts (and PyTorch) put epsilon outside the root, `sqrt(v) + epsilon`. Keras
    puts it inside, so with tiny gradients the step is bounded by `learning_rate * g /
    sqrt(epsilon)`: with `learning_rate=0.01` and a first gradient of `1e-4` Keras moves by
    about 3.1466e-3, where `sqrt(v) + epsilon` would give about 3.15e-2. The velocity starts at 0
    with no bias correction, so the first steps are larger than `learning_rate`.

    Args:
        learning_rate: positive finite float. Defaults to `0.001`.
        rho: float in `[0, 1)`, the decay of the running means. Defaults to `0.9`.
        momentum: float in `[0, 1)`. Defaults to `0.0`.
        epsilon: float >= 0. Defaults to `1e-7`.
        centered: bool, whether to divide by the estimated variance instead of the raw second
            moment (Graves 2013). Defaults to `False`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `centered`.
        ValueError: for values outside those ranges.

    References:
        Hinton, Srivastava & Swersky (2012), Neural Networks for Machine Learning, lecture 6e.

    Mirrors `keras/src/optimizers/rmsprop.py`.
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        self.rho = check_range("rho", rho, 0.0, 1.0)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0)
        self.epsilon = check_range("epsilon", epsilon, 0.0, math.inf)
        self.centered = _check_bool("centered", centered)

    def get_config(self):
        """The hyperparameters as a dict (the constructor's keyword arguments)."""
        return {
            "learning_rate": self.learning_rate,
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }

    __repr__ = SGD.__repr__
    __eq__ = SGD.__eq__
    __hash__ = SGD.__hash__

    def init(self, params):
        """A fresh state: iterations 0 and zero accumulators.

        Args:
            params: list of float arrays.

        Returns:
            `RMSpropState`.
        """
        return RMSpropState(
            0,
            _zeros(params),
            _zeros(params) if self.momentum > 0 else (),
            _zeros(params) if self.centered else (),
        )

    def apply(self, params, grads, state):
        """One update. Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays.
            grads: list of arrays shaped like `params`.
            state: `RMSpropState`.

        Returns:
            `(params, state)`, the new state's iterations incremented by one.

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        params, grads = _check_params_grads(params, grads)
        iterations = _check_iterations(state)
        vs = _check_slots("velocities", state.velocities, params)
        moms = _check_slots("momentums", state.momentums, params) if self.momentum > 0 else ()
        mgs = _check_slots("average_gradients", state.average_gradients, params) if self.centered else ()
        new_params, new_vs, new_moms, new_mgs = [], [], [], []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            dt = w.dtype
            lr = _as_dtype(self.learning_rate, dt)
            rho, one_minus_rho = _as_dtype(self.rho, dt), _as_dtype(1 - self.rho, dt)
            v = rho * vs[i] + one_minus_rho * (g * g)
            new_vs.append(v)
            if self.centered:
                mg = rho * mgs[i] + one_minus_rho * g
                new_mgs.append(mg)
                denominator = (v - mg * mg) + _as_dtype(self.epsilon, dt)
            else:
                denominator = v + _as_dtype(self.epsilon, dt)
            increment = (lr * g) / np.sqrt(denominator)
            if self.momentum > 0:
                mom = _as_dtype(self.momentum, dt) * moms[i] + increment
                new_moms.append(mom)
                w = w - mom
            else:
                w = w - increment
            new_params.append(w)
        return new_params, RMSpropState(iterations + 1, tuple(new_vs), tuple(new_moms), tuple(new_mgs))


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


# ---------------------------------------------------------------- Keras interop

#: Options of `keras.optimizers.Optimizer` that the twin does not reproduce; each must be off.
_UNSUPPORTED_OPTIONS = (
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


def _keras_classes():
    import keras

    return {keras.optimizers.SGD: SGD, keras.optimizers.Adam: Adam, keras.optimizers.RMSprop: RMSprop}


def optimizer_from_keras(keras_optimizer):
    """The NumPy twin (`SGD`, `Adam` or `RMSprop`) of a Keras optimizer, from its configuration.

    The learning rate is read from the optimizer's variable, so it is the value Keras actually
    uses (float32-rounded when floatx was float32 when the optimizer was made). Imports Keras.

    Args:
        keras_optimizer: an instance of exactly `keras.optimizers.SGD`, `Adam` or `RMSprop`
            (subclasses such as `AdamW` are refused: they change the update).

    Returns:
        `SGD`, `Adam` or `RMSprop`.

    Raises:
        TypeError: if `keras_optimizer` is not a Keras optimizer.
        ValueError: for another optimizer class (naming it), a learning-rate schedule or callable,
            callable hyperparameters, or any of `weight_decay`, `clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `loss_scale_factor`, `gradient_accumulation_steps` set
            (naming the option and its value).

    Example:
        >>> import keras
        >>> optimizer_from_keras(keras.optimizers.Adam(amsgrad=True))
        Adam(learning_rate=0.0010000000474974513, beta_1=0.9, beta_2=0.999, epsilon=1e-07, amsgrad=True)
    """
    import keras

    if not isinstance(keras_optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`keras_optimizer` must be a keras.optimizers.Optimizer. Received: keras_optimizer={keras_optimizer!r}"
        )
    classes = _keras_classes()
    cls = type(keras_optimizer)
    if cls not in classes:
        raise ValueError(
            f"kerasbp.reference supports the Keras optimizers SGD, Adam and RMSprop. "
            f"Received an optimizer of class {cls.__name__}"
        )
    lr = keras_optimizer._learning_rate
    if not isinstance(lr, keras.Variable):
        raise ValueError(
            "kerasbp.reference supports a constant learning rate only, not a learning-rate schedule or "
            f"callable. Received: learning_rate={lr!r}"
        )
    config = keras_optimizer.get_config()
    for option in _UNSUPPORTED_OPTIONS:
        value = config.get(option)
        if value is not None and value is not False:
            raise ValueError(
                f"kerasbp.reference does not reproduce the Keras optimizer option `{option}`. "
                f"Received: {option}={value!r}"
            )
    twin_cls = classes[cls]
    kwargs = {}
    for name in twin_cls().get_config():
        if name == "learning_rate":
            continue
        value = getattr(keras_optimizer, name)
        if callable(value) or not isinstance(value, (bool, int, float, np.floating, np.integer)):
            raise ValueError(
                f"kerasbp.reference supports constant Python numbers as hyperparameters. Received: {name}={value!r}"
            )
        kwargs[name] = value
    kwargs["learning_rate"] = float(np.asarray(lr.numpy()))
    return twin_cls(**kwargs)


def state_from_keras(keras_optimizer, twin=None, params=None):
    """The twin's state read from a Keras optimizer's variables: slots and iteration count.

    Args:
        keras_optimizer: a Keras `SGD`, `Adam` or `RMSprop` (see `optimizer_from_keras`).
        twin: the twin optimizer the state is for, or None to build it with
            `optimizer_from_keras`. Its slots must be those of `keras_optimizer` (same momentum
            being zero or not, same `amsgrad`, same `centered`). Defaults to None.
        params: list of float arrays, used only when `keras_optimizer` has not been built yet
            (it builds on its first step): the state is then `twin.init(params)` with the Keras
            iteration count. Defaults to None.

    Returns:
        `SGDState`, `AdamState` or `RMSpropState`, with copies of the Keras slot variables in the
        order of the variables the optimizer was built on (`model.trainable_weights` after
        `fit`, `train_on_batch` or `compile_model` + first step).

    Raises:
        TypeError, ValueError: as `optimizer_from_keras`; `ValueError` also if `twin` is of
            another kind or has other slots, or if the optimizer is not built and `params` is
            None.
    """
    derived = optimizer_from_keras(keras_optimizer)
    if twin is None:
        twin = derived
    if type(twin) is not type(derived):
        raise ValueError(
            f"`twin` must be a {type(derived).__name__} to take the state of a Keras "
            f"{type(keras_optimizer).__name__}. Received: twin={twin!r}"
        )
    slot_flags = {
        SGD: lambda o: (o.momentum != 0,),
        Adam: lambda o: (o.amsgrad,),
        RMSprop: lambda o: (o.momentum > 0, o.centered),
    }[type(twin)]
    if slot_flags(twin) != slot_flags(derived):
        raise ValueError(
            f"`twin` must keep the same state slots as the Keras optimizer. Received: twin={twin!r}, "
            f"Keras optimizer as twin: {derived!r}"
        )
    iterations = int(np.asarray(keras_optimizer.iterations.numpy()))
    if not keras_optimizer.built:
        if params is None:
            raise ValueError(
                "the Keras optimizer has not been built yet (it builds on its first step), so it has no "
                "state to read: pass `params` to start from `twin.init(params)`"
            )
        return twin.init(params)._replace(iterations=iterations)

    def read(variables):
        return tuple(np.array(v.numpy()) for v in variables)

    if isinstance(twin, SGD):
        return SGDState(iterations, read(keras_optimizer.momentums) if twin.momentum != 0 else ())
    if isinstance(twin, Adam):
        return AdamState(
            iterations,
            read(keras_optimizer._momentums),
            read(keras_optimizer._velocities),
            read(keras_optimizer._velocity_hats) if twin.amsgrad else (),
        )
    return RMSpropState(
        iterations,
        read(keras_optimizer._velocities),
        read(keras_optimizer._momentums) if twin.momentum > 0 else (),
        read(keras_optimizer._average_gradients) if twin.centered else (),
    )


def get_optimizer(optimizer):
    """Return a twin optimizer for a name (`"sgd"`, `"adam"`, `"rmsprop"`, Keras's defaults), a twin,
    or a Keras optimizer (via `optimizer_from_keras`).

    Raises:
        TypeError: for anything else.
        ValueError: for an unknown name or an unsupported Keras optimizer.
    """
    if isinstance(optimizer, (SGD, Adam, RMSprop)):
        return optimizer
    if isinstance(optimizer, str):
        return OPTIMIZERS[check_choice("optimizer", optimizer, OPTIMIZERS)]()
    if type(optimizer).__module__.startswith("keras"):
        return optimizer_from_keras(optimizer)
    raise TypeError(
        f"`optimizer` must be 'sgd', 'adam', 'rmsprop', a kerasbp.reference optimizer or a Keras optimizer. "
        f"Received: optimizer={optimizer!r}"
    )
