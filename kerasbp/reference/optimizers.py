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
(`keras/src/optimizers/{sgd,adam,rmsprop}.py` on the TensorFlow backend; the roundings are
explained in `kerasbp.reference.rounding`).

`OPTIMIZERS` is the registry of the supported optimizers by Keras name. The Keras side
(`optimizer_from_keras`, `state_from_keras`: the twin of a Keras optimizer and its current
slots, so a comparison can start from any step) is in `kerasbp.reference.from_keras`.

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

from kerasbp.checks import check_bool, check_range
from kerasbp.reference.optimizer_base import BaseOptimizer
from kerasbp.reference.optimizer_state import (
    AdamState,
    RMSpropState,
    SGDState,
    check_slots,
    zeros_like_each,
)
from kerasbp.reference.rounding import as_dtype, scalar_power, via_float32


# ---------------------------------------------------------------- SGD


class SGD(BaseOptimizer):
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

    Attributes:
        name: str, `"sgd"`: the Keras name, its key in `OPTIMIZERS`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `nesterov`.
        ValueError: for a learning rate that is not positive and finite, or a momentum outside
            `[0, 1)`.

    Mirrors `keras/src/optimizers/sgd.py`.
    """

    name = "sgd"

    state_class = SGDState
    hyperparameters = ("momentum", "nesterov")

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **options):
        self._set_common(learning_rate, options)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = check_bool("nesterov", nesterov)


    def _init_slots(self, params):
        """A fresh state: iterations 0 and zero velocities (none when `momentum == 0`).

        Args:
            params: list of float arrays.

        Returns:
            `SGDState`.
        """
        return {"momentums": zeros_like_each(params) if self.momentum != 0 else ()}

    def _update(self, params, grads, state, lr_at):
        """One update rule step (inside `BaseOptimizer.apply`). Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays (any shapes).
            grads: list of arrays shaped like `params`, cast to each parameter's dtype.
            state: `SGDState` from `init`, a previous `apply` or `state_from_keras`.

        Returns:
            `(params, state)`: a list of new arrays and the new `SGDState` (iterations + 1).

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        iterations = state.iterations
        use_momentum = self.momentum != 0
        momentums = check_slots("momentums", state.momentums, params) if use_momentum else ()
        new_params, new_momentums = [], []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            lr = lr_at(w.dtype)
            if use_momentum:
                mom = via_float32(self.momentum, w.dtype)
                v = momentums[i] * mom - g * lr
                if self.nesterov:
                    w = w + (v * mom - g * lr)
                else:
                    w = w + v
                new_momentums.append(v)
            else:
                w = w - g * lr
            new_params.append(w)
        return new_params, state._replace(iterations=iterations + 1, momentums=tuple(new_momentums))


# ---------------------------------------------------------------- Adam


class Adam(BaseOptimizer):
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

    Attributes:
        name: str, `"adam"`: the Keras name, its key in `OPTIMIZERS`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `amsgrad`.
        ValueError: for values outside those ranges.

    References:
        Kingma & Ba (2014), "Adam: A Method for Stochastic Optimization", arXiv:1412.6980.

    Mirrors `keras/src/optimizers/adam.py`.
    """

    name = "adam"

    state_class = AdamState
    hyperparameters = ("beta_1", "beta_2", "epsilon", "amsgrad")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **options):
        self._set_common(learning_rate, options)
        self._set_moments(beta_1, beta_2, epsilon)
        self.amsgrad = check_bool("amsgrad", amsgrad)


    def _init_slots(self, params):
        """A fresh state: iterations 0 and zero moments (`velocity_hats` only with amsgrad).

        Args:
            params: list of float arrays.

        Returns:
            `AdamState`.
        """
        return {
            "momentums": zeros_like_each(params),
            "velocities": zeros_like_each(params),
            "velocity_hats": zeros_like_each(params) if self.amsgrad else (),
        }

    def _update(self, params, grads, state, lr_at):
        """One update rule step (inside `BaseOptimizer.apply`). Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays.
            grads: list of arrays shaped like `params`.
            state: `AdamState`.

        Returns:
            `(params, state)`, the new state's iterations incremented by one.

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        iterations = state.iterations
        ms = check_slots("momentums", state.momentums, params)
        vs = check_slots("velocities", state.velocities, params)
        vhats = check_slots("velocity_hats", state.velocity_hats, params) if self.amsgrad else ()
        scalars = {}  # per dtype: the step's scalars, computed once

        def step_scalars(dt):
            if dt not in scalars:
                one = np.ones((), dtype=dt)
                lr = lr_at(dt)
                local_step = as_dtype(iterations + 1, dt)
                beta_1_power = scalar_power(via_float32(self.beta_1, dt), local_step, dt)
                beta_2_power = scalar_power(via_float32(self.beta_2, dt), local_step, dt)
                alpha = lr * np.sqrt(one - beta_2_power) / (one - beta_1_power)
                scalars[dt] = (
                    alpha,
                    as_dtype(1 - self.beta_1, dt),
                    as_dtype(1 - self.beta_2, dt),
                    as_dtype(self.epsilon, dt),
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
        return new_params, state._replace(
            iterations=iterations + 1, momentums=tuple(new_ms), velocities=tuple(new_vs), velocity_hats=tuple(new_vhats)
        )


# ---------------------------------------------------------------- RMSprop


class RMSprop(BaseOptimizer):
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
    about 3.1466e-3, where `sqrt(v) + epsilon` would give about 3.15e-2.

    The velocity starts at 0 with no bias correction, so the first step is
    `learning_rate * g / sqrt((1 - rho) * g * g + epsilon)`. It is larger than `learning_rate`
    only when `rho * g * g > epsilon`, i.e. `|g| > sqrt(epsilon / rho)` (about 3.3e-4 with the
    defaults), approaching `learning_rate / sqrt(1 - rho)` (3.16 times `learning_rate` for
    `rho=0.9`) for large gradients; below that it is smaller, as with the `1e-4` above.

    Args:
        learning_rate: positive finite float. Defaults to `0.001`.
        rho: float in `[0, 1)`, the decay of the running means. Defaults to `0.9`.
        momentum: float in `[0, 1)`. Defaults to `0.0`.
        epsilon: float >= 0. Defaults to `1e-7`.
        centered: bool, whether to divide by the estimated variance instead of the raw second
            moment (Graves 2013). Defaults to `False`.

    Attributes:
        name: str, `"rmsprop"`: the Keras name, its key in `OPTIMIZERS`.

    Raises:
        TypeError: for non-numeric hyperparameters or a non-bool `centered`.
        ValueError: for values outside those ranges.

    References:
        Hinton, Srivastava & Swersky (2012), Neural Networks for Machine Learning, lecture 6e.

    Example:
        >>> import numpy as np
        >>> def first_step(g):  # how far the first step moves, with learning_rate=0.01
        ...     opt = RMSprop(learning_rate=0.01)
        ...     params, _ = opt.apply([np.zeros(1)], [np.full(1, g)], opt.init([np.zeros(1)]))
        ...     return round(-float(params[0][0]), 7)
        >>> first_step(1.0)  # 0.01 / sqrt(0.1 + 1e-7): larger than learning_rate
        0.0316228
        >>> first_step(1e-4)  # 0.01 * 1e-4 / sqrt(1e-9 + 1e-7): epsilon dominates, smaller
        0.0031466

    Mirrors `keras/src/optimizers/rmsprop.py`.
    """

    name = "rmsprop"

    state_class = RMSpropState
    hyperparameters = ("rho", "momentum", "epsilon", "centered")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **options):
        self._set_common(learning_rate, options)
        self.rho = check_range("rho", rho, 0.0, 1.0)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0)
        self.epsilon = check_range("epsilon", epsilon, 0.0, math.inf)
        self.centered = check_bool("centered", centered)


    def _init_slots(self, params):
        """A fresh state: iterations 0 and zero accumulators.

        Args:
            params: list of float arrays.

        Returns:
            `RMSpropState`.
        """
        return {
            "velocities": zeros_like_each(params),
            "momentums": zeros_like_each(params) if self.momentum > 0 else (),
            "average_gradients": zeros_like_each(params) if self.centered else (),
        }

    def _update(self, params, grads, state, lr_at):
        """One update rule step (inside `BaseOptimizer.apply`). Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays.
            grads: list of arrays shaped like `params`.
            state: `RMSpropState`.

        Returns:
            `(params, state)`, the new state's iterations incremented by one.

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        iterations = state.iterations
        vs = check_slots("velocities", state.velocities, params)
        moms = check_slots("momentums", state.momentums, params) if self.momentum > 0 else ()
        mgs = check_slots("average_gradients", state.average_gradients, params) if self.centered else ()
        new_params, new_vs, new_moms, new_mgs = [], [], [], []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            dt = w.dtype
            lr = lr_at(dt)
            rho, one_minus_rho = as_dtype(self.rho, dt), as_dtype(1 - self.rho, dt)
            v = rho * vs[i] + one_minus_rho * (g * g)
            new_vs.append(v)
            if self.centered:
                mg = rho * mgs[i] + one_minus_rho * g
                new_mgs.append(mg)
                denominator = (v - mg * mg) + as_dtype(self.epsilon, dt)
            else:
                denominator = v + as_dtype(self.epsilon, dt)
            increment = (lr * g) / np.sqrt(denominator)
            if self.momentum > 0:
                mom = as_dtype(self.momentum, dt) * moms[i] + increment
                new_moms.append(mom)
                w = w - mom
            else:
                w = w - increment
            new_params.append(w)
        return new_params, state._replace(
            iterations=iterations + 1, velocities=tuple(new_vs), momentums=tuple(new_moms), average_gradients=tuple(new_mgs)
        )


class AdamW(Adam):
    """AdamW, as `keras.optimizers.AdamW`: Adam plus decoupled weight decay (default 0.004).

    Keras's AdamW is Adam with the common `weight_decay` option set: before each update,
    `w = w - w * weight_decay * learning_rate` (Loshchilov & Hutter's decay scaled by the
    learning rate, with `weight_decay` float32-rounded in float64), then Adam's step.

    References:
        Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", arXiv:1711.05101.

    Mirrors `keras/src/optimizers/adamw.py`.
    """

    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **options):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **options)


# ---------------------------------------------------------------- registry


class OptimizerSpec(NamedTuple):
    """A supported optimizer, by the names Keras knows it by (plain strings: no Keras needed).

    Attributes:
        name: str, Keras's name: the string `model.compile(optimizer=...)` takes.
        keras_class: str, the class `keras.optimizers.<keras_class>`.
        twin: the optimizer class of this module (same constructor arguments and defaults).
        state: its state `NamedTuple` class.
        keras_slots: dict, each state slot (a field of `state` after `iterations`) to the
            attribute of the built Keras optimizer that holds it, a list of variables in
            `model.trainable_weights` order.
    """

    name: str
    keras_class: str
    twin: type
    state: type
    keras_slots: dict


from kerasbp.reference.optimizer_state import (  # noqa: E402
    AdadeltaState,
    AdafactorState,
    AdagradState,
    AdamaxState,
    FtrlState,
    LambState,
    LionState,
    NadamState,
)
from kerasbp.reference.optimizers_adaptive import Adadelta, Adagrad, Adamax, Ftrl, Nadam  # noqa: E402
from kerasbp.reference.optimizers_sign import Adafactor, Lamb, Lion  # noqa: E402

_ADAM_SLOTS = {"momentums": "_momentums", "velocities": "_velocities", "velocity_hats": "_velocity_hats"}

#: The supported optimizers by Keras name (the Keras slot attributes are those of Keras 3.15).
OPTIMIZERS = {
    "sgd": OptimizerSpec("sgd", "SGD", SGD, SGDState, {"momentums": "momentums"}),
    "adam": OptimizerSpec("adam", "Adam", Adam, AdamState, _ADAM_SLOTS),
    "adamw": OptimizerSpec("adamw", "AdamW", AdamW, AdamState, _ADAM_SLOTS),
    "rmsprop": OptimizerSpec(
        "rmsprop",
        "RMSprop",
        RMSprop,
        RMSpropState,
        {"velocities": "_velocities", "momentums": "_momentums", "average_gradients": "_average_gradients"},
    ),
    "adagrad": OptimizerSpec("adagrad", "Adagrad", Adagrad, AdagradState, {"accumulators": "_accumulators"}),
    "adadelta": OptimizerSpec(
        "adadelta", "Adadelta", Adadelta, AdadeltaState,
        {"accumulated_grads": "_accumulated_grads", "accumulated_delta_vars": "_accumulated_delta_vars"},
    ),
    "adamax": OptimizerSpec("adamax", "Adamax", Adamax, AdamaxState, {"momentums": "_m", "norms": "_u"}),
    "nadam": OptimizerSpec(
        "nadam", "Nadam", Nadam, NadamState, {"momentums": "_momentums", "velocities": "_velocities", "u_product": "_u_product"}
    ),
    "ftrl": OptimizerSpec("ftrl", "Ftrl", Ftrl, FtrlState, {"accumulators": "_accumulators", "linears": "_linears"}),
    "lion": OptimizerSpec("lion", "Lion", Lion, LionState, {"momentums": "_momentums"}),
    "lamb": OptimizerSpec("lamb", "Lamb", Lamb, LambState, {"momentums": "_momentums", "velocities": "_velocities"}),
    "adafactor": OptimizerSpec("adafactor", "Adafactor", Adafactor, AdafactorState, {"r": "_r", "c": "_c", "v": "_v"}),
}

#: The Keras attributes of the state fields every optimizer has (common options).
COMMON_SLOTS = {"accumulated_gradients": "_accumulated_gradients", "averages": "_model_variables_moving_average"}

#: Keras optimizers the twin does not reproduce, with the reason.
REFUSED = {
    "Muon": "its update orthogonalizes each 2-D kernel's momentum with Newton-Schulz iterations and sends the other "
    "variables (chosen by layer path, exclude_layers and exclude_embeddings) to an AdamW rule of its own; not twinned",
    "ScheduleFreeAdamW": "the weights it leaves in the model are an interpolation y of two sequences (the evaluation "
    "point x is recovered from y and the momentum); not twinned",
    "MultiOptimizer": "it routes variables to several optimizers by path; compare the parts with one optimizer each",
    "LossScaleOptimizer": "loss scaling is for mixed precision (float16), which the twin does not reproduce",
}
