"""The capture on the JAX backend: ring buffers owned by the optimizer, written inside the jitted step.

Where the JAX trainer applies gradients (Keras 3.15, `keras/src/backend/jax/trainer.py`,
`train_step`): `jax.value_and_grad` of `compute_loss_and_updates`, then
`optimizer.stateless_apply(optimizer_variables, grads, trainable_variables)`, which runs the
optimizer's `apply` inside a `StatelessScope` and returns only the trainable variables and
`optimizer.variables` (`keras/src/optimizers/base_optimizer.py`). A write to any other variable
inside the step is dropped. So the buffers here are variables of the innermost optimizer (added
to it while a logger is attached, at the end of `optimizer.variables`, and removed at detach, so
that saved models and checkpoints keep their structure), and they travel through the step in the
state tuple, as the optimizer's own slots do.

What is taken where (the same values as `TensorFlowCapture`, see `capture.py`):

- the loss gradient: the `grads` handed to the outer optimizer's `stateless_apply` (hooked),
  divided by the loss scale in effect before the step (`LossScaleOptimizer.dynamic_scale` from
  the state, or `loss_scale_factor`);
- the loss: the unscaled loss where the trainer updates its metrics
  (`model._update_metrics_variables`, hooked). The loss inside `value_and_grad` is a tracer of
  the gradient transformation and cannot be used outside it;
- the applied gradient, learning rate and whether clipping acted: on the innermost optimizer,
  `_backend_update_step` and `_clip_gradients` (hooked). `LossScaleOptimizer.stateless_apply`
  calls the inner optimizer's `stateless_apply` inside a `cond` branch, whose tracers cannot be
  used outside it, and gradient accumulation selects the update with `cond`: so these hooks
  assign their numbers to scratch variables of the optimizer (`[applied, learning rate,
  clipped, |applied g|^2 per variable]`), which the step's `cond` keeps or drops with the rest
  of the optimizer's state; the wrapped `train_step` reads them and zeroes them;
- the weights before and after the step, and the optimizer's variables before it: from the state
  tuple that the wrapped `model.train_step` receives and returns. The weight change gives
  `update_ratio` (plain SGD: the learning rate times the applied gradient, `hooks.rate_update`).

The reductions behind the statistics (`kerasbp.logger.statistics.step_reductions`) are computed
inside the jitted step and written, with the row, at slot `count % capacity` of each ring buffer. During `fit` the
callback reads the buffers from `model._jax_state["optimizer_variables"]` (the variables' own
values are purged while an epoch runs), else from the variables.

Differences from TensorFlow: `value_and_grad` gives a zero gradient (never None) for a variable
the loss does not depend on, so `missing` stays empty; relu units count as alive where their
kernel's gradient column is nonzero (the layers' outputs live inside `value_and_grad`).
Float64 needs JAX's 64-bit mode (`JAX_ENABLE_X64=1`), as any float64 Keras model on JAX does.

Under a `keras.distribution` (`DataParallel`): Keras jits the train step once for the whole device
mesh (GSPMD, `make_train_function` in `keras/src/backend/jax/trainer.py`), with the batch sharded
along its first axis and the state kept in the shardings of the variables. The loss is the global
batch's mean, so the `grads` that reach `stateless_apply` are already reduced over the devices:
the global batch's gradient, which is what a row holds, and clipping acts on it after the
reduction (unlike `tf.distribute`, where each replica clips its own share first). No replica's
own gradient exists in that program, so `per_replica=True` is refused. The buffers are laid out
replicated on the distribution's mesh (`replicated_layout`) and pass through the step, as the
optimizer's own variables do, in the shardings Keras records for `optimizer.variables`.
"""

import math
import warnings
import weakref

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

from kerasbp.logger import per_example_jax, per_example_ops, statistics
from kerasbp.logger.hooks import RAW, ROW, HookedCapture, host_rows, ring_slots
from kerasbp.logger.log import NOISE_COLUMNS

#: optimizer -> the number the next train step gets, left by the last capture detached from it.
_NEXT_STEP = weakref.WeakKeyDictionary()


def replicated_layout(shape):
    """The layout of a buffer of `shape` under the `keras.distribution` in effect: a whole copy
    on every device of the distribution's mesh, or None without a distribution.

    `DataParallel` lays out every variable so anyway; the explicit layout keeps a
    `ModelParallel` layout map from sharding a buffer whose path one of its patterns matches.

    Args:
        shape: tuple of ints.

    Returns:
        `keras.distribution.TensorLayout` or None.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    return keras.distribution.TensorLayout([None] * len(shape), distribution.device_mesh)


def check_distribution(per_replica, per_example=False):
    """Refuse what the step under a `keras.distribution` cannot show.

    Args:
        per_replica: bool, `GradientLogger(per_replica=...)`.
        per_example: bool, `GradientLogger(per_example=...)`.

    Raises:
        ValueError: for `per_replica=True` under a distribution: the jitted step sees only the
            reduced gradient, never a replica's share; for `per_example=True` under one (its
            second pass is not sharded yet).
    """
    distribution = keras.distribution.distribution()
    if per_example and distribution is not None:
        raise ValueError(
            f"GradientLogger(per_example=True) does not support keras.distribution yet. Received: {type(distribution).__name__} in effect"
        )
    if per_replica and distribution is not None:
        name = type(distribution).__name__
        raise ValueError(
            f"GradientLogger(per_replica=True) is not available under keras.distribution.{name} on JAX: the jitted train "
            "step sees only the gradient already reduced over the devices (the global batch's), never one replica's share. "
            f"Received: per_replica=True, distribution={name} over {distribution.device_mesh.devices.size} devices. "
            "Use per_replica=False (the logged gradient is the global batch's)"
        )


def live_optimizer_values(model):
    """The values of `model.optimizer.variables` after the last step of a `fit` in flight
    (`model._jax_state`, where Keras keeps them while an epoch runs and the variables themselves
    are purged), or None when the variables hold the latest values."""
    state = getattr(model, "_jax_state", None)
    if not state or getattr(model, "_jax_state_synced", True):
        return None
    return state.get("optimizer_variables")


def latest_value(model, variable, position):
    """A NumPy copy of an optimizer `variable`'s latest value: where a `fit` is in flight and
    `position` (its index in `model.optimizer.variables`) is given, from `live_optimizer_values`;
    else the variable's own value."""
    live = live_optimizer_values(model) if position is not None else None
    return np.array(live[position] if live is not None else variable.value, copy=True)


class _Buffers:
    """The ring buffers (Keras variables, owned by the optimizer while attached) by name.

    Attributes:
        capacity: int, rows held before the oldest is overwritten.
        variables: dict name -> `keras.Variable`, in the order they join `optimizer.variables`.
    """

    def __init__(self, leaf, model_vars, capacity, keep_full, keep_applied, dtype, tracked, snapshot_vars, per_example=False):
        self.capacity = capacity
        self.variables = {}
        n = len(model_vars)
        wide = "float64" if jax.config.jax_enable_x64 else "float32"

        def add(name, shape, dt):
            v = leaf.add_variable(shape, initializer="zeros", dtype=dt, layout=replicated_layout(shape), name=f"kerasbp_{name}")
            leaf._untrack_variable(v)  # joins the optimizer only while attached
            self.variables[name] = v

        add("count", (), "int32")
        add("counter", (), "int32")
        add("first_nonfinite", (), "int32")
        add("rows", (capacity, len(ROW)), wide)
        add("steps", (capacity, 2), "int32")  # step and iterations, exact
        add("stats", (capacity, n, len(RAW)), dtype)
        add("scratch", (3 + n,), wide)
        self.full = self.applied = self.weights = self.optimizer_state = None
        if keep_full:
            self.full = [f"grad_{j}" for j in range(n)]
            for j, v in enumerate(model_vars):
                add(self.full[j], (capacity, *v.shape), dtype)
            if keep_applied:
                self.applied = [f"applied_{j}" for j in range(n)]
                for j, v in enumerate(model_vars):
                    add(self.applied[j], (capacity, *v.shape), dtype)
                    add(f"applied_scratch_{j}", tuple(v.shape), dtype)
        self.per_example = per_example
        if per_example:  # the noise row, each example's norm (NaN past the batch) and the batch size
            add("noise", (capacity, len(NOISE_COLUMNS)), wide)
            add("norms", (capacity, per_example_jax.MAX_BATCH), dtype)
            add("batch_sizes", (capacity,), "int32")
        self.alive = [f"alive_{j}" if track else None for j, track in enumerate(tracked)]
        for j, (v, track) in enumerate(zip(model_vars, tracked, strict=True)):
            if track:
                add(self.alive[j], tuple(v.shape[-1:]), "bool")
        if snapshot_vars is not None:
            self.weights = [f"weights_{j}" for j in range(n)]
            for j, v in enumerate(model_vars):
                add(self.weights[j], (capacity, *v.shape), v.dtype)
            self.optimizer_state = [f"optimizer_{k}" for k in range(len(snapshot_vars))]
            for k, v in enumerate(snapshot_vars):
                add(self.optimizer_state[k], (capacity, *v.shape), v.dtype)


class JaxCapture(HookedCapture):
    """Hooks on one model's train step and optimizer that write each logged step into buffers
    that the optimizer carries through the jitted step (JAX backend).

    Build it with `kerasbp.logger.hooks.capture_for`, which reuses one per model, optimizer and
    options. Implements the interface of `TensorFlowCapture`: `attach()`, `detach()`, `count`,
    `read(start, stop)`, `start_run(first_step)`, `all_finite()`, `missing`, `applied_same`,
    `buffers.capacity`.

    Args:
        model: a compiled, built `keras.Model` on the JAX backend.
        optimizer: its optimizer (built).
        every_n_steps: int, log the train steps whose 0-based number is a multiple of it.
        capacity: int, rows of the ring buffers.
        keep_full: bool, keep whole gradients.
        snapshots: bool, keep the weights and optimizer variables before each logged step.
        tracked: tuple of bool per variable: track its alive units (relu kernels).
        per_example: bool, also compute the per-example statistics of each logged step
            (`kerasbp.logger.per_example_jax`: one more forward and backward pass then).
        per_replica: bool; True is refused (under a `keras.distribution` by its name).

    Raises:
        ValueError: for `per_replica=True`, and for `per_example=True` what
            `per_example_jax.check_jax_model` refuses.
    """

    def __init__(self, model, optimizer, every_n_steps, capacity, keep_full, snapshots, tracked, per_example=False, per_replica=False):
        check_distribution(per_replica, per_example)
        super().__init__(model, optimizer, every_n_steps, snapshots, per_example, per_replica)
        self.tracked = tuple(tracked)
        self.taps = per_example_jax.JaxTaps(model) if per_example else None
        self.refused = None  # set while tracing a step that is refused after it runs (see per_example_jax)
        self.buffers = _Buffers(self.leaf, self.model_vars, capacity, keep_full, not self.applied_same, self.dtype, tracked, self.snapshot_vars, per_example)
        self._warned = set()
        self._trace = None  # while the wrapped train step is traced: what the hooks found
        self._positions = None  # name -> index in optimizer.variables (while attached)
        self._train_function = None
        self._plain_train_function = None

    # ------------------------------------------------------------------ the callback's interface
    @property
    def count(self):
        """int, rows written since the buffers were made."""
        return int(self._value("count"))

    def attach(self):
        """Add the buffers to the optimizer, install the hooks and the hooked train function."""
        if self.attached:
            return
        for v in self.buffers.variables.values():
            self.leaf._track_variable(v)
        index = {id(v): i for i, v in enumerate(self.optimizer.variables)}
        positions = {name: index[id(v)] for name, v in self.buffers.variables.items()}
        if positions != self._positions:  # traced with other positions: trace again
            self._train_function = None
        self._positions = positions
        self._install(self._hooks())
        self._plain_train_function = self.model.train_function
        if self._train_function is None:
            self.model.make_train_function(force=True)
            self._train_function = self.model.train_function
        self.model.train_function = self._train_function
        self.attached = True

    def detach(self):
        """Remove the hooks and the buffers from the optimizer (keeping their values), and give
        the model back the train function it had."""
        if not self.attached:
            return
        state = live_optimizer_values(self.model)
        if state is not None:  # the trainer has not written the state back yet (an interrupted fit)
            for name, v in self.buffers.variables.items():
                v.assign(state[self._positions[name]])
        self._uninstall()
        for v in self.buffers.variables.values():
            self.leaf._untrack_variable(v)
        self.model.train_function = self._plain_train_function
        self._plain_train_function = None
        self.attached = False
        _NEXT_STEP[self.optimizer] = int(self._value("counter"))

    def start_run(self, first_step=0):
        """A run starts: forget alive units and any non-finite step, and move the train-step
        counter to at least `first_step` and the optimizer's own count of update calls.

        Returns:
            int, the number the run's first train step will get.
        """
        variables = self.buffers.variables
        for name in self.buffers.alive:
            if name is not None:
                variables[name].assign(np.zeros(variables[name].shape, bool))
        variables["first_nonfinite"].assign(-1)
        start = max(
            int(self._value("counter")),
            _NEXT_STEP.get(self.optimizer, 0),
            int(ops.convert_to_numpy(self.leaf._iterations)),
            int(first_step),
        )
        variables["counter"].assign(start)
        return start

    def all_finite(self):
        """Scalar bool: no logged step of this run had a non-finite loss or gradient (loss-scale
        skips aside)."""
        return jnp.asarray(self._value("first_nonfinite")) < 0

    def read(self, start, stop):
        """Rows `start` to `stop` (counts since the buffers were made) as NumPy arrays: the same
        dict as `TensorFlowCapture.read`.

        Raises:
            RuntimeError: if more than `capacity` rows were written since `start`.
        """
        buf = self.buffers
        slots = ring_slots(start, stop, buf.capacity)

        def rows(names):
            return None if names is None else [self._value(name)[slots] for name in names]

        rows_read = host_rows(
            self._value("rows")[slots].astype(np.float64),  # (n, len(ROW))
            self._value("steps")[slots].astype(np.int64),  # (n, 2)
            self._value("stats")[slots],  # (n, n_variables, len(RAW))
            [math.prod(v.shape) for v in self.model_vars],
            self.applied_same,
            rows(buf.full),
            rows(buf.applied),
            [None if name is None else self._value(name).astype(bool) for name in buf.alive],
            rows(buf.weights),
            rows(buf.optimizer_state),
            rate_update=self.by_rate,
        )
        if buf.per_example:
            width = min(int(self._value("batch_sizes")[slots].max(initial=0)), per_example_jax.MAX_BATCH)  # the widest batch read
            rows_read["noise"] = self._value("noise")[slots].astype(np.float64)
            rows_read["per_example_norms"] = self._value("norms")[slots, :width].astype(np.float64)
        return rows_read

    # --------------------------------------------------------------------------- reading values
    def _value(self, name):
        """A copy of buffer `name`'s latest value as a NumPy array."""
        return latest_value(self.model, self.buffers.variables[name], self._positions[name] if self.attached else None)

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # ----------------------------------------------------------------------------- the hooks
    def _hooks(self):
        """The replacements: `train_step` and `_update_metrics_variables` of the model,
        `stateless_apply` of the optimizer, `_backend_update_step` and `_clip_gradients` of the
        innermost optimizer."""
        model, optimizer, leaf = self.model, self.optimizer, self.leaf
        variables = self.buffers.variables
        index = {id(v): j for j, v in enumerate(self.model_vars)}
        n, dtype = len(self.model_vars), self.dtype
        wide = variables["scratch"].dtype
        original = {
            "train_step": model.train_step,
            "metrics": model._update_metrics_variables,
            "stateless_apply": optimizer.stateless_apply,
            "update": leaf._backend_update_step,
            "clip": leaf._clip_gradients,
        }

        def update_metrics_variables(metrics_variables, unscaled_loss, *args, **kwargs):
            if self._trace is not None and "loss" not in self._trace:
                self._trace["loss"] = unscaled_loss
            return original["metrics"](metrics_variables, unscaled_loss, *args, **kwargs)

        def stateless_apply(optimizer_variables, grads, trainable_variables):
            if self._trace is not None:
                self._trace["grads"] = list(grads)
            return original["stateless_apply"](optimizer_variables, grads, trainable_variables)

        def clip_gradients(grads):
            if self._trace is not None:
                self._trace["clipped"] = statistics.clipping_acted(leaf, grads, dtype)
            return original["clip"](grads)

        def backend_update_step(grads, trainable_variables, learning_rate):
            trace = self._trace
            result = original["update"](grads, trainable_variables, learning_rate)
            if trace is None:
                return result
            trace["updated"] = True
            found = {index[id(v)]: g for g, v in zip(grads, trainable_variables, strict=True) if id(v) in index and g is not None}
            acted = trace.pop("clipped", None)
            squares = [statistics.sum_squares(found[j], dtype) if j in found else ops.zeros((), dtype) for j in range(n)]
            head = [ops.ones((), wide), ops.cast(learning_rate, wide), ops.zeros((), wide) if acted is None else ops.cast(acted, wide)]
            # Assigned inside the optimizer's StatelessScope: kept or dropped with its state.
            variables["scratch"].assign(ops.concatenate([ops.stack(head), ops.cast(ops.stack(squares), wide)]))
            if self.buffers.applied is not None:
                for j, g in found.items():
                    variables[f"applied_scratch_{j}"].assign(ops.cast(g, dtype))
            return result

        def train_step(state, data):
            trace = {"state": state, "data": data}  # the state before the step: the per-example pass
            self._trace = trace
            try:
                logs, new_state = original["train_step"](state, data)
            finally:
                self._trace = None
            return logs, self._record(state, new_state, trace)

        return ([] if self.taps is None else self.taps.hooks()) + [
            (model, "train_step", train_step),
            (model, "_update_metrics_variables", update_metrics_variables),
            (optimizer, "stateless_apply", stateless_apply),
            (leaf, "_backend_update_step", backend_update_step),
            (leaf, "_clip_gradients", clip_gradients),
        ]

    def _record(self, state, new_state, trace):
        """The new state with this step written into the buffers (called while tracing)."""
        grads = trace.get("grads")
        if grads is None:
            self._warn_once(
                "grads",
                "GradientLogger: this train step did not call optimizer.stateless_apply, so the logger cannot see its "
                "gradients: nothing is logged",
            )
            return new_state
        if "loss" not in trace:
            self._warn_once(
                "loss",
                "GradientLogger: this train step did not update the model's metrics with its loss "
                "(model._update_metrics_variables), so the logger cannot see it: the logged losses are NaN (the gradients are exact)",
            )
        if not trace.get("updated"):
            self._warn_once(
                "update",
                f"GradientLogger: {type(self.leaf).__name__} applied its update without calling _backend_update_step, so "
                "the applied gradients, learning rates and clipping are not recorded",
            )
        trainable, non_trainable, optimizer_before, metrics = state
        new_trainable, new_non_trainable, optimizer_after, new_metrics = new_state
        optimizer_after = list(optimizer_after)
        pos, buf, every_n = self._positions, self.buffers, self.every_n_steps
        names = list(buf.variables)
        current = {name: optimizer_after[pos[name]] for name in names}
        scratch = current["scratch"]
        step = current["counter"]
        log_now = (step % every_n) == 0

        def write(current):
            current = dict(current)
            out = self._write(current, step, trace, grads, trainable, new_trainable, optimizer_before, optimizer_after, scratch)
            return out

        if every_n == 1:
            current = write(current)
        else:
            current = jax.lax.cond(log_now, write, lambda c: dict(c), current)
        current["counter"] = step + 1
        current["scratch"] = jnp.zeros_like(scratch)  # read: the next step starts from zero
        for name in names:
            optimizer_after[pos[name]] = current[name]
        return (new_trainable, new_non_trainable, optimizer_after, new_metrics)

    def _write(self, current, step, trace, grads, before, after, optimizer_before, optimizer_after, scratch):
        """`current` (buffer name -> value) with one row written at slot `count % capacity`."""
        buf, dtype, n = self.buffers, self.dtype, len(self.model_vars)
        wide = scratch.dtype
        slot = current["count"] % buf.capacity
        if self.loss_scaling:
            scale = optimizer_before[self._index_of(self.optimizer.dynamic_scale)]
        else:
            scale = self.leaf.loss_scale_factor or None
        if trace.get("updated"):
            applied, lr, clipped = scratch[0] > 0, scratch[1], scratch[2] > 0
            applied_sq = None if self.applied_same else scratch[3:]
        else:
            applied, lr, clipped = jnp.asarray(True), jnp.asarray(jnp.nan, wide), jnp.asarray(False)
            applied_sq = None if self.applied_same else jnp.zeros((n,), wide)
        loss = trace.get("loss")
        loss = jnp.asarray(jnp.nan, wide) if loss is None else jnp.reshape(loss, ()).astype(wide)
        weight_squares = ops.stack([statistics.sum_squares(w, dtype) for w in before])
        if self.by_rate:  # plain SGD: the host takes the change from the learning rate
            update_squares = ops.zeros_like(weight_squares)  # unread
        else:
            update_squares = ops.stack([statistics.sum_squares(ops.cast(a, dtype) - ops.cast(b, dtype), dtype) for a, b in zip(after, before, strict=True)])
        tracked = [name is not None for name in buf.alive]
        table, nonzero = statistics.step_reductions(grads, dtype, tracked)
        applied_column = table[:, 1] if applied_sq is None else ops.cast(applied_sq, dtype)  # unread with applied_same
        values = ops.concatenate([table, ops.stack([weight_squares, update_squares, applied_column], axis=1)], axis=1)  # (n, len(RAW))
        finite_grads = jnp.all(table[:, RAW.index("nonfinite")] == 0)
        skipped = jnp.logical_and(~finite_grads, ~applied) if self.loss_scaling else jnp.asarray(False)
        finite = jnp.logical_or(jnp.logical_and(finite_grads, jnp.isfinite(loss)), skipped)
        for name, units in zip(buf.alive, nonzero, strict=True):
            if name is not None:
                current[name] = jnp.logical_or(current[name], units)
        if buf.full is not None:
            for name, g in zip(buf.full, grads, strict=True):
                g = g.astype(dtype)
                current[name] = current[name].at[slot].set(g if scale is None else g / jnp.asarray(scale, dtype))
        if buf.applied is not None:
            for j, name in enumerate(buf.applied):
                current[name] = current[name].at[slot].set(current[f"applied_scratch_{j}"])
        if buf.weights is not None:
            for name, w in zip(buf.weights, before, strict=True):
                current[name] = current[name].at[slot].set(w)
            for name, v in zip(buf.optimizer_state, self.snapshot_vars, strict=True):
                k = self._index_of(v)
                current[name] = current[name].at[slot].set(optimizer_before[k] if k is not None else ops.convert_to_tensor(v))
        iterations = optimizer_after[self._index_of(self.leaf._iterations)]
        row = jnp.stack(
            [
                step.astype(wide),
                jnp.asarray(iterations).astype(wide),
                loss,
                jnp.asarray(lr).astype(wide),
                jnp.asarray(1.0 if scale is None else scale).astype(wide),
                applied.astype(wide),
                skipped.astype(wide),
                clipped.astype(wide),
            ]
        )
        current["rows"] = current["rows"].at[slot].set(row)
        current["steps"] = current["steps"].at[slot].set(jnp.stack([step, jnp.asarray(iterations).astype("int32")]))
        current["stats"] = current["stats"].at[slot].set(values.astype(current["stats"].dtype))
        if self.taps is not None:
            noise, norms = self._per_example(trace, grads, scale)
            current["noise"] = current["noise"].at[slot].set(noise.astype(wide))
            row = jnp.full((per_example_jax.MAX_BATCH,), jnp.nan, dtype)
            if norms.shape[0] <= per_example_jax.MAX_BATCH:
                row = row.at[: norms.shape[0]].set(norms.astype(dtype))
            else:  # refused after the step (the callback raises it), the norms left NaN
                self.refused = ValueError(
                    f"GradientLogger(per_example=True) on JAX holds the per-example norms of batches of at most "
                    f"{per_example_jax.MAX_BATCH} examples. Received a batch of {norms.shape[0]}. Use a smaller batch_size or per_example=False"
                )
            current["norms"] = current["norms"].at[slot].set(row)
            current["batch_sizes"] = current["batch_sizes"].at[slot].set(norms.shape[0])
        current["count"] = current["count"] + 1
        first = current["first_nonfinite"]
        current["first_nonfinite"] = jnp.where(jnp.logical_and(~finite, first < 0), step, first)
        return current

    def _per_example(self, trace, grads, scale):
        """The step's noise row `(len(NOISE_COLUMNS),)` and per-example norms `(batch,)`, from the
        Dense layers' inputs and deltas at the state before the step (`per_example_jax`) and the
        step's batch gradient, both divided by the loss scale."""
        records = self.taps.inputs_and_deltas(self.model, trace["state"], trace["data"])
        dtype = self.dtype
        s = None if scale is None else jnp.asarray(scale, dtype)
        unscaled = {j: g.astype(dtype) if s is None else g.astype(dtype) / s for j, g in enumerate(grads)}
        taken = [(a, d if s is None else d.astype(dtype) / s) for a, d in records]
        with warnings.catch_warnings():  # the row is float64 where JAX's 64-bit mode is on, else float32
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
            return per_example_ops.dense_statistics(self.taps.dense, taken, unscaled, dtype)

    def _index_of(self, variable):
        """The index of `variable` in `optimizer.variables` (and so in the state), or None."""
        for k, v in enumerate(self.optimizer.variables):
            if v is variable:
                return k
        return None
