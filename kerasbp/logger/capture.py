"""The capture: hooks on `optimizer.apply` that write each logged step into ring buffers on the device.

Keras callbacks receive metrics, never gradients, and recomputing a gradient in
`on_train_batch_end` is wrong: the weights have already moved. The gradients that count are the
ones handed to `optimizer.apply` (via `apply_gradients`) inside the compiled train step.
`TensorFlowCapture` wraps that method on the optimizer instance, so the capture runs inside the
compiled step: per logged step it writes the statistics (`step_statistics`, in the order of
`kerasbp.logger.log.STATS`), the step, the loss and, if asked, the whole gradients and the
weights before the step into buffers that the callback reads back now and then.

A capture belongs to one model and one optimizer and is reused (`capture_for`), with its traced
train function, by every logger with the same options: a new `GradientLogger` does not trace again.

Interface that a capture for another backend implements: `attach()`, `detach()`, `count`
(rows written so far), `read(start, stop)` (rows as NumPy arrays), `missing` (variables whose
gradient was None), `reset_units()`.

Source of the capture point: `keras/src/backend/tensorflow/trainer.py` (`train_step` calls
`optimizer.scale_loss(loss)` and then `optimizer.apply_gradients(zip(grads, weights))`) and
`keras/src/optimizers/base_optimizer.py` (`apply_gradients` calls `apply`, which drops `None`
gradients, unscales, clips, applies weight decay, updates, and increments `iterations`).
"""

import warnings
import weakref

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import numpy as np
import tensorflow as tf

from kerasbp.logger.log import STATS


class DeviceBuffers:
    """Ring buffers of `capacity` rows on the device, written by the wrapped `optimizer.apply`.

    Args:
        variables: list of the model's trainable variables.
        capacity: int, rows held before the oldest is overwritten.
        keep_full: bool, also hold whole gradients `(capacity, *shape)` per variable.
        dtype: `tf.float32` or `tf.float64`, the dtype of statistics and gradients.
        tracked: list of bool per variable: track which units (last axis) had a nonzero gradient.
        optimizer_variables: list of the optimizer's variables to snapshot before each logged
            step (with the weights), or None for no snapshots.
    """

    def __init__(self, variables, capacity, keep_full, dtype, tracked, optimizer_variables=None):
        def var(shape, dt, name):
            return tf.Variable(tf.zeros(shape, dt), trainable=False, name=f"kerasbp_{name}")

        self.capacity, self.dtype = capacity, dtype
        self.count = var((), tf.int64, "count")
        # The step of this run's first logged step with a non-finite loss or gradient, or -1.
        self.first_nonfinite = tf.Variable(tf.constant(-1, tf.int64), trainable=False, name="kerasbp_first_nonfinite")
        self.steps = var((capacity,), tf.int64, "steps")
        self.losses = var((capacity,), dtype, "losses")
        self.stats = var((capacity, len(variables), len(STATS)), dtype, "stats")
        self.full = [var((capacity, *v.shape), dtype, f"grad_{j}") for j, v in enumerate(variables)] if keep_full else None
        self.alive = [var(v.shape[-1:], tf.bool, f"alive_{j}") if track else None for j, (v, track) in enumerate(zip(variables, tracked, strict=True))]
        self.weights = self.optimizer_state = None
        if optimizer_variables is not None:
            self.weights = [var((capacity, *v.shape), v.dtype, f"weights_{j}") for j, v in enumerate(variables)]
            self.optimizer_state = [var((capacity, *v.shape), v.dtype, f"optimizer_{j}") for j, v in enumerate(optimizer_variables)]


def step_statistics(grads, weight_squares, updates, dtype, tracked):
    """The `STATS` of every gradient, and whether each unit's gradient was nonzero.

    Written for few operations and few passes over memory, which is what costs on a CPU: per
    variable, five reductions (the sum and the sum of squares of the gradient, its minimum and
    maximum, the sum of squares of the update), and one more where the units whose gradient is
    nonzero are tracked; then the arithmetic on those numbers for all variables at once. The
    standard deviation is `sqrt(E[g^2] - E[g]^2)`, whose relative error grows like
    `(mean / std)^2` times the dtype's epsilon. NaN/Inf entries are counted (one more pass) only
    at steps where some sum of squares is not finite.

    Args:
        grads: list of tensors, the gradient of each variable.
        weight_squares: tensor `(n_variables,)`, the sum of squares of each variable before the step.
        updates: list of tensors, each variable's change in the step (`w_after - w_before`).
        dtype: the dtype to compute in.
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.

    Returns:
        `(stats, nonzero)`: a tensor `(n_variables, len(STATS))`, and a list with, per
        variable, None or (if tracked) a bool tensor over its last axis (units): some gradient
        entry of that unit was nonzero.
    """
    raw, nonzero = [], []
    for g, update, track in zip(grads, updates, tracked, strict=True):
        g, update = tf.cast(g, dtype), tf.cast(update, dtype)
        rest = list(range(g.shape.rank - 1))
        nonzero.append(tf.reduce_any(tf.not_equal(g, 0), axis=rest) if track else None)  # (units,)
        raw += [
            tf.reduce_sum(g),
            2 * tf.nn.l2_loss(g),  # sum of squares in one operation, no temporary
            tf.reduce_min(g),
            tf.reduce_max(g),
            2 * tf.nn.l2_loss(update),
        ]
    total, squares, low, high, update_squares = tf.unstack(tf.reshape(tf.stack(raw), [len(grads), 5]), axis=1)
    size = tf.constant([float(np.prod(g.shape)) for g in grads], dtype)  # (n_variables,)
    mean = total / size
    weight_norm = tf.sqrt(tf.cast(weight_squares, dtype))
    counts = tf.cond(
        tf.reduce_all(tf.math.is_finite(squares)),
        lambda: tf.zeros([len(grads)], dtype),
        lambda: tf.stack([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), dtype)) for g in grads]),
    )
    by_name = {
        "norm": tf.sqrt(squares),
        "mean": mean,
        "std": tf.sqrt(tf.maximum(squares / size - mean * mean, 0)),
        "min": low,
        "max": high,
        "max_abs": tf.maximum(tf.abs(low), tf.abs(high)),
        "nonfinite": counts,
        "weight_norm": weight_norm,
        "update_ratio": tf.sqrt(update_squares) / weight_norm,
    }
    return tf.stack([by_name[name] for name in STATS], axis=1), nonzero  # (n_variables, len(STATS))


class TensorFlowCapture:
    """Hooks on one model's optimizer that write each logged step into `DeviceBuffers`.

    Build it with `capture_for`, which reuses one per model, optimizer and options.

    Args:
        model: a compiled, built `keras.Model` on the TensorFlow backend.
        optimizer: its optimizer (built).
        every_n_steps: int, log the steps whose 0-based iteration is a multiple of it.
        capacity: int, rows of the ring buffers.
        keep_full: bool, keep whole gradients.
        snapshots: bool, keep the weights and optimizer variables before each logged step.
        tracked: tuple of bool per variable: track its units with a nonzero gradient.

    Attributes:
        buffers: the `DeviceBuffers`.
        missing: list of str, the variables whose gradient was None when the step was traced.
    """

    #: The optimizer methods replaced on the instance while attached.
    HOOKED = ("apply", "scale_loss", "assign_add", "assign_sub")

    def __init__(self, model, optimizer, every_n_steps, capacity, keep_full, snapshots, tracked):
        variables = list(model.trainable_weights)
        dtype = tf.float64 if any(v.dtype == "float64" for v in variables) else tf.float32
        self.model, self.optimizer, self.every_n_steps = model, optimizer, every_n_steps
        self.buffers = DeviceBuffers(variables, capacity, keep_full, dtype, tracked, optimizer.variables if snapshots else None)
        self.missing = []
        self._hooks = self._make_hooks()
        self._train_function = None  # the model's train function traced with the hooks
        self._plain_train_function = None
        self.attached = False

    @property
    def count(self):
        """int, rows written since the buffers were made."""
        return int(self.buffers.count.numpy())

    def attach(self):
        """Install the hooks on the optimizer and the hooked train function on the model."""
        if self.attached:
            return
        for name, hook in zip(self.HOOKED, self._hooks, strict=True):
            setattr(self.optimizer, name, hook)
        self._plain_train_function = self.model.train_function
        if self._train_function is None:
            self.model.make_train_function(force=True)
            self._train_function = self.model.train_function
        self.model.train_function = self._train_function
        self.attached = True
        _ATTACHED[self.model] = self

    def detach(self):
        """Remove the hooks and give the model back the train function it had."""
        if not self.attached:
            return
        for name in self.HOOKED:
            self.optimizer.__dict__.pop(name, None)
        self.model.train_function = self._plain_train_function
        self._plain_train_function = None
        self.attached = False
        _ATTACHED.pop(self.model, None)

    def start_run(self):
        """Forget which units had a nonzero gradient and any non-finite step: a run starts."""
        for alive in self.buffers.alive:
            if alive is not None:
                alive.assign(tf.zeros_like(alive))
        self.buffers.first_nonfinite.assign(-1)

    def all_finite(self):
        """Scalar bool tensor: no logged step of this run had a non-finite loss or gradient.

        `kerasbp.train` checks it before each step, so a run can stop at that step."""
        return self.buffers.first_nonfinite < 0

    def read(self, start, stop):
        """Rows `start` to `stop` (counts since the buffers were made) as NumPy arrays.

        Returns:
            dict with `steps` int64 `(n,)`, `losses` and `stats` float64 `(n,)` and
            `(n, n_variables, len(STATS))`, `full` (list per variable of `(n, *shape)`, or None),
            `alive` (list per variable of bool `(units,)` or None: units with a nonzero gradient
            since `reset_units`), `weights` and `optimizer_state` (lists, or None).

        Raises:
            RuntimeError: if more than `capacity` rows were written since `start`.
        """
        buf = self.buffers
        if stop - start > buf.capacity:
            raise RuntimeError(
                f"GradientLogger lost {stop - start - buf.capacity} logged steps: {stop - start} steps ran between two reads but "
                f"the buffer holds {buf.capacity}. Was the model trained on with this logger's hooks still attached after an "
                "interrupted fit? Call logger.detach() after an interruption"
            )
        slots = np.arange(start, stop) % buf.capacity

        def rows(variables):
            return None if variables is None else [v.numpy()[slots] for v in variables]

        return {
            "steps": buf.steps.numpy()[slots],
            "losses": buf.losses.numpy()[slots].astype(np.float64),
            "stats": buf.stats.numpy()[slots].astype(np.float64),
            "full": rows(buf.full),
            "alive": [None if a is None else a.numpy().copy() for a in buf.alive],
            "weights": rows(buf.weights),
            "optimizer_state": rows(buf.optimizer_state),
        }

    def _make_hooks(self):
        """The replacements of `apply`, `scale_loss`, `assign_add` and `assign_sub`."""
        model, optimizer, buf, every_n = self.model, self.optimizer, self.buffers, self.every_n_steps
        model_vars = list(model.trainable_weights)
        index = {id(v): j for j, v in enumerate(model_vars)}
        original_apply, original_scale_loss = optimizer.apply, optimizer.scale_loss
        original_assign_add, original_assign_sub = optimizer.assign_add, optimizer.assign_sub
        pending = {}
        # Each variable's change in a step: Keras's own optimizers make it with assign_add and
        # assign_sub, whose increments are captured here, so no copy of the weights is needed.
        # With weight decay, constraints or another optimizer, it is `w_after - w_before`.
        from_increments = (
            type(optimizer).__module__.startswith("keras.src.optimizers")
            and not optimizer.weight_decay
            and all(v.constraint is None for v in model_vars)
            and buf.weights is None
        )
        increments = {}
        capturing = []  # non-empty while the original apply runs
        # The TensorFlow backend updates the tf.Variable behind each Keras variable.
        updated = {id(getattr(v, "value", v)): j for j, v in enumerate(model_vars)} | index

        def assign_add(variable, value):
            if capturing and id(variable) in updated:
                increments.setdefault(updated[id(variable)], []).append((1, value))
            return original_assign_add(variable, value)

        def assign_sub(variable, value):
            if capturing and id(variable) in updated:
                increments.setdefault(updated[id(variable)], []).append((-1, value))
            return original_assign_sub(variable, value)

        def change(j):
            """The variable's change in this step from its captured increments (signs matter only
            when there are several)."""
            parts = increments.get(j)
            if not parts:
                return tf.zeros(())
            if len(parts) == 1:
                return parts[0][1]  # its norm is all the statistics need
            return tf.add_n([value if sign > 0 else -value for sign, value in parts])

        def scale_loss(loss):
            pending["loss"] = loss  # the step's loss, before loss scaling
            return original_scale_loss(loss)

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            tvars = list(trainable_variables) if trainable_variables is not None else list(optimizer._trainable_variables)
            by_model_index = {index[id(v)]: (g, v) for g, v in zip(grads, tvars, strict=True) if id(v) in index}
            missing = [model_vars[j].path for j in range(len(model_vars)) if by_model_index.get(j, (None,))[0] is None]
            if missing and missing != self.missing:
                self.missing = missing
                warnings.warn(
                    f"GradientLogger: no gradient for {missing}: the loss does not depend on them (or was computed "
                    "outside the gradient tape); their rows hold NaN",
                    RuntimeWarning,
                    stacklevel=2,
                )
            loss = pending.pop("loss", None)
            if loss is None or not (tf.executing_eagerly() or getattr(loss, "graph", None) is tf.compat.v1.get_default_graph()):
                loss = tf.constant(float("nan"))
            step = tf.cast(optimizer.iterations, tf.int64)  # before this step's increment
            log_now = None if every_n == 1 else tf.equal(tf.math.floormod(step, every_n), 0)

            def weight_squares():
                return 2 * tf.stack([tf.nn.l2_loss(tf.cast(v.value, buf.dtype)) for v in model_vars])

            squares = weight_squares() if every_n == 1 else tf.cond(log_now, weight_squares, lambda: tf.zeros([len(model_vars)], buf.dtype))
            befores = None if from_increments else [tf.identity(v.value) for v in model_vars]
            state_before = [tf.identity(v.value) for v in optimizer.variables] if buf.optimizer_state is not None else None
            increments.clear()
            capturing.append(True)
            try:
                result = original_apply(grads, trainable_variables)
            finally:
                capturing.clear()

            def write():
                slot = tf.math.floormod(buf.count, buf.capacity)
                present = [j for j in range(len(model_vars)) if j in by_model_index and by_model_index[j][0] is not None]
                grads_present = [tf.convert_to_tensor(by_model_index[j][0]) for j in present]  # IndexedSlices -> dense
                rows = tf.fill([len(model_vars), len(STATS)], tf.constant(float("nan"), buf.dtype))
                finite = tf.reduce_all(tf.math.is_finite(loss))
                if present:
                    tracked = [buf.alive[j] is not None for j in present]
                    updates = [change(j) for j in present] if from_increments else [model_vars[j].value - befores[j] for j in present]
                    values, nonzero = step_statistics(grads_present, tf.gather(squares, present), updates, buf.dtype, tracked)
                    rows = values if len(present) == len(model_vars) else tf.tensor_scatter_nd_update(rows, [[j] for j in present], values)
                    finite = tf.logical_and(finite, tf.reduce_all(tf.equal(values[:, STATS.index("nonfinite")], 0)))
                    for j, units in zip(present, nonzero, strict=True):
                        if units is not None:
                            buf.alive[j].assign(tf.logical_or(buf.alive[j], units))
                if buf.full is not None:
                    for j, g in zip(present, grads_present, strict=True):
                        buf.full[j].scatter_nd_update([[slot]], tf.cast(g, buf.dtype)[None])
                if buf.weights is not None:
                    for target, value in zip(buf.weights + buf.optimizer_state, befores + state_before, strict=True):
                        target.scatter_nd_update([[slot]], value[None])
                buf.stats.scatter_nd_update([[slot]], rows[None])
                buf.losses.scatter_nd_update([[slot]], tf.cast(tf.reshape(loss, [1]), buf.dtype))
                buf.steps.scatter_nd_update([[slot]], tf.reshape(step, [1]))
                buf.count.assign_add(1)
                first = buf.first_nonfinite
                first.assign(tf.where(tf.logical_and(tf.logical_not(finite), first < 0), step, first))
                return tf.constant(True)

            if every_n == 1:
                write()
            else:
                tf.cond(log_now, write, lambda: tf.constant(False))
            return result

        return apply, scale_loss, assign_add, assign_sub


#: model -> optimizer -> options -> TensorFlowCapture. Weak keys: an entry goes with its model
#: or optimizer, and is never mistaken for a later object that happens to get the same id.
_CAPTURES = weakref.WeakKeyDictionary()
#: model -> the capture attached to it now.
_ATTACHED = weakref.WeakKeyDictionary()


def capture_for(model, optimizer, steps_per_execution, **options):
    """The capture for `model` and `optimizer` with `options` (see `TensorFlowCapture`), made
    once and reused, so that its traced train function serves every later logger alike.

    `steps_per_execution` (int) is part of the key: the hooked train function runs that many
    steps per call."""
    per_optimizer = _CAPTURES.setdefault(model, weakref.WeakKeyDictionary()).setdefault(optimizer, {})
    key = (steps_per_execution, *sorted(options.items()))
    if key not in per_optimizer:
        per_optimizer[key] = TensorFlowCapture(model, optimizer, **options)
    return per_optimizer[key]


def attached_capture(model):
    """The capture attached to `model` now, or None. `kerasbp.train` keys its traced loops on it."""
    return _ATTACHED.get(model)


def detach(model):
    """Remove any capture's hooks from `model` (e.g. left by an interrupted `fit`)."""
    capture = _ATTACHED.get(model)
    if capture is not None:
        capture.detach()
