"""The capture on the torch backend: ring buffers of device tensors, written in the same eager step.

Where the torch trainer applies gradients (Keras 3.15, `keras/src/backend/torch/trainer.py`,
`train_step`): the loss goes through `optimizer.scale_loss`, `loss.backward()`, then
`optimizer.apply([v.value.grad ...], trainable_weights)` under `torch.no_grad()`, eagerly. So
the hooks are those of `TensorFlowCapture` (see `capture.py`), run eagerly: `apply` and
`scale_loss` of the optimizer, `_backend_update_step` and `_clip_gradients` of the innermost
one. Every number stays on the device (the reductions behind the statistics, `_reductions`, the
rows, the first non-finite step): the host reads the buffers only when the callback collects
them. The one exception: a step whose gradient has NaN or Inf entries (seen from its sum of
squares, one device-to-host read per logged step) counts them. Train steps that are not
logged (`every_n_steps`) cost one Python comparison.

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

import torch
from keras import ops

from kerasbp.logger import per_example_torch, statistics
from kerasbp.logger.hooks import RAW, ROW, HookedCapture, host_rows, ring_slots

def _reductions(grads, dtype, tracked):
    """`kerasbp.logger.statistics.step_reductions` with torch's own operations: three per
    variable (sum, dot with itself, `aminmax`), where `keras.ops` costs about 3 ms a step on a
    CPU in Python overhead alone. Same arguments (with `dtype` a torch dtype) and results."""
    flat = [g.detach().to(dtype).reshape(-1) for g in grads]
    table = torch.stack([torch.stack([f.sum(), torch.dot(f, f), *torch.aminmax(f)]) for f in flat])  # (n, 4)
    if bool(torch.isfinite(table[:, 1]).all()):
        counts = torch.zeros((len(flat), 1), dtype=dtype, device=table.device)
    else:
        counts = torch.stack([(~torch.isfinite(f)).sum().to(dtype) for f in flat])[:, None]
    # A unit's largest |entry| is nonzero (NaN too): 6x faster on a CPU than `(g != 0).any(...)`.
    nonzero = [(g.abs().amax(dim=tuple(range(g.dim() - 1))) != 0) if track and g.dim() > 1 else ((g != 0) if track else None) for g, track in zip(grads, tracked, strict=True)]
    return torch.cat([table, counts], dim=1), nonzero


#: optimizer -> the number the next train step gets, left by the last capture detached from it.
_NEXT_STEP = weakref.WeakKeyDictionary()


class _Buffers:
    """Ring buffers of `capacity` rows: torch tensors on the model's device.

    Attributes:
        capacity: int.
        rows: float64 `(capacity, len(ROW))`; steps: int64 `(capacity, 2)` (step, iterations);
        stats: `(capacity, n_variables, len(RAW))`, the reductions behind the statistics; full, applied, weights, optimizer_state:
        lists of `(capacity, *shape)` or None; alive: list of bool `(units,)` or None; noise, norms: the
        per-example statistics `(capacity, len(NOISE_COLUMNS))` and norms `(capacity, width)`, or None.
    """

    def __init__(self, model_vars, capacity, keep_full, keep_applied, dtype, tracked, snapshot_vars, device, per_example=False):
        def zeros(shape, dt):
            return torch.zeros(tuple(shape), dtype=dt, device=device)

        n = len(model_vars)
        torch_dtype = getattr(torch, dtype)
        self.capacity = capacity
        self.rows = zeros((capacity, len(ROW)), torch.float64)
        self.steps = zeros((capacity, 2), torch.int64)
        self.stats = zeros((capacity, n, len(RAW)), torch_dtype)
        self.first_nonfinite = torch.tensor(-1, dtype=torch.int64, device=device)
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
    """Hooks on one model's optimizer that write each logged train step into device buffers
    (torch backend). Build it with `kerasbp.logger.hooks.capture_for`. Implements the
    interface of `TensorFlowCapture`.

    Args:
        model: a compiled, built `keras.Model` on the torch backend.
        optimizer: its optimizer (built).
        every_n_steps: int, log the train steps whose 0-based number is a multiple of it.
        capacity: int, rows of the ring buffers.
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
        self.buffers = _Buffers(self.model_vars, capacity, keep_full, not self.applied_same, self.dtype, tracked, self.snapshot_vars, device, per_example)
        self._count = 0  # rows written (host-side: every step is eager)
        self._counter = 0  # the next train step's number
        self._warned = set()
        self._pending = {}
        self._found = None  # while the hooked apply runs: what the inner hooks found
        self.taps = per_example_torch.TorchTaps(model, lambda: self._counter % self.every_n_steps == 0) if per_example else None

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
        self.buffers.first_nonfinite.fill_(-1)
        if self.taps is not None:
            self.taps.forget()  # what an interrupted step recorded
        iterations = int(ops.convert_to_numpy(self.leaf._iterations))
        self._counter = max(self._counter, _NEXT_STEP.get(self.optimizer, 0), iterations, int(first_step))
        return self._counter

    def all_finite(self):
        """Scalar bool tensor: no logged step of this run had a non-finite loss or gradient
        (loss-scale skips aside)."""
        return self.buffers.first_nonfinite < 0

    def read(self, start, stop):
        """Rows `start` to `stop` as NumPy arrays: the same dict as `TensorFlowCapture.read`.

        Raises:
            RuntimeError: if more than `capacity` rows were written since `start`.
        """
        buf = self.buffers
        slots = torch.as_tensor(ring_slots(start, stop, buf.capacity), device=buf.rows.device)

        def host(t):
            return t.index_select(0, slots).detach().cpu().numpy().copy()

        def rows(tensors):
            return None if tensors is None else [host(t) for t in tensors]

        rows_read = host_rows(
            host(buf.rows),  # (n, len(ROW))
            host(buf.steps),  # (n, 2)
            host(buf.stats),  # (n, n_variables, len(RAW))
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
                found["lr"] = ops.cast(learning_rate, "float64")
                found["grads"] = {index[id(v)]: g for g, v in zip(grads, trainable_variables, strict=True) if id(v) in index and g is not None}
                if not self.applied_same and found["grads"]:
                    keys = list(found["grads"])
                    norms = torch._foreach_norm([found["grads"][j].detach().to(getattr(torch, dtype)) for j in keys])
                    found["squares"] = {j: norm**2 for j, norm in zip(keys, norms, strict=True)}
                    if buf.applied is not None:
                        found["grads"] = {j: g.detach().clone() for j, g in found["grads"].items()}
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
            reduced = _reductions([by_index[j] for j in present], getattr(torch, self.dtype), [buf.alive[j] is not None for j in present]) if present else None
            if buf.full is not None:
                slot = self._count % buf.capacity
                for j in present:
                    g = by_index[j].detach().to(getattr(torch, self.dtype))
                    buf.full[j][slot] = g if scale is None else g / torch.as_tensor(scale, dtype=g.dtype, device=g.device)
            noise = self.taps.statistics(by_index, scale, self.dtype) if self.taps is not None else None
            # torch's fused multi-tensor norms: one call for all variables (keras.ops per tensor costs more here)
            weights = [model_vars[j].value.detach().to(getattr(torch, self.dtype)) for j in present]
            weight_squares = torch.stack(torch._foreach_norm(weights)) ** 2 if present else None
            # The weight change needs a copy, except for plain SGD, whose change the host takes from the learning rate.
            befores = None if self.by_rate else [v.value.detach().clone() for v in model_vars]
            state_before = [v.value.detach().clone() for v in self.snapshot_vars] if buf.weights is not None else None
            self._found = found = {}
            try:
                result = original["apply"](grads, trainable_variables)
            finally:
                self._found = None
            self._write(step, loss, scale, present, reduced, weight_squares, befores, state_before, found, noise)
            return result

        return ([] if self.taps is None else self.taps.hooks()) + [
            (optimizer, "apply", apply),
            (optimizer, "scale_loss", scale_loss),
            (leaf, "_backend_update_step", backend_update_step),
            (leaf, "_clip_gradients", clip_gradients),
            (model, "compute_loss", compute_loss),
        ]

    @torch.no_grad()
    def _write(self, step, loss, scale, present, reduced, weight_squares, befores, state_before, found, noise=None):
        buf, dtype, n = self.buffers, self.dtype, len(self.model_vars)
        device = buf.rows.device
        slot = self._count % buf.capacity
        applied = bool(found.get("applied"))
        if not found.get("applied") and not self.loss_scaling and not self.leaf.gradient_accumulation_steps:
            self._warn_once(
                "update",
                f"GradientLogger: {type(self.leaf).__name__} applied its update without calling _backend_update_step, so "
                "the applied gradients, learning rates and clipping are not recorded",
            )
            applied = True
        lr = found.get("lr", torch.tensor(float("nan"), dtype=torch.float64))
        clipped = found.get("clipped")
        clipped = torch.tensor(False, device=device) if clipped is None else clipped
        values = torch.full((n, len(RAW)), float("nan"), dtype=getattr(torch, dtype), device=device)
        finite_grads = torch.tensor(True, device=device)
        if present:
            if self.by_rate:
                update_squares = torch.zeros_like(weight_squares)  # unread
            else:
                compute = getattr(torch, dtype)
                before = [befores[j].to(compute) for j in present]
                changes = torch._foreach_sub([self.model_vars[j].value.detach().to(compute) for j in present], before)
                update_squares = torch.stack(torch._foreach_norm(changes)) ** 2
            table, nonzero = reduced
            if self.applied_same:
                applied_squares = table[:, 1]  # unread: the host takes the loss gradient's norm
            else:
                squares = found.get("squares", {})
                applied_squares = torch.stack([squares.get(j, torch.zeros((), dtype=getattr(torch, dtype), device=device)) for j in present])
            values[present] = torch.cat([table, torch.stack([weight_squares, update_squares, applied_squares.to(table.dtype)], dim=1)], dim=1)
            finite_grads = torch.all(table[:, RAW.index("nonfinite")] == 0)
            for j, units in zip(present, nonzero, strict=True):
                if units is not None:
                    buf.alive[j] |= units
        loss_value = torch.tensor(float("nan"), dtype=torch.float64, device=device) if loss is None else torch.reshape(loss, ()).to(torch.float64)
        skipped = torch.logical_and(~finite_grads, torch.tensor(not applied, device=device)) if self.loss_scaling else torch.tensor(False, device=device)
        finite = torch.logical_or(torch.logical_and(finite_grads, torch.isfinite(loss_value)), skipped)
        if buf.applied is not None and applied:
            for j, g in found.get("grads", {}).items():
                buf.applied[j][slot] = g
        if buf.weights is not None:
            for target, value in zip(buf.weights + buf.optimizer_state, befores + state_before, strict=True):
                target[slot] = value
        iterations = self.leaf._iterations.value
        buf.rows[slot] = torch.stack(
            [
                torch.tensor(float(step), dtype=torch.float64, device=device),
                iterations.to(torch.float64),
                loss_value,
                torch.as_tensor(lr, device=device).to(torch.float64),
                torch.as_tensor(1.0 if scale is None else scale, device=device).to(torch.float64),
                torch.tensor(float(applied), dtype=torch.float64, device=device),
                skipped.to(torch.float64),
                torch.as_tensor(clipped, device=device).to(torch.float64),
            ]
        )
        buf.steps[slot, 0] = step
        buf.steps[slot, 1] = iterations.to(torch.int64)
        buf.stats[slot] = values.to(buf.stats.dtype)
        if noise is not None:
            per_example_torch.write(buf, slot, *noise)
        first = buf.first_nonfinite
        first.copy_(torch.where(torch.logical_and(~finite, first < 0), torch.tensor(step, device=device), first))
        self._count += 1
