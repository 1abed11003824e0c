"""Keras's learning-rate schedules (`keras.optimizers.schedules`) as pure NumPy functions of the step.

Inside `fit`'s compiled step, TensorFlow's graph optimizer (Grappler) replaces each division by
a constant with a product by the reciprocal; the twin does the same (`_over`), which is what
makes it agree with `fit` to the bit (an eager call of the Keras schedule can differ by an ulp).

Keras evaluates a schedule at the optimizer's raw step count (`optimizer._iterations`, which
counts every call of `apply`, also under gradient accumulation) and computes it in float32 even
in float64 mode (`ops.convert_to_tensor(0.1)` is a float32 tensor), then casts the result to each
variable's dtype. The twin does the same: every schedule here returns a `np.float32`, and its
powers are correctly rounded (`kerasbp.reference.rounding.scalar_power`).

Mirrors `keras/src/optimizers/schedules/learning_rate_schedule.py`.

Example:
    >>> float(ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(10))
    0.05000000074505806
"""

import math

import numpy as np

from kerasbp.reference.rounding import scalar_power

f32 = np.float32


def _over(x, constant):
    """`x / constant` as TensorFlow's graph optimizer computes it inside a compiled train step:
    a division by a constant becomes a product with its float32 reciprocal (one ulp apart from
    the quotient for about one step in five)."""
    return x * (f32(1) / f32(constant))


class Schedule:
    """Base of the schedules: `schedule(step)` is the learning rate at that step, a `np.float32`."""

    keras_class = None

    def get_config(self):
        """The constructor's keyword arguments (as Keras's `get_config`, without `name`)."""
        return dict(self.__dict__)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash(repr(self))


class ExponentialDecay(Schedule):
    """`lr0 * decay_rate ** (step / decay_steps)` (the exponent floored when `staircase`)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.decay_rate, self.staircase = decay_rate, staircase

    def __call__(self, step):
        p = _over(f32(step), self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return f32(self.initial_learning_rate) * scalar_power(f32(self.decay_rate), p, "float32")


class InverseTimeDecay(Schedule):
    """`lr0 / (1 + decay_rate * step / decay_steps)` (the ratio floored when `staircase`)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.decay_rate, self.staircase = decay_rate, staircase

    def __call__(self, step):
        p = _over(f32(step), self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return f32(self.initial_learning_rate) / (f32(1) + f32(self.decay_rate) * p)


class PiecewiseConstantDecay(Schedule):
    """`values[i]` for `boundaries[i-1] < step <= boundaries[i]` (first and last values outside)."""

    def __init__(self, boundaries, values):
        self.boundaries, self.values = list(boundaries), list(values)

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values, strict=False):
            if step <= b:
                return f32(v)
        return f32(self.values[-1])


class PolynomialDecay(Schedule):
    """`(lr0 - end) * (1 - min(step, decay_steps) / decay_steps) ** power + end`; with `cycle`,
    `decay_steps` grows to the next multiple of itself past `step`."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False):
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.end_learning_rate, self.power, self.cycle = end_learning_rate, power, cycle

    def __call__(self, step):
        lr0, end, power = f32(self.initial_learning_rate), f32(self.end_learning_rate), f32(self.power)
        step, decay_steps = f32(step), f32(self.decay_steps)
        if self.cycle:
            multiplier = f32(1) if step == 0 else f32(np.ceil(_over(step, self.decay_steps)))
            decay_steps = decay_steps * multiplier
            p = step / decay_steps
        else:
            p = _over(min(step, decay_steps), self.decay_steps)
        return (lr0 - end) * scalar_power(f32(1) - p, power, "float32") + end


def _cosine(completed, one_minus_alpha, alpha, peak):
    """The cosine factor of both cosine schedules: `(1 - alpha) * 0.5 * peak * (1 + cos(pi * completed)) + alpha`,
    in Keras's order of float32 operations (TensorFlow's float32 `cos` is not correctly rounded,
    so the result can be an ulp or two from Keras's)."""
    cosine = f32(0.5) * peak * (f32(1) + np.cos(f32(math.pi) * completed))
    return one_minus_alpha * cosine + alpha


class CosineDecay(Schedule):
    """Cosine decay from `lr0` (after an optional linear warmup to `warmup_target`) to `alpha * lr0`."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        self.initial_learning_rate, self.decay_steps, self.alpha = initial_learning_rate, decay_steps, alpha
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps

    def _decay(self, step, decay_steps, lr0):
        completed = _over(step, self.decay_steps)
        # Keras writes `(1 - self.alpha)` with a Python float: one rounding to float32, not two
        return _cosine(completed, f32(1 - self.alpha), f32(self.alpha), f32(1)) * lr0

    def __call__(self, step):
        lr0 = f32(self.initial_learning_rate)
        decay_steps, step = f32(self.decay_steps), f32(step)
        if self.warmup_target is None:
            return self._decay(min(step, decay_steps), decay_steps, lr0)
        target, warmup = f32(self.warmup_target), f32(self.warmup_steps)
        if step < warmup:
            return (target - lr0) * _over(step, self.warmup_steps) + lr0
        return self._decay(min(step - warmup, decay_steps), decay_steps, target)


class CosineDecayRestarts(Schedule):
    """SGDR: cosine decay restarted every `first_decay_steps * t_mul**i` steps, peaks scaled by `m_mul**i`."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
        self.initial_learning_rate, self.first_decay_steps = initial_learning_rate, first_decay_steps
        self.t_mul, self.m_mul, self.alpha = t_mul, m_mul, alpha

    def __call__(self, step):
        lr0, t_mul, m_mul, alpha = (f32(v) for v in (self.initial_learning_rate, self.t_mul, self.m_mul, self.alpha))
        completed = _over(f32(step), self.first_decay_steps)
        if t_mul == 1:
            i_restart = np.floor(completed)
            completed = completed - i_restart
        else:
            i_restart = np.floor(_over(f32(np.log(f32(1) - completed * (f32(1) - t_mul))), f32(np.log(t_mul))))
            sum_r = _over(f32(1) - scalar_power(t_mul, i_restart, "float32"), f32(1) - t_mul)
            completed = (completed - sum_r) / scalar_power(t_mul, i_restart, "float32")
        m_fac = scalar_power(m_mul, i_restart, "float32")
        return _cosine(completed, f32(1) - alpha, alpha, m_fac) * lr0  # here alpha is a float32 tensor


#: The schedules by Keras class name (`keras.optimizers.schedules.<name>`).
SCHEDULES = {
    cls.__name__: cls
    for cls in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, PolynomialDecay, CosineDecay, CosineDecayRestarts)
}
