"""The capture on the torch backend: each logged step reduced on the device in the same eager step.

Where the torch trainer applies gradients (Keras 3.15, `keras/src/backend/torch/trainer.py`,
`train_step`): the loss goes through `optimizer.scale_loss`, `loss.backward()`, then
`optimizer.apply([v.value.grad ...], trainable_weights)` under `torch.no_grad()`, eagerly. So
the hooks are those of `TensorFlowCapture` (see `capture.py`), run eagerly: `apply` and
`scale_loss` of the optimizer, `_backend_update_step` and `_clip_gradients` of the innermost
one. The reductions behind the statistics (`_reductions`) run on the device, one torch
operation each. On a CPU they are read to the host together, one read per logged step, which
costs nothing there and says whether the gradient holds NaN or Inf (then, and only then, the
entries are counted). On an accelerator (CUDA, MPS) such a read would wait for the device to
finish the step, so nothing is read during the step: the entries are counted at every step, on
the device, and the reductions are read with the rest of the rows (`READ_EACH_STEP`). The rest
of a row (loss, learning rate, iterations, ...) stays on the device as references to the step's
own tensors (`_Record`), stacked when the callback collects rows: writing each step into device
buffers costs tens of small operations, more than the reductions on a CPU. Whole gradients,
snapshots and per-example norms go into device ring buffers. Train steps that are not logged
(`every_n_steps`) cost one Python comparison.

With `per_example=True` the Dense layers' inputs and pre-activation deltas of a logged step are
recorded by hooks (`per_example_torch.TorchTaps`) and the per-example statistics are computed in
the `apply` hook, before the update, on the device.

Differences from TensorFlow: relu units count as alive where their kernel's gradient column is
nonzero; the weights before the step are copied to measure the weight change (`update_ratio`),
except for plain SGD, whose change is the learning rate times the applied gradient.
Keras refuses `steps_per_execution > 1` on torch.
"""

import math
import warnings
import weakref
from typing import NamedTuple

import numpy as np
import torch
from keras import ops

from kerasbp.logger import per_example_torch, statistics
from kerasbp.logger.hooks import RAW, ROW, HookedCapture, host_rows, ring_slots

def _reductions(grads, weights, dtype, tracked, read):
    """`kerasbp.logger.statistics.step_reductions` with torch's own operations, and the weights'
    sums of squares: one operation per reduction, where `keras.ops` costs about 3 ms a step on a
    CPU in Python overhead alone (on a CPU each torch operation costs a few microseconds before
    it reads any memory).

    Args:
        grads, weights: lists of tensors of the same shapes, the variables' gradients (still
            multiplied by the loss scale) and values.
        dtype: the torch dtype to compute in.
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.
        read: bool, read the reductions to the host now (one read), and count NaN/Inf entries
            (one more pass) only at steps where some sum of squares is not finite, which a sum
            of finite entries can also overflow to; if False, read nothing and count them on
            the device at every step.

    Returns:
        `(values, nonzero, finite)`: `values`, `6 * n_variables` numbers, `n_variables` each of
        the gradients' sums, sums of squares, (minimum, maximum) pairs (two each), counts of
        NaN/Inf entries and weights' sums of squares: the first six `RAW` columns (`_table`
        arranges them when the rows are read), a list of floats if `read`, else a tensor on the
        gradients' device; `nonzero`, per variable None or (if tracked) a bool tensor over its
        last axis; `finite`, no gradient entry is NaN or Inf: a bool if `read`, else a 0-d bool
        tensor.
    """
    grads = [g if g.dtype == dtype else g.to(dtype) for g in grads]
    weights = [w if w.dtype == dtype else w.to(dtype) for w in weights]
    parts = [g.sum() for g in grads]
    parts += torch._foreach_powsum(grads, 2)  # torch's multi-tensor reduction: one call for all
    for g in grads:
        parts += torch.aminmax(g)
    # A unit's largest |entry| is nonzero (NaN too): 6x faster on a CPU than `(g != 0).any(...)`.
    nonzero = [(g.abs().amax(dim=tuple(range(g.dim() - 1))) != 0) if track and g.dim() > 1 else ((g != 0) if track else None) for g, track in zip(grads, tracked, strict=True)]
    n, weight_squares = len(grads), list(torch._foreach_powsum(weights, 2))
    if not read:
        counts = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).to(dtype)
        return torch.stack(parts + list(counts) + weight_squares), nonzero, counts.sum() == 0
    values = torch.stack(parts + weight_squares).tolist()  # one read from the device
    counts = [0] * n
    if not all(map(math.isfinite, values[n : 2 * n])):
        counts = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).tolist()
    return values[: 4 * n] + counts + values[4 * n :], nonzero, not any(counts)


def _table(values, n):
    """float64 NumPy `(len(values), n, 6)`, the first six `RAW` columns, from `_reductions`'
    `values` of logged steps (lists of `6 * n` floats, or tensors, read here in one go)."""
    if values and torch.is_tensor(values[0]):
        values = torch.stack(values).cpu().to(torch.float64).numpy()
    values = np.asarray(values, dtype=np.float64).reshape(len(values), 6, n)
    table = values.transpose(0, 2, 1).copy()
    table[:, :, 2:4] = values[:, 2:4].reshape(len(values), n, 2)  # the (min, max) pairs come in turn
    return table


def _stacked(values, fill):
    """float64 NumPy `(len(values),)` from a list of 0-d tensors, Python numbers and None
    (`fill`). The tensors are stacked by one operation per dtype: one read from the device."""
    out = np.array([np.nan if torch.is_tensor(v) else (fill if v is None else float(v)) for v in values], dtype=np.float64)
    by_dtype = {}
    for i, v in enumerate(values):
        if torch.is_tensor(v):
            by_dtype.setdefault(v.dtype, []).append(i)
    for where in by_dtype.values():
        out[where] = torch.stack([values[i] for i in where]).detach().cpu().to(torch.float64).numpy()
    return out


#: Device types (`torch.device.type`) on which each logged step's reductions are read to the
#: host in the step. On a CPU the read costs nothing (the step ran synchronously) and lets NaN/Inf
#: entries be counted only at the steps that have some; on an accelerator it would make the host
#: wait for the device at every step.
READ_EACH_STEP = ("cpu",)

#: A tracked variable whose units are all alive is no longer reduced for alive units in this
#: run; checked every this many logged steps (one read from the device), where `READ_EACH_STEP`
#: reads anyway: elsewhere every logged step reduces the tracked variables.
ALIVE_CHECK_EVERY = 16

#: optimizer -> the number the next train step gets, left by the last capture detached from it.
_NEXT_STEP = weakref.WeakKeyDictionary()


class _Record(NamedTuple):
    """One logged step as the hooks leave it: host numbers, and references to the step's own
    (0-d or small) device tensors, which nothing changes afterwards. Stacking them into rows
    waits for a read (`TorchCapture.read`): writing each step into device buffers costs tens of
    small torch operations, more than the reductions themselves on a CPU. The fields of `ROW`,
    then the variables with a gradient (`present`) and their reductions: `reduced`, `_reductions`'
    `6 * len(present)` values (host floats, or a tensor on an accelerator), and `update_squares`
    and `applied_squares`, `(len(present),)` tensors, or None where the host takes them from
    other columns. `skipped` is a bool, or a 0-d bool tensor on an accelerator."""

    step: int
    iterations: torch.Tensor
    loss: object
    learning_rate: object
    loss_scale: object
    applied: bool
    skipped: object
    clipped: object
    present: tuple
    reduced: object
    update_squares: object
    applied_squares: object


class _Buffers:
    """The last `capacity` logged steps: `_Record`s in a ring, and device tensors for what is large.

    Attributes:
        capacity: int.
        records: list of `capacity` `_Record`s or None, indexed by slot.
        full, applied, weights, optimizer_state: lists of `(capacity, *shape)` tensors or None;
        alive: list of bool `(units,)` or None; noise, norms: the per-example statistics
        `(capacity, len(NOISE_COLUMNS))` and norms `(capacity, width)`, or None.
    """

    def __init__(self, model_vars, capacity, keep_full, keep_applied, dtype, tracked, snapshot_vars, device, per_example=False):
        def zeros(shape, dt):
            return torch.zeros(tuple(shape), dtype=dt, device=device)

        torch_dtype = getattr(torch, dtype)
        self.capacity = capacity
        self.records = [None] * capacity
        self.full = [zeros((capacity, *v.shape), torch_dtype) for v in model_vars] if keep_full else None
        self.applied = [zeros((capacity, *v.shape), torch_dtype) for v in model_vars] if keep_full and keep_applied else None
        self.alive = [zeros(v.shape[-1:], torch.bool) if track else None for v, track in zip(model_vars, tracked, strict=True)]
        self.weights = self.optimizer_state = None
        self.noise = self.norms = None
        if per_example:
            self.noise, self.norms = per_example_torch.buffers(capacity, torch_dtype, device)
        if snapshot_vars is not None:
            self.weights = [zeros((capacity, *v.shape), v.value.dtype) for v in model_vars]
            self.optimizer_state = [zeros((capacity, *v.shape), v.value.dtype) for v in snapshot_vars]


class TorchCapture(HookedCapture):
    """Hooks on one model's optimizer that record each logged train step (torch backend): its
    reductions on the host, the rest of its row as references to its device tensors
    (`_Buffers`). Build it with `kerasbp.logger.hooks.capture_for`. Implements the interface of
    `TensorFlowCapture`.

    Args:
        model: a compiled, built `keras.Model` on the torch backend.
        optimizer: its optimizer (built).
        every_n_steps: int, log the train steps whose 0-based number is a multiple of it.
        capacity: int, logged steps the ring holds between two reads.
        keep_full: bool, keep whole gradients.
        snapshots: bool, keep the weights and optimizer variables before each logged step.
        tracked: tuple of bool per variable: track its alive units (relu kernels).
        per_example: bool, also the per-example statistics of Dense layers
            (`kerasbp/logger/per_example_torch.py`).

    Raises:
        ValueError: for `per_replica=True`; with `per_example=True`, for what
            `per_example_torch.check_torch_model` refuses.
    """

    def __init__(self, model, optimizer, every_n_steps, capacity, keep_full, snapshots, tracked, per_example=False, per_replica=False):
        super().__init__(model, optimizer, every_n_steps, snapshots, per_example, per_replica)
        device = self.model_vars[0].value.device
        self._read_each_step = device.type in READ_EACH_STEP
        self.buffers = _Buffers(self.model_vars, capacity, keep_full, not self.applied_same, self.dtype, tracked, self.snapshot_vars, device, per_example)
        self._count = 0  # rows written (host-side: every step is eager)
        self._counter = 0  # the next train step's number
        self._warned = set()
        self._pending = {}
        self._found = None  # while the hooked apply runs: what the inner hooks found
        self._unchecked = []  # (step, finite gradients or skipped, loss) of logged steps not yet checked for NaN/Inf
        self._first_nonfinite = None  # this run's first logged step with a non-finite loss or gradient
        self._all_alive = set()  # tracked variables whose every unit was alive this run: no more to find
        self.taps = per_example_torch.TorchTaps(model, lambda: self._counter % self.every_n_steps == 0) if per_example else None
        self._tensors()

    def _tensors(self):
        # The variables' torch tensors, which Keras updates in place: on a CPU each `.value`
        # costs about 5 us (Keras checks for stateless and autocast scopes).
        self._values = [v.value for v in self.model_vars]
        self._state_values = None if self.snapshot_vars is None else [v.value for v in self.snapshot_vars]
        self._iterations = self.leaf._iterations.value

    @property
    def count(self):
        """int, rows written since the buffers were made."""
        return self._count

    def attach(self):
        """Install the hooks."""
        if self.attached:
            return
        self._install(self._hooks())
        self.attached = True

    def detach(self):
        """Remove the hooks."""
        if not self.attached:
            return
        self._uninstall()
        self.attached = False
        _NEXT_STEP[self.optimizer] = self._counter

    def start_run(self, first_step=0):
        """A run starts: forget alive units and any non-finite step, and move the train-step
        counter to at least `first_step` and the optimizer's own count of update calls.

        Returns:
            int, the number the run's first train step will get.
        """
        for alive in self.buffers.alive:
            if alive is not None:
                alive.zero_()
        self._all_alive.clear()
        self._unchecked, self._first_nonfinite = [], None
        self._tensors()
        if self.taps is not None:
            self.taps.forget()  # what an interrupted step recorded
        iterations = int(ops.convert_to_numpy(self.leaf._iterations))
        self._counter = max(self._counter, _NEXT_STEP.get(self.optimizer, 0), iterations, int(first_step))
        return self._counter

    def all_finite(self):
        """bool: no logged step of this run had a non-finite loss or gradient (loss-scale skips
        aside). Checks the steps logged since the last call: one read from the device for their
        losses, and on an accelerator one for their gradients' NaN/Inf flags."""
        unchecked, self._unchecked = self._unchecked, []
        if self._first_nonfinite is None and unchecked:
            losses = [loss for _, _, loss in unchecked if torch.is_tensor(loss)]
            finite_losses = iter(torch.stack(losses).isfinite().tolist() if losses else [])
            flags = [finite for _, finite, _ in unchecked if torch.is_tensor(finite)]  # from an accelerator
            finite_flags = iter(torch.stack(flags).tolist() if flags else [])
            for step, finite_grads, loss in unchecked:
                finite_grads = next(finite_flags) if torch.is_tensor(finite_grads) else finite_grads
                loss_finite = next(finite_losses) if torch.is_tensor(loss) else loss is not None and math.isfinite(loss)
                if not (finite_grads and loss_finite):
                    self._first_nonfinite = step
                    break
        return self._first_nonfinite is None

    def read(self, start, stop):
        """Rows `start` to `stop` as NumPy arrays: the same dict as `TensorFlowCapture.read`.
        The steps' device tensors are stacked here, one operation per column.

        Raises:
            RuntimeError: if more than `capacity` rows were written since `start`.
        """
        buf = self.buffers
        ring = ring_slots(start, stop, buf.capacity)
        records = [buf.records[i] for i in ring]
        fills = {"loss": np.nan, "learning_rate": np.nan, "loss_scale": 1.0, "clipped": 0.0}
        table = np.stack([_stacked([getattr(r, name) for r in records], fills.get(name, np.nan)) for name in ROW], axis=1).reshape(len(records), len(ROW))
        raw = np.full((len(records), len(self.model_vars), len(RAW)), np.nan)
        for present in {r.present for r in records}:
            group = [i for i, r in enumerate(records) if r.present == present]
            if not present:
                continue
            columns = np.zeros((len(group), len(present), len(RAW)))  # update squares: unread with `by_rate`
            columns[:, :, :6] = _table([records[i].reduced for i in group], len(present))
            columns[:, :, RAW.index("applied_squares")] = columns[:, :, 1]  # unread when `applied_same`
            for name in ("update_squares", "applied_squares"):
                if getattr(records[group[0]], name) is not None:
                    columns[:, :, RAW.index(name)] = torch.stack([getattr(records[i], name) for i in group]).cpu().to(torch.float64).numpy()
            raw[np.ix_(group, present)] = columns
        slots = torch.as_tensor(ring)

        def host(t):
            return t.index_select(0, slots.to(t.device)).detach().cpu().numpy().copy()

        def rows(tensors):
            return None if tensors is None else [host(t) for t in tensors]

        rows_read = host_rows(
            table,
            table[:, :2].astype(np.int64),
            raw.astype(np.dtype(self.dtype)),
            [math.prod(v.shape) for v in self.model_vars],
            self.applied_same,
            rows(buf.full),
            rows(buf.applied),
            [None if a is None else a.cpu().numpy().copy() for a in buf.alive],
            rows(buf.weights),
            rows(buf.optimizer_state),
            rate_update=self.by_rate,
        )
        if buf.noise is not None:
            rows_read["noise"] = host(buf.noise)
            rows_read["per_example_norms"] = host(buf.norms).astype("float64")
        return rows_read

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # ----------------------------------------------------------------------------- the hooks
    def _hooks(self):
        model, optimizer, leaf, buf = self.model, self.optimizer, self.leaf, self.buffers
        model_vars = self.model_vars
        n, dtype = len(model_vars), self.dtype
        index = {id(v): j for j, v in enumerate(model_vars)}
        original = {
            "apply": optimizer.apply,
            "scale_loss": optimizer.scale_loss,
            "update": leaf._backend_update_step,
            "clip": leaf._clip_gradients,
            "compute_loss": model.compute_loss,
        }

        def scale_loss(loss):
            self._pending["scaled"] = loss.detach() if torch.is_tensor(loss) else loss  # before loss scaling
            return original["scale_loss"](loss)

        def compute_loss(*args, **kwargs):
            loss = original["compute_loss"](*args, **kwargs)
            training = kwargs.get("training", args[4] if len(args) > 4 else True)
            if training is not False and loss is not None:
                self._pending["computed"] = loss.detach()
            return loss

        def clip_gradients(grads):
            if self._found is not None:
                self._found["clipped"] = statistics.clipping_acted(leaf, grads, dtype)
            return original["clip"](grads)

        def backend_update_step(grads, trainable_variables, learning_rate):
            found = self._found
            if found is not None:
                found["applied"] = True
                lr = getattr(learning_rate, "value", learning_rate)  # a Keras variable's tensor
                found["lr"] = lr.detach().clone() if torch.is_tensor(lr) else float(lr)  # a copy: Keras assigns in place
                if not self.applied_same:  # else the applied gradient is the one `apply` reduced
                    found["grads"] = applied = {index[id(v)]: g for g, v in zip(grads, trainable_variables, strict=True) if id(v) in index and g is not None}
                    norms = torch._foreach_norm([g.detach().to(getattr(torch, dtype)) for g in applied.values()]) if applied else []
                    found["squares"] = {j: norm**2 for j, norm in zip(applied, norms, strict=True)}
                    if buf.applied is not None:
                        found["grads"] = {j: g.detach().clone() for j, g in applied.items()}
            return original["update"](grads, trainable_variables, learning_rate)

        def apply(grads, trainable_variables=None):
            step = self._counter
            self._counter += 1
            loss = self._pending.pop("scaled", None)
            computed = self._pending.pop("computed", None)
            loss = loss if loss is not None else computed
            if step % self.every_n_steps:
                if self.taps is not None:
                    self.taps.forget()
                return original["apply"](grads, trainable_variables)
            grads = list(grads)
            tvars = list(trainable_variables) if trainable_variables is not None else list(optimizer._trainable_variables)
            by_index = {index[id(v)]: g for g, v in zip(grads, tvars, strict=True) if id(v) in index}
            present = [j for j in range(n) if by_index.get(j) is not None]
            missing = [model_vars[j].path for j in range(n) if j not in present]
            if missing and missing != self.missing:
                self.missing = missing
                warnings.warn(
                    f"GradientLogger: no gradient for {missing}: the loss does not depend on them; their rows hold NaN",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if loss is None:
                self._warn_once(
                    "loss",
                    "GradientLogger: this train step computed its loss neither through model.compute_loss nor optimizer.scale_loss, "
                    "so the logger cannot see it: the logged losses are NaN (the gradients are exact)",
                )
            scale = optimizer.dynamic_scale.value.detach().clone() if self.loss_scaling else (optimizer.loss_scale_factor or None)
            # Before the update, which may change the gradients in place (no copies needed).
            tracked = [buf.alive[j] is not None and j not in self._all_alive for j in present]
            with torch.no_grad():  # as Keras's trainer calls `apply`; a custom train step may not
                grads_present, weights_present = [by_index[j] for j in present], [self._values[j] for j in present]
                reduced = _reductions(grads_present, weights_present, getattr(torch, self.dtype), tracked, read=self._read_each_step) if present else None
            if buf.full is not None:
                slot = self._count % buf.capacity
                for j in present:
                    g = by_index[j].detach().to(getattr(torch, self.dtype))
                    buf.full[j][slot] = g if scale is None else g / torch.as_tensor(scale, dtype=g.dtype, device=g.device)
            noise = self.taps.statistics(by_index, scale, self.dtype) if self.taps is not None else None
            # The weight change needs a copy, except for plain SGD, whose change the host takes from the learning rate.
            befores = None if self.by_rate else [v.detach().clone() for v in self._values]
            state_before = [v.detach().clone() for v in self._state_values] if buf.weights is not None else None
            self._found = found = {}
            try:
                result = original["apply"](grads, trainable_variables)
            finally:
                self._found = None
            self._write(step, loss, scale, present, reduced, befores, state_before, found, noise)
            return result

        return ([] if self.taps is None else self.taps.hooks()) + [
            (optimizer, "apply", apply),
            (optimizer, "scale_loss", scale_loss),
            (leaf, "_backend_update_step", backend_update_step),
            (leaf, "_clip_gradients", clip_gradients),
            (model, "compute_loss", compute_loss),
        ]

    @torch.no_grad()
    def _write(self, step, loss, scale, present, reduced, befores, state_before, found, noise=None):
        buf, dtype = self.buffers, self.dtype
        slot = self._count % buf.capacity
        applied = bool(found.get("applied"))
        if not found.get("applied") and not self.loss_scaling and not self.leaf.gradient_accumulation_steps:
            self._warn_once(
                "update",
                f"GradientLogger: {type(self.leaf).__name__} applied its update without calling _backend_update_step, so "
                "the applied gradients, learning rates and clipping are not recorded",
            )
            applied = True
        values = update_squares = applied_squares = None
        finite_grads = True
        if present:
            values, nonzero, finite_grads = reduced
            if not self.by_rate:
                compute = getattr(torch, dtype)
                before = [befores[j].to(compute) for j in present]
                changes = torch._foreach_sub([self._values[j].detach().to(compute) for j in present], before)
                update_squares = torch.stack(torch._foreach_norm(changes)) ** 2
            if not self.applied_same:
                squares = found.get("squares", {})
                applied_squares = torch.stack([squares.get(j, torch.zeros((), dtype=getattr(torch, dtype), device=self._values[j].device)) for j in present])
            for j, units in zip(present, nonzero, strict=True):
                if units is not None:
                    buf.alive[j] |= units
                    if self._read_each_step and self._count % ALIVE_CHECK_EVERY == 0 and bool(buf.alive[j].all()):
                        self._all_alive.add(j)  # every unit alive: nothing more to find this run
        if torch.is_tensor(loss) and loss.dim():
            loss = loss.reshape(())
        skipped = False  # a loss-scale skip: non-finite gradients not applied
        if self.loss_scaling and not applied:
            skipped = ~finite_grads if torch.is_tensor(finite_grads) else not finite_grads
        if buf.applied is not None and applied:
            for j, g in found.get("grads", {}).items():
                buf.applied[j][slot] = g
        if buf.weights is not None:
            for target, value in zip(buf.weights + buf.optimizer_state, befores + state_before, strict=True):
                target[slot] = value
        buf.records[slot] = _Record(
            step, self._iterations.detach().clone(), loss, found.get("lr"), scale, applied, skipped,
            found.get("clipped"), tuple(present), values, update_squares, applied_squares,
        )  # fmt: skip
        if noise is not None:
            per_example_torch.write(buf, slot, *noise)
        if torch.is_tensor(skipped):  # a skipped step counts as finite
            checked = (finite_grads | skipped, loss if not torch.is_tensor(loss) else torch.where(skipped, torch.zeros_like(loss), loss))
        else:
            checked = (True, 0.0) if skipped else (finite_grads, loss)
        self._unchecked.append((step, *checked))
        if len(self._unchecked) >= buf.capacity:
            self.all_finite()  # keeps no more references than the ring
        self._count += 1
