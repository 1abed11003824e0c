"""The capture: hooks on the optimizer that write each logged train step into ring buffers on the device.

Keras callbacks receive metrics, never gradients, and recomputing a gradient in
`on_train_batch_end` is wrong: the weights have already moved. `TensorFlowCapture` wraps methods
of the optimizer instance (and of the model), so the capture runs inside the compiled train
step, and per logged step writes the reductions behind the statistics (`step_reductions`, the
columns of `kerasbp.logger.hooks.RAW`, finished into `STATS` on the host), one row of per-step values (`ROW`) and, if asked, the whole
gradients and the weights before the step into buffers that the callback reads back now and then.

A row is one train step: one call of the outer optimizer's `apply`, whatever the optimizer did
with it. Where each value is taken (Keras 3.15, `keras/src/optimizers/base_optimizer.py`,
`loss_scale_optimizer.py`, `keras/src/backend/tensorflow/trainer.py`):

- the loss: the argument of `optimizer.scale_loss` (the built-in `train_step`), else the result of
  `model.compute_loss` (custom train steps that call it); NaN, with one warning, if neither ran.
- the loss gradient: the gradients handed to the outer `apply`, divided by the loss scale in
  effect (`LossScaleOptimizer.dynamic_scale` read before the step, or `loss_scale_factor`).
- the applied gradient, the learning rate and whether clipping acted: on the innermost optimizer
  (the `inner_optimizer` of a `LossScaleOptimizer`, which `compile` adds itself under the
  `mixed_float16` policy), `_backend_update_step(grads, variables, learning_rate)` is called
  exactly when the update rule runs, with the gradients after unscaling, accumulation and
  clipping, and the learning rate of this step (a schedule evaluated at the optimizer's
  iteration); `_clip_gradients` sees the gradients before clipping. A loss-scale overflow skip
  or an accumulation micro-step never calls it: the row says `applied = 0`.
- the weight change (for `update_ratio`): for plain SGD, the learning rate times the applied
  gradient (its norm taken on the host, `hooks.rate_update`); else the increments the inner
  optimizer passes to its `assign_add`/`assign_sub`/`assign`, or `w_after - w_before` with weight
  decay, constraints, EMA overwrites, snapshots or an optimizer from outside Keras.

`LossScaleOptimizer` and gradient accumulation run the update rule inside `tf.cond` branches,
whose tensors cannot be used outside them; there the inner hooks write their few numbers (and,
with `record="full"`, the applied gradient) into variables that the outer hook reads after the
step. On the plain path everything stays in one graph and no variable is involved.

Under `tf.distribute.MirroredStrategy` the hooked `apply` runs once per replica, each traced in a
thread of its own (so the per-step state of the hooks is thread-local), with that replica's
gradient; `_all_reduce_sum_gradients` (hooked too) sums them, and the update runs once in a
cross-replica `merge_call`. Each replica then hands its gradient, loss, batch size and layer
outputs to the first one (`kerasbp.logger.replicas.gather`), which alone counts the step and
writes the row: the sums over replicas, the all-reduced applied gradient, and, if asked, each
replica's own values. The buffers are plain variables, not mirrored ones (`replicas.plain_variable`).

A capture belongs to one model and one optimizer and is reused (`hooks.capture_for`), with its traced
train function, by every logger with the same options: a new `GradientLogger` does not trace again.

Interface that a capture for another backend implements: `attach()`, `detach()`, `count`
(rows written so far), `read(start, stop)` (rows as NumPy arrays), `start_run(first_step)`,
`all_finite()`, `missing` (variables whose gradient was None), `applied_same`.
"""

import threading
import warnings
import weakref

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np
import tensorflow as tf

from kerasbp.logger import per_example as per_example_module
from kerasbp.logger import replicas, statistics
from kerasbp.logger.hooks import RAW, ROW, InstalledHooks, applied_same, finish_statistics, host_rows, leaf_optimizer, rate_update, ring_slots, snapshot_variables
from kerasbp.logger.log import NOISE_COLUMNS, REPLICA_STATS, STATS



def _graph():
    """The graph ops are being added to now, or None when executing eagerly."""
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def _in_this_graph(tensor):
    """Whether `tensor` can be used in the op being built now (same graph, or both eager)."""
    if tf.executing_eagerly():
        return not hasattr(tensor, "graph") or isinstance(tensor, tf.Variable)
    return getattr(tensor, "graph", None) is tf.compat.v1.get_default_graph()


#: The columns of `RAW` that a replica's gradient alone gives (its `REPLICA_STATS`).
REPLICA_RAW = RAW[:5]


class DeviceBuffers:
    """Ring buffers of `capacity` rows on the device, written by the hooks.

    Args:
        variables: list of the model's trainable variables.
        capacity: int, rows held before the oldest is overwritten.
        keep_full: bool, also hold whole loss gradients `(capacity, *shape)` per variable.
        keep_applied: bool, also hold whole applied gradients (when they can differ from the
            loss gradients: loss scaling, clipping, accumulation).
        dtype: `tf.float32` or `tf.float64`, the dtype of statistics and gradients.
        tracked: list of bool per variable: track which units (last axis) were alive.
        optimizer_variables: list of the optimizer's variables to snapshot before each logged
            step (with the weights), or None for no snapshots.
        per_example: bool, also hold the per-example statistics `(capacity, len(NOISE_COLUMNS))`
            and norms `(capacity, width)` (the width grows with the widest batch). Defaults to False.
        n_replicas: int, replicas of the `tf.distribute` strategy (1 without one). With more
            than one, `replica_noise` `(capacity, n_replicas, 2)` holds each replica's batch
            size and `|g_r|^2` (for the gradient noise scale). Defaults to 1.
        per_replica: bool, also hold the reductions of each replica's gradient `replica_stats`
            `(capacity, n_replicas, n_variables, len(REPLICA_RAW))` and, with `keep_full`, its
            whole gradients `replica_full` `(capacity, n_replicas, *shape)`. Defaults to False.
    """

    def __init__(
        self, variables, capacity, keep_full, keep_applied, dtype, tracked, optimizer_variables=None, per_example=False, n_replicas=1, per_replica=False
    ):
        def var(shape, dt, name):
            return replicas.plain_variable(tf.zeros(shape, dt), name=f"kerasbp_{name}")

        n = len(variables)
        self.capacity, self.dtype = capacity, dtype
        self.count = var((), tf.int64, "count")
        # The step of this run's first logged step with a non-finite loss or gradient that was
        # not a loss-scale skip, or -1.
        self.first_nonfinite = replicas.plain_variable(tf.constant(-1, tf.int64), name="kerasbp_first_nonfinite")
        self.rows = var((capacity, len(ROW)), tf.float64, "rows")
        self.stats = var((capacity, n, len(RAW)), dtype, "stats")
        self.full = [var((capacity, *v.shape), dtype, f"grad_{j}") for j, v in enumerate(variables)] if keep_full else None
        self.applied = [var((capacity, *v.shape), dtype, f"applied_{j}") for j, v in enumerate(variables)] if keep_full and keep_applied else None
        self.alive = [var(v.shape[-1:], tf.bool, f"alive_{j}") if track else None for j, (v, track) in enumerate(zip(variables, tracked, strict=True))]
        # Written by the inner hooks where the update rule runs inside a tf.cond branch, read
        # and zeroed by the outer hook: [applied, learning rate, clipped, applied |g|^2 per
        # variable, |dw|^2 per variable].
        self.scratch = var((3 + 2 * n,), tf.float64, "scratch")
        self.weights = self.optimizer_state = None
        self.noise = self.norms = None
        if per_example:
            self.noise = var((capacity, len(NOISE_COLUMNS)), tf.float64, "noise")
            self.norms = tf.Variable(tf.zeros((capacity, 0), dtype), shape=tf.TensorShape([capacity, None]), trainable=False, name="kerasbp_norms")
        if optimizer_variables is not None:
            self.weights = [var((capacity, *v.shape), v.dtype, f"weights_{j}") for j, v in enumerate(variables)]
            self.optimizer_state = [var((capacity, *v.shape), v.dtype, f"optimizer_{j}") for j, v in enumerate(optimizer_variables)]
        self.replica_noise = var((capacity, n_replicas, 2), tf.float64, "replica_noise") if n_replicas > 1 else None
        self.replica_stats = var((capacity, n_replicas, n, len(REPLICA_RAW)), dtype, "replica_stats") if per_replica else None
        self.replica_full = [var((capacity, n_replicas, *v.shape), dtype, f"replica_{j}") for j, v in enumerate(variables)] if per_replica and keep_full else None


def squares_each(tensors, dtype):
    """Tensor `(len(tensors),)`: the sum of squares of each tensor, computed in `dtype`."""
    return 2 * tf.stack([tf.nn.l2_loss(tf.cast(t, dtype)) for t in tensors])  # one `2 *` for all


def step_reductions(grads, dtype, tracked):
    """The first five `RAW` columns of every gradient, and whether each unit's gradient was nonzero.

    Written for few operations and few passes over memory, which is what costs on a CPU (in a
    TensorFlow graph each operation also costs a few microseconds to run): per variable, four
    reductions of the gradient (its sum and sum of squares, its minimum and maximum), and one
    more where the units whose gradient is nonzero are tracked. NaN/Inf entries are counted
    (one more pass) only at steps where some sum of squares is not finite. Everything else
    (norms, mean, standard deviation, the loss scale's division) is arithmetic on these numbers,
    done on the host by `hooks.finish_statistics`.

    Args:
        grads: list of tensors, the gradient of each variable (still multiplied by the loss scale).
        dtype: the dtype to compute in.
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.

    Returns:
        `(table, nonzero)`: a tensor `(n_variables, 5)` (sum, sum of squares, min, max, count of
        NaN/Inf entries), and a list with, per variable, None or (if tracked) a bool tensor over
        its last axis (units): some gradient entry of that unit was nonzero.
    """
    n = len(grads)
    raw, nonzero = [], []
    for g, track in zip(grads, tracked, strict=True):
        g = tf.cast(g, dtype)
        rest = list(range(g.shape.rank - 1))
        nonzero.append(tf.reduce_any(tf.not_equal(g, 0), axis=rest) if track else None)  # (units,)
        raw += [tf.reduce_sum(g), tf.nn.l2_loss(g), tf.reduce_min(g), tf.reduce_max(g)]
    table = tf.reshape(tf.stack(raw), [n, 4]) * tf.constant([1, 2, 1, 1], dtype)  # l2_loss is half the sum of squares
    counts = tf.cond(
        tf.reduce_all(tf.math.is_finite(table[:, 1])),
        lambda: tf.zeros([n, 1], dtype),
        lambda: tf.stack([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(tf.cast(g, dtype))), dtype)) for g in grads])[:, None],
    )
    return tf.concat([table, counts], axis=1), nonzero


class TensorFlowCapture(InstalledHooks):
    """Hooks on one model's optimizer that write each logged train step into `DeviceBuffers`.

    Build it with `hooks.capture_for`, which reuses one per model, optimizer and options.

    Args:
        model: a compiled, built `keras.Model` on the TensorFlow backend.
        optimizer: its optimizer (built).
        every_n_steps: int, log the train steps whose 0-based number is a multiple of it.
        capacity: int, rows of the ring buffers.
        keep_full: bool, keep whole gradients.
        snapshots: bool, keep the weights and optimizer variables before each logged step.
        tracked: tuple of bool per variable: track its alive units (relu kernels).
        per_example: bool, also the per-example statistics (`kerasbp/logger/per_example.py`).
            Defaults to False.
        per_replica: bool, also record each replica's gradient (`tf.distribute`; one replica
            without a strategy). Defaults to False.

    Attributes:
        buffers: the `DeviceBuffers`.
        missing: list of str, the variables whose gradient was None when the step was traced.
        applied_same: bool, the update rule receives the unscaled loss gradient itself (no
            clipping or accumulation), so applied gradients are not stored twice.
        counter: int64 `tf.Variable`, train steps so far (shared by every capture of the optimizer).
        by_rate: bool, the weight change's norm is the learning rate times the applied gradient's
            (`hooks.rate_update`), taken on the host.
        strategy: the `tf.distribute` strategy the model trains under, or None.
        n_replicas: int, its replicas in sync (1 without one).
    """

    def __init__(self, model, optimizer, every_n_steps, capacity, keep_full, snapshots, tracked, per_example=False, per_replica=False):
        variables = list(model.trainable_weights)
        self.strategy = replicas.strategy_of(model)
        self.n_replicas = replicas.check_strategy(self.strategy)
        self.per_replica = per_replica
        dtype = tf.float64 if any(v.dtype == "float64" for v in variables) else tf.float32
        self.model, self.optimizer, self.every_n_steps = model, optimizer, every_n_steps
        self.leaf = leaf = leaf_optimizer(optimizer)
        self.loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.applied_same = applied_same(optimizer)
        self.buffers = DeviceBuffers(
            variables,
            capacity,
            keep_full,
            not self.applied_same,
            dtype,
            tracked,
            snapshot_variables(optimizer) if snapshots else None,
            per_example=per_example,
            n_replicas=self.n_replicas,
            per_replica=per_replica,
        )
        self.taps = per_example_module.PerExampleTaps(model) if per_example else None
        self.counter = _step_counter(optimizer, leaf)
        self.missing = []
        self._warned = set()
        # Per thread (MirroredStrategy traces each replica in a thread of its own): `pending`,
        # the loss and layer outputs seen in the step being traced; `ctx`, while the hooked
        # apply runs, what the inner hooks found.
        self._local = threading.local()
        self._hooks = []  # (object, attribute, replacement)
        self._installed = []  # (object, attribute, prior instance attribute or _MISSING)
        self._make_hooks()
        self._train_function = None  # the model's train function traced with the hooks
        self._plain_train_function = None
        self.attached = False

    @property
    def _pending(self):
        if not hasattr(self._local, "pending"):
            self._local.pending = {}
        return self._local.pending

    @property
    def _ctx(self):
        return getattr(self._local, "ctx", None)

    @_ctx.setter
    def _ctx(self, value):
        self._local.ctx = value

    @property
    def count(self):
        """int, rows written since the buffers were made."""
        return int(self.buffers.count.numpy())

    def attach(self):
        """Install the hooks and the hooked train function on the model."""
        if self.attached:
            return
        self._install(self._hooks)
        self._plain_train_function = self.model.train_function
        if self._train_function is None:
            self.model.make_train_function(force=True)
            self._train_function = self.model.train_function
        self.model.train_function = self._train_function
        self.attached = True

    def detach(self):
        """Remove the hooks and give the model back the train function it had."""
        if not self.attached:
            return
        self._uninstall()
        self.model.train_function = self._plain_train_function
        self._plain_train_function = None
        self.attached = False

    def start_run(self, first_step=0):
        """A run starts: forget alive units and any non-finite step, and move the train-step
        counter to at least `first_step` and the optimizer's own count of update calls (steps
        trained while no logger was attached).

        Returns:
            int, the number the run's first train step will get.
        """
        for alive in self.buffers.alive:
            if alive is not None:
                alive.assign(tf.zeros_like(alive))
        self.buffers.first_nonfinite.assign(-1)
        start = max(int(self.counter.numpy()), int(self.leaf._iterations.numpy()), int(first_step))
        self.counter.assign(start)
        return start

    def all_finite(self):
        """Scalar bool tensor: no logged step of this run had a non-finite loss or gradient
        (loss-scale skips aside).

        `kerasbp.train` checks it before each step, so a run can stop at that step."""
        return self.buffers.first_nonfinite < 0

    def read(self, start, stop):
        """Rows `start` to `stop` (counts since the buffers were made) as NumPy arrays.

        Returns:
            dict with `steps`, `iterations` int64 `(n,)`; `losses`, `learning_rates`,
            `loss_scales` float64 `(n,)`; `applied`, `skipped`, `clipped` bool `(n,)`;
            `stats` float64 `(n, n_variables, len(STATS))`; `full` and `applied_full` (lists
            per variable of `(n, *shape)`, or None; `applied_full` is None when
            `applied_same`); `alive` (list per variable of bool `(units,)` or None: units
            alive since `start_run`); `weights` and `optimizer_state` (lists, or None). With
            per-example statistics, `noise` float64 `(n, len(NOISE_COLUMNS))` and
            `per_example_norms` float64 `(n, width)` (NaN-padded), else None;
            `replica_noise` float64 `(n, n_replicas, 2)` (each replica's batch size and
            `|g_r|^2`) or None; `replica_stats` float64 `(n, n_replicas, n_variables,
            len(REPLICA_STATS))` or None; `replica_full` (list per variable of `(n, n_replicas,
            *shape)`) or None. Where no update was applied, `learning_rates` and the
            `applied_norm` statistic are NaN, `clipped` is False and the applied gradients are NaN.

        Raises:
            RuntimeError: if more than `capacity` rows were written since `start`.
        """
        buf = self.buffers
        slots = ring_slots(start, stop, buf.capacity)

        def rows(variables):
            return None if variables is None else [v.numpy()[slots] for v in variables]

        table = buf.rows.numpy()[slots]  # (n, len(ROW))
        sizes = [int(np.prod(v.shape)) for v in self.model.trainable_weights]
        out = host_rows(
            table,
            table[:, [ROW.index("step"), ROW.index("iterations")]].astype(np.int64),  # (n, 2)
            buf.stats.numpy()[slots],
            sizes,
            self.applied_same,
            rows(buf.full),
            rows(buf.applied),
            [None if a is None else a.numpy().copy() for a in buf.alive],
            rows(buf.weights),
            rows(buf.optimizer_state),
            rate_update=self.by_rate,
        )
        out.update(
            noise=None if buf.noise is None else buf.noise.numpy()[slots],
            per_example_norms=None if buf.norms is None else buf.norms.numpy()[slots].astype(np.float64),
            replica_noise=None if buf.replica_noise is None else buf.replica_noise.numpy()[slots],
            replica_stats=None if buf.replica_stats is None else self._replica_stats(buf.replica_stats.numpy()[slots], out["loss_scales"], sizes),
            replica_full=rows(buf.replica_full),
        )
        return out

    @staticmethod
    def _replica_stats(raw, loss_scales, sizes):
        """`REPLICA_STATS` `(n, n_replicas, n_variables, len(REPLICA_STATS))` from the replicas' `REPLICA_RAW`."""
        padded = np.concatenate([raw, np.full((*raw.shape[:-1], len(RAW) - len(REPLICA_RAW)), np.nan)], axis=-1)
        stats = finish_statistics(padded, loss_scales[:, None], sizes, applied_same=True)
        return stats[..., [STATS.index(name) for name in REPLICA_STATS]]

    # ----------------------------------------------------------------------------- the hooks
    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _take_loss(self):
        """The step's loss (before loss scaling): `scale_loss`'s argument, else `compute_loss`'s
        result, if made in the graph being traced; else NaN, with one warning."""
        seen = [self._pending.pop(key, None) for key in ("scaled", "computed")]
        for loss in seen:
            if loss is not None and _in_this_graph(loss):
                return loss
        self._warn_once(
            "loss",
            "GradientLogger: this train step computed its loss neither through model.compute_loss nor optimizer.scale_loss, "
            "so the logger cannot see it: the logged losses are NaN (the gradients are exact)",
        )
        return tf.constant(float("nan"))

    def _take_outputs(self):
        """Outputs of the tracked relu layers in the step being traced: `{variable index: [tensor]}`."""
        outputs = self._pending.pop("outputs", {})
        return {j: [t for t in ts if _in_this_graph(t)] for j, ts in outputs.items() if any(_in_this_graph(t) for t in ts)}

    def _make_hooks(self):
        """The replacements: `apply` and `scale_loss` of the optimizer; `_backend_update_step`,
        `_clip_gradients`, `assign`, `assign_add`, `assign_sub` of the innermost optimizer;
        `compute_loss` of the model; `call` of each tracked relu layer."""
        model, optimizer, leaf, buf, every_n = self.model, self.optimizer, self.leaf, self.buffers, self.every_n_steps
        model_vars = list(model.trainable_weights)
        n = len(model_vars)
        dtype = buf.dtype
        index = {id(v): j for j, v in enumerate(model_vars)}
        # The TensorFlow backend updates the tf.Variable behind each Keras variable.
        updated = {id(getattr(v, "value", v)): j for j, v in enumerate(model_vars)} | index
        original = {
            "apply": optimizer.apply,
            "scale_loss": optimizer.scale_loss,
            "update": leaf._backend_update_step,
            "clip": leaf._clip_gradients,
            "assign": leaf.assign,
            "assign_add": leaf.assign_add,
            "assign_sub": leaf.assign_sub,
            "compute_loss": model.compute_loss,
            "all_reduce": getattr(leaf, "_all_reduce_sum_gradients", None),
        }
        # Each variable's change in a step: Keras's own optimizers make it with assign_add and
        # assign_sub (a few with assign), whose increments are captured here, so no copy of the
        # weights is needed. With weight decay, constraints, EMA overwrites, snapshots or
        # another optimizer, it is `w_after - w_before`.
        from_increments = (
            type(leaf).__module__.startswith("keras.src.optimizers")
            and not leaf.weight_decay
            and not (leaf.use_ema and leaf.ema_overwrite_frequency)
            and all(v.constraint is None for v in model_vars)
            and buf.weights is None
        )
        # Under tf.distribute the update runs per device copy in a cross-replica merge_call: the
        # weight change is `w_after - w_before` there.
        from_increments = from_increments and self.strategy is None
        # Plain SGD's increment is `learning_rate * gradient` (keras/src/optimizers/sgd.py): the
        # host takes its norm from the applied gradient's, and the step reduces nothing for it.
        self.by_rate = by_rate = rate_update(optimizer, model_vars, buf.weights is not None) and self.strategy is None
        n_replicas, per_replica = self.n_replicas, self.per_replica
        if self.strategy is not None and (self.loss_scaling or leaf.gradient_accumulation_steps):
            raise ValueError(
                f"GradientLogger under tf.distribute.{replicas.strategy_name(self.strategy)} does not support "
                f"{'a LossScaleOptimizer (mixed_float16)' if self.loss_scaling else 'gradient_accumulation_steps'} yet. "
                f"Received: optimizer={type(optimizer).__name__}"
            )
        increments = {}
        capturing = []  # non-empty while the original update rule runs

        def assign_add(variable, value):
            if capturing and id(variable) in updated:
                increments.setdefault(updated[id(variable)], []).append((1, value))
            return original["assign_add"](variable, value)

        def assign_sub(variable, value):
            if capturing and id(variable) in updated:
                increments.setdefault(updated[id(variable)], []).append((-1, value))
            return original["assign_sub"](variable, value)

        def assign(variable, value):
            if capturing and id(variable) in updated:  # e.g. Ftrl: the change is new - old
                increments.setdefault(updated[id(variable)], []).append((1, tf.cast(value, variable.dtype) - tf.convert_to_tensor(variable)))
            return original["assign"](variable, value)

        def change(j):
            """Variable j's change in the step from its captured increments (signs matter only when there are several)."""
            parts = increments.get(j)
            if not parts:
                return tf.zeros((), dtype)
            if len(parts) == 1:
                return parts[0][1]
            return tf.add_n([tf.cast(v, dtype) if sign > 0 else -tf.cast(v, dtype) for sign, v in parts])

        def clip_gradients(grads):
            ctx = self._ctx
            if ctx is not None:
                ctx["clip_acted"] = statistics.clipping_acted(leaf, grads, dtype)
            return original["clip"](grads)

        def all_reduce_sum_gradients(grads_and_vars):
            result = original["all_reduce"](grads_and_vars)
            ctx = self._ctx
            if ctx is not None:
                ctx["reduced"] = list(result)  # (gradient, variable) pairs: the sum over replicas
            return result

        def backend_update_step(grads, trainable_variables, learning_rate):
            ctx = self._ctx
            if ctx is None:  # the update rule called outside a hooked apply
                return original["update"](grads, trainable_variables, learning_rate)
            increments.clear()
            capturing.append(True)
            try:
                result = original["update"](grads, trainable_variables, learning_rate)
            finally:
                capturing.clear()
            grads, tvars = list(grads), list(trainable_variables)
            reduced = ctx.pop("reduced", None)
            if reduced is not None:  # tf.distribute: the update rule received the all-reduced sum
                grads = [g for g, _ in reduced]
            js = [updated.get(id(v), index.get(id(v))) for v in tvars]
            pairs = [(j, g) for j, g in zip(js, grads, strict=True) if j is not None and g is not None]
            acted = ctx.pop("clip_acted", None)
            found = {
                "lr": tf.cast(tf.convert_to_tensor(learning_rate), tf.float64),
                "clipped": tf.constant(False) if acted is None else acted,
                "applied_sq": None,
                "update_sq": None,
                "grads": {j: tf.convert_to_tensor(g) for j, g in pairs},
            }
            if not self.applied_same:
                found["applied_sq"] = squares_each([found["grads"].get(j, tf.zeros((), dtype)) for j in range(n)], dtype)
            if from_increments and not by_rate:
                found["update_sq"] = squares_each([change(j) for j in range(n)], dtype)
            increments.clear()
            if ctx["graph"] is _graph():
                ctx["direct"] = found
                return result
            # Inside a tf.cond branch (loss scaling, accumulation): through variables.
            zeros = tf.zeros([n], tf.float64)
            buf.scratch.assign(
                tf.concat(
                    [
                        tf.stack([tf.constant(1.0, tf.float64), found["lr"], tf.cast(found["clipped"], tf.float64)]),
                        zeros if found["applied_sq"] is None else tf.cast(found["applied_sq"], tf.float64),
                        zeros if found["update_sq"] is None else tf.cast(found["update_sq"], tf.float64),
                    ],
                    axis=0,
                )
            )
            if buf.applied is not None:

                def write_applied():
                    slot = tf.math.floormod(buf.count, buf.capacity)
                    for j, g in found["grads"].items():
                        buf.applied[j].scatter_nd_update([[slot]], tf.cast(g, dtype)[None])
                    return tf.constant(True)

                if ctx["log_now"] is None:
                    write_applied()
                else:
                    tf.cond(ctx["log_now"], write_applied, lambda: tf.constant(False))
            ctx["via_variables"] = True
            return result

        def scale_loss(loss):
            self._pending["scaled"] = loss  # the step's loss, before loss scaling
            return original["scale_loss"](loss)

        def compute_loss(*args, **kwargs):
            loss = original["compute_loss"](*args, **kwargs)
            training = kwargs.get("training", args[4] if len(args) > 4 else True)
            if training is not False and loss is not None:
                self._pending["computed"] = loss
                if n_replicas > 1:  # the replica's batch size, for the noise scale
                    y_pred = kwargs.get("y_pred", args[2] if len(args) > 2 else None)
                    first = next((t for t in tf.nest.flatten(y_pred) if t is not None), None)
                    if first is not None:
                        self._pending["batch"] = tf.shape(first, out_type=tf.int64)[0]
            return loss

        def loss_scale():
            """The loss scale in effect for this step's gradients (read before the step), or None."""
            if self.loss_scaling:
                return tf.convert_to_tensor(optimizer.dynamic_scale)
            return optimizer.loss_scale_factor or None

        def replica_payload(by_index, present, loss, batch, ctx, outputs):
            """What one replica hands to the first through `replicas.gather` (same structure from each)."""
            found = ctx.get("direct") or {}
            return {
                "grads": [tf.convert_to_tensor(by_index[j]) for j in present],  # IndexedSlices -> dense
                "loss": tf.cast(tf.reshape(loss, []), tf.float64),
                "batch": tf.constant(-1, tf.int64) if batch is None else tf.cast(batch, tf.int64),
                "clipped": found.get("clipped", tf.constant(False)),
                "outputs": {j: list(ts) for j, ts in outputs.items()},
            }

        def other_replica(grads, trainable_variables, by_index, present, loss, outputs, batch):
            """`apply` in a replica other than the first: its update, then its values to the first."""
            ctx = {"graph": _graph(), "log_now": None}
            self._ctx = ctx
            try:
                result = original["apply"](grads, trainable_variables)
            finally:
                self._ctx = None
            replicas.gather(replica_payload(by_index, present, loss, batch, ctx, outputs), n_replicas)
            return result

        def write_replicas(slot, replica_grads, present, scale, batch_sizes):
            """Each replica's numbers into row `slot`: its batch size and `|g_r|^2` (more than one
            replica), its statistics and whole gradient (`per_replica`)."""
            if not present:
                return
            s = None if scale is None else tf.cast(scale, dtype)
            if buf.replica_noise is not None:
                squares = tf.stack([tf.reduce_sum(squares_each([replica_grads[j][r] for j in present], dtype)) for r in range(n_replicas)])  # (R,)
                if s is not None:
                    squares = squares / (s * s)
                noise = tf.stack([tf.cast(batch_sizes, tf.float64), tf.cast(squares, tf.float64)], axis=1)  # (R, 2)
                buf.replica_noise.scatter_nd_update([[slot]], noise[None])
            if buf.replica_stats is not None:
                per = []
                for r in range(n_replicas):
                    values, _ = step_reductions([replica_grads[j][r] for j in present], dtype, [False] * len(present))  # (len(present), len(REPLICA_RAW))
                    rows = tf.fill([n, len(REPLICA_RAW)], tf.constant(float("nan"), dtype))
                    per.append(values if len(present) == n else tf.tensor_scatter_nd_update(rows, [[j] for j in present], values))
                buf.replica_stats.scatter_nd_update([[slot]], tf.stack(per)[None])  # (1, R, n, len(REPLICA_RAW))
            if buf.replica_full is not None:
                for j in present:
                    g = tf.stack([tf.cast(part, dtype) for part in replica_grads[j]])  # (R, *shape)
                    buf.replica_full[j].scatter_nd_update([[slot]], (g if s is None else g / s)[None])

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            tvars = list(trainable_variables) if trainable_variables is not None else list(optimizer._trainable_variables)
            by_index = {index[id(v)]: g for g, v in zip(grads, tvars, strict=True) if id(v) in index}
            present = [j for j in range(n) if by_index.get(j) is not None]
            missing = [model_vars[j].path for j in range(n) if j not in present]
            if missing and missing != self.missing:
                self.missing = missing
                warnings.warn(
                    f"GradientLogger: no gradient for {missing}: the loss does not depend on them (or was computed "
                    "outside the gradient tape); their rows hold NaN",
                    RuntimeWarning,
                    stacklevel=2,
                )
            loss = self._take_loss()
            outputs = self._take_outputs()
            batch = self._pending.pop("batch", None)
            distributed = self.strategy is not None and replicas.distributed_now()
            if distributed and replicas.replica_index() != 0:  # the first replica writes the row
                return other_replica(grads, trainable_variables, by_index, present, loss, outputs, batch)
            taken = self.taps.take() if self.taps is not None else None
            step = self.counter.assign_add(1) - 1  # this train step's number
            log_now = None if every_n == 1 else tf.equal(tf.math.floormod(step, every_n), 0)
            scale = loss_scale()
            # Before the update: the per-example fallback recomputes layers at the step's weights.
            noise = None if taken is None else per_example_module.step_statistics(self.taps, taken, by_index, scale, dtype, log_now)

            def weight_squares():
                return squares_each([v.value for v in model_vars], dtype)

            squares = weight_squares() if every_n == 1 else tf.cond(log_now, weight_squares, lambda: tf.zeros([n], dtype))
            befores = None if from_increments else [tf.identity(v.value) for v in model_vars]
            state_before = [tf.identity(v.value) for v in snapshot_variables(optimizer)] if buf.optimizer_state is not None else None
            ctx = {"graph": _graph(), "log_now": log_now}
            self._ctx = ctx
            try:
                # The update waits for the weights' sums of squares: while a read of a weight is
                # still in use, TensorFlow copies the whole variable before updating it in place.
                with tf.control_dependencies([squares]):
                    result = original["apply"](grads, trainable_variables)
            finally:
                self._ctx = None
            iterations = tf.cast(optimizer.iterations, tf.int64)  # after the step

            if "direct" in ctx:
                found = ctx["direct"]
                applied = tf.constant(True)
                lr, clipped, applied_sq, update_sq, applied_grads = (found[k] for k in ("lr", "clipped", "applied_sq", "update_sq", "grads"))
            elif ctx.get("via_variables"):
                s = tf.convert_to_tensor(buf.scratch)  # read, then zeroed for the next step
                buf.scratch.assign(tf.zeros_like(s))
                applied, lr, clipped = s[0] > 0, s[1], s[2] > 0
                applied_sq = None if self.applied_same else tf.cast(s[3 : 3 + n], dtype)
                update_sq = tf.cast(s[3 + n :], dtype) if from_increments else None
                applied_grads = None  # written by the inner hook
            else:  # the update rule never ran (eagerly: a skip or a micro-step)
                if _graph() is not None:
                    self._warn_once(
                        "update",
                        f"GradientLogger: {type(leaf).__name__} applied its update without calling _backend_update_step, so "
                        "the applied gradients, learning rates and clipping are not recorded",
                    )
                applied, lr, clipped = tf.constant(_graph() is not None), tf.constant(float("nan"), tf.float64), tf.constant(False)
                applied_sq = None if self.applied_same else tf.zeros([n], dtype)
                update_sq = tf.zeros([n], dtype) if from_increments else None
                applied_grads = {}

            replica_grads = batch_sizes = None  # {variable index: tuple of n_replicas gradients}
            if distributed:
                # Every replica's values: the logged loss gradient and loss are their sums (each
                # replica's mean loss was scaled by 1/n_replicas), clipping acted if it acted on any.
                gathered = replicas.gather(replica_payload(by_index, present, loss, batch, ctx, outputs), n_replicas)
                replica_grads = dict(zip(present, gathered["grads"], strict=True))
                loss = tf.add_n(list(gathered["loss"]))
                clipped = tf.reduce_any(tf.stack(gathered["clipped"]))
                outputs = {j: [t for parts in ts for t in parts] for j, ts in gathered["outputs"].items()}
                batch_sizes = tf.stack(gathered["batch"])  # (R,)
            elif per_replica:
                replica_grads = {j: (by_index[j],) for j in present}

            def loss_gradient(j):
                if distributed:
                    return tf.add_n(list(replica_grads[j]))  # the global batch's gradient
                return tf.convert_to_tensor(by_index[j])  # IndexedSlices -> dense

            def write():
                slot = tf.math.floormod(buf.count, buf.capacity)
                grads_present = [loss_gradient(j) for j in present]
                rows = tf.fill([n, len(RAW)], tf.constant(float("nan"), dtype))
                finite_grads = tf.constant(True)
                if present:
                    tracked = [buf.alive[j] is not None and j not in outputs for j in present]
                    pick = (lambda t: t) if len(present) == n else (lambda t: tf.gather(t, present))
                    if by_rate:
                        changes = tf.zeros([len(present)], dtype)  # `update_squares` is not read
                    elif update_sq is not None:
                        changes = pick(update_sq)
                    else:
                        changes = squares_each([model_vars[j].value - befores[j] for j in present], dtype)
                    table, nonzero = step_reductions(grads_present, dtype, tracked)
                    # With `applied_same` the host reads `applied_norm` from the sum of squares.
                    applied_column = table[:, 1] if applied_sq is None else pick(applied_sq)
                    values = tf.concat([table, tf.stack([pick(squares), changes, applied_column], axis=1)], axis=1)  # (len(present), len(RAW))
                    rows = values if len(present) == n else tf.tensor_scatter_nd_update(rows, [[j] for j in present], values)
                    finite_grads = tf.reduce_all(tf.equal(table[:, RAW.index("nonfinite")], 0))
                    for j, units in zip(present, nonzero, strict=True):
                        if units is not None:
                            buf.alive[j].assign(tf.logical_or(buf.alive[j], units))
                for j, ts in outputs.items():  # a relu unit is alive where its output is positive
                    units = [tf.reduce_any(t > 0, axis=list(range(t.shape.rank - 1))) for t in ts]
                    buf.alive[j].assign(tf.logical_or(buf.alive[j], units[0] if len(units) == 1 else tf.reduce_any(tf.stack(units), axis=0)))
                # A loss-scale overflow: LossScaleOptimizer skipped the update, as it should.
                skipped = tf.logical_and(tf.logical_not(finite_grads), tf.logical_not(applied)) if self.loss_scaling else tf.constant(False)
                finite = tf.logical_or(tf.logical_and(finite_grads, tf.reduce_all(tf.math.is_finite(loss))), skipped)
                if buf.full is not None:
                    for j, g in zip(present, grads_present, strict=True):
                        g = tf.cast(g, dtype)
                        buf.full[j].scatter_nd_update([[slot]], (g if scale is None else g / tf.cast(scale, dtype))[None])
                if buf.applied is not None and applied_grads:
                    for j, g in applied_grads.items():
                        buf.applied[j].scatter_nd_update([[slot]], tf.cast(g, dtype)[None])
                if buf.weights is not None:
                    for target, value in zip(buf.weights + buf.optimizer_state, befores + state_before, strict=True):
                        target.scatter_nd_update([[slot]], value[None])
                row = tf.stack(
                    [
                        tf.cast(step, tf.float64),
                        tf.cast(iterations, tf.float64),
                        tf.cast(tf.reshape(loss, []), tf.float64),
                        lr,
                        tf.constant(1.0, tf.float64) if scale is None else tf.cast(scale, tf.float64),
                        tf.cast(applied, tf.float64),
                        tf.cast(skipped, tf.float64),
                        tf.cast(clipped, tf.float64),
                    ]
                )
                if noise is not None:
                    per_example_module.write(buf, slot, *noise)
                buf.rows.scatter_nd_update([[slot]], row[None])
                buf.stats.scatter_nd_update([[slot]], rows[None])
                if replica_grads is not None:
                    write_replicas(slot, replica_grads, present, scale, batch_sizes)
                buf.count.assign_add(1)
                first = buf.first_nonfinite
                first.assign(tf.where(tf.logical_and(tf.logical_not(finite), first < 0), step, first))
                return tf.constant(True)

            if every_n == 1:
                write()
            else:
                tf.cond(log_now, write, lambda: tf.constant(False))
            return result

        self._hooks = [
            (optimizer, "apply", apply),
            (optimizer, "scale_loss", scale_loss),
            (leaf, "_backend_update_step", backend_update_step),
            (leaf, "_clip_gradients", clip_gradients),
            *([(leaf, "_all_reduce_sum_gradients", all_reduce_sum_gradients)] if self.strategy is not None and original["all_reduce"] else []),
            (leaf, "assign", assign),
            (leaf, "assign_add", assign_add),
            (leaf, "assign_sub", assign_sub),
            (model, "compute_loss", compute_loss),
        ]
        # Dead relu units are judged from the layer's own output (relu(z) > 0 exactly where the
        # pre-activation z > 0), not from the gradient, which a following Dropout also zeroes.
        layer_of = {}
        for layer in model._flatten_layers(include_self=False):
            for v in layer.trainable_weights:
                layer_of.setdefault(id(v), layer)
        for j, alive in enumerate(buf.alive):
            layer = layer_of.get(id(model_vars[j]))
            if alive is None or layer is None or any(obj is layer for obj, _, _ in self._hooks):
                continue
            self._hooks.append((layer, "call", self._output_hook(layer.call, j)))
        if self.taps is not None:  # Dense layers' inputs and deltas (wrapping the hooks above)
            self._hooks = self.taps.hooks(self._hooks)

    def _output_hook(self, call, j):
        """`call` of the layer of variable `j`, also keeping its output for the step being traced.

        Kept only where an `apply` hook will consume it: while tracing, or eagerly when the model
        runs eagerly; and only the current graph's outputs, so calls made elsewhere (a callback's
        eager prediction) do not pile up."""

        def hooked_call(*args, **kwargs):
            outputs = call(*args, **kwargs)
            if kwargs.get("training") is False or not tf.is_tensor(outputs):
                return outputs
            if tf.executing_eagerly() and not self.model.run_eagerly:
                return outputs
            kept = self._pending.setdefault("outputs", {})
            kept[j] = [t for t in kept.get(j, []) if _in_this_graph(t)] + [outputs]
            return outputs

        return hooked_call


def _step_counter(optimizer, leaf):
    """The train-step counter of `optimizer`, shared by all its captures; made at the optimizer's
    own count of update calls (its raw iterations)."""
    if optimizer not in _COUNTERS:
        _COUNTERS[optimizer] = replicas.plain_variable(tf.constant(int(leaf._iterations.numpy()), tf.int64), name="kerasbp_train_step")
    return _COUNTERS[optimizer]


#: optimizer -> its train-step counter.
_COUNTERS = weakref.WeakKeyDictionary()
