"""Table 6 of `benchmarks/run.py` on JAX and torch: the cost of the logger's statistics inside one
train step, beside the floor of the bare reductions they need.

Whole `fit` runs on a shared 2-core machine scatter by 10-20% from round to round, as much as the
statistics cost. This table times single train steps instead: three 784-256-256-10 models (batch
128, SGD) take one step each in turn, thousands of times, and each step is timed to its end
(`jax.block_until_ready`; torch's CPU steps are synchronous). The three are `fit`'s own train step
(plain), the same step with the bare reductions added (floor), and the step with a
`GradientLogger` recording statistics every step (logged).

The floor is what exact statistics cannot do without: per variable its gradient's sum, sum of
squares, minimum and maximum, and its weights' sum of squares before the update, written into
one buffer row; no loss, learning rate, counters or checks. It is added to the optimizer's
update the way the logger's capture is (JAX: `stateless_apply` inside the compiled step, with
`keras.ops`; torch: `apply`, with the same multi-tensor torch reductions the logger uses).
"""

import statistics
import time

import keras
import numpy as np
from keras import ops
from paired import rotated, wide_data, wide_model

FLOOR_ROWS = 256  # the floor's ring buffer, as the logger's default capacity


class _Stop(Exception):
    """Raised by `_Grab` to leave `fit` after its first step."""


class _Grab(keras.callbacks.Callback):
    """Leaves `fit` after its first step, keeping the train function (and on JAX the state) that
    step used: the logger's hooks stay attached, as they are during `fit`."""

    def on_train_batch_end(self, batch, logs=None):
        self.train_function = self.model.train_function
        state = getattr(self.model, "_jax_state", None)
        if state is not None:
            keys = ("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables")
            self.state = tuple(list(state[k]) for k in keys)
        raise _Stop


def _bare_rows(grads, weights):
    """`(n_variables, 5)`: per variable the sum, sum of squares, min and max of its gradient and
    the sum of squares of its weights (`keras.ops`, one reduction each)."""
    rows = []
    for g, w in zip(grads, weights, strict=True):
        g, w = ops.reshape(g, (-1,)), ops.reshape(w, (-1,))
        rows.append(ops.stack([ops.sum(g), ops.vdot(g, g), ops.min(g), ops.max(g), ops.vdot(w, w)]))
    return ops.stack(rows)


def _add_floor_jax(model):
    """Wrap `model.optimizer.stateless_apply` so that the compiled step also writes `_bare_rows`
    into a buffer the optimizer tracks (a slot per step, as the logger's ring). Returns that
    buffer: a Keras variable `(FLOOR_ROWS, n_variables, 5)`."""
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    n = len(model.trainable_variables)
    buffer = optimizer.add_variable((FLOOR_ROWS, n, 5), initializer="zeros", name="floor")
    position = [id(v) for v in optimizer.variables].index(id(buffer))
    iterations = [id(v) for v in optimizer.variables].index(id(optimizer.iterations))
    original = optimizer.stateless_apply

    def stateless_apply(optimizer_variables, grads, trainable_variables):
        new_trainable, new_optimizer = original(optimizer_variables, grads, trainable_variables)
        new_optimizer = list(new_optimizer)
        slot = optimizer_variables[iterations] % FLOOR_ROWS
        rows = _bare_rows(grads, trainable_variables)  # the values before the update
        zero = ops.zeros((), slot.dtype)  # the start indices share one integer type
        new_optimizer[position] = ops.slice_update(new_optimizer[position], (slot, zero, zero), rows[None])
        return new_trainable, new_optimizer

    optimizer.stateless_apply = stateless_apply
    return buffer


def _add_floor_torch(model):
    """Wrap `model.optimizer.apply` so that each eager step first writes the bare reductions,
    computed with the logger's torch operations (`capture_torch._reductions`: a sum and `aminmax`
    per gradient, one multi-tensor sum of squares for the gradients and one for the weights),
    into a buffer row, without reading them to the host. Returns that buffer: a tensor
    `(FLOOR_ROWS, 5 * n_variables)`, per row the sums, the sums of squares, the (min, max) pairs
    and the weights' sums of squares."""
    import torch

    optimizer, variables = model.optimizer, model.trainable_variables
    buffer = torch.zeros((FLOOR_ROWS, 5 * len(variables)))
    original, count = optimizer.apply, [0]

    @torch.no_grad()
    def apply(grads, trainable_variables=None):
        grads = list(grads)
        parts = [g.sum() for g in grads] + list(torch._foreach_powsum(grads, 2))
        for g in grads:
            parts += torch.aminmax(g)
        parts += torch._foreach_powsum([v.value for v in variables], 2)
        buffer[count[0] % FLOOR_ROWS] = torch.stack(parts)
        count[0] += 1
        return original(grads, trainable_variables)

    optimizer.apply = apply
    return buffer


def _stepper(model, callbacks, X, y):
    """A function of no argument that runs one train step of `model` as `fit` does and waits
    for its end. The model is unusable afterwards on JAX (its state is donated to the steps)."""
    grab = _Grab()
    try:
        model.fit(X, y, batch_size=len(X), epochs=1, verbose=0, callbacks=[*callbacks, grab])
    except _Stop:
        pass
    train_function, data = grab.train_function, (ops.convert_to_tensor(X), ops.convert_to_tensor(y))
    if keras.backend.backend() != "jax":
        return lambda: train_function([data])
    import jax

    state = [grab.state]

    def step():
        _, state[0] = train_function(state[0], iter([data]))
        jax.block_until_ready(state[0])

    return step


def bench_step_floor(steps, logger_factory):
    """One train step of 784-256-256-10 (batch 128, SGD): plain, with the bare reductions (floor)
    and with a logger (`logger_factory()`, statistics every step), the three in turn `steps`
    times after 20 warm-up steps each, each turn starting one kind later than the last.

    Returns:
        dict: `step_us`, `floor_us`, `logged_us` (median microseconds per step) and
        `floor_ratio`, `logged_ratio` (medians of the per-turn ratios to the plain step).

    Raises:
        ValueError: on the TensorFlow backend (table 5 measures it).
    """
    backend = keras.backend.backend()
    if backend not in ("jax", "torch"):
        raise ValueError(f"bench_step_floor measures the JAX and torch backends; Keras runs on {backend!r}")
    X, y = wide_data(128)
    floor_model = wide_model()
    (_add_floor_jax if backend == "jax" else _add_floor_torch)(floor_model)
    steppers = {
        "step": _stepper(wide_model(), [], X, y),
        "floor": _stepper(floor_model, [], X, y),
        "logged": _stepper(wide_model(), [logger_factory()], X, y),
    }
    for step in steppers.values():
        for _ in range(20):
            step()
    times = {name: [] for name in steppers}
    for turn in range(steps):
        for name in rotated(list(steppers), turn):
            step = steppers[name]
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = np.asarray(times["step"])
    out = {f"{name}_us": statistics.median(t) * 1e6 for name, t in times.items()}
    for name in ("floor", "logged"):
        out[f"{name}_ratio"] = float(np.median(np.asarray(times[name]) / base))
    return out
