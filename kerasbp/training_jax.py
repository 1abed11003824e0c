"""`kerasbp.train` on JAX: a run of epochs inside one jitted `jax.lax.while_loop`.

Keras's JAX train step is stateless (`keras/src/backend/jax/trainer.py`, `train_step`): it maps
the state `(trainable, non_trainable, optimizer, metrics variables)` and a batch to new state, as
`fit`'s jitted step does. The loop here threads that state through the epochs and batches of a
call, resets the metrics' variables at each epoch, and records each epoch's metric results. The
number of epochs is a traced argument and the data, state and metric reset values are arguments,
so a call with another epoch count, new data of the same shape and dtype, a learning rate set by
assignment (a variable of the optimizer) or a new `GradientLogger` with the same options (the
same capture, whose ring buffers are optimizer variables) traces nothing new. Between calls the
state is written back to the variables, where callbacks (and `GradientLogger`'s reads) find it.
"""

import weakref

import jax
import jax.numpy as jnp
import keras
import numpy as np

#: Jitted loops: model -> optimizer -> {shapes, batching and hooks: loop}, as in `training_tf`.
_LOOPS = weakref.WeakKeyDictionary()


def check_model(model):
    """Refuse training under a `keras.distribution`: the loop is jitted without the shardings
    `fit` gives its step, so it would not split the batches over the devices.

    Raises:
        ValueError: when a `keras.distribution` is in effect, naming it.
    """
    distribution = keras.distribution.distribution()
    if distribution is not None:
        raise ValueError(
            f"kerasbp.train does not support keras.distribution on JAX: {type(distribution).__name__} is in effect, and "
            "train's jitted loop does not shard the batches over its devices. Use model.fit (GradientLogger records it)"
        )


def _groups(model):
    """The model's variables in the order of the train step's state."""
    return (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables, model.metrics_variables)


def make_run(model, data, batch_size, max_epochs, jit, capture, halt, own_step):
    """The function `run(n_epochs) -> (n_ran, {name: array (n_ran,)})` that trains up to
    `n_epochs` epochs of `data` in one call of a jitted loop. Arguments as
    `kerasbp.training_tf.make_run`; `jit` is ignored (the loop is always jitted); `own_step` is
    the model's own `train_step` attribute before the callbacks started (the capture replaces it
    with a new function at each attach, which must not make a new loop)."""
    X, y, sw, val = data
    optimizer = model.optimizer
    stop_index = None
    if halt and capture is not None:
        flag = capture.buffers.variables["first_nonfinite"]
        stop_index = next(k for k, v in enumerate(optimizer.variables) if v is flag)
    val_key = None if val is None else tuple(None if v is None else (v.shape, v.dtype.name) for v in val)
    key = (capture, own_step, tuple(map(id, optimizer.variables)), X.shape, y.shape, X.dtype.name, y.dtype.name, batch_size, max_epochs, stop_index, sw is not None, val_key)
    loops = _LOOPS.setdefault(model, weakref.WeakKeyDictionary()).setdefault(optimizer, {})
    if key not in loops:
        loops[key] = _make_loop(model, X.shape[0], batch_size, max_epochs, stop_index, val)
    loop = loops[key]
    for metric in model.metrics:
        metric.reset_state()
    reset = [v.value for v in model.metrics_variables]
    arrays = jax.device_put((X, y, sw, val))

    def run(n_epochs):
        groups = _groups(model)
        state = tuple([v.value for v in group] for group in groups)
        n_ran, state, history = loop(state, reset, *arrays, np.int32(n_epochs))
        for group, values in zip(groups, state, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)
        n_ran = int(n_ran)
        return n_ran, {k: np.asarray(v)[:n_ran] for k, v in history.items()}

    return run


def _metrics_result(model, metrics_variables):
    """`model.get_metrics_result()` with the metrics' variables taking the given values."""
    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics_variables, strict=True))):
        return model.get_metrics_result()


def _make_loop(model, n, batch_size, max_epochs, stop_index, val):
    """The jitted `loop(state, reset, X, y, sw, val, n_epochs) -> (n_ran, state, history)`: up to
    `n_epochs` epochs from `state`, each starting its metrics from `reset`. `stop_index`: None,
    or the index in the optimizer's variables of the capture's first non-finite step, checked
    before every step (the loop stops where it is >= 0; the epoch it stops in counts as started)."""
    n_full, rest = divmod(n, batch_size)
    names = list(model.get_metrics_result())
    names += [f"val_{k}" for k in names] if val is not None else []
    log_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    def going_on(state):
        return jnp.asarray(True) if stop_index is None else state[2][stop_index] < 0

    def batch(X, y, sw, start, size):
        take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, size)  # noqa: E731  ((size, ...) rows from start)
        return (take(X), take(y)) if sw is None else (take(X), take(y), take(sw))

    def step(state, data):
        # Lists, as the state going in: loop and cond carries must keep their structure.
        return tuple(list(group) for group in model.train_step(state, data)[1])

    def validate(state, reset, val):
        Xv, yv, swv = val
        state = (state[0], state[1], reset)
        for start in range(0, Xv.shape[0], batch_size):  # evaluate's batches, unrolled (few)
            rows = slice(start, start + batch_size)
            data = (Xv[rows], yv[rows]) if swv is None else (Xv[rows], yv[rows], swv[rows])
            state = model.test_step(state, data)[1]
        return {f"val_{k}": v for k, v in _metrics_result(model, state[2]).items()}

    def epoch(state, reset, X, y, sw, val):
        state = (*state[:3], list(reset))
        if n_full:

            def body(carry):
                i, state = carry
                return i + 1, step(state, batch(X, y, sw, i * batch_size, batch_size))

            _, state = jax.lax.while_loop(lambda c: (c[0] < n_full) & going_on(c[1]), body, (0, state))
        if rest:
            state = jax.lax.cond(going_on(state), lambda s: step(s, batch(X, y, sw, n_full * batch_size, rest)), lambda s: s, state)
        logs = _metrics_result(model, state[3])
        if val is not None:
            logs.update(validate(state, reset, val))
        return state, logs

    @jax.jit
    def loop(state, reset, X, y, sw, val, n_epochs):
        def body(carry):
            e, state, history = carry
            state, logs = epoch(state, reset, X, y, sw, val)
            return e + 1, state, {k: h.at[e].set(jnp.asarray(logs[k], log_dtype)) for k, h in history.items()}

        history = {k: jnp.zeros((max_epochs,), log_dtype) for k in names}
        return jax.lax.while_loop(lambda c: (c[0] < n_epochs) & going_on(c[1]), body, (0, state, history))

    return loop
