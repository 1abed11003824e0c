"""The TensorFlow side of `HessianProbe` (`kerasbp/curvature.py`): the measurement traced into the
train step, from forward-over-reverse Hessian-vector products (Pearlmutter 1994): a
`tf.GradientTape` gives the gradient `g(theta)`, and a `tf.autodiff.ForwardAccumulator` around it
gives its directional derivative along `v`, which is `H v`, in about the cost of two gradients:

```python
with tf.autodiff.ForwardAccumulator(primals=weights, tangents=v) as acc:
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=True), sample_weight)
    g = tape.gradient(loss, weights)
Hv = acc.jvp(g)
```

The random draws are stateless TensorFlow draws of `(seed, step)`. The numbers go into a ring
buffer of variables that the callback reads back now and then, as the `GradientLogger`'s capture
does (`kerasbp/logger/capture.py`): it works with `steps_per_execution > 1`, XLA, and
`kerasbp.train`.
"""

import math

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import tensorflow as tf

from kerasbp.curvature import COLUMNS, ProbeState, fixed_arrays, state_variables
from kerasbp.logger.hooks import leaf_optimizer


def _dot(a, b):
    """`sum_j a_j . b_j` over lists of tensors, in float64."""
    return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float64) * tf.cast(y, tf.float64)) for x, y in zip(a, b, strict=True)])


class TensorFlowProbeState(ProbeState):
    """The device side of a `HessianProbe` on TensorFlow for one model: the step counter, the ring
    buffer and the fixed data as variables, and the wrapped `train_step`, whose measurement runs
    inside the traced step under a `tf.cond`. Made once per model and buffer size and reused, so
    that the traced train functions (and `kerasbp.train`'s loops) that hold it are reused too.

    Args:
        probe: the `HessianProbe` (its settings are read at trace time).
        model: a compiled `keras.Model`.
        capacity: int, rows of the ring buffer.
    """

    def __init__(self, probe, model, capacity):
        super().__init__(model, capacity)
        self.counter = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="kerasbp_probe_step")
        self.count = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="kerasbp_probe_count")
        self.rows = tf.Variable(tf.zeros((capacity, len(COLUMNS)), tf.float64), trainable=False, name="kerasbp_probe_rows")
        arrays = fixed_arrays(probe.data, model)
        self.fixed = None if arrays is None else [tf.Variable(a, trainable=False, name=f"kerasbp_probe_data_{i}") for i, a in enumerate(arrays)]
        probe_ref = probe
        every_n = probe.every_n_steps

        def train_step(data):
            step = self.counter.assign_add(1) - 1  # this train step's number

            def measure():
                batch = data if self.fixed is None else tuple(tf.convert_to_tensor(v) for v in self.fixed)
                lam, trace = estimates(probe_ref, model, batch, step)
                row = tf.stack([tf.cast(step, tf.float64), lam, trace, _learning_rate(model.optimizer)])
                self.rows.scatter_nd_update([[tf.math.floormod(self.count, capacity)]], row[None])
                self.count.assign_add(1)
                return tf.constant(True)

            tf.cond(tf.equal(tf.math.floormod(step, every_n), 0), measure, lambda: tf.constant(False))
            return self.original(data)

        self.train_step = train_step

    def step(self):
        return int(self.counter.numpy())

    def set_step(self, step):
        self.counter.assign(step)

    def written(self):
        return int(self.count.numpy())

    def rows_at(self, slots):
        return self.rows.numpy()[slots]


def _learning_rate(optimizer):
    """The learning rate of this step's update (a schedule evaluated at the iterations before it)."""
    return tf.cast(tf.convert_to_tensor(leaf_optimizer(optimizer).learning_rate), tf.float64)


def estimates(probe, model, batch, step):
    """`(lambda_max, trace)`: float64 scalar tensors for the loss on `batch` at the current
    weights, with `probe`'s settings (`n_iterations`, `n_probes`, `seed`), traced into the step.

    Args:
        probe: the `HessianProbe`.
        model: the `keras.Model`.
        batch: the step's data, `(x, y)` or `(x, y, sample_weight)`, tensors.
        step: int64 scalar tensor, the train step (the random draws depend on `(seed, step)`).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    weights = list(model.trainable_variables)
    shapes = [tuple(v.shape) for v in weights]
    sizes = [math.prod(s) for s in shapes]
    dtype = weights[0].dtype
    state_vars = state_variables(model)
    saved = [tf.identity(v.value) for v in state_vars]
    compute_loss = type(model).compute_loss
    with_training = getattr(model, "_compute_loss_has_training_arg", True)

    def loss():
        y_pred = model(x, training=True) if getattr(model, "_call_has_training_arg", True) else model(x)
        if with_training:
            return compute_loss(model, x, y, y_pred, sample_weight, training=True)
        return compute_loss(model, x, y, y_pred, sample_weight)

    def hvp(v):
        with tf.autodiff.ForwardAccumulator([w.value for w in weights], v) as acc:
            with tf.GradientTape() as tape:
                value = loss()
            grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        out = [acc.jvp(g, unconnected_gradients=tf.UnconnectedGradients.ZERO) for g in grads]
        for var, value in zip(state_vars, saved, strict=True):  # undo what the forward pass moved
            var.assign(value)
        return out

    def split(flat):
        return [tf.reshape(part, s) for part, s in zip(tf.split(flat, sizes), shapes, strict=True)]

    seed = tf.stack([tf.constant(probe.seed, tf.int64), tf.cast(step, tf.int64)])

    def power(shift):
        v0 = split(tf.cast(tf.random.stateless_normal([sum(sizes)], tf.random.experimental.stateless_fold_in(seed, 0)), dtype))
        norm = tf.cast(tf.sqrt(_dot(v0, v0)), dtype)
        v0 = [p / norm for p in v0]

        def body(i, lam, *v):
            hv = hvp(list(v))
            if shift is not None:
                hv = [h - tf.cast(shift, dtype) * p for h, p in zip(hv, v, strict=True)]
            lam = _dot(v, hv)  # the Rayleigh quotient of the unit vector v
            norm = tf.cast(tf.sqrt(_dot(hv, hv)), dtype)
            return (i + 1, lam, *[tf.math.divide_no_nan(h, norm) for h in hv])

        out = tf.while_loop(lambda i, *_: i < probe.n_iterations, body, (tf.constant(0), tf.constant(0.0, tf.float64), *v0))
        return out[1]

    dominant = power(None)
    lambda_max = tf.cond(dominant < 0, lambda: power(dominant) + dominant, lambda: dominant)

    if probe.n_probes == 0:
        trace = tf.constant(float("nan"), tf.float64)
    else:
        n = sum(sizes) if probe.n_probes == "exact" else probe.n_probes

        def probe_vector(k):
            if probe.n_probes == "exact":
                return split(tf.one_hot(k, sum(sizes), dtype=dtype))  # basis vector e_k
            bits = tf.random.stateless_uniform([sum(sizes)], tf.random.experimental.stateless_fold_in(seed, k + 1), minval=0, maxval=2, dtype=tf.int32)
            return split(tf.cast(2 * bits - 1, dtype))  # Rademacher: +-1

        def trace_body(k, total):
            z = probe_vector(k)
            return k + 1, total + _dot(z, hvp(z))

        _, total = tf.while_loop(lambda k, _: k < n, trace_body, (tf.constant(0), tf.constant(0.0, tf.float64)))
        trace = total if probe.n_probes == "exact" else total / n  # sum over the basis; mean over random probes
    return lambda_max, trace
