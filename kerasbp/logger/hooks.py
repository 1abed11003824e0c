"""What every backend's capture shares, without TensorFlow: the optimizer whose update rule
runs, what snapshots and `applied_same` mean, the per-step row, the registries of captures
made and attached, `capture_for` (the capture of Keras's backend), and `HookedCapture`, the base of the JAX and torch captures (which install their
hooks as plain attributes and take them off again).
"""

import weakref

import keras
import numpy as np

from kerasbp.logger.log import STATS

#: What a capture reduces on the device per variable at a logged step, finished into `STATS` on
#: the host by `finish_statistics`: the gradient's sum, sum of squares, minimum, maximum (still
#: multiplied by the loss scale) and its count of NaN/Inf entries; the sum of squares of the
#: weights before the step, of their change in the step, and of the gradient the update rule
#: received. The step only reduces; the arithmetic on the reduced numbers costs nothing there.
RAW = ("sum", "sum_squares", "min", "max", "nonfinite", "weight_squares", "update_squares", "applied_squares")

#: The per-step values written beside the statistics, one float64 row per logged step.
ROW = ("step", "iterations", "loss", "learning_rate", "loss_scale", "applied", "skipped", "clipped")

#: model -> the capture attached to it now.
ATTACHED = weakref.WeakKeyDictionary()

_MISSING = object()


def leaf_optimizer(optimizer):
    """The optimizer whose update rule runs: the inner one of a `LossScaleOptimizer`.

    Raises:
        ValueError: for a `keras.optimizers.MultiOptimizer` (alone or inside a
            `LossScaleOptimizer`): its sub-optimizers each apply their own update with their own
            learning rate, iterations and clipping, which one row per step cannot hold.
    """
    leaf = optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is not None and isinstance(leaf, multi):
        raise ValueError(
            "GradientLogger does not support keras.optimizers.MultiOptimizer: its sub-optimizers apply separate updates "
            "with separate learning rates, iterations and clipping, which one logged row per train step cannot hold. "
            f"Received: optimizer={optimizer.__class__.__name__}({leaf.__class__.__name__}). Compile the model with one optimizer"
        )
    return leaf


def snapshot_variables(optimizer):
    """The optimizer state that snapshots record: `optimizer.variables`, then any variable that
    the innermost optimizer holds without tracking it (Keras 3.15 builds the inner optimizer of a
    `LossScaleOptimizer` without dependency tracking, so Nadam's `u_product` is missing from
    `optimizer.variables` there, yet its update needs it).

    Returns:
        list of Keras variables.
    """
    variables = list(optimizer.variables)
    seen = {id(v) for v in variables}
    for value in vars(leaf_optimizer(optimizer)).values():
        if isinstance(value, keras.Variable) and id(value) not in seen:
            variables.append(value)
            seen.add(id(value))
    return variables


#: Where Keras's own optimizers live: `keras/src/optimizers`, and on torch the same update rules
#: written with `torch._foreach` operations (`keras/src/backend/torch/optimizers`), which
#: `keras.optimizers.SGD(...)` and the others make there.
KERAS_OPTIMIZER_MODULES = ("keras.src.optimizers", "keras.src.backend.")


def applied_same(optimizer):
    """Whether the update rule of `optimizer` receives the (unscaled) loss gradient itself: one of
    Keras's own optimizers (`KERAS_OPTIMIZER_MODULES`) without clipping or gradient accumulation. Loss scaling does not count: Keras
    divides by the scale with the same operation as the logger does, so the two are equal bit
    for bit. Then the applied gradients are neither reduced nor stored a second time."""
    leaf = leaf_optimizer(optimizer)
    return not (
        leaf.gradient_accumulation_steps
        or any(getattr(leaf, name, None) for name in ("clipnorm", "global_clipnorm", "clipvalue"))
        or not type(leaf).__module__.startswith(KERAS_OPTIMIZER_MODULES)
    )


def rate_update(optimizer, variables, snapshots):
    """Whether each update of `optimizer` is its learning rate times the applied gradient, so that
    the host takes `|w_after - w_before|` as `learning_rate * applied_norm` and the step reduces
    nothing for it: Keras's own plain SGD (`keras/src/optimizers/sgd.py`, momentum 0) without
    weight decay, EMA overwrites or constraints on `variables`, and without `snapshots` (with
    them, the change is measured as `w_after - w_before`, which tests compare with this)."""
    leaf = leaf_optimizer(optimizer)
    return (
        isinstance(leaf, keras.optimizers.SGD)
        and type(leaf).__module__.startswith("keras.src.")
        and not leaf.momentum
        and not leaf.weight_decay
        and not (leaf.use_ema and leaf.ema_overwrite_frequency)
        and all(v.constraint is None for v in variables)
        and not snapshots
    )


class InstalledHooks:
    """Mixin: hooks installed as instance attributes (`_install`) and put back (`_uninstall`);
    the model is registered in `ATTACHED` meanwhile. Needs `self.model` and `self._installed = []`."""

    def _install(self, hooks):
        """Set each `(obj, name, hook)` as an attribute, remembering what was there."""
        for obj, name, hook in hooks:
            self._installed.append((obj, name, obj.__dict__.get(name, _MISSING)))
            object.__setattr__(obj, name, hook)  # no Keras tracking of a function attribute
        ATTACHED[self.model] = self

    def replace_prior(self, obj, name, wrapper, prior):
        """Another callback's `wrapper` of `obj.name`, which this capture's hook wraps, is being
        taken off: when this capture uninstalls, put back `prior` (None: no instance attribute)
        instead of `wrapper`, so that the callbacks may stop in any order."""
        self._installed = [(o, n, (_MISSING if prior is None else prior) if o is obj and n == name and p is wrapper else p) for o, n, p in self._installed]

    def _uninstall(self):
        """Put back what `_install` replaced."""
        for obj, name, prior in reversed(self._installed):
            if prior is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                object.__setattr__(obj, name, prior)
        self._installed = []
        ATTACHED.pop(self.model, None)


class HookedCapture(InstalledHooks):
    """Base of the JAX and torch captures: the settings every capture reads from the model and
    its optimizer, and hooks installed as instance attributes.

    Args:
        model: a compiled, built `keras.Model`.
        optimizer: its optimizer (built).
        every_n_steps: int, log the train steps whose 0-based number is a multiple of it.
        snapshots: bool, keep the weights and optimizer variables before each logged step.
        per_example: bool, the subclass computes per-example statistics (its taps).
        per_replica: bool; True is refused (TensorFlow only).

    Raises:
        ValueError: for `per_replica=True`, or a `MultiOptimizer`.
    """

    def __init__(self, model, optimizer, every_n_steps, snapshots, per_example=False, per_replica=False):
        if per_replica:
            raise ValueError(
                f"GradientLogger(per_replica=True) needs the TensorFlow backend; Keras is running on {keras.backend.backend()!r}. "
                "Received: per_replica=True"
            )
        self.model, self.optimizer, self.every_n_steps = model, optimizer, every_n_steps
        self.model_vars = list(model.trainable_weights)
        self.dtype = "float64" if any(v.dtype == "float64" for v in self.model_vars) else "float32"
        self.leaf = leaf_optimizer(optimizer)
        self.loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.applied_same = applied_same(optimizer)
        self.by_rate = rate_update(optimizer, self.model_vars, snapshots)  # the weight change from the learning rate
        self.snapshot_vars = snapshot_variables(optimizer) if snapshots else None
        self.missing = []
        self.attached = False
        self._installed = []


def finish_statistics(raw, loss_scales, sizes, applied_same, update_rates=None):
    """`STATS` from the reductions a capture wrote (`RAW`), computed on the host in their dtype.

    The arithmetic is done in the dtype the sums were reduced in (the model's), as on the
    device: in a wider one, `E[g^2] - E[g]^2` of a constant gradient would be the rounding error
    of `E[g^2]` instead of 0. The loss scale divides the reduced numbers (exact for the powers of
    two that `LossScaleOptimizer` uses). The standard deviation is `sqrt(E[g^2] - E[g]^2)`, whose
    relative error grows like `(mean / std)^2` times the dtype's epsilon; `update_ratio` is
    `|w_after - w_before| / |w_before|`.

    Args:
        raw: float32 or float64 array `(..., n_variables, len(RAW))`, e.g. `(n, n_variables, len(RAW))` for `n`
            logged steps; a variable without a gradient has NaN in its row.
        loss_scales: float array broadcastable to `raw.shape[:-2]`, the loss scale of each step
            (1.0 without loss scaling).
        sizes: sequence of ints, the number of entries of each variable.
        applied_same: bool, the update rule received the unscaled loss gradient itself, so
            `applied_norm` is `norm` (the `applied_squares` column is then not read).
        update_rates: None (default), or a float array broadcastable to `raw.shape[:-2]`: the
            update of each step was this learning rate times the applied gradient (plain SGD,
            `keras/src/optimizers/sgd.py`; 0 where nothing was applied), so `|w_after - w_before|`
            is `rate * applied_norm` and the `update_squares` column is not read.

    Returns:
        float64 array `(..., n_variables, len(STATS))`.

    Example:
        >>> raw = np.array([[[-1.0, 25.0, -4.0, 3.0, 0.0, 4.0, 0.25, 25.0]]])  # gradient [3, -4]
        >>> finish_statistics(raw, [1.0], [2], applied_same=True)[0, 0, :3]  # norm, mean, std
        array([ 5. , -0.5,  3.5])
    """
    raw = np.asarray(raw)
    column = {name: raw[..., i] for i, name in enumerate(RAW)}
    scale = np.asarray(loss_scales, dtype=raw.dtype)[..., None]  # (..., 1): per step
    size = np.asarray(sizes, dtype=raw.dtype)
    squares = column["sum_squares"] / (scale * scale)
    mean = column["sum"] / scale / size
    low, high = column["min"] / scale, column["max"] / scale
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        weight_norm = np.sqrt(column["weight_squares"])
        applied_norm = np.sqrt(squares if applied_same else column["applied_squares"])
        if update_rates is None:
            update_norm = np.sqrt(column["update_squares"])
        else:
            update_norm = np.asarray(update_rates, dtype=raw.dtype)[..., None] * applied_norm
        by_name = {
            "norm": np.sqrt(squares),
            "mean": mean,
            "std": np.sqrt(np.maximum(squares / size - mean * mean, 0)),
            "min": low,
            "max": high,
            "max_abs": np.maximum(np.abs(low), np.abs(high)),
            "nonfinite": column["nonfinite"],
            "weight_norm": weight_norm,
            "update_ratio": update_norm / weight_norm,
            "applied_norm": applied_norm,
        }
    return np.stack([by_name[name] for name in STATS], axis=-1).astype(np.float64)


def host_rows(table, steps, raw, sizes, applied_same, full, applied_full, alive, weights, optimizer_state, rate_update=False):
    """The rows a capture's `read` returns (see `TensorFlowCapture.read`), from host arrays:
    `table` `(n, len(ROW))`, `steps` `(n, 2)` (train step, iterations), `raw`
    `(n, n_variables, len(RAW))` (finished with `finish_statistics`, given each variable's
    number of entries `sizes` and `applied_same`; with `rate_update`, each applied update was the
    row's learning rate times the applied gradient), and the optional lists `full`,
    `applied_full`, `alive`, `weights`, `optimizer_state`. Where no update was applied, the
    learning rate, `applied_norm` and the applied gradients become NaN and `clipped` False.
    Without TensorFlow: per-example and replica rows are None (the torch capture fills in its
    per-example rows)."""
    col = {name: table[:, i] for i, name in enumerate(ROW)}
    applied = col["applied"] > 0
    rates = np.where(applied, col["learning_rate"], 0.0) if rate_update else None
    stats = finish_statistics(raw, col["loss_scale"], sizes, applied_same, update_rates=rates)
    stats[~applied, :, STATS.index("applied_norm")] = np.nan
    for a in applied_full or []:
        a[~applied] = np.nan
    return {
        "steps": steps[:, 0],
        "iterations": steps[:, 1],
        "losses": col["loss"],
        "learning_rates": np.where(applied, col["learning_rate"], np.nan),
        "loss_scales": col["loss_scale"],
        "applied": applied,
        "skipped": col["skipped"] > 0,
        "clipped": (col["clipped"] > 0) & applied,
        "stats": stats,
        "full": full,
        "applied_full": applied_full,
        "alive": alive,
        "weights": weights,
        "optimizer_state": optimizer_state,
        "noise": None,  # filled in by a capture with per_example=True
        "per_example_norms": None,
        "replica_noise": None,  # tf.distribute strategies are TensorFlow only
        "replica_stats": None,
        "replica_full": None,
    }


def ring_slots(start, stop, capacity):
    """The ring-buffer slots of rows `start` to `stop` (ints): `np.arange(start, stop) % capacity`.

    Raises:
        RuntimeError: if more than `capacity` rows were written since `start` (rows were lost).
    """
    if stop - start > capacity:
        raise RuntimeError(
            f"GradientLogger lost {stop - start - capacity} logged steps: {stop - start} steps ran between two reads but "
            f"the buffer holds {capacity}. Was the model trained on with this logger's hooks still attached after an "
            "interrupted fit? Call logger.detach() after an interruption"
        )
    return np.arange(start, stop) % capacity


#: model -> optimizer -> options -> capture. Weak keys: an entry goes with its model or
#: optimizer, and is never mistaken for a later object that happens to get the same id.
_CAPTURES = weakref.WeakKeyDictionary()


def capture_for(model, optimizer, steps_per_execution, **options):
    """The capture of Keras's backend for `model` and `optimizer` with `options` (see
    `TensorFlowCapture` in `kerasbp/logger/capture.py`), made once and reused, so that its
    traced train function serves every later logger alike.

    `steps_per_execution` (int) is part of the key: the hooked train function runs that many
    steps per call."""
    per_optimizer = _CAPTURES.setdefault(model, weakref.WeakKeyDictionary()).setdefault(optimizer, {})
    key = (steps_per_execution, *sorted(options.items()))
    if key not in per_optimizer:
        per_optimizer[key] = _capture_class()(model, optimizer, **options)
    return per_optimizer[key]


def discard(capture):
    """Forget `capture`, so that `capture_for` makes a new one for the next logger (its traced
    train function is not to be reused: it was traced with a step it refused)."""
    for per_optimizer in _CAPTURES.values():
        for captures in per_optimizer.values():
            for key in [k for k, c in captures.items() if c is capture]:
                del captures[key]


def _capture_class():
    """The capture class of Keras's backend: `TensorFlowCapture` (`kerasbp/logger/capture.py`),
    `JaxCapture` (`capture_jax.py`) or `TorchCapture` (`capture_torch.py`), each imported only on
    its own backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        from kerasbp.logger.capture_jax import JaxCapture

        return JaxCapture
    if backend == "torch":
        from kerasbp.logger.capture_torch import TorchCapture

        return TorchCapture
    from kerasbp.logger.capture import TensorFlowCapture

    return TensorFlowCapture


def attached_capture(model):
    """The capture attached to `model` now, or None. `kerasbp.train` keys its traced loops on it."""
    return ATTACHED.get(model)


def detach(model):
    """Remove any capture's hooks from `model` (e.g. left by an interrupted `fit`)."""
    capture = ATTACHED.get(model)
    if capture is not None:
        capture.detach()
