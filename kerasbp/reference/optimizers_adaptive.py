"""Keras's Adagrad, Adadelta, Adamax, Nadam and Ftrl as pure NumPy updates.

Each class mirrors `keras/src/optimizers/<name>.py` on the TensorFlow backend, the arithmetic in
Keras's order. In float64, a Python float that Keras passes through `ops.cast` or a `Constant`
initializer is float32-rounded (`via_float32`); one it combines with a tensor directly is
rounded once (`as_dtype`); see `kerasbp.reference.rounding`. The common options (clipping,
weight decay, EMA, gradient accumulation, schedules) are `BaseOptimizer`'s.

Example:
    >>> import numpy as np
    >>> opt = Adagrad(learning_rate=0.1)
    >>> params, state = opt.apply([np.ones(1)], [np.ones(1)], opt.init([np.ones(1)]))
    >>> round(float(params[0][0]), 6)  # 1 - 0.1 * 1 / sqrt(0.1 + 1 + 1e-7)
    0.904654
"""

import numpy as np

from kerasbp.checks import check_range
from kerasbp.reference.optimizer_base import BaseOptimizer
from kerasbp.reference.optimizer_state import (
    AdadeltaState,
    AdagradState,
    AdamaxState,
    FtrlState,
    NadamState,
    zeros_like_each,
)
from kerasbp.reference.rounding import as_dtype, scalar_power, via_float32


def _filled(params, value):
    """Slots filled with `value` as Keras's `Constant` initializer makes them (float32-rounded)."""
    return tuple(np.full_like(np.asarray(p), via_float32(value, np.asarray(p).dtype)) for p in params)


class Adagrad(BaseOptimizer):
    """Adagrad, as `keras.optimizers.Adagrad` (`keras/src/optimizers/adagrad.py`).

    ```python
    acc = acc + g * g                      # acc starts at initial_accumulator_value
    w = w - lr * g / sqrt(acc + epsilon)   # epsilon inside the root, unlike the paper
    ```

    References:
        Duchi, Hazan & Singer (2011), "Adaptive Subgradient Methods for Online Learning".
    """

    name = "adagrad"
    state_class = AdagradState
    hyperparameters = ("initial_accumulator_value", "epsilon")

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **options):
        self._set_common(learning_rate, options)
        self.initial_accumulator_value = check_range("initial_accumulator_value", initial_accumulator_value, 0.0, np.inf)
        self.epsilon = check_range("epsilon", epsilon, 0.0, np.inf)


    def _init_slots(self, params):
        return {"accumulators": _filled(params, self.initial_accumulator_value)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_acc = [], []
        for w, g, acc in zip(params, grads, state.accumulators, strict=True):
            acc = acc + np.square(g)
            new_acc.append(acc)
            new_p.append(w - (lr_at(w.dtype) * g) / np.sqrt(acc + as_dtype(self.epsilon, w.dtype)))
        return new_p, state._replace(iterations=state.iterations + 1, accumulators=tuple(new_acc))


class Adadelta(BaseOptimizer):
    """Adadelta, as `keras.optimizers.Adadelta` (`keras/src/optimizers/adadelta.py`).

    ```python
    acc_g = rho * acc_g + (1 - rho) * g * g
    delta = -sqrt(acc_d + epsilon) * g / sqrt(acc_g + epsilon)
    acc_d = rho * acc_d + (1 - rho) * delta * delta
    w = w + lr * delta          # Keras keeps a learning rate (default 0.001); the paper has none
    ```

    References:
        Zeiler (2012), "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701.
    """

    name = "adadelta"
    state_class = AdadeltaState
    hyperparameters = ("rho", "epsilon")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **options):
        self._set_common(learning_rate, options)
        self.rho = check_range("rho", rho, 0.0, 1.0)
        self.epsilon = check_range("epsilon", epsilon, 0.0, np.inf)


    def _init_slots(self, params):
        return {"accumulated_grads": zeros_like_each(params), "accumulated_delta_vars": zeros_like_each(params)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_g, new_d = [], [], []
        for w, g, acc_g, acc_d in zip(params, grads, state.accumulated_grads, state.accumulated_delta_vars, strict=True):
            t = w.dtype.type
            rho, one_minus_rho, eps = t(self.rho), t(1 - self.rho), t(self.epsilon)
            acc_g = rho * acc_g + one_minus_rho * np.square(g)
            delta = -((np.sqrt(acc_d + eps) * g) / np.sqrt(acc_g + eps))
            acc_d = rho * acc_d + one_minus_rho * np.square(delta)
            new_g.append(acc_g)
            new_d.append(acc_d)
            new_p.append(w + lr_at(w.dtype) * delta)
        return new_p, state._replace(
            iterations=state.iterations + 1, accumulated_grads=tuple(new_g), accumulated_delta_vars=tuple(new_d)
        )


class Adamax(BaseOptimizer):
    """Adamax, as `keras.optimizers.Adamax` (`keras/src/optimizers/adamax.py`): Adam with the infinity norm.

    ```python
    m = m + (g - m) * (1 - beta_1)
    u = maximum(beta_2 * u, |g|)
    w = w - lr * m / ((1 - beta_1**t) * (u + epsilon))
    ```

    References:
        Kingma & Ba (2014), "Adam", Section 7.1.
    """

    name = "adamax"
    state_class = AdamaxState
    hyperparameters = ("beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options):
        self._set_common(learning_rate, options)
        self._set_moments(beta_1, beta_2, epsilon)


    def _init_slots(self, params):
        return {"momentums": zeros_like_each(params), "norms": zeros_like_each(params)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_m, new_u = [], [], []
        for w, g, m, u in zip(params, grads, state.momentums, state.norms, strict=True):
            dt = w.dtype
            b1p = scalar_power(via_float32(self.beta_1, dt), as_dtype(state.iterations + 1, dt), dt)
            m = m + (g - m) * as_dtype(1 - self.beta_1, dt)
            u = np.maximum(as_dtype(self.beta_2, dt) * u, np.abs(g))
            new_m.append(m)
            new_u.append(u)
            new_p.append(w - (lr_at(dt) * m) / ((1 - b1p) * (u + as_dtype(self.epsilon, dt))))
        return new_p, state._replace(iterations=state.iterations + 1, momentums=tuple(new_m), norms=tuple(new_u))


class Nadam(BaseOptimizer):
    """Nadam, as `keras.optimizers.Nadam` (`keras/src/optimizers/nadam.py`): Adam with Nesterov momentum
    and Dozat's momentum schedule `u_t = beta_1 * (1 - 0.5 * 0.96**t)`.

    ```python
    u_product = u_product * u_t                       # once per step, for all variables
    m = m + (g - m) * (1 - beta_1);  v = v + (g*g - v) * (1 - beta_2)
    m_hat = u_{t+1} * m / (1 - u_product * u_{t+1}) + (1 - u_t) * g / (1 - u_product)
    w = w - lr * m_hat / (sqrt(v / (1 - beta_2**t)) + epsilon)
    ```

    In float64 `0.96`, `beta_1` and `beta_2` are float32-rounded in the update, but not in the
    `u_product` update (a Keras detail measured at ~1e-11).

    References:
        Dozat (2016), "Incorporating Nesterov Momentum into Adam".
    """

    name = "nadam"
    state_class = NadamState
    hyperparameters = ("beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options):
        self._set_common(learning_rate, options)
        self._set_moments(beta_1, beta_2, epsilon)


    def _init_slots(self, params):
        dt = np.asarray(params[0]).dtype if params else np.float32
        return {"momentums": zeros_like_each(params), "velocities": zeros_like_each(params), "u_product": np.ones((), dt)}

    def _update(self, params, grads, state, lr_at):
        it = state.iterations
        u_product = np.asarray(state.u_product)
        dt0 = u_product.dtype
        u_product = u_product * as_dtype(self.beta_1, dt0) * (
            as_dtype(1.0, dt0) - as_dtype(0.5, dt0) * scalar_power(as_dtype(0.96, dt0), as_dtype(it + 1, dt0), dt0)
        )
        new_p, new_m, new_v = [], [], []
        for w, g, m, v in zip(params, grads, state.momentums, state.velocities, strict=True):
            dt = w.dtype
            t = dt.type
            local_step, next_step = t(it + 1), t(it + 2)
            decay, beta_1, beta_2 = via_float32(0.96, dt), via_float32(self.beta_1, dt), via_float32(self.beta_2, dt)
            u_t = beta_1 * (t(1.0) - t(0.5) * scalar_power(decay, local_step, dt))
            u_t_1 = beta_1 * (t(1.0) - t(0.5) * scalar_power(decay, next_step, dt))
            u_product_t = u_product.astype(dt)
            u_product_t_1 = u_product_t * u_t_1
            beta_2_power = scalar_power(beta_2, local_step, dt)
            m = m + (g - m) * (1 - beta_1)
            v = v + (np.square(g) - v) * (1 - beta_2)
            new_m.append(m)
            new_v.append(v)
            m_hat = (u_t_1 * m) / (1 - u_product_t_1) + ((1 - u_t) * g) / (1 - u_product_t)
            v_hat = v / (1 - beta_2_power)
            new_p.append(w - (m_hat * lr_at(dt)) / (np.sqrt(v_hat) + as_dtype(self.epsilon, dt)))
        return new_p, state._replace(iterations=it + 1, momentums=tuple(new_m), velocities=tuple(new_v), u_product=u_product)


class Ftrl(BaseOptimizer):
    """FTRL-Proximal, as `keras.optimizers.Ftrl` (`keras/src/optimizers/ftrl.py`).

    ```python
    l2 = l2_regularization_strength + beta / (2 * lr)
    g_s = g + 2 * l2_shrinkage_regularization_strength * w
    n_new = n + g * g
    z = z + g_s - (n_new**(-lr_power) - n**(-lr_power)) / lr * w
    quadratic = n_new**(-lr_power) / lr + 2 * l2
    w = (clip(z, -l1, l1) - z) / quadratic;  n = n_new
    ```

    `initial_accumulator_value` is float32-rounded in float64 (a `Constant` initializer).

    References:
        McMahan et al. (2013), "Ad Click Prediction: a View from the Trenches".
    """

    name = "ftrl"
    state_class = FtrlState
    hyperparameters = (
        "learning_rate_power",
        "initial_accumulator_value",
        "l1_regularization_strength",
        "l2_regularization_strength",
        "l2_shrinkage_regularization_strength",
        "beta",
    )

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        **options,
    ):
        self._set_common(learning_rate, options)
        self.learning_rate_power = check_range("learning_rate_power", learning_rate_power, -np.inf, 1e-300)
        self.initial_accumulator_value = check_range("initial_accumulator_value", initial_accumulator_value, 0.0, np.inf)
        self.l1_regularization_strength = check_range("l1_regularization_strength", l1_regularization_strength, 0.0, np.inf)
        self.l2_regularization_strength = check_range("l2_regularization_strength", l2_regularization_strength, 0.0, np.inf)
        self.l2_shrinkage_regularization_strength = check_range(
            "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength, 0.0, np.inf
        )
        self.beta = check_range("beta", beta, 0.0, np.inf)


    def _init_slots(self, params):
        return {"accumulators": _filled(params, self.initial_accumulator_value), "linears": zeros_like_each(params)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_n, new_z = [], [], []
        for w, g, n, z in zip(params, grads, state.accumulators, state.linears, strict=True):
            t = w.dtype.type
            lr = lr_at(w.dtype)
            power = t(-self.learning_rate_power)
            l2 = t(self.l2_regularization_strength) + t(self.beta) / (t(2.0) * lr)
            g_s = g + t(2 * self.l2_shrinkage_regularization_strength) * w
            n_new = n + np.square(g)
            z = z + (g_s - ((np.power(n_new, power) - np.power(n, power)) / lr) * w)
            quadratic = np.power(n_new, power) / lr + t(2) * l2
            l1 = t(self.l1_regularization_strength)
            new_p.append((np.clip(z, -l1, l1) - z) / quadratic)
            new_n.append(n_new)
            new_z.append(z)
        return new_p, state._replace(iterations=state.iterations + 1, accumulators=tuple(new_n), linears=tuple(new_z))
