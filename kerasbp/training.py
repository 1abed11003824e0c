"""`train`: many small epochs fast, with the results of `model.fit(..., shuffle=False)`.

`model.fit` pays a fixed cost per epoch (building an epoch iterator, a data pipeline, callbacks:
about 50 ms on TensorFlow), which dominates when an epoch is one step of a 4-sample XOR batch.
`train` calls the model's own `train_step`, so the loss, gradients, optimizer and metrics are
exactly Keras's, in a loop of the backend's: a `tf.function` on TensorFlow
(`kerasbp/training_tf.py`), a jitted `jax.lax.while_loop` on JAX (`training_jax.py`), a Python
loop on torch (`training_torch.py`). This module holds the API, the checks and the host loop that
runs the backend's loop in calls of several epochs and replays the callbacks between them.
"""

import importlib
import time

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_positive_int, check_xy
from kerasbp.interrupts import raise_pending
from kerasbp.logger.callback import GradientLogger
from kerasbp.logger.hooks import ATTACHED

#: The Keras backends `train` runs on -> the module of its loop there.
BACKEND_LOOPS = {"tensorflow": "kerasbp.training_tf", "jax": "kerasbp.training_jax", "torch": "kerasbp.training_torch"}

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
    `fit(shuffle=False)`. Each step is the model's own `train_step` (forward pass, loss,
    gradients, the optimizer's update, metrics); the History holds the same per-epoch logs as
    `fit`'s: the batch-size weighted mean of each batch's loss computed before that batch's
    update. The loop around the steps depends on the Keras backend:

        - TensorFlow: traced once into a `tf.function` (XLA-compiled with `jit_compile`) that
          loops over the epochs of a call.
        - JAX: Keras's stateless `train_step` (the one `fit` jits) inside one jitted
          `jax.lax.while_loop` over the epochs of a call, always XLA-compiled. The epoch count,
          the data and the optimizer's variables (the learning rate among them) are arguments
          of the jitted function, so later calls with another epoch count, new data of the same
          shape and dtype, a learning rate set by assignment or a new `GradientLogger` with the
          same options trace nothing. Float64 needs JAX's 64-bit mode (`JAX_ENABLE_X64=1`).
        - torch: a Python loop over the epochs and batches of a call, each step the model's
          eager `train_step`, as `fit` runs it (nothing compiled; `jit_compile` is ignored).
          It saves `fit`'s per-epoch iterator and callbacks, not the cost of a step.

        A `GradientLogger` records every step on each backend, reading its device buffers back
        between calls, as in `fit`.

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
        model: a compiled `keras.Model` on the TensorFlow, JAX or torch backend.
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
            evaluated after every epoch in batches of `batch_size`, inside the loop, giving
            `val_` logs as `fit` does. Defaults to None.
        shuffle: False, True (seed 0) or an int seed: permute the samples once before training
            (see above). Defaults to False.
        jit_compile: True, False or `"auto"`, TensorFlow only (JAX always compiles the loop
            with XLA, torch never compiles it): compile the loop with XLA (about twice as fast
            per step on a CPU for tiny networks, but its compile costs about half a second;
            XLA may fuse operations differently from `fit`, which Keras does not XLA-compile on
            a CPU, so results agree to float rounding rather than bit for bit). `"auto"` uses
            XLA for runs of at least `AUTO_XLA_MIN_STEPS` steps. Ignored (False) when the model
            was compiled with `run_eagerly=True`. Defaults to `"auto"`.

    Returns:
        `keras.callbacks.History`, also set as `model.history`.

    Raises:
        RuntimeError: on a Keras backend other than TensorFlow, JAX and torch.
        ValueError, TypeError: for bad arrays (see `kerasbp.checks.check_xy`), bad
            hyperparameters, or a model that is not compiled.
        ValueError: for a model made under a `tf.distribute` strategy (or trained inside one's
            scope): the compiled loop calls `train_step` without `strategy.run`, so it would
            neither split the batch over the replicas nor all-reduce their gradients; use
            `model.fit`. Likewise on JAX under a `keras.distribution`.

    Example:
        >>> from kerasbp import xor_data, xor_model, compile_model
        >>> X, y = xor_data()
        >>> model = compile_model(xor_model(seed=0), "adam", learning_rate=0.1)
        >>> history = train(model, X, y, epochs=500, batch_size=4)
        >>> len(history.history["loss"])
        500
    """
    backend = keras.backend.backend()
    if backend not in BACKEND_LOOPS:
        raise RuntimeError(f"kerasbp.train supports the backends {list(BACKEND_LOOPS)}. Keras is running on {backend!r}")
    loops = importlib.import_module(BACKEND_LOOPS[backend])
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("`model` must be compiled before training: call compile_model(model, ...) first")
    loops.check_model(model)
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
        val = (Xv, yv, swv)
    batch_size = min(batch_size, n)
    steps_per_epoch = -(-n // batch_size)
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
    if jit_compile == "auto":
        jit_compile = epochs * steps_per_epoch >= AUTO_XLA_MIN_STEPS
    jit = jit_compile and not model.run_eagerly
    # A GradientLogger that stops or raises on NaN/Inf stops the loop at that very step.
    halt = any(isinstance(c, GradientLogger) and c.on_nonfinite != "warn" for c in callbacks)
    try:
        return _train(loops, model, (X, y, sw, val), batch_size, epochs, epochs_per_call, callback_list, jit, halt)
    except BaseException:
        # An exception or KeyboardInterrupt: unhook GradientLoggers, keeping what they logged.
        for callback in callbacks:
            if hasattr(callback, "detach"):
                callback.detach()
        raise


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


def _train(loops, model, data, batch_size, epochs, epochs_per_call, callback_list, jit, halt):
    """Run the epochs in calls of the backend's loop (`loops.make_run`), replaying the callbacks'
    epoch hooks after each call."""
    X, y = data[0], data[1]
    steps_per_epoch = -(-X.shape[0] // batch_size)
    # Build the model, its compiled loss and metrics, and the optimizer's variables now, as
    # `fit` and `train_on_batch` do, so that no variable is created inside the loop.
    model._symbolic_build(data_batch=(X[:1], y[:1], None))
    model.stop_training = False
    own_step = model.__dict__.get("train_step")  # a wrapper of the user's, before the callbacks add theirs
    callback_list.on_train_begin()
    # Looked up after on_train_begin: a GradientLogger attaches its capture there, and a loop
    # traced with those hooks serves only that capture (which lives as long as the model).
    run = loops.make_run(model, data, batch_size, epochs_per_call, jit, ATTACHED.get(model), halt, own_step)
    epoch = 0
    logs = None
    chunk = 1  # epochs in the next call: grows until a call takes about SECONDS_PER_CALL
    while epoch < epochs and not model.stop_training:
        raise_pending()  # a Ctrl-C or SIGTERM whose exception TensorFlow swallowed in a __del__
        n_epochs = min(chunk, epochs_per_call, epochs - epoch)
        callback_list.on_epoch_begin(epoch)
        callback_list.on_train_batch_begin(0)
        start = time.perf_counter()
        n_epochs, history = run(n_epochs)  # fewer epochs when a non-finite step stopped the loop
        if n_epochs == 0:  # halted before its first step: a non-finite step ended the last call
            break
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
