"""`train`: many small epochs fast, with the results of `model.fit(..., shuffle=False)`.

`model.fit` pays about 50 ms of fixed cost per epoch (building an epoch iterator, a tf.data
pipeline, callbacks), which dominates when an epoch is one step of a 4-sample XOR batch. `train`
runs a whole run of epochs inside one compiled TensorFlow function that calls the model's own
`train_step`, so the loss, gradients, optimizer and metrics are exactly Keras's.
"""

import contextlib
import logging
import time
import weakref

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np
import tensorflow as tf

from kerasbp.checks import check_positive_int, check_xy
from kerasbp.interrupts import raise_pending
from kerasbp.logger import capture
from kerasbp.logger.callback import GradientLogger
from kerasbp.native_logs import quiet_native_logs

#: Steps that one call of the compiled loop runs at most when `epochs_per_call` is automatic.
MAX_STEPS_PER_CALL = 4096

#: Wall time one call of the compiled loop aims at: calls return this often, so that Ctrl-C and
#: callbacks are seen, and the loop runs fewer epochs per call when a step is slow. The number
#: of epochs in a call is a tensor, so changing it traces nothing.
SECONDS_PER_CALL = 0.2

#: With `jit_compile="auto"`, runs of at least this many steps are XLA-compiled: below it, XLA's
#: compile time is not won back (measured by `benchmarks/run.py`, "time to result").
AUTO_XLA_MIN_STEPS = 20_000


def _is_kerasbp_aware(callback):
    # These callbacks read their data after each call of the compiled loop, so they stay exact
    # when one call runs several epochs; another callback says so with `epochs_per_call_safe`.
    return isinstance(callback, (GradientLogger, keras.callbacks.History)) or getattr(callback, "epochs_per_call_safe", False)


def _output_width(model):
    try:
        shape = model.outputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return None if len(shape) != 2 or shape[-1] is None else int(shape[-1])


def _input_width(model):
    try:
        shape = model.inputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return None if shape[-1] is None else int(shape[-1])


def train(
    model,
    X,
    y,
    epochs=1,
    batch_size=None,
    callbacks=None,
    verbose=0,
    epochs_per_call=None,
    jit_compile="auto",
    sample_weight=None,
    class_weight=None,
    validation_data=None,
    shuffle=False,
):
    """Train a compiled model like `model.fit(X, y, shuffle=False)`, fast for tiny epochs.

    Batches are consecutive slices of `X` and `y` in order, the last partial batch kept, as in
    `fit(shuffle=False)`. Each step is the model's own `train_step` (forward pass, loss, gradient
    tape, `optimizer.apply_gradients`, metrics), traced once into a `tf.function` that loops over
    the epochs of a call; the History holds the same per-epoch logs as `fit`'s: the batch-size
    weighted mean of each batch's loss computed before that batch's update.

    What differs from `fit`:
        - The batch-level callback hooks run once per call of the compiled loop, as with
          `steps_per_execution` (`GradientLogger` still records every step).
        - With `epochs_per_call > 1`, the epoch hooks of a call run after the call has trained all
          its epochs, so a callback that stops training (e.g. `EarlyStopping`) acts at the end of
          the call. That is why the automatic choice is one epoch per call whenever a callback
          other than `GradientLogger` or `History` is passed, unless it has a true attribute
          `epochs_per_call_safe` (its epoch hooks may run after the call).
        - `shuffle` permutes the samples once, with a seeded generator of its own, before the
          run (not every epoch): the run equals `fit(X[p], y[p], shuffle=False)` for that
          permutation `p`, which is what makes it reproducible and comparable to the twin.

    Args:
        model: a compiled `keras.Model` with the TensorFlow backend.
        X: float array of shape `(n_samples, n_features)` (1-D for a one-input model).
        y: float array of shape `(n_samples, n_outputs)` or `(n_samples,)`.
        epochs: int >= 1, passes over the data. Defaults to 1.
        batch_size: int >= 1 or None for 32, as in `fit`. Defaults to None.
        callbacks: list of `keras.callbacks.Callback`. Defaults to None.
        verbose: 0 (silent), 1 (a progress bar per epoch) or 2 (one line per epoch), as in
            `fit`. Defaults to 0.
        epochs_per_call: int >= 1 or None, the most epochs one call of the compiled loop runs.
            None allows up to `MAX_STEPS_PER_CALL` steps per call when the callbacks allow it
            (see above), else one epoch per call. Within that bound, each call runs as many
            epochs as fit in about `SECONDS_PER_CALL`, so that the loop returns often.
            It does not depend on `epochs`, so runs of another length reuse the traced loop.
        sample_weight: None or float array `(n_samples,)`, as in `fit`. Defaults to None.
        class_weight: None or dict `{class: weight}`, turned into sample weights as `fit` does
            (multiplied with `sample_weight` when both are given). Defaults to None.
        validation_data: None, `(X_val, y_val)` or `(X_val, y_val, sample_weight_val)`:
            evaluated after every epoch in batches of `batch_size`, inside the compiled loop,
            giving `val_` logs as `fit` does. Defaults to None.
        shuffle: False, True (seed 0) or an int seed: permute the samples once before training
            (see above). Defaults to False.
        jit_compile: True, False or `"auto"`: compile the loop with XLA (about twice as fast
            per step on a CPU for tiny networks, but its compile costs about half a second;
            XLA may fuse operations differently from `fit`, which Keras does not XLA-compile on
            a CPU, so results agree to float rounding rather than bit for bit). `"auto"` uses
            XLA for runs of at least `AUTO_XLA_MIN_STEPS` steps. Ignored (False) when the model
            was compiled with `run_eagerly=True`. Defaults to `"auto"`.

    Returns:
        `keras.callbacks.History`, also set as `model.history`.

    Raises:
        ValueError, TypeError: for bad arrays (see `kerasbp.checks.check_xy`), bad
            hyperparameters, or a model that is not compiled.

    Example:
        >>> from kerasbp import xor_data, xor_model, compile_model
        >>> X, y = xor_data()
        >>> model = compile_model(xor_model(seed=0), "adam", learning_rate=0.1)
        >>> history = train(model, X, y, epochs=500, batch_size=4)
        >>> len(history.history["loss"])
        500
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"kerasbp.train supports the TensorFlow backend only. Keras is running on {keras.backend.backend()!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("`model` must be compiled before training: call compile_model(model, ...) first")
    epochs = check_positive_int("epochs", epochs)
    batch_size = 32 if batch_size is None else check_positive_int("batch_size", batch_size)
    if not (isinstance(jit_compile, bool) or jit_compile == "auto"):
        raise TypeError(f"`jit_compile` must be True, False or 'auto'. Received: jit_compile={jit_compile!r}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
    X, y = _check_targets(model, X, y)
    n = X.shape[0]
    sw = _sample_weights(y, sample_weight, class_weight, n)
    if shuffle is not False and shuffle is not None:
        if not isinstance(shuffle, (bool, int)) or (not isinstance(shuffle, bool) and shuffle < 0):
            raise TypeError(f"`shuffle` must be a bool or an int seed >= 0. Received: shuffle={shuffle!r}")
        perm = np.random.default_rng(0 if shuffle is True else int(shuffle)).permutation(n)
        X, y = X[perm], y[perm]
        sw = None if sw is None else sw[perm]
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("`validation_data` must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight_val)")
        Xv, yv = _check_targets(model, validation_data[0], validation_data[1])
        swv = _sample_weights(yv, validation_data[2] if len(validation_data) == 3 else None, None, Xv.shape[0])
        val = (tf.constant(Xv), tf.constant(yv), None if swv is None else tf.constant(swv))
    batch_size = min(batch_size, n)
    n_full, rest = divmod(n, batch_size)
    steps_per_epoch = n_full + (rest > 0)
    callbacks = list(callbacks or [])
    if epochs_per_call is None:
        if all(_is_kerasbp_aware(c) for c in callbacks):
            epochs_per_call = max(1, MAX_STEPS_PER_CALL // steps_per_epoch)
        else:
            epochs_per_call = 1
    epochs_per_call = check_positive_int("epochs_per_call", epochs_per_call)

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        steps_per_call=epochs_per_call * steps_per_epoch,
        model=model,
    )
    X_t, y_t = tf.constant(X), tf.constant(y)
    sw_t = None if sw is None else tf.constant(sw)
    with _quiet_retracing():
        if jit_compile == "auto":
            jit_compile = epochs * steps_per_epoch >= AUTO_XLA_MIN_STEPS
        jit = jit_compile and not model.run_eagerly
        try:
            # A GradientLogger that stops or raises on NaN/Inf stops the loop at that very step.
            halt = any(isinstance(c, GradientLogger) and c.on_nonfinite != "warn" for c in callbacks)
            return _train(model, X_t, y_t, batch_size, n_full, rest, epochs, epochs_per_call, callback_list, jit, halt, sw_t, val)
        except BaseException:
            # An exception or KeyboardInterrupt: unhook GradientLoggers, keeping what they logged.
            for callback in callbacks:
                if hasattr(callback, "detach"):
                    callback.detach()
            raise


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


#: Traced loops: model -> optimizer -> {shapes, batching and hooks: loop}, reused by later
#: `train` calls. Weak keys: a loop goes with its model or optimizer, and is never mistaken for
#: one traced against an object that has died and whose id was reused.
_LOOPS = weakref.WeakKeyDictionary()


def _check_targets(model, X, y):
    """X as floatx; y as floatx `(n, d)`, or integer labels `(n,)` for a sparse categorical loss."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", ""))
    if "sparse_categorical" in str(name).lower():
        X, _ = check_xy(X, np.zeros(len(np.asarray(X))), n_features=_input_width(model), dtype=keras.config.floatx())
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"`X` and `y` must have the same number of rows. Received {X.shape[0]} and {y.shape[0]}")
        return X, y.reshape(len(y), -1).astype(np.int64)
    return check_xy(X, y, n_features=_input_width(model), n_outputs=_output_width(model), dtype=keras.config.floatx())


def _sample_weights(y, sample_weight, class_weight, n):
    """The per-sample weights `fit` would use, `(n,)` in floatx, or None."""
    from kerasbp.reference.loss_objects import check_sample_weight, class_weight_to_sample_weight

    dtype = keras.config.floatx()
    sw = check_sample_weight(sample_weight, n, dtype)
    if class_weight is not None:
        cw = class_weight_to_sample_weight(y, class_weight, dtype)
        sw = cw if sw is None else sw * cw
    return sw


def _train(model, X_t, y_t, batch_size, n_full, rest, epochs, epochs_per_call, callback_list, jit, halt, sw_t=None, val=None):
    steps_per_epoch = n_full + (rest > 0)
    # Build the model, its compiled loss and metrics, and the optimizer's variables now, as
    # `fit` and `train_on_batch` do, so that no variable is created inside the loop.
    model._symbolic_build(data_batch=(X_t[:1], y_t[:1], None))
    model.stop_training = False
    callback_list.on_train_begin()
    # Looked up after on_train_begin: a GradientLogger attaches its capture there, and a loop
    # traced with those hooks serves only that capture (which lives as long as the model).
    hooks = capture.attached_capture(model)
    go_on = hooks.all_finite if halt and hooks is not None else None
    val_key = None if val is None else (tuple(val[0].shape), tuple(val[1].shape), val[2] is not None)
    # A callback that wraps the model's `train_step` for the run (`HessianProbe`) gets loops of its own.
    key = (hooks, model.__dict__.get("train_step"), go_on is not None, tuple(X_t.shape), tuple(y_t.shape), X_t.dtype, batch_size, epochs_per_call, jit, sw_t is not None, val_key)
    loops = _LOOPS.setdefault(model, weakref.WeakKeyDictionary()).setdefault(model.optimizer, {})
    if key not in loops:
        loops[key] = _make_loop(model, batch_size, n_full, rest, jit, epochs_per_call, go_on, sw_t is not None, val)
    run = loops[key]
    epoch = 0
    logs = None
    chunk = 1  # epochs in the next call: grows until a call takes about SECONDS_PER_CALL
    while epoch < epochs and not model.stop_training:
        raise_pending()  # a Ctrl-C or SIGTERM whose exception TensorFlow swallowed in a __del__
        n_epochs = min(chunk, epochs_per_call, epochs - epoch)
        callback_list.on_epoch_begin(epoch)
        callback_list.on_train_batch_begin(0)
        start = time.perf_counter()
        with quiet_native_logs() if epoch == 0 else contextlib.nullcontext():  # XLA's first-compile notices
            n_ran, history = run(X_t, y_t, tf.constant(n_epochs), *([] if sw_t is None else [sw_t]), *([] if val is None else [v for v in val if v is not None]))
        n_epochs = int(n_ran)  # fewer when a non-finite step stopped the loop
        history = {k: v.numpy()[:n_epochs] for k, v in history.items()}
        if epoch == 0:  # the first call traces and compiles: its time says nothing of a step
            chunk = 4
        else:
            per_epoch = (time.perf_counter() - start) / n_epochs
            chunk = max(1, min(4 * n_epochs, int(SECONDS_PER_CALL / per_epoch)))
        last = {k: float(v[-1]) for k, v in history.items()}
        callback_list.on_train_batch_end(steps_per_epoch - 1, last)
        for i in range(n_epochs):
            if i > 0:
                callback_list.on_epoch_begin(epoch)
            logs = {k: float(v[i]) for k, v in history.items()}
            callback_list.on_epoch_end(epoch, logs)
            epoch += 1
            if model.stop_training:
                break
    callback_list.on_train_end(logs=logs)
    return model.history


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
