"""Keras's Lion, Lamb and Adafactor as pure NumPy updates (and AdamW lives with Adam).

Mirrors `keras/src/optimizers/{lion,lamb,adafactor}.py` on the TensorFlow backend; roundings as
in `kerasbp.reference.optimizers_adaptive`.

Example:
    >>> import numpy as np
    >>> opt = Lion(learning_rate=0.1)
    >>> params, _ = opt.apply([np.zeros(2)], [np.array([0.5, -2.0])], opt.init([np.zeros(2)]))
    >>> params[0].tolist()  # the sign of the interpolated momentum, times lr
    [-0.1, 0.1]
"""

import numpy as np

from kerasbp.checks import check_bool, check_range
from kerasbp.reference.optimizer_base import BaseOptimizer
from kerasbp.reference.optimizer_state import AdafactorState, LambState, LionState, zeros_like_each
from kerasbp.reference.rounding import as_dtype, scalar_power, via_float32
from kerasbp.reference.schedules import Schedule


class Lion(BaseOptimizer):
    """Lion, as `keras.optimizers.Lion`:

    ```python
    w = w - lr * sign(m * beta_1 + g * (1 - beta_1))
    m = m * beta_2 + g * (1 - beta_2)
    ```

    References:
        Chen et al. (2023), "Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675.
    """

    name = "lion"
    state_class = LionState
    hyperparameters = ("beta_1", "beta_2")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **options):
        self._set_common(learning_rate, options)
        self.beta_1 = check_range("beta_1", beta_1, 0.0, 1.0 + 1e-12)
        self.beta_2 = check_range("beta_2", beta_2, 0.0, 1.0 + 1e-12)


    def _init_slots(self, params):
        return {"momentums": zeros_like_each(params)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_m = [], []
        for w, g, m in zip(params, grads, state.momentums, strict=True):
            dt = w.dtype
            b1, b2 = via_float32(self.beta_1, dt), via_float32(self.beta_2, dt)
            new_p.append(w - lr_at(dt) * np.sign(m * b1 + g * (dt.type(1.0) - b1)))
            new_m.append(m * b2 + g * (dt.type(1.0) - b2))
        return new_p, state._replace(iterations=state.iterations + 1, momentums=tuple(new_m))


class Lamb(BaseOptimizer):
    """LAMB, as `keras.optimizers.Lamb`: Adam's step rescaled per tensor by the trust ratio.

    ```python
    m = m + (g - m) * (1 - beta_1);  v = v + (g*g - v) * (1 - beta_2)
    update = (m / (1 - beta_1**t)) / (sqrt(v / (1 - beta_2**t)) + epsilon)
    ratio = |w| / |update| (1 if either norm is 0)
    w = w - ratio * lr * update
    ```

    References:
        You et al. (2019), "Large Batch Optimization for Deep Learning", arXiv:1904.00962.
    """

    name = "lamb"
    state_class = LambState
    hyperparameters = ("beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options):
        self._set_common(learning_rate, options)
        self._set_moments(beta_1, beta_2, epsilon)


    def _init_slots(self, params):
        return {"momentums": zeros_like_each(params), "velocities": zeros_like_each(params)}

    def _update(self, params, grads, state, lr_at):
        new_p, new_m, new_v = [], [], []
        for w, g, m, v in zip(params, grads, state.momentums, state.velocities, strict=True):
            dt = w.dtype
            t = dt.type
            step = as_dtype(state.iterations + 1, dt)
            b1p = scalar_power(via_float32(self.beta_1, dt), step, dt)
            b2p = scalar_power(via_float32(self.beta_2, dt), step, dt)
            m = m + (g - m) * as_dtype(1 - self.beta_1, dt)
            v = v + (np.square(g) - v) * as_dtype(1 - self.beta_2, dt)
            new_m.append(m)
            new_v.append(v)
            update = (m / (t(1.0) - b1p)) / (np.sqrt(v / (t(1.0) - b2p)) + as_dtype(self.epsilon, dt))
            w_norm, g_norm = np.sqrt(np.sum(np.square(w))), np.sqrt(np.sum(np.square(update)))
            ratio = w_norm / g_norm if (w_norm > 0 and g_norm > 0) else t(1.0)
            new_p.append(w - ratio * lr_at(dt) * update)
        return new_p, state._replace(iterations=state.iterations + 1, momentums=tuple(new_m), velocities=tuple(new_v))


class Adafactor(BaseOptimizer):
    """Adafactor, as `keras.optimizers.Adafactor`: a factored second moment for matrices.

    ```python
    rho = min(lr, 1 / sqrt(t))          # lr itself is capped so when relative_step (and not a schedule)
    alpha = max(epsilon_2, rms(w)) * rho
    beta_2_t = 1 - t**beta_2_decay;  s = g*g + epsilon_1
    r = beta_2_t * r + (1 - beta_2_t) * mean(s, -1)      # kernels: rows
    c = beta_2_t * c + (1 - beta_2_t) * mean(s, -2)      #          columns
    v = (r / mean(r))[:, None] * c[None, :]              # (vectors: v = beta_2_t * v + (1 - beta_2_t) * s)
    u = g / sqrt(v);  u = u / max(1, rms(u) / clip_threshold)
    w = w - alpha * u
    ```

    References:
        Shazeer & Stern (2018), "Adafactor", arXiv:1804.04235.
    """

    name = "adafactor"
    state_class = AdafactorState
    hyperparameters = ("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step")

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0, relative_step=True, **options):
        self._set_common(learning_rate, options)
        self.beta_2_decay = float(beta_2_decay)
        self.epsilon_1 = check_range("epsilon_1", epsilon_1, 0.0, np.inf)
        self.epsilon_2 = check_range("epsilon_2", epsilon_2, 0.0, np.inf)
        self.clip_threshold = check_range("clip_threshold", clip_threshold, 1e-300, np.inf)
        self.relative_step = check_bool("relative_step", relative_step)


    def _init_slots(self, params):
        r, c = [], []
        for p in params:
            p = np.asarray(p)
            r.append(np.zeros(p.shape[:-1], p.dtype) if p.ndim >= 2 else np.zeros((), p.dtype))
            c.append(np.zeros(p.shape[:-2] + p.shape[-1:], p.dtype) if p.ndim >= 2 else np.zeros((), p.dtype))
        return {"r": tuple(r), "c": tuple(c), "v": zeros_like_each(params)}

    @staticmethod
    def _rms(x):
        return np.sqrt(np.mean(np.square(x)))

    def _update(self, params, grads, state, lr_at):

        new_p, new_r, new_c, new_v = [], [], [], []
        for w, g, r, c, v in zip(params, grads, state.r, state.c, state.v, strict=True):
            dt = w.dtype
            t = dt.type
            lr = lr_at(dt)
            step = t(state.iterations + 1)
            inv_sqrt = t(1) / np.sqrt(step)
            if self.relative_step and not isinstance(self.learning_rate, Schedule):
                lr = np.minimum(lr, inv_sqrt)
            rho = np.minimum(lr, inv_sqrt)
            alpha = np.maximum(via_float32(self.epsilon_2, dt), self._rms(w)) * rho
            s = np.square(g) + t(self.epsilon_1)
            beta_2_t = t(1) - np.power(step, t(self.beta_2_decay))
            if w.ndim >= 2:
                r = beta_2_t * r + (t(1) - beta_2_t) * np.mean(s, axis=-1)
                c = beta_2_t * c + (t(1) - beta_2_t) * np.mean(s, axis=-2)
                v = np.expand_dims(r / np.mean(r, axis=-1, keepdims=True), -1) * np.expand_dims(c, -2)
            else:
                v = beta_2_t * v + (t(1) - beta_2_t) * s
            u = g / np.sqrt(v)
            u_hat = u / np.maximum(t(1), self._rms(u) / t(self.clip_threshold))
            new_p.append(w - alpha * u_hat)
            new_r.append(r)
            new_c.append(c)
            new_v.append(v)
        return new_p, state._replace(iterations=state.iterations + 1, r=tuple(new_r), c=tuple(new_c), v=tuple(new_v))
