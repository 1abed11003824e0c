"""The training jobs behind `scripts/`: plain functions that a test or a notebook can call.

`run_linear` and `run_xor` train a Keras model with `kerasbp.train` (on JAX and torch, for which
`kerasbp.train` is not yet written, with what it equals: `model.fit(shuffle=False)`) and a
`GradientLogger` and return a dict (what the scripts print with `--json`); `run_compare` runs `kerasbp.compare` and
returns its `ComparisonReport`. Their command lines are in `kerasbp.cli`. A run whose loss or
gradients turn non-finite stops at that step, inside the compiled loop, and raises `Diverged`,
which names the same step as `health()` on the saved log. `log_gradients` picks the format from
the suffix (`kerasbp.report.LOG_FORMATS`): `.npz` saves the whole log, `.csv` the statistics table.

The optimizer names come from the NumPy twin's registry (`kerasbp.reference.optimizers.OPTIMIZERS`,
keyed by Keras's names) and the loss names from the twin's `kerasbp.reference.losses.LOSS_NAMES`,
so a job accepts exactly what the twin can check.

Example:
    >>> result = run_xor(epochs=3, seed=0)   # doctest: +SKIP
    >>> result["steps"], result["learned"]   # doctest: +SKIP
    (3, False)
"""

import contextlib
import os
import sys
import time
import warnings

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_choice, check_positive_float, check_positive_int, check_seed, check_xy
from kerasbp.comparison import compare
from kerasbp.data import Standardizer, least_squares, linear_data, load_xy_csv, xor_data
from kerasbp.logger import GradientLogger, sidecar
from kerasbp.models import compile_model, linear_model, xor_model
from kerasbp.precision import floatx
from kerasbp.reference.losses import LOSS_NAMES
from kerasbp.reference.optimizers import OPTIMIZERS
from kerasbp.report import check_log_path
from kerasbp.training import train

#: The quantiles at which `run_linear` predicts: one input column's quartiles, or, with several
#: inputs, the rows of the data whose target sits at these quantiles.
PREDICT_QUANTILES = (0.25, 0.5, 0.75)

#: Defaults of `run_xor`: they learn XOR for every seed 0-9 (checked by the test suite).
XOR_DEFAULTS = {"optimizer": "adam", "learning_rate": 0.05, "epochs": 1000, "loss": "binary_crossentropy"}

#: The scripts log every step up to this many steps, then every k-th step to stay under it
#: (about 30 MB of statistics for the XOR network).
MAX_LOGGED_STEPS = 100_000


class Diverged(RuntimeError):
    """Training produced a non-finite loss or gradient.

    Args:
        message: str, what happened and what to try.
        epoch: int, 0-based epoch of the first non-finite value.
        step: int, 0-based optimizer step of the first non-finite value.

    Attributes:
        epoch: int, 0-based epoch of the first non-finite value.
        step: int, 0-based optimizer step of the first non-finite value.
    """

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def _check_run(optimizer, learning_rate, epochs, log_gradients):
    """The arguments every job takes, checked before any data is read or any model built."""
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    if learning_rate is not None:
        learning_rate = check_positive_float("learning_rate", learning_rate)
    epochs = check_positive_int("epochs", epochs)
    if log_gradients is not None:
        log_gradients = check_log_path("log_gradients", log_gradients)
    return optimizer, learning_rate, epochs, log_gradients


def _learning_rate(given, model):
    """The learning rate to report: the number the caller gave (`0.05`, not the float32 value
    `0.05000000074505806` that the optimizer holds), or Keras's default for the optimizer."""
    if given is not None:
        return given
    return float(str(np.float32(model.optimizer.learning_rate.numpy())))  # shortest float32 repr: 0.01


def _save_log(logger, path):
    """Save `logger` to `path` in the format its suffix names: `.csv` the statistics table, else `.npz`.

    Returns:
        None, or a one-line message when the file could not be written (e.g. a full disk): the
        path, the error and about how much room the log needed. Nothing is left at `path` then
        (`kerasbp.files.atomic_write`), and the sidecar keeps what it holds.
    """
    try:
        if os.path.splitext(path)[1].lower() == ".csv":
            logger.to_csv(path)
        else:
            logger.to_npz(path)
    except OSError as e:
        needed = sum(np.asarray(a).nbytes for a in logger._arrays(gradients=logger.record == "full").values())
        kept = ""
        if sidecar.chunk_names(path):
            kept = f"; the steps it saved while training are in {sidecar.sidecar_path(path)!r}: kerasbp.load_gradient_log({path!r}) recovers them"
        return f"could not save the gradient log to {path!r}: {e.strerror or e} (it needs about {needed / 2**20:.1f} MB); the run's results are above{kept}"
    return None


class _KeepLog(keras.callbacks.Callback):
    """Writes the logger's new rows to a sidecar beside `path` every few seconds while training
    (`kerasbp.logger.sidecar`), so a killed run keeps them; the final save removes it."""

    epochs_per_call_safe = True  # kerasbp.train may run several epochs per call with it

    def __init__(self, logger, path):
        super().__init__()
        self.logger = logger
        try:
            self.writer = sidecar.SidecarWriter(path)
        except OSError as e:  # before training: a place the job cannot write to is bad input
            raise ValueError(
                f"`log_gradients` must be a path in a folder this process can write to: creating "
                f"{sidecar.sidecar_path(path)!r} beside it failed ({e.strerror or e}). Received: log_gradients={path!r}"
            ) from None
        self.failed = None

    def on_epoch_end(self, epoch, logs=None):
        if self.failed is None:
            try:
                self.writer.flush(self.logger)
            except OSError as e:  # a full disk costs the sidecar, not the run
                self.failed = e


class _Progress(keras.callbacks.Callback):
    """On a terminal, one line on stderr, rewritten every `every_seconds`: epoch, loss, time.

    Only runs that take longer than `every_seconds` show it, and only when stderr is a terminal
    (so piped output and tests see no progress lines)."""

    epochs_per_call_safe = True  # kerasbp.train may run several epochs per call with it

    def __init__(self, epochs, every_seconds=2.0, stream=None):
        super().__init__()
        self.epochs, self.every_seconds = epochs, every_seconds
        self.stream = sys.stderr if stream is None else stream
        self.shown = False

    def on_train_begin(self, logs=None):
        self.start = self.last = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now - self.last >= self.every_seconds:
            self.last, self.shown = now, True
            loss = (logs or {}).get("loss", float("nan"))
            self.stream.write(f"\repoch {epoch + 1}/{self.epochs} ({100 * (epoch + 1) / self.epochs:.1f}%), loss {loss:.6g}, {now - self.start:.0f} s ")
            self.stream.flush()

    def on_train_end(self, logs=None):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _local_strategy(devices):
    """`devices` as a strategy: None for None or 1, else a `tf.distribute.MirroredStrategy` over
    that many devices (`kerasbp.logger.replicas.local_strategy`).

    Raises:
        ValueError, TypeError: for a `devices` that is not a positive integer, or more than one
            device on a backend other than TensorFlow (strategies are `tf.distribute`'s).
    """
    if devices is None or check_positive_int("devices", devices) == 1:
        return None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"`devices` above 1 needs the TensorFlow backend (it trains with tf.distribute.MirroredStrategy); Keras is running "
            f"on {keras.backend.backend()!r}. Received: devices={devices}"
        )
    from kerasbp.logger import replicas  # tf.distribute glue: imports TensorFlow

    return replicas.local_strategy(devices)


def _scope(strategy):
    """The strategy's scope, or no scope for None."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def _fit(model, X, y, epochs, batch_size, log_gradients, hint, strategy=None):
    """Train with `kerasbp.train` (under a `strategy`, and on JAX and torch: `model.fit`,
    unshuffled, as `train` refuses them) and a GradientLogger; raise `Diverged` on non-finite values (with `hint` in the
    message).

    The log is saved to `log_gradients` even when interrupted, and reaches a sidecar beside it
    every few seconds while training. Returns `(history, logger, log_error)`, `log_error` None
    or the message of a save that failed."""
    total_steps = epochs * -(-len(X) // min(batch_size, len(X)))
    logger = GradientLogger(every_n_steps=max(1, -(-total_steps // MAX_LOGGED_STEPS)), on_nonfinite="stop")
    callbacks = [logger]
    if sys.stderr.isatty():
        callbacks.append(_Progress(epochs))
    if log_gradients:
        keeper = _KeepLog(logger, log_gradients)
        callbacks.append(keeper)
    log_error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            if strategy is None:
                history = train(model, X, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks)
            else:
                import tensorflow as tf  # under a tf.distribute strategy

                # One repeated dataset with the batches of fit(shuffle=False): its distributed
                # iterator is made once, not per epoch (about 10x faster for XOR's 1-step epochs).
                data = tf.data.Dataset.from_tensor_slices((X, y)).batch(batch_size).repeat()
                steps = -(-len(X) // batch_size)
                history = model.fit(data, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=0)
        finally:  # also after Ctrl-C or SIGTERM: every completed step is kept
            if log_gradients:
                log_error = _save_log(logger, log_gradients)  # the folder and suffix were checked before training
                if log_error is None:
                    keeper.writer.remove()
                elif sys.exc_info()[0] is not None:  # interrupted: say it now, the result will not be printed
                    print(f"error: {log_error}", file=sys.stderr)
            if log_gradients and log_error is None and sys.exc_info()[0] is not None:
                print(f"gradient log of the {len(logger.steps)} logged steps that ran saved to {log_gradients}", file=sys.stderr)
    losses = np.asarray(history.history["loss"])  # (epochs_run,)
    health = logger.health()  # names the first logged step whose loss or gradient is NaN/Inf
    if health.nonfinite or not np.all(np.isfinite(losses)):
        if health.nonfinite:
            row = int(np.flatnonzero(logger.steps == health.figures["first_nonfinite_step"])[0])
            step, epoch = int(logger.steps[row]), int(logger.epochs[row])
        else:  # between logged steps: the History names the epoch
            epoch = int(np.flatnonzero(~np.isfinite(losses))[0])
            step = epoch * (total_steps // epochs)
        where = f"step {step}" if logger.every_n_steps == 1 else f"logged every {logger.every_n_steps} steps: by step {step}"
        raise Diverged(
            f"training diverged: the loss or a gradient became NaN/Inf at epoch {epoch + 1} ({where}). "
            + hint
            + (f". Also: {log_error}" if log_error else ""),
            epoch,
            step,
        )
    return history, logger, log_error


def _parallel(logger):
    """`devices` and `noise_scale` of a job's result."""
    noise = logger.noise_scale() if logger.n_replicas > 1 else None
    return {"devices": logger.n_replicas, "noise_scale": None if noise is None or not np.isfinite(noise) else noise}


def run_linear(
    optimizer="sgd",
    learning_rate=None,
    epochs=100,
    batch_size=10,
    seed=0,
    csv=None,
    x_columns=None,
    y_column=None,
    standardize=False,
    log_gradients=None,
    devices=None,
):
    """Linear regression with `linear_model`, reported against ordinary least squares, in data units.

    Defaults repeat the Keras linear regression that kerasbp grew from: its 100 points
    (`linear_data()`, `y = 2x + 1 + noise`), SGD at Keras's default learning rate 0.01, MSE,
    100 epochs, batch size 10. The least-squares answer is `kerasbp.data.least_squares`.

    Everything returned is in the data's units, with or without `standardize`: the coefficients
    learned on standardized data are mapped back
    (`y = my + sy * (sum_j w_j (x_j - mx_j) / sx_j + b)`), and the mean squared errors of the
    trained model and of least squares are computed on the data. Only `final_loss` (Keras's
    History) is in the units trained on.

    Predictions are made at points inside the data: for one input column at its quartiles, for
    several at the three rows of the data whose target is at the target's quartiles
    (`PREDICT_QUANTILES`; the nearest rank, so each is a real row).

    Args:
        optimizer: str, a name in `kerasbp.reference.optimizers.OPTIMIZERS` (`"sgd"`, `"adam"`,
            `"rmsprop"`; any case). Defaults to `"sgd"`.
        learning_rate: positive float, or None for Keras's default (0.01 for SGD, 0.001 for Adam
            and RMSprop). Defaults to None.
        epochs: int >= 1. Defaults to 100.
        batch_size: int >= 1. Defaults to 10.
        seed: int in `[0, 2**31)`, or None for random initial weights: the random seed of the
            initial weights. Defaults to 0.
        csv: path of a CSV file with a header row, or None for `linear_data()`. Defaults to None.
        x_columns: list of input column names (or one comma-separated string); needed with `csv`.
            Defaults to None.
        y_column: str, the target column's name; needed with `csv`. Defaults to None.
        standardize: bool, train on inputs and target scaled to zero mean and unit variance, and
            report in the data's own units. Defaults to False.
        log_gradients: path ending in `.npz` (the whole gradient log, read back with
            `kerasbp.load_gradient_log`) or `.csv` (the statistics table, an export only), in an
            existing folder; saved even when training diverges or is interrupted. None saves
            nothing. Defaults to None.
        devices: int >= 1 or None: train data-parallel with `tf.distribute.MirroredStrategy`
            on that many devices (`kerasbp.logger.replicas.local_strategy`: GPUs, else logical
            CPU devices; ask first thing in a fresh process), with `model.fit` (unshuffled);
            TensorFlow backend only. None or 1: one device, with `kerasbp.train`. Defaults to None.

    Returns:
        dict with
        - `coefficients` (list of `n_features` floats), `intercept`, `ols_coefficients`,
          `ols_intercept` (least squares), all in data units;
        - `relative_gaps`: dict `{column name: |learned - ls| / |ls|, ..., "intercept": ...}`; the
          intercept's gap is relative to `max(|ls intercept|, std(target))` so that a centred
          target does not divide by about zero; None for a least-squares coefficient of exactly 0;
        - `gap`: the largest absolute difference to least squares over coefficients and intercept;
        - `mse`, `ols_mse`: mean squared error on the data, in data units, of the trained model and
          of least squares;
        - `log_error`: None, or why `log_gradients` could not be written (e.g. a full disk);
        - `final_loss`: last epoch's History loss (in the units trained on: standardized with
          `standardize`), the mean of its batches' losses before each update;
        - `predictions`: list of `{"x": [n_features floats], "y": prediction, "target": the data's
          target at that row (several inputs) or None}`, and `predict_at`, what they are at;
        - `columns` (input names), `target` (the target's name), `optimizer`, `learning_rate` (as
          given, or Keras's default), `epochs`, `batch_size`, `standardize`, `n_samples`;
        - `warnings`: list of str, e.g. when the least-squares answer is not unique;
        - `devices` (int, replicas trained on) and `noise_scale` (McCandlish et al.'s `B_simple`
          from the replicas, `GradientLog.noise_scale()`, in examples; None on one device);
        - `backend`: str, the Keras backend it trained on (`"tensorflow"`, `"jax"`, `"torch"`).

    Raises:
        ValueError, TypeError: for bad arguments or data (see `load_xy_csv`, `check_xy`), such as
            `csv` without `x_columns` and `y_column`, a `log_gradients` suffix other than `.npz`
            and `.csv` or a folder this process cannot write to, or a constant column with
            `standardize`.
        FileNotFoundError: for a missing CSV file.
        Diverged: if the loss or a gradient became non-finite.

    Example:
        >>> r = run_linear(epochs=5)                 # doctest: +SKIP
        >>> r["predict_at"], len(r["predictions"])   # doctest: +SKIP
        ('the quartiles of x', 3)
    """
    optimizer, learning_rate, epochs, log_gradients = _check_run(optimizer, learning_rate, epochs, log_gradients)
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    if csv is not None:
        if x_columns is None or y_column is None:  # given but empty: load_xy_csv says what is wrong with it
            missing = " and ".join(f"`{name}`" for name, value in (("x_columns", x_columns), ("y_column", y_column)) if value is None)
            raise ValueError(f"`csv` needs `x_columns` and `y_column`: the input column names and the target column's name. Received: csv={csv!r} without {missing}")
        X, y = load_xy_csv(csv, x_columns, y_column)
        columns = [c.strip() for c in x_columns.split(",")] if isinstance(x_columns, str) else [c.strip() for c in x_columns]
        target = y_column.strip()
    else:
        if x_columns is not None or y_column is not None:
            raise ValueError("`x_columns` and `y_column` need `csv`, the file to read them from")
        X, y = linear_data()
        columns, target = ["x"], "y"
    X, y = check_xy(X, y, dtype="float64")  # (n, n_features), (n, 1)
    ols_coef, ols_intercept = least_squares(X, y)
    notes = _least_squares_warnings(X, columns)
    if standardize:
        sx, sy = Standardizer(X, "X", columns), Standardizer(y, "y", [target])
        X_train, y_train = sx.transform(X), sy.transform(y)
    else:
        X_train, y_train = X, y
    strategy = _local_strategy(devices)
    with _scope(strategy):
        model = compile_model(linear_model(X.shape[1], seed=seed), optimizer, learning_rate, loss="mse")
    hint = "Try a smaller --learning-rate" + ("" if standardize else ", or --standardize to scale the inputs")
    history, logger, log_error = _fit(model, X_train, y_train, epochs, batch_size, log_gradients, hint, strategy)
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())  # (n_features, 1), (1,)
    coef, intercept = kernel[:, 0], float(bias[0])
    if standardize:
        # y = my + sy * (sum_j w_j (x_j - mx_j) / sx_j + b)
        coef = sy.std[0] * coef / sx.std
        intercept = float(sy.mean[0] + sy.std[0] * intercept - coef @ sx.mean)
    gap = float(max(np.max(np.abs(coef - ols_coef)), abs(intercept - ols_intercept)))
    relative_gaps = {name: _relative(c, o, abs(o)) for name, c, o in zip(columns, coef, ols_coef, strict=True)}
    relative_gaps["intercept"] = _relative(intercept, ols_intercept, max(abs(ols_intercept), float(y.std())))
    mse = float(np.mean((X @ coef + intercept - y[:, 0]) ** 2))
    ols_mse = float(np.mean((X @ ols_coef + ols_intercept - y[:, 0]) ** 2))
    points, targets, predict_at = _prediction_points(X, y, columns, target)
    predictions = [
        {"x": [float(v) for v in p], "y": float(coef @ p + intercept), "target": t} for p, t in zip(points, targets, strict=True)
    ]
    return {
        "coefficients": coef.tolist(),
        "intercept": intercept,
        "ols_coefficients": ols_coef.tolist(),
        "ols_intercept": ols_intercept,
        "relative_gaps": relative_gaps,
        "gap": gap,
        "mse": mse,
        "ols_mse": ols_mse,
        "final_loss": float(history.history["loss"][-1]),
        "optimizer": optimizer,
        "learning_rate": _learning_rate(learning_rate, model),
        "log_error": log_error,
        "epochs": epochs,
        "batch_size": batch_size,
        "standardize": bool(standardize),
        "n_samples": len(X),
        "columns": columns,
        "target": target,
        "predict_at": predict_at,
        "predictions": predictions,
        "warnings": notes,
        "backend": keras.backend.backend(),
        **_parallel(logger),
    }


def _relative(value, reference, scale):
    """`|value - reference| / scale`, or None when `scale` is 0 (0.0 if the two are equal)."""
    if scale > 0:
        return float(abs(value - reference) / scale)
    return 0.0 if value == reference else None


def _least_squares_warnings(X, columns):
    """A warning (list of one str) when `[X, 1]` has dependent columns, so that many coefficient
    vectors fit equally well and `least_squares` gives only the minimum-norm one; else `[]`."""
    A = np.hstack([X, np.ones((len(X), 1))])  # (n, n_features + 1)
    rank = int(np.linalg.matrix_rank(A))
    if rank == A.shape[1]:
        return []
    why = (
        f"{len(X)} row(s) for {len(columns)} input column(s) and an intercept"
        if len(X) < A.shape[1]
        else "some input columns are constant or linear combinations of others"
    )
    return [
        f"the least-squares answer is not unique ({why}: rank {rank} of {A.shape[1]}): many coefficients "
        "fit the data equally well, the one shown is the smallest, and the trained model may differ "
        "from it without being wrong. Give more rows, or drop dependent columns."
    ]


def _prediction_points(X, y, columns, target):
    """`(points, targets, description)`: where `run_linear` predicts, inside the data.

    One input column: its quartiles (no data target there: None). Several: the rows whose target
    is at the target's quartiles (nearest rank), with their targets.
    """
    q = np.asarray(PREDICT_QUANTILES)
    if X.shape[1] == 1:
        points = np.quantile(X[:, 0], q)[:, None]  # (3, 1)
        return points, [None] * len(q), f"the quartiles of {columns[0]}"
    order = np.argsort(y[:, 0], kind="stable")
    rows = order[np.rint(q * (len(X) - 1)).astype(int)]  # (3,)
    return X[rows], [float(t) for t in y[rows, 0]], f"the rows of the data at the quartiles of {target}"


def run_xor(
    optimizer=XOR_DEFAULTS["optimizer"],
    learning_rate=XOR_DEFAULTS["learning_rate"],
    epochs=XOR_DEFAULTS["epochs"],
    hidden_units=4,
    activation="sigmoid",
    loss=XOR_DEFAULTS["loss"],
    seed=0,
    log_gradients=None,
    devices=None,
):
    """The classic NumPy XOR example's 2-4-1 sigmoid network, trained by Keras on the full batch.

    The four rows of `xor_data()` make one batch, so each epoch is one optimizer step.

    Args:
        optimizer: str, a name in `kerasbp.reference.optimizers.OPTIMIZERS` (`"sgd"`, `"adam"`,
            `"rmsprop"`; any case). Defaults to `"adam"`.
        learning_rate: positive float, or None for Keras's default. Defaults to 0.05.
        epochs: int >= 1. Defaults to 1000.
        hidden_units: int >= 1. Defaults to 4.
        activation: str, the hidden activation: `"sigmoid"`, `"tanh"`, `"relu"` or `"linear"`.
            Defaults to `"sigmoid"`.
        loss: str, a name in `kerasbp.reference.losses.LOSS_NAMES` (`"binary_crossentropy"`,
            `"bce"`, `"mse"`, `"mean_squared_error"`). Defaults to `"binary_crossentropy"`.
        seed: int in `[0, 2**31)`, or None for random initial weights: the random seed of the
            initial weights. Defaults to 0.
        log_gradients: path ending in `.npz` (the whole gradient log) or `.csv` (the statistics
            table), in an existing folder, or None. Defaults to None.
        devices: int >= 1 or None: train data-parallel with `tf.distribute.MirroredStrategy`
            on that many devices (`kerasbp.logger.replicas.local_strategy`: GPUs, else logical
            CPU devices; ask first thing in a fresh process), with `model.fit` (unshuffled);
            TensorFlow backend only. None or 1: one device, with `kerasbp.train`. Defaults to None.

    Returns:
        dict with `inputs` (4 x 2 list of ints), `targets` (list of 4 ints), `predictions` (list
        of 4 outputs), `learned` (bool: every output on the right side of 0.5), `final_loss`,
        `optimizer`, `learning_rate` (as given, or Keras's default), `loss`, `epochs`, `steps`
        (optimizer steps taken), `seed`, `log_error` (None, or why `log_gradients` could not be
        written), `devices`, `noise_scale` and `backend` (as in `run_linear`).

    Raises:
        ValueError, TypeError: for bad arguments.
        Diverged: if the loss or a gradient became non-finite.
    """
    optimizer, learning_rate, epochs, log_gradients = _check_run(optimizer, learning_rate, epochs, log_gradients)
    loss = check_choice("loss", loss, LOSS_NAMES)
    X, y = xor_data()  # (4, 2), (4, 1)
    strategy = _local_strategy(devices)
    with _scope(strategy):
        model = compile_model(xor_model(hidden_units, activation, "sigmoid", seed=check_seed(seed)), optimizer, learning_rate, loss=loss)
    history, logger, log_error = _fit(model, X, y, epochs, 4, log_gradients, "Try a smaller --learning-rate", strategy)
    predictions = keras.ops.convert_to_numpy(model(X, training=False))[:, 0].astype(np.float64)  # (4,)
    learned = bool(np.all((predictions > 0.5) == (y[:, 0] > 0.5)))
    return {
        "inputs": X.astype(int).tolist(),
        "targets": y[:, 0].astype(int).tolist(),
        "predictions": predictions.tolist(),
        "learned": learned,
        "final_loss": float(history.history["loss"][-1]),
        "optimizer": optimizer,
        "learning_rate": _learning_rate(learning_rate, model),
        "loss": loss,
        "epochs": epochs,
        "steps": int(model.optimizer.iterations.numpy()),
        "seed": seed,
        "log_error": log_error,
        "backend": keras.backend.backend(),
        **_parallel(logger),
    }


def run_compare(task="xor", optimizer="sgd", learning_rate=None, epochs=None, batch_size=None, dtype="float32", loss=None, seed=0):
    """`kerasbp.compare` on the XOR network or the linear model, built in `dtype`.

    Args:
        task: `"xor"` (the 2-4-1 sigmoid network on the XOR truth table) or `"linear"`
            (`Dense(1)` on the 100 points of `linear_data()`). Defaults to `"xor"`.
        optimizer: str, a name in `kerasbp.reference.optimizers.OPTIMIZERS` (`"sgd"`, `"adam"`,
            `"rmsprop"`; any case). Defaults to `"sgd"`.
        learning_rate: positive float, or None for Keras's default. Defaults to None.
        epochs: int >= 1, or None for 50 (xor) or 5 (linear). Defaults to None.
        batch_size: int >= 1, or None for 3 (xor) or 30 (linear): both leave a partial last
            batch. Defaults to None.
        dtype: `"float32"` or `"float64"`. Defaults to `"float32"`.
        loss: str, a name in `kerasbp.reference.losses.LOSS_NAMES`, or None for binary
            cross-entropy on XOR and MSE on the linear model. Defaults to None.
        seed: int in `[0, 2**31)`: the random seed of the initial weights. Defaults to 0.

    Returns:
        `kerasbp.ComparisonReport`.

    Raises:
        ValueError, TypeError: for bad arguments.
    """
    task = check_choice("task", task, ("xor", "linear"))
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    dtype = check_choice("dtype", dtype, ("float32", "float64"))
    if learning_rate is not None:
        learning_rate = check_positive_float("learning_rate", learning_rate)
    epochs = check_positive_int("epochs", epochs if epochs is not None else (50 if task == "xor" else 5))
    batch_size = check_positive_int("batch_size", batch_size if batch_size is not None else (3 if task == "xor" else 30))
    loss = check_choice("loss", loss or ("binary_crossentropy" if task == "xor" else "mse"), LOSS_NAMES)
    seed = check_seed(seed)
    X, y = xor_data(dtype) if task == "xor" else linear_data()
    with floatx(dtype):
        model = xor_model(seed=seed) if task == "xor" else linear_model(seed=seed)
        compile_model(model, optimizer, learning_rate, loss=loss)
    return compare(model, X, y, epochs=epochs, batch_size=batch_size, dtype=dtype)
