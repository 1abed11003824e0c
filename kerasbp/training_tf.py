"""`kerasbp.train` on TensorFlow: a run of epochs inside one `tf.function` (optionally XLA).

The function calls the model's own `train_step` in a `tf.while_loop` over the epochs of a call;
the number of epochs is a tensor, so runs of any length reuse one trace. `kerasbp/training.py`
holds the API and the host loop that calls `make_run`'s function and the callbacks.
"""

import contextlib
import logging
import weakref

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import tensorflow as tf

from kerasbp.logger import replicas
from kerasbp.native_logs import quiet_native_logs

#: Traced loops: model -> optimizer -> {shapes, batching and hooks: loop}, reused by later
#: `train` calls. Weak keys: a loop goes with its model or optimizer, and is never mistaken for
#: one traced against an object that has died and whose id was reused.
_LOOPS = weakref.WeakKeyDictionary()


def check_model(model):
    """Refuse a model made under a `tf.distribute` strategy.

    Raises:
        ValueError: naming the strategy (see `kerasbp.train`).
    """
    strategy = replicas.strategy_of(model)
    if strategy is not None:
        raise ValueError(
            f"kerasbp.train does not support tf.distribute strategies: the model trains under {replicas.strategy_name(strategy)} "
            f"({strategy.num_replicas_in_sync} replicas), and train's compiled loop calls train_step without strategy.run, so it "
            "would neither split batches over the replicas nor all-reduce their gradients. Use model.fit (GradientLogger "
            "records it under MirroredStrategy)"
        )


class _RetracingFilter(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    # Each `train` call traces a new loop on purpose (the callbacks may have hooked the
    # optimizer), which TensorFlow would report as excessive retracing after five calls.
    log_filter = _RetracingFilter()
    logger = tf.get_logger()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def make_run(model, data, batch_size, max_epochs, jit, capture, halt, own_step):
    """The function `run(n_epochs) -> (n_ran, {name: float64 array (n_ran,)})` that trains up to
    `n_epochs` epochs of `data` in one call of a traced loop (see `kerasbp.training`).

    Args:
        model: the compiled, built model; its callbacks have started (`on_train_begin`).
        data: `(X, y, sample_weight or None, validation or None)`, NumPy arrays as
            `kerasbp.train` checked them (validation: `(X_val, y_val, sample_weight_val or None)`).
        batch_size: int, at most `len(X)`.
        max_epochs: int, the most epochs one call runs (`epochs_per_call`).
        jit: bool, XLA-compile the loop.
        capture: the capture a `GradientLogger` attached to the model, or None.
        halt: bool, stop at the first step that `capture` finds non-finite.
        own_step: unused here (the key reads the model's `train_step` as callbacks left it).
    """
    X, y, sw, val = data
    X_t, y_t = tf.constant(X), tf.constant(y)
    sw_t = None if sw is None else tf.constant(sw)
    if val is not None:
        val = tuple(None if v is None else tf.constant(v) for v in val)
    n_full, rest = divmod(X.shape[0], batch_size)
    go_on = capture.all_finite if halt and capture is not None else None
    val_key = None if val is None else (tuple(val[0].shape), tuple(val[1].shape), val[2] is not None)
    # A callback that wraps the model's `train_step` for the run (`HessianProbe`) gets loops of its own.
    key = (capture, model.__dict__.get("train_step"), go_on is not None, tuple(X_t.shape), tuple(y_t.shape), X_t.dtype, batch_size, max_epochs, jit, sw_t is not None, val_key)
    loops = _LOOPS.setdefault(model, weakref.WeakKeyDictionary()).setdefault(model.optimizer, {})
    if key not in loops:
        loops[key] = _make_loop(model, batch_size, n_full, rest, jit, max_epochs, go_on, sw_t is not None, val)
    loop = loops[key]
    extra = ([] if sw_t is None else [sw_t]) + ([] if val is None else [v for v in val if v is not None])
    first = [True]

    def run(n_epochs):
        with _quiet_retracing(), quiet_native_logs() if first[0] else contextlib.nullcontext():  # XLA's first-compile notices
            n_ran, history = loop(X_t, y_t, tf.constant(n_epochs), *extra)
        first[0] = False
        n_ran = int(n_ran)
        return n_ran, {k: v.numpy()[:n_ran] for k, v in history.items()}

    return run


def _make_loop(model, batch_size, n_full, rest, jit, max_epochs, go_on=None, weighted=False, val=None):
    """Build the compiled function `run(X, y, n_epochs[, sw][, X_val, y_val[, sw_val]])` that trains
    up to `n_epochs` epochs and returns how many it started and their logs (with `val_` logs
    computed by `test_step` after each epoch when there is validation data).

    `go_on`: None, or a function returning a scalar bool tensor, checked before every step: the
    loop stops at the first step where it is False (the epoch it stops in counts as started)."""
    train_names = list(model.get_metrics_result())
    names = train_names + ([f"val_{k}" for k in train_names] if val is not None else [])
    val_weighted = val is not None and val[2] is not None
    n_val = 0 if val is None else int(val[0].shape[0])

    def going_on():
        return tf.constant(True) if go_on is None else go_on()

    def epoch_body(X, y, sw=None, val_data=None):
        n_features, n_outputs = X.shape[1], y.shape[1]
        for metric in model.metrics:
            metric.reset_state()

        def data(start, size):
            xb = tf.slice(X, [start, 0], [size, n_features])  # (batch, n_features)
            yb = tf.slice(y, [start, 0], [size, n_outputs])  # (batch, n_outputs)
            return (xb, yb) if sw is None else (xb, yb, tf.slice(sw, [start], [size]))

        def step(i):
            model.train_step(data(i * batch_size, batch_size))
            return i + 1

        if n_full:
            tf.while_loop(lambda i: tf.logical_and(i < n_full, going_on()), step, [tf.constant(0)])
        if rest:

            def last_batch():
                model.train_step(data(n_full * batch_size, rest))
                return tf.constant(0)

            tf.cond(going_on(), last_batch, lambda: tf.constant(0))
        logs = {k: tf.identity(v) for k, v in model.get_metrics_result().items()}
        if val_data is None:
            return logs
        Xv, yv, swv = val_data
        for metric in model.metrics:
            metric.reset_state()
        for start in range(0, n_val, batch_size):  # evaluate's batches, unrolled (few)
            size = min(batch_size, n_val - start)
            batch = (Xv[start : start + size], yv[start : start + size])
            model.test_step(batch if swv is None else batch + (swv[start : start + size],))
        return {**logs, **{f"val_{k}": tf.identity(v) for k, v in model.get_metrics_result().items()}}

    @tf.function(jit_compile=jit)
    def run(X, y, n_epochs, *extra):
        extra = list(extra)
        sw = extra.pop(0) if weighted else None
        val_data = None
        if val is not None:
            val_data = (extra[0], extra[1], extra[2] if val_weighted else None)

        # `n_epochs` is a tensor, so one trace serves calls of any length; the TensorArrays have
        # the static size XLA needs (the longest call), and the host keeps the first n_epochs rows.
        def body(e, *acc):
            logs = epoch_body(X, y, sw, val_data)
            return (e + 1,) + tuple(a.write(e, tf.cast(logs[k], tf.float64)) for k, a in zip(names, acc, strict=True))

        arrays = tuple(tf.TensorArray(tf.float64, size=max_epochs) for _ in names)
        out = tf.while_loop(lambda e, *acc: tf.logical_and(e < n_epochs, going_on()), body, (tf.constant(0),) + arrays)
        return out[0], {k: a.stack() for k, a in zip(names, out[1:], strict=True)}

    return run
