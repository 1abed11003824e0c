"""The JAX side of `HessianProbe` (`kerasbp/curvature.py`): the measurement inside the jitted step.

Keras's JAX train step is stateless (`keras/src/backend/jax/trainer.py`): it maps the state
`(trainable, non_trainable, optimizer, metrics variables)` and a batch to new state, and a write
to any variable outside that state is dropped. So the probe's step counter and ring buffer are
variables of the innermost optimizer while the probe is installed (as the `GradientLogger`'s
buffers are, `kerasbp/logger/capture_jax.py`), and travel through the step in the state. The
wrapped `train_step`, at a probed step, measures on the state it receives (the weights before the
update) and then runs the model's own step; `fit` gets a train function jitted with it.

Hessian-vector products are forward-over-reverse on the flattened weights `theta` (Pearlmutter
1994): the directional derivative of `jax.grad(loss)` at `theta` along `v` is `H v`, where `loss`
is the unscaled loss of `model.compute_loss_and_updates` in training mode, the function Keras's
step differentiates. `jax.linearize` evaluates the gradient once per probed step and gives the
linear map `v -> H v`, so each product costs only its tangent pass. The measurement
does not write the new non-trainable state back, so BatchNormalization's statistics, the dropout
seed and the metrics are as before, and the step's own forward pass draws the same dropout mask as
the measurement did. The random draws are `jax.random` keys folded with `(seed, step, k)`.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.flatten_util import ravel_pytree
from keras import ops

from kerasbp.curvature import COLUMNS, ProbeState, fixed_arrays
from kerasbp.logger.capture_jax import latest_value, live_optimizer_values
from kerasbp.logger.hooks import leaf_optimizer


class JaxProbeState(ProbeState):
    """The device side of a `HessianProbe` on JAX for one model: the step counter, the ring
    buffer of rows and their exact step numbers (variables of the innermost optimizer while
    installed), the fixed data, and the wrapped stateless `train_step`.

    Args:
        probe: the `HessianProbe` (its settings are read at trace time).
        model: a compiled `keras.Model`.
        capacity: int, rows of the ring buffer.
    """

    def __init__(self, probe, model, capacity):
        super().__init__(model, capacity)
        self.leaf = leaf_optimizer(model.optimizer)
        wide = "float64" if jax.config.jax_enable_x64 else "float32"
        self.variables = {}
        for name, shape, dtype in (("counter", (), "int32"), ("count", (), "int32"), ("steps", (capacity,), "int32"), ("rows", (capacity, len(COLUMNS)), wide)):
            v = self.leaf.add_variable(shape, initializer="zeros", dtype=dtype, name=f"kerasbp_probe_{name}")
            self.leaf._untrack_variable(v)  # joins the optimizer only while installed
            self.variables[name] = v
        arrays = fixed_arrays(probe.data, model)
        self.fixed = None if arrays is None else tuple(jnp.asarray(a) for a in arrays)
        self.positions = None  # name -> index in optimizer.variables while installed
        self._traced_positions = None  # the positions the train functions in `functions` were traced with

        def train_step(state, data):
            trainable, non_trainable, optimizer_values, metrics = state
            optimizer_values = list(optimizer_values)
            pos = self.positions
            step = optimizer_values[pos["counter"]]

            def measure(current):
                count, steps, rows = current
                batch = data if self.fixed is None else self.fixed
                lam, trace = estimates(probe, model, state, batch, step)
                row = jnp.stack([step.astype(rows.dtype), lam.astype(rows.dtype), trace.astype(rows.dtype), _learning_rate(model.optimizer, optimizer_values).astype(rows.dtype)])
                slot = count % capacity
                return count + 1, steps.at[slot].set(step), rows.at[slot].set(row)

            current = tuple(optimizer_values[pos[name]] for name in ("count", "steps", "rows"))
            current = jax.lax.cond(step % probe.every_n_steps == 0, measure, lambda c: c, current)
            for name, value in zip(("count", "steps", "rows"), current, strict=True):
                optimizer_values[pos[name]] = value
            optimizer_values[pos["counter"]] = step + 1
            return self.original((trainable, non_trainable, optimizer_values, metrics), data)

        self.train_step = train_step

    def _value(self, name):
        return latest_value(self.model, self.variables[name], None if self.positions is None else self.positions[name])

    def step(self):
        return int(self._value("counter"))

    def set_step(self, step):
        self.variables["counter"].assign(step)

    def written(self):
        return int(self._value("count"))

    def rows_at(self, slots):
        rows = self._value("rows")[slots].astype(np.float64)
        rows[:, 0] = self._value("steps")[slots]  # exact, also where the rows are float32
        return rows

    def install(self):
        if self.positions is None:
            for v in self.variables.values():
                self.leaf._track_variable(v)
            index = {id(v): i for i, v in enumerate(self.model.optimizer.variables)}
            positions = {name: index[id(v)] for name, v in self.variables.items()}
            if positions != self._traced_positions:
                self.functions = {}  # traced with other positions: trace again
            self.positions = self._traced_positions = positions
        super().install()

    def uninstall(self):
        super().uninstall()
        if self.positions is not None:
            live = live_optimizer_values(self.model)
            if live is not None:  # the trainer has not written the state back yet (an interrupted fit)
                for name, v in self.variables.items():
                    v.assign(live[self.positions[name]])
            for v in self.variables.values():
                self.leaf._untrack_variable(v)
            self.positions = None


def _learning_rate(optimizer, optimizer_values):
    """The learning rate of this step's update (a schedule evaluated at the iterations before
    it), read from the step's optimizer state."""
    with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_values, strict=True))):
        return jnp.asarray(ops.convert_to_tensor(leaf_optimizer(optimizer).learning_rate))


def estimates(probe, model, state, batch, step):
    """`(lambda_max, trace)`: scalar arrays (float64 in JAX's 64-bit mode, else float32) for the
    loss on `batch` at the weights of `state`, with `probe`'s settings, traced into the step.

    Args:
        probe: the `HessianProbe`.
        model: the `keras.Model`.
        state: the train step's state `(trainable, non_trainable, optimizer, metrics values)`.
        batch: the step's data, `(x, y)` or `(x, y, sample_weight)`.
        step: int32 scalar, the train step (the random draws depend on `(seed, step)`).
    """
    trainable, non_trainable, optimizer_values, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    theta, unflatten = ravel_pytree(list(trainable))
    dtype = theta.dtype
    wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    def loss(flat):
        _, aux = model.compute_loss_and_updates(unflatten(flat), non_trainable, metrics, x, y, sample_weight, training=True, optimizer_variables=optimizer_values)
        return aux[0]  # the unscaled loss

    # Linearized once per probe: the primal pass (the gradient at theta) runs once, and each
    # product only evaluates the linear map v -> H v.
    _, hvp = jax.linearize(jax.grad(loss), theta)

    def dot(a, b):
        return jnp.vdot(a.astype(wide), b.astype(wide))

    key = jax.random.fold_in(jax.random.PRNGKey(probe.seed), step)

    def power(shift):
        v0 = jax.random.normal(jax.random.fold_in(key, 0), theta.shape, dtype)
        v0 = v0 / jnp.sqrt(dot(v0, v0)).astype(dtype)

        def body(_, carry):
            _, v = carry
            hv = hvp(v)
            if shift is not None:
                hv = hv - shift.astype(dtype) * v
            lam = dot(v, hv)  # the Rayleigh quotient of the unit vector v
            norm = jnp.sqrt(dot(hv, hv)).astype(dtype)
            return lam, jnp.where(norm > 0, hv / jnp.where(norm > 0, norm, 1), 0)

        return jax.lax.fori_loop(0, probe.n_iterations, body, (jnp.zeros((), wide), v0))[0]

    dominant = power(None)
    lambda_max = jax.lax.cond(dominant < 0, lambda: power(dominant) + dominant, lambda: dominant)

    if probe.n_probes == 0:
        return lambda_max, jnp.asarray(jnp.nan, wide)
    if probe.n_probes == "exact":

        def basis(k, total):
            e = jax.nn.one_hot(k, theta.size, dtype=dtype)  # e_k
            return total + dot(e, hvp(e))

        return lambda_max, jax.lax.fori_loop(0, theta.size, basis, jnp.zeros((), wide))

    def rademacher(k, total):
        z = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, k + 1), 0.5, theta.shape), 1, -1).astype(dtype)
        return total + dot(z, hvp(z))

    return lambda_max, jax.lax.fori_loop(0, probe.n_probes, rademacher, jnp.zeros((), wide)) / probe.n_probes
