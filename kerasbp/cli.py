"""Command lines of the scripts in `scripts/`: argparse front ends of the jobs in `kerasbp.jobs`.

`main_linear`, `main_xor` and `main_compare` parse a command line, call `run_linear`, `run_xor` or
`run_compare`, print the result (text, or one JSON object with `--json`) and return the exit
status; `main_report` writes the HTML report of a saved log (`kerasbp.report`); `script_main` is
what a script runs. Bad input ends a script with one line on stderr that names the option typed
(`--csv`, not the job's `path`) and exit status 2; a run whose loss or gradients turn non-finite
ends with exit status 1 and says at which epoch and step; Ctrl-C ends it with status 130 (the
gradient log is saved first). `--help` shows every option with its default, what the script does,
examples and the exit statuses.

The choices offered (optimizers, losses, activations) are the NumPy twin's registries, which
import NumPy only; `kerasbp.jobs`, which imports Keras (and TensorFlow on its backend), is
imported once the arguments are parsed (in `_run`), so `--help` and usage errors answer at once.
`--backend` picks Keras's backend (`KERAS_BACKEND`, set in `_run` before Keras is imported); its
default, Keras's configured backend, is read without importing Keras (`kerasbp.backends`).

Example:
    >>> main_xor(["--epochs", "3", "--json"])   # doctest: +SKIP
    {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], ...}
    0
"""

import argparse
import json
import os
import re
import sys

from kerasbp.backends import BACKENDS, running_backend
from kerasbp.checks import check_choice, check_seed
from kerasbp.interrupts import Terminated, exit_status, signals_as_interrupts
from kerasbp.reference.activations import ACTIVATIONS
from kerasbp.reference.losses import LOSS_NAMES
from kerasbp.reference.optimizers import OPTIMIZERS

_EXIT_TRAINING = """exit status:
  0    trained{learned}
  1    training diverged: the loss or a gradient became NaN/Inf; the message names the epoch and
       optimizer step (the same step that health() names on the saved log, which ends there)
  2    bad input: one line on stderr, naming the option
  130  interrupted (Ctrl-C); the gradient log of the steps that ran is saved first
  143  stopped by SIGTERM (e.g. a job scheduler's time limit); the log is saved likewise"""

_LOG_HELP = (
    "save the gradient log: PATH.npz holds the whole log (read it back with "
    "kerasbp.load_gradient_log(PATH)), PATH.csv the statistics table, one row per logged step and "
    "variable (an export to read, not to load back); the suffix in any case, any other is refused (default: not saved)"
)


def _names(choices):
    """`"a, b or c"` from the keys of a registry."""
    choices = list(choices)
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2, the description and
    epilog keep their line breaks, and `flags` maps each option's argument name to the flag typed
    (`{"learning_rate": "--learning-rate"}`), for messages."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.flags = {}

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.dest != "help":
            self.flags[action.dest] = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest.upper())
        return action

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag_message(message, flags):
    """`message` with the Python argument names it quotes replaced by the flags typed.

    "`learning_rate` must be ... Received: learning_rate=0.0" becomes "--learning-rate must be
    ... Received: --learning-rate=0.0"; longer names first, so `x_columns` wins over a shorter one.
    """
    for name in sorted(flags, key=len, reverse=True):
        flag = flags[name]
        message = message.replace(f"`{name}`", flag)
        message = re.sub(rf"(?<![\w`-]){re.escape(name)}=", f"{flag}=", message)
    return message


def _number(kind):
    """An argparse `type` for `int` or `float` whose error names the expected kind."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, received {text!r}") from None
        return value

    return parse


def _seed(text):
    """The argparse `type` of `--seed`: what `checks.check_seed` allows but None, which cannot be
    typed (its message offers None)."""
    try:
        return check_seed(_number(int)(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**31), received {text!r}") from None


def _check_files(kwargs):
    """The file arguments, checked before TensorFlow is imported: an existing `csv`, a
    `log_gradients` path ending in .npz or .csv in an existing folder."""
    from kerasbp.report import check_log_path  # NumPy only

    if kwargs.get("csv") is not None and not os.path.isfile(kwargs["csv"]):
        raise FileNotFoundError(f"`csv` must be an existing CSV file. Received: csv={kwargs['csv']!r}")
    if kwargs.get("log_gradients") is not None:
        check_log_path("log_gradients", kwargs["log_gradients"])


def _use_backend(backend, float64=False):
    """Make Keras run on `backend` in this process: set `KERAS_BACKEND` before Keras is imported.

    Args:
        backend: `"tensorflow"`, `"jax"` or `"torch"` (any case), or None for Keras's configured
            backend (`kerasbp.backends.running_backend`).
        float64: bool, whether the job computes in float64: on JAX, `JAX_ENABLE_X64=1` is set
            too (unless already set), as float64 on JAX needs it before JAX starts.

    Raises:
        ValueError: for an unknown `backend` (also a configured one), or when Keras is already
            imported in this process on another backend (Keras fixes it at its import).
    """
    if backend is None:
        backend = running_backend()
        if backend not in BACKENDS:
            raise ValueError(f"Keras is configured to run on {backend!r} (KERAS_BACKEND or keras.json); choose {_names(BACKENDS)} with `backend`")
    backend = check_choice("backend", backend, BACKENDS)
    keras = sys.modules.get("keras")
    if keras is not None and keras.config.backend() != backend:
        raise ValueError(
            f"`backend` cannot change Keras's backend here: Keras is already imported in this process and runs on "
            f"{keras.config.backend()!r}. Received: backend={backend!r}"
        )
    os.environ["KERAS_BACKEND"] = backend
    if float64 and backend == "jax":
        os.environ.setdefault("JAX_ENABLE_X64", "1")


def _run(job_name, args, print_text, flags, backend=None):
    """Run `kerasbp.jobs.<job_name>(**args)` on Keras's `backend` (None: the configured one; see
    `_use_backend`), print the result, and map failures to exit statuses.

    Messages name the flags typed, not the jobs' argument names (`flags`, from `_Parser.flags`).
    """
    try:
        _use_backend(backend, float64=args.get("dtype") == "float64")
        _check_files(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(_flag_message(f"error: {e}", flags).replace("\n", " "), file=sys.stderr)
        return 2
    # The one deferred import in this module, on purpose: kerasbp.jobs imports Keras (and
    # TensorFlow on its backend; seconds), so it comes after argument parsing and after
    # KERAS_BACKEND is set, and `--help` and usage errors answer without it.
    from kerasbp import jobs

    try:
        result = getattr(jobs, job_name)(**args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(_flag_message(f"error: {e}", flags).replace("\n", " "), file=sys.stderr)
        return 2
    except jobs.Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM under script_main: the job kept its log
        print(f"interrupted ({'SIGTERM' if isinstance(e, Terminated) else 'Ctrl-C'})", file=sys.stderr)
        return exit_status(e)
    print_text(result)
    if isinstance(result, dict) and result.get("log_error"):  # the results are printed; the log could not be saved
        print(f"error: {result['log_error']}", file=sys.stderr)
        return 1
    return 0


def _log_saved(path):
    """The line that says where the gradient log went, and what the file is."""
    if path is None:
        return None
    if os.path.splitext(path)[1].lower() == ".csv":
        return (
            f"gradient statistics saved to {path} (a table to read; save to .npz to load the log back). "
            "Its update_ratio is |delta w| / |w|: inf where the weights before the step were all zero, "
            "as zero-initialised biases are at the first step"
        )
    return f"gradient log saved to {path} (read it back with kerasbp.load_gradient_log; report: python scripts/report.py {path})"


def _backend_argument(parser):
    """`--backend`, the option of every script that runs Keras."""
    parser.add_argument(
        "--backend",
        default=None,
        help=f"the Keras backend to run on: {_names(BACKENDS)} (default: Keras's configured backend, from KERAS_BACKEND or "
        f"the \"backend\" of keras.json: here {running_backend()})",
    )


def _common_arguments(parser, optimizer_default, learning_rate_default, epochs_default):
    """The options of both training scripts.

    An option left out is not passed on, so the job's own default applies. The defaults shown in
    `--help` are the jobs' (`kerasbp.jobs`), written out here so that `--help` does not import the
    jobs; tests/test_cli.py::test_help_shows_the_jobs_defaults checks that they agree.
    """
    parser.add_argument("--optimizer", default=None, help=f"{_names(OPTIMIZERS)} (default: {optimizer_default})")
    parser.add_argument("--learning-rate", type=_number(float), default=None, help=f"the optimizer's learning rate (default: {learning_rate_default})")
    parser.add_argument("--epochs", type=_number(int), default=None, help=f"passes over the data (default: {epochs_default})")
    parser.add_argument("--seed", type=_seed, default=None, help="random seed of the initial weights, so that a run repeats exactly (default: 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text (default: text)")
    parser.add_argument("--log-gradients", metavar="PATH", default=None, help=_LOG_HELP)
    parser.add_argument(
        "--devices",
        metavar="N",
        type=_number(int),
        default=None,
        help="train data-parallel on N devices with tf.distribute.MirroredStrategy (N GPUs if there are, else N logical CPU "
        "devices) and model.fit; prints the gradient noise scale from the replicas; TensorFlow backend only (default: None, one device)",
    )
    _backend_argument(parser)


def _given(args, names):
    """The parsed options in `names` that were given (not None), as keyword arguments."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _warn(result):
    for text in result.get("warnings", []):
        print(f"warning: {text}", file=sys.stderr)


_LINEAR_EPILOG = """what it does:
  Trains a Keras Dense(1) with MSE, as the Keras linear regression that kerasbp grew from does
  (its defaults: the 100 points of y = 2x + 1 + noise from kerasbp.linear_data(), SGD at Keras's
  default learning rate 0.01, 100 epochs, batch size 10), and prints beside the least-squares
  answer: each coefficient and the intercept with its gap as a relative difference, the mean
  squared error of both on the data, and predictions at points inside the data (one input column:
  at its quartiles; several: at the three rows of the data whose target is at the target's
  quartiles). Everything is in the data's units; with --standardize it trains on standardized
  inputs and target and says so.

your data (--csv):
  UTF-8, comma-separated, a header row naming the columns, every row as wide as the header, a
  finite number in each column you name; other columns are ignored. For example:
    age,bmi,bp,target
    59,32.1,101,151
    48,21.6,87,75

examples:
  python scripts/train_linear.py
  python scripts/train_linear.py --optimizer adam --learning-rate 0.05 --epochs 300
  python scripts/train_linear.py --csv diabetes.csv --x-columns bmi --y-column target --standardize
  python scripts/train_linear.py --csv diabetes.csv --x-columns bmi,bp --y-column target --standardize
  python scripts/train_linear.py --json --log-gradients grads.npz
  python scripts/train_linear.py --backend jax

""" + _EXIT_TRAINING.format(learned="")

_XOR_EPILOG = """what it does:
  Trains the 2-4-1 sigmoid network of the classic NumPy XOR example (the network kerasbp grew
  from) with Keras on the four rows of the XOR truth table, one full batch per epoch (so one
  optimizer step per epoch), and prints the truth table with the network's outputs and whether it
  learned XOR. The defaults learn XOR for every --seed from 0 to 9.

examples:
  python scripts/train_xor.py
  python scripts/train_xor.py --optimizer sgd --learning-rate 2 --loss mse --epochs 5000 --seed 3
  python scripts/train_xor.py --json --log-gradients grads.npz
  python scripts/report.py grads.npz        # a page of figures from the saved log
  python scripts/train_xor.py --backend jax # Keras on JAX (pip install -e ".[jax]"), or torch

""" + _EXIT_TRAINING.format(learned=" (whether or not it learned XOR, as printed)")

_COMPARE_EPILOG = """defaults per task (what --epochs, --batch-size and --loss mean when left out):
  task    data                                      epochs  batch size  loss
  xor     the 4 rows of the XOR truth table         50      3           binary_crossentropy
  linear  the 100 points of y = 2x + 1 + noise      5       30          mse
  Both batch sizes leave a partial last batch, so that case is always checked. The learning rate
  left out is Keras's default for the optimizer: sgd 0.01, adam 0.001, rmsprop 0.001.

what it prints:
  the worst teacher-forced and free-running differences between Keras and its NumPy twin, and
  the verdict (with --json, the whole report).

examples:
  python scripts/compare.py
  python scripts/compare.py --task linear --optimizer adam --dtype float64
  python scripts/compare.py --task xor --optimizer rmsprop --loss mse --epochs 100 --json
  python scripts/compare.py --backend torch --task linear   # Keras on torch (pip install -e ".[torch]")

exit status:
  0    every teacher-forced step agrees within the dtype's tolerances
  1    some step does not (the summary names it)
  2    bad input: one line on stderr, naming the option
  130  interrupted (Ctrl-C); 143 stopped by SIGTERM"""

_REPORT_EPILOG = """what the page holds:
  the run's summary and a table per variable; health() with the figure behind each flag
  (vanishing, exploding, non-finite, dead relu units); the loss per logged step; each variable's
  gradient L2 norm and update ratio |delta w| / |w| per step; and, when the log has them, applied
  vs loss gradients, gradient noise and curvature. One HTML file, figures embedded (PNG): open it
  in any browser, mail it, keep it beside the log. Needs NumPy and matplotlib, not TensorFlow.

examples:
  python scripts/train_xor.py --log-gradients xor.npz && python scripts/report.py xor.npz
  python scripts/report.py runs/diverged.npz --out /tmp/diverged.html --title "lr 5: diverged"

exit status:
  0    the page was written
  2    bad input (a missing file, not a gradient log, an empty log): one line on stderr"""


def main_linear(argv=None):
    """Command line of `scripts/train_linear.py`: `run_linear`, printed as a table or JSON.

    Args:
        argv: list of str, the arguments after the program name, or None for `sys.argv[1:]`.
            Defaults to None.

    Returns:
        int, the exit status: 0 trained, 1 training diverged, 2 bad input, 130 interrupted.

    Raises:
        SystemExit: for `--help` (status 0) and usage errors such as an unknown option or a
            number that does not parse (status 2, one line on stderr).
    """
    parser = _Parser(
        prog="train_linear.py",
        description="Linear regression with a Keras Dense(1), beside the least-squares answer:\non y = 2x + 1 + noise, or on your CSV.",
        epilog=_LINEAR_EPILOG,
    )
    _common_arguments(parser, "sgd", "Keras's for the optimizer: sgd 0.01, adam 0.001, rmsprop 0.001", 100)
    parser.add_argument("--batch-size", type=_number(int), default=None, help="rows per optimizer step (default: 10)")
    parser.add_argument("--csv", metavar="PATH", default=None, help="your data: a CSV file with a header row, see below (default: the 100 points of y = 2x + 1 + noise)")
    parser.add_argument("--x-columns", metavar="A[,B...]", default=None, help="the input columns of --csv, comma-separated (default: none; needed with --csv)")
    parser.add_argument("--y-column", metavar="C", default=None, help="the target column of --csv (default: none; needed with --csv)")
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="train on inputs and target scaled to zero mean and unit variance; results are still reported in the data's units (default: off)",
    )
    args = parser.parse_args(argv)
    kwargs = _given(args, ["optimizer", "learning_rate", "epochs", "batch_size", "seed", "csv", "x_columns", "y_column", "log_gradients", "devices"])
    kwargs["standardize"] = args.standardize
    flags = parser.flags | {"path": "--csv", "X": "--x-columns", "y": "--y-column"}  # load_xy_csv's and check_xy's names

    def show(r):
        _warn(r)
        if args.json:
            keys = ["coefficients", "intercept", "ols_coefficients", "ols_intercept", "mse", "ols_mse", "optimizer", "learning_rate", "epochs", "predictions"]
            print(json.dumps({k: r[k] for k in keys} | {k: v for k, v in r.items() if k not in keys}))
            return
        print(_linear_text(r))
        if r["devices"] > 1:
            print(_parallel_text(r))
        saved = None if r.get("log_error") else _log_saved(kwargs.get("log_gradients"))  # a failed save is said on stderr
        if saved:
            print(saved)

    return _run("run_linear", kwargs, show, flags, args.backend)


def _parallel_text(r):
    """The line about data-parallel training (`--devices N`)."""
    scale = r["noise_scale"]
    if scale is None:
        noise = "n/a (no step split evenly)"
    elif scale <= 0:  # the estimate of |G|^2 came out negative: the gradient is mostly noise here
        noise = f"{scale:.4g}: not meaningful (the true gradient's estimated size came out negative; the batches' gradients are mostly noise)"
    else:
        noise = f"{scale:.4g} examples"
    return f"data-parallel over {r['devices']} replicas (MirroredStrategy); gradient noise scale B_simple from the replicas: {noise}"


#: The largest relative gap to least squares that `train_linear.py` prints without a hint.
NOT_CONVERGED_GAP = 0.05


def _linear_text(r):
    """`run_linear`'s result as the text `train_linear.py` prints."""
    trained_on = (
        f"on the standardized inputs and target of {r['n_samples']} rows; reported below in the data's units"
        if r["standardize"]
        else f"on {r['n_samples']} rows"
    )
    lines = [
        f"trained {r['optimizer']} (learning rate {r['learning_rate']:g}) for {r['epochs']} epochs, batch size {r['batch_size']}, {trained_on}",
        f"mean squared error on the data: {r['mse']:.6g} trained, {r['ols_mse']:.6g} least squares",
    ]
    names = [f"coef {c}" for c in r["columns"]] + ["intercept"]
    learned = [*r["coefficients"], r["intercept"]]
    ols = [*r["ols_coefficients"], r["ols_intercept"]]
    gaps = [r["relative_gaps"][c] for c in r["columns"]] + [r["relative_gaps"]["intercept"]]
    width = max(12, *(len(n) + 2 for n in names))
    lines.append(f"{'':{width}}{'learned':>14}{'least squares':>16}{'relative gap':>14}")
    for name, c, o, g in zip(names, learned, ols, gaps, strict=True):
        lines.append(f"{name:{width}}{c:14.6g}{o:16.6g}{'n/a' if g is None else f'{g:.2e}':>14}")
    largest = max((g for g in gaps if g is not None), default=None)
    if largest is not None and largest > NOT_CONVERGED_GAP:
        lines.append(
            f"not converged yet: a relative gap of {largest:.2e} to least squares (gradient descent gets there slowly "
            "when the inputs are not centred); try more --epochs, a larger --learning-rate or --standardize"
        )
    lines.append(f"predictions at {r['predict_at']}:")
    for p in r["predictions"]:
        at = ", ".join(f"{c} = {v:.4g}" for c, v in zip(r["columns"], p["x"], strict=True))
        actual = "" if p["target"] is None else f" (in the data: {p['target']:.4g})"
        lines.append(f"  {at}: {r['target']} = {p['y']:.4g}{actual}")
    units = "standardized units" if r["standardize"] else "the data's units"
    lines.append(f"last epoch's History loss: {r['final_loss']:.6g} (MSE in {units}, the mean over its batches before each update)")
    return "\n".join(lines)


def main_xor(argv=None):
    """Command line of `scripts/train_xor.py`: `run_xor`, printed as a truth table or JSON.

    Args:
        argv: list of str, the arguments after the program name, or None for `sys.argv[1:]`.
            Defaults to None.

    Returns:
        int, the exit status: 0 trained (whether or not it learned XOR, as printed), 1 training
        diverged, 2 bad input, 130 interrupted.

    Raises:
        SystemExit: for `--help` (status 0) and usage errors (status 2, one line on stderr).
    """
    parser = _Parser(
        prog="train_xor.py",
        description="The 2-4-1 sigmoid network of the classic NumPy XOR example, trained by Keras to learn XOR.",
        epilog=_XOR_EPILOG,
    )
    _common_arguments(parser, "adam", 0.05, 1000)
    parser.add_argument("--hidden-units", type=_number(int), default=None, help="units in the hidden layer (default: 4)")
    parser.add_argument("--activation", default=None, help=f"hidden activation: {_names(ACTIVATIONS)} (default: sigmoid)")
    parser.add_argument("--loss", default=None, help=f"{_names(LOSS_NAMES)} (default: binary_crossentropy)")
    args = parser.parse_args(argv)
    kwargs = _given(args, ["optimizer", "learning_rate", "epochs", "hidden_units", "activation", "loss", "seed", "log_gradients", "devices"])
    flags = parser.flags | {"activations[0]": "--activation"}  # xor_model checks a list of activations

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
        if r["devices"] > 1:
            print(_parallel_text(r))
        saved = None if r.get("log_error") else _log_saved(kwargs.get("log_gradients"))  # a failed save is said on stderr
        if saved:
            print(saved)

    return _run("run_xor", kwargs, show, flags, args.backend)


def main_compare(argv=None):
    """Command line of `scripts/compare.py`: `run_compare`, printed as a summary or JSON.

    Args:
        argv: list of str, the arguments after the program name, or None for `sys.argv[1:]`.
            Defaults to None.

    Returns:
        int, the exit status: 0 when the report is ok, 1 when not, 2 on bad input, 130
        interrupted.

    Raises:
        SystemExit: for `--help` (status 0) and usage errors (status 2, one line on stderr).
    """
    parser = _Parser(
        prog="compare.py",
        description="Keras against its NumPy twin, step by step: teacher-forced (each step from Keras's\nstate) and free-running.",
        epilog=_COMPARE_EPILOG,
    )
    parser.add_argument("--task", default="xor", help="xor (the 2-4-1 sigmoid network) or linear (Dense(1)) (default: xor)")
    parser.add_argument("--optimizer", default="sgd", help=f"{_names(OPTIMIZERS)} (default: sgd)")
    parser.add_argument("--learning-rate", type=_number(float), default=None, help="default: Keras's for the optimizer: sgd 0.01, adam 0.001, rmsprop 0.001")
    parser.add_argument("--epochs", type=_number(int), default=None, help="default: 50 for xor, 5 for linear")
    parser.add_argument("--batch-size", type=_number(int), default=None, help="default: 3 for xor, 30 for linear")
    parser.add_argument("--dtype", default="float32", help="float32 or float64, the model's and the twin's (default: float32)")
    parser.add_argument("--loss", default=None, help=f"{_names(LOSS_NAMES)} (default: binary_crossentropy for xor, mse for linear)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed of the initial weights (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the whole report as one JSON object (default: a summary)")
    _backend_argument(parser)
    args = parser.parse_args(argv)
    kwargs = {k: getattr(args, k) for k in ("task", "optimizer", "learning_rate", "epochs", "batch_size", "dtype", "loss", "seed")}
    outcome = {}

    def show(report):
        print(report.to_json() if args.json else report.summary())
        outcome["ok"] = report.ok

    status = _run("run_compare", kwargs, show, parser.flags, args.backend)
    return status if status else (0 if outcome["ok"] else 1)


def main_report(argv=None):
    """Command line of `scripts/report.py`: `kerasbp.report.write_report` on a saved gradient log.

    Args:
        argv: list of str, the arguments after the program name, or None for `sys.argv[1:]`.
            Defaults to None.

    Returns:
        int, the exit status: 0 the page was written, 2 bad input.

    Raises:
        SystemExit: for `--help` (status 0) and usage errors (status 2, one line on stderr).
    """
    parser = _Parser(
        prog="report.py",
        description="One self-contained HTML page of figures from a saved gradient log\n(--log-gradients PATH.npz, or the folder a GradientLogger(path=...) streamed to).",
        epilog=_REPORT_EPILOG,
    )
    parser.add_argument("log", metavar="LOG", help="the saved log: a .npz file, or the folder a GradientLogger(path=...) streamed to")
    parser.add_argument("--out", metavar="PATH", default=None, help="the HTML file to write (default: LOG with .html, e.g. xor.npz -> xor.html)")
    parser.add_argument("--title", default=None, help="the page's title (default: the log's file name)")
    args = parser.parse_args(argv)
    flags = parser.flags | {"path": "LOG"}  # load_gradient_log calls the file `path`
    from kerasbp.report import write_report  # NumPy and matplotlib; not TensorFlow

    try:
        out = write_report(args.log, out=args.out, title=args.title)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(_flag_message(f"error: {e}", flags).replace("\n", " "), file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def script_main(main, fast_exit=True):
    """Run a script's command line and exit with its status.

    Inside, Ctrl-C and SIGTERM raise `KeyboardInterrupt` and `kerasbp.interrupts.Terminated`
    (see `kerasbp.interrupts.signals_as_interrupts`), so a run stopped by either at any moment
    (importing, tracing, training) keeps its log, says so in one line and exits 130 or 143.
    TensorFlow's log level needs nothing here: `import kerasbp` sets `TF_CPP_MIN_LOG_LEVEL=3`
    (unless it is already set).

    Args:
        main: callable without arguments that returns the exit status, e.g. `main_xor`.
        fast_exit: bool. After `main` has returned (its files written and closed), flush stdout
            and stderr and leave with `os._exit`, skipping the interpreter's teardown of
            TensorFlow: about 1 s on an idle 2-core machine, most of the wait after a Ctrl-C.
            An exception other than an interrupt still leaves through Python (its traceback
            printed). Defaults to `True`.

    Raises:
        SystemExit: with `main()`'s status, when `fast_exit` is False.
    """
    with signals_as_interrupts():
        try:
            status = main()
        except KeyboardInterrupt as e:  # before or after the job's own handling (e.g. importing)
            print(f"interrupted ({'SIGTERM' if isinstance(e, Terminated) else 'Ctrl-C'})", file=sys.stderr)
            status = exit_status(e)
    if fast_exit:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:  # e.g. piped into `head`, which has stopped reading
                pass
        os._exit(status)
    sys.exit(status)
