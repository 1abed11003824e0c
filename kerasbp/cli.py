"""The two training jobs behind `scripts/train_linear.py` and `scripts/train_xor.py`.

`run_linear` and `run_xor` are plain functions that return a dict (what `--json` prints), so tests
and notebooks call them directly; `main_linear` and `main_xor` are their argparse front ends.
Bad input ends a script with one line on stderr and exit status 2; a run whose loss or gradients
turn non-finite ends with exit status 1 and says at which epoch and step.
"""

import argparse
import json
import os
import sys

import numpy as np

from kerasbp.checks import check_choice, check_output_path, check_positive_float, check_positive_int, check_seed, check_xy
from kerasbp.data import Standardizer, linear_data, load_xy_csv, xor_data

#: Inputs at which `run_linear` reports predictions, as in the seed notebook.
PREDICT_AT = (0.3, 0.5, 0.7)


class Diverged(RuntimeError):
    """Training produced a non-finite loss or gradient.

    Attributes:
        epoch: int, 0-based epoch of the first non-finite value.
        step: int, 0-based optimizer step of the first non-finite value.
    """

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def ols(X, y):
    """Ordinary least squares with an intercept, in closed form.

    Solves `min ||X w + b - y||^2` with `np.linalg.lstsq` on `[X, 1]`.

    Args:
        X: float array `(n_samples, n_features)`.
        y: float array `(n_samples, 1)`.

    Returns:
        `(coefficients, intercept)`: float64 array `(n_features,)` and float.
    """
    A = np.hstack([np.asarray(X, np.float64), np.ones((len(X), 1))])  # (n, k + 1)
    solution = np.linalg.lstsq(A, np.asarray(y, np.float64).ravel(), rcond=None)[0]
    return solution[:-1], float(solution[-1])


def _check_run(optimizer, learning_rate, epochs, log_gradients):
    """The arguments every job takes, checked before any data is read or any model built."""
    optimizer = check_choice("optimizer", optimizer, ("sgd", "adam", "rmsprop"))
    if learning_rate is not None:
        learning_rate = check_positive_float("learning_rate", learning_rate)
    epochs = check_positive_int("epochs", epochs)
    if log_gradients is not None:
        log_gradients = check_output_path("log_gradients", log_gradients)
    return optimizer, learning_rate, epochs, log_gradients


#: The scripts log every step up to this many steps, then every k-th step to stay under it
#: (about 30 MB of statistics for the XOR network).
MAX_LOGGED_STEPS = 100_000


def _fit(model, X, y, epochs, batch_size, log_gradients, hint):
    """Train with `kerasbp.train` and a GradientLogger; raise `Diverged` on non-finite values
    (with `hint` in the message). The log is saved to `log_gradients` even when interrupted."""
    import warnings

    from kerasbp.callbacks import GradientLogger
    from kerasbp.training import train

    total_steps = epochs * -(-len(X) // min(batch_size, len(X)))
    logger = GradientLogger(every_n_steps=max(1, -(-total_steps // MAX_LOGGED_STEPS)), on_nonfinite="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            history = train(model, X, y, epochs=epochs, batch_size=batch_size, callbacks=[logger])
        finally:  # also after Ctrl-C: every completed step is kept
            if log_gradients:
                logger.to_npz(log_gradients)  # the folder was checked before training
    losses = np.asarray(history.history["loss"])
    bad_loss = np.flatnonzero(~np.isfinite(logger.losses))
    bad_grad = np.flatnonzero(logger.stats_array()[:, :, 6].sum(axis=1) > 0)
    firsts = bad_loss[:1].tolist() + bad_grad[:1].tolist()
    if firsts or not np.all(np.isfinite(losses)):
        if firsts:
            row = min(firsts)
            step, epoch = int(logger.steps[row]), int(logger.epochs[row])
        else:  # between logged steps: the History names the epoch
            epoch = int(np.flatnonzero(~np.isfinite(losses))[0])
            step = epoch * (total_steps // epochs)
        where = f"step {step}" if logger.every_n_steps == 1 else f"logged every {logger.every_n_steps} steps: by step {step}"
        raise Diverged(
            f"training diverged: the loss or a gradient became NaN/Inf at epoch {epoch + 1} ({where}). "
            + hint,
            epoch,
            step,
        )
    return history, logger


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
):
    """Linear regression with `linear_model`, reported against ordinary least squares.

    Defaults reproduce the seed notebook: its 100 points (`linear_data()`), SGD at Keras's default
    learning rate 0.01, MSE, 100 epochs, batch size 10.

    Args:
        optimizer: `"sgd"`, `"adam"` or `"rmsprop"`. Defaults to `"sgd"`.
        learning_rate: positive float or None for Keras's default. Defaults to None.
        epochs: int >= 1. Defaults to 100.
        batch_size: int >= 1. Defaults to 10.
        seed: int >= 0 or None (random), seed of the initial weights. Defaults to 0.
        csv: path of a CSV file with a header row, or None for the seed's data. Defaults to None.
        x_columns: list of column names (or a comma-separated string); needed with `csv`.
        y_column: target column name; needed with `csv`.
        standardize: bool, train on inputs and target scaled to zero mean and unit variance, and
            report coefficients in the data's own units. Defaults to False.
        log_gradients: path of an `.npz` file to save the gradient log to, or None.

    Returns:
        dict with `coefficients` (list), `intercept`, `ols_coefficients`, `ols_intercept`,
        `gap` (largest absolute difference to least squares over coefficients and intercept),
        `final_loss` (last epoch's History loss, in training units), `optimizer`, `epochs`,
        `batch_size`, `learning_rate`, `standardize`, `predictions` (list of `{"x": [...], "y": ...}`).

    Raises:
        ValueError, TypeError: for bad arguments or data (see `load_xy_csv`, `check_xy`).
        FileNotFoundError: for a missing CSV file.
        Diverged: if the loss or a gradient became non-finite.
    """
    from kerasbp.models import compile_model, linear_model

    optimizer, learning_rate, epochs, log_gradients = _check_run(optimizer, learning_rate, epochs, log_gradients)
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    if csv is not None:
        if not x_columns or not y_column:
            raise ValueError("`csv` needs `x_columns` and `y_column` (--x-columns A,B --y-column C)")
        X, y = load_xy_csv(csv, x_columns, y_column)
        columns = [c.strip() for c in x_columns.split(",")] if isinstance(x_columns, str) else list(x_columns)
    else:
        if x_columns or y_column:
            raise ValueError("`x_columns` and `y_column` need `csv` (--csv PATH)")
        X, y = linear_data()
        columns = ["x"]
    X, y = check_xy(X, y, dtype="float64")
    ols_coef, ols_intercept = ols(X, y)
    if standardize:
        sx, sy = Standardizer(X, "X", columns), Standardizer(y, "y", [y_column or "y"])
        X_train, y_train = sx.transform(X), sy.transform(y)
    else:
        X_train, y_train = X, y
    model = compile_model(linear_model(X.shape[1], seed=seed), optimizer, learning_rate, loss="mse")
    hint = "Try a smaller --learning-rate" + ("" if standardize else ", or --standardize to scale the inputs")
    history, _ = _fit(model, X_train, y_train, epochs, batch_size, log_gradients, hint)
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    coef, intercept = kernel[:, 0], float(bias[0])
    if standardize:
        # y = my + sy * (sum_j w_j (x_j - mx_j) / sx_j + b)
        coef = sy.std[0] * coef / sx.std
        intercept = float(sy.mean[0] + sy.std[0] * intercept - coef @ sx.mean)
    gap = float(max(np.max(np.abs(coef - ols_coef)), abs(intercept - ols_intercept)))
    if X.shape[1] == 1:
        points = [[x] for x in PREDICT_AT]
    else:
        points = [list(row) for row in np.vstack([X.mean(axis=0) + k * X.std(axis=0) for k in (-1, 0, 1)])]
    predictions = [{"x": [float(v) for v in p], "y": float(np.dot(coef, p) + intercept)} for p in points]
    return {
        "coefficients": coef.tolist(),
        "intercept": intercept,
        "ols_coefficients": ols_coef.tolist(),
        "ols_intercept": ols_intercept,
        "gap": gap,
        "final_loss": float(history.history["loss"][-1]),
        "optimizer": optimizer,
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
        "epochs": epochs,
        "batch_size": batch_size,
        "standardize": bool(standardize),
        "columns": columns,
        "predictions": predictions,
    }


#: Defaults of `run_xor`: they learn XOR for every seed 0-9 (checked by the test suite).
XOR_DEFAULTS = {"optimizer": "adam", "learning_rate": 0.05, "epochs": 1000, "loss": "binary_crossentropy"}


def run_xor(
    optimizer=XOR_DEFAULTS["optimizer"],
    learning_rate=XOR_DEFAULTS["learning_rate"],
    epochs=XOR_DEFAULTS["epochs"],
    hidden_units=4,
    activation="sigmoid",
    loss=XOR_DEFAULTS["loss"],
    seed=0,
    log_gradients=None,
):
    """The seed's 2-4-1 sigmoid network on XOR, full batch (one optimizer step per epoch).

    Args:
        optimizer: `"sgd"`, `"adam"` or `"rmsprop"`. Defaults to `"adam"`.
        learning_rate: positive float or None for Keras's default. Defaults to 0.05.
        epochs: int >= 1. Defaults to 1000.
        hidden_units: int >= 1. Defaults to 4.
        activation: hidden activation, `"sigmoid"`, `"tanh"`, `"relu"` or `"linear"`.
            Defaults to `"sigmoid"`.
        loss: `"binary_crossentropy"` or `"mse"`. Defaults to `"binary_crossentropy"`.
        seed: int >= 0 or None, seed of the initial weights. Defaults to 0.
        log_gradients: path of an `.npz` file to save the gradient log to, or None.

    Returns:
        dict with `inputs` (4 x 2 list), `targets` (list), `predictions` (list of outputs),
        `learned` (bool: every output on the right side of 0.5), `final_loss`, `optimizer`,
        `learning_rate`, `epochs`, `steps` (optimizer steps taken), `loss`, `seed`.

    Raises:
        ValueError, TypeError: for bad arguments.
        Diverged: if the loss or a gradient became non-finite.
    """
    from kerasbp.models import compile_model, xor_model

    optimizer, learning_rate, epochs, log_gradients = _check_run(optimizer, learning_rate, epochs, log_gradients)
    loss = check_choice("loss", loss, ("binary_crossentropy", "mse"))
    X, y = xor_data()
    model = compile_model(xor_model(hidden_units, activation, "sigmoid", seed=check_seed(seed)), optimizer, learning_rate, loss=loss)
    history, _ = _fit(model, X, y, epochs, 4, log_gradients, "Try a smaller --learning-rate")
    predictions = np.asarray(model(X, training=False))[:, 0].astype(np.float64)
    learned = bool(np.all((predictions > 0.5) == (y[:, 0] > 0.5)))
    return {
        "inputs": X.astype(int).tolist(),
        "targets": y[:, 0].astype(int).tolist(),
        "predictions": predictions.tolist(),
        "learned": learned,
        "final_loss": float(history.history["loss"][-1]),
        "optimizer": optimizer,
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
        "loss": loss,
        "epochs": epochs,
        "steps": int(model.optimizer.iterations.numpy()),
        "seed": seed,
    }


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, received {text!r}") from None
        return value

    return parse


def _run(job, args, print_text):
    """Run `job(**args)`, print the result, and map failures to exit statuses."""
    try:
        result = job(**args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_text(result)
    return 0


def _common_arguments(parser, learning_rate_default, epochs_default):
    parser.add_argument("--optimizer", default=None, help="sgd, adam or rmsprop")
    parser.add_argument("--learning-rate", type=_number(float), default=None, help=f"default: {learning_rate_default}")
    parser.add_argument("--epochs", type=_number(int), default=None, help=f"default: {epochs_default}")
    parser.add_argument("--seed", type=_number(int), default=None, help="seed of the initial weights (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--log-gradients", metavar="PATH", default=None, help="save the gradient log (.npz) here")


def _given(args, names):
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def main_linear(argv=None):
    """Command line of `scripts/train_linear.py`; returns the exit status."""
    parser = _Parser(prog="train_linear.py", description="Linear regression y = 2x + 1 + noise (or your CSV) with a Keras Dense(1).")
    _common_arguments(parser, "Keras's for the optimizer (SGD 0.01, Adam and RMSprop 0.001)", 100)
    parser.add_argument("--batch-size", type=_number(int), default=None)
    parser.add_argument("--csv", metavar="PATH", default=None, help="your data: a CSV file with a header row")
    parser.add_argument("--x-columns", metavar="A[,B...]", default=None)
    parser.add_argument("--y-column", metavar="C", default=None)
    parser.add_argument("--standardize", action="store_true", help="train on standardized inputs and target")
    args = parser.parse_args(argv)
    kwargs = _given(args, ["optimizer", "learning_rate", "epochs", "batch_size", "seed", "csv", "x_columns", "y_column", "log_gradients"])
    kwargs["standardize"] = args.standardize

    def show(r):
        if args.json:
            keys = ["coefficients", "intercept", "ols_coefficients", "ols_intercept", "final_loss", "optimizer", "epochs", "predictions"]
            print(json.dumps({k: r[k] for k in keys} | {k: v for k, v in r.items() if k not in keys}))
            return
        print(f"trained {r['optimizer']} (learning rate {r['learning_rate']:g}) for {r['epochs']} epochs, batch size {r['batch_size']}" + (", standardized" if r["standardize"] else ""))
        print(f"final training loss (MSE, History): {r['final_loss']:.6f}")
        print(f"{'':14}{'learned':>12}{'least squares':>16}{'gap':>12}")
        for name, c, o in zip(r["columns"], r["coefficients"], r["ols_coefficients"], strict=True):
            print(f"{'coef ' + name:14}{c:12.6f}{o:16.6f}{c - o:12.2e}")
        print(f"{'intercept':14}{r['intercept']:12.6f}{r['ols_intercept']:16.6f}{r['intercept'] - r['ols_intercept']:12.2e}")
        print("predictions:")
        for p in r["predictions"]:
            print(f"  x = {', '.join(f'{v:g}' for v in p['x'])}: y = {p['y']:.6f}")

    return _run(run_linear, kwargs, show)


def main_xor(argv=None):
    """Command line of `scripts/train_xor.py`; returns the exit status."""
    parser = _Parser(prog="train_xor.py", description="The seed's 2-4-1 sigmoid network learning XOR.")
    _common_arguments(parser, f"{XOR_DEFAULTS['learning_rate']}", XOR_DEFAULTS["epochs"])
    parser.add_argument("--hidden-units", type=_number(int), default=None)
    parser.add_argument("--activation", default=None, help="hidden activation: sigmoid, tanh, relu or linear")
    parser.add_argument("--loss", default=None, help="binary_crossentropy or mse")
    args = parser.parse_args(argv)
    kwargs = _given(args, ["optimizer", "learning_rate", "epochs", "hidden_units", "activation", "loss", "seed", "log_gradients"])

    def show(r):
        if args.json:
            print(json.dumps(r))
            return
        print(f"trained {r['optimizer']} (learning rate {r['learning_rate']:g}, loss {r['loss']}) for {r['epochs']} epochs = {r['steps']} optimizer steps")
        print(" x1 x2 | target | output")
        for (a, b), t, p in zip(r["inputs"], r["targets"], r["predictions"], strict=True):
            print(f"  {a}  {b} |   {t}    | {p:.4f} {'ok' if (p > 0.5) == (t > 0.5) else 'WRONG'}")
        print(f"final training loss: {r['final_loss']:.6f}")
        print("learned XOR: yes" if r["learned"] else "learned XOR: NO - some outputs are on the wrong side of 0.5; try more --epochs or another --seed")

    return _run(run_xor, kwargs, show)


def run_compare(task="xor", optimizer="sgd", learning_rate=None, epochs=None, batch_size=None, dtype="float32", loss=None, seed=0):
    """`kerasbp.compare` on the XOR network or the linear model, built in `dtype`.

    Args:
        task: `"xor"` (the 2-4-1 sigmoid net on the truth table) or `"linear"` (`Dense(1)` on the
            seed's 100 points). Defaults to `"xor"`.
        optimizer: `"sgd"`, `"adam"` or `"rmsprop"`. Defaults to `"sgd"`.
        learning_rate: positive float or None for Keras's default. Defaults to None.
        epochs: int >= 1, or None for 50 (xor) or 5 (linear).
        batch_size: int >= 1, or None for 3 (xor) or 30 (linear): both leave a partial last batch.
        dtype: `"float32"` or `"float64"`. Defaults to `"float32"`.
        loss: `"binary_crossentropy"` or `"mse"`, or None for binary cross-entropy on XOR and
            MSE on the linear model.
        seed: int >= 0, seed of the initial weights. Defaults to 0.

    Returns:
        `ComparisonReport`.

    Raises:
        ValueError, TypeError: for bad arguments.
    """
    from kerasbp.comparison import compare
    from kerasbp.precision import floatx
    from kerasbp.models import compile_model, linear_model, xor_model

    task = check_choice("task", task, ("xor", "linear"))
    optimizer = check_choice("optimizer", optimizer, ("sgd", "adam", "rmsprop"))
    dtype = check_choice("dtype", dtype, ("float32", "float64"))
    if learning_rate is not None:
        learning_rate = check_positive_float("learning_rate", learning_rate)
    epochs = check_positive_int("epochs", epochs if epochs is not None else (50 if task == "xor" else 5))
    batch_size = check_positive_int("batch_size", batch_size if batch_size is not None else (3 if task == "xor" else 30))
    loss = check_choice("loss", loss or ("binary_crossentropy" if task == "xor" else "mse"), ("binary_crossentropy", "mse"))
    seed = check_seed(seed)
    X, y = xor_data(dtype) if task == "xor" else linear_data()
    with floatx(dtype):
        model = xor_model(seed=seed) if task == "xor" else linear_model(seed=seed)
        compile_model(model, optimizer, learning_rate, loss=loss)
    return compare(model, X, y, epochs=epochs, batch_size=batch_size, dtype=dtype)


def main_compare(argv=None):
    """Command line of `scripts/compare.py`; returns 0 when the report is ok, 1 when not, 2 on bad input."""
    parser = _Parser(prog="compare.py", description="Keras against its NumPy twin, step by step.")
    parser.add_argument("--task", default="xor", help="xor or linear")
    parser.add_argument("--optimizer", default="sgd", help="sgd, adam or rmsprop")
    parser.add_argument("--learning-rate", type=_number(float), default=None)
    parser.add_argument("--epochs", type=_number(int), default=None)
    parser.add_argument("--batch-size", type=_number(int), default=None)
    parser.add_argument("--dtype", default="float32", help="float32 or float64")
    parser.add_argument("--loss", default=None, help="binary_crossentropy or mse")
    parser.add_argument("--seed", type=_number(int), default=0)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    kwargs = {k: getattr(args, k) for k in ("task", "optimizer", "learning_rate", "epochs", "batch_size", "dtype", "loss", "seed")}
    outcome = {}

    def show(report):
        print(report.to_json() if args.json else report.summary())
        outcome["ok"] = report.ok

    status = _run(run_compare, kwargs, show)
    return status if status else (0 if outcome["ok"] else 1)


def script_main(main):
    """Entry for the scripts: quiet TensorFlow's logs, then exit with `main()`'s status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
