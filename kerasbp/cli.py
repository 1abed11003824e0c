"""Command lines of the scripts in `scripts/`: argparse front ends of the jobs in `kerasbp.jobs`.

`main_linear`, `main_xor` and `main_compare` parse a command line, call `run_linear`, `run_xor` or
`run_compare`, print the result (text, or one JSON object with `--json`) and return the exit
status; `script_main` is what a script runs. Bad input ends a script with one line on stderr and
exit status 2; a run whose loss or gradients turn non-finite ends with exit status 1 and says at
which epoch and step; Ctrl-C ends it with status 130 (the gradient log is saved first).

The choices offered (optimizers, losses, activations) are the NumPy twin's registries, which
import NumPy only; `kerasbp.jobs`, which imports Keras and TensorFlow, is imported once the
arguments are parsed (in `_run`), so `--help` and usage errors answer at once.

Example:
    >>> main_xor(["--epochs", "3", "--json"])   # doctest: +SKIP
    {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], ...}
    0
"""

import argparse
import json
import sys

from kerasbp.interrupts import Terminated, exit_status, terminate_as_interrupt
from kerasbp.reference.activations import ACTIVATIONS
from kerasbp.reference.losses import LOSS_NAMES
from kerasbp.reference.optimizers import OPTIMIZERS


def _names(choices):
    """`"a, b or c"` from the keys of a registry."""
    choices = list(choices)
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind):
    """An argparse `type` for `int` or `float` whose error names the expected kind."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, received {text!r}") from None
        return value

    return parse


def _run(job_name, args, print_text):
    """Run `kerasbp.jobs.<job_name>(**args)`, print the result, and map failures to exit statuses."""
    # The one deferred import in this module, on purpose: kerasbp.jobs imports Keras and
    # TensorFlow (seconds), so it comes after argument parsing, and `--help` and usage errors
    # answer without it.
    from kerasbp import jobs

    try:
        result = getattr(jobs, job_name)(**args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except jobs.Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM under script_main: the job kept its log
        print(f"interrupted ({'SIGTERM' if isinstance(e, Terminated) else 'Ctrl-C'})", file=sys.stderr)
        return exit_status(e)
    print_text(result)
    return 0


def _common_arguments(parser, optimizer_default, learning_rate_default, epochs_default):
    """The options of both training scripts.

    An option left out is not passed on, so the job's own default applies. The defaults shown in
    `--help` are the jobs' (`kerasbp.jobs`), written out here so that `--help` does not import the
    jobs; tests/test_cli.py::test_help_shows_the_jobs_defaults checks that they agree.
    """
    parser.add_argument("--optimizer", default=None, help=f"{_names(OPTIMIZERS)} (default: {optimizer_default})")
    parser.add_argument("--learning-rate", type=_number(float), default=None, help=f"default: {learning_rate_default}")
    parser.add_argument("--epochs", type=_number(int), default=None, help=f"default: {epochs_default}")
    parser.add_argument("--seed", type=_number(int), default=None, help="random seed of the initial weights (default: 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--log-gradients", metavar="PATH", default=None, help="save the gradient log (.npz) here")


def _given(args, names):
    """The parsed options in `names` that were given (not None), as keyword arguments."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


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
    parser = _Parser(prog="train_linear.py", description="Linear regression y = 2x + 1 + noise (or your CSV) with a Keras Dense(1).")
    _common_arguments(parser, "sgd", "Keras's for the optimizer (SGD 0.01, Adam and RMSprop 0.001)", 100)
    parser.add_argument("--batch-size", type=_number(int), default=None, help="default: 10")
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

    return _run("run_linear", kwargs, show)


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
    parser = _Parser(prog="train_xor.py", description="The 2-4-1 sigmoid network of the classic NumPy XOR example, trained by Keras.")
    _common_arguments(parser, "adam", 0.05, 1000)
    parser.add_argument("--hidden-units", type=_number(int), default=None, help="default: 4")
    parser.add_argument("--activation", default=None, help=f"hidden activation: {_names(ACTIVATIONS)} (default: sigmoid)")
    parser.add_argument("--loss", default=None, help=f"{_names(LOSS_NAMES)} (default: binary_crossentropy)")
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

    return _run("run_xor", kwargs, show)


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
    parser = _Parser(prog="compare.py", description="Keras against its NumPy twin, step by step.")
    parser.add_argument("--task", default="xor", help="xor (the 2-4-1 sigmoid network) or linear (Dense(1)); default: xor")
    parser.add_argument("--optimizer", default="sgd", help=f"{_names(OPTIMIZERS)} (default: sgd)")
    parser.add_argument("--learning-rate", type=_number(float), default=None, help="default: Keras's for the optimizer")
    parser.add_argument("--epochs", type=_number(int), default=None, help="default: 50 (xor) or 5 (linear)")
    parser.add_argument("--batch-size", type=_number(int), default=None, help="default: 3 (xor) or 30 (linear)")
    parser.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    parser.add_argument("--loss", default=None, help=f"{_names(LOSS_NAMES)} (default: binary_crossentropy for xor, mse for linear)")
    parser.add_argument("--seed", type=_number(int), default=0, help="random seed of the initial weights (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    kwargs = {k: getattr(args, k) for k in ("task", "optimizer", "learning_rate", "epochs", "batch_size", "dtype", "loss", "seed")}
    outcome = {}

    def show(report):
        print(report.to_json() if args.json else report.summary())
        outcome["ok"] = report.ok

    status = _run("run_compare", kwargs, show)
    return status if status else (0 if outcome["ok"] else 1)


def script_main(main):
    """Run a script's command line and exit with its status: `sys.exit(main())`.

    SIGTERM is raised as `kerasbp.interrupts.Terminated` (a `KeyboardInterrupt`) inside, so a
    run stopped by Ctrl-C or SIGTERM at any moment (importing, tracing, training) keeps its
    log, says so in one line and exits 130 or 143. TensorFlow's log level needs nothing here:
    `import kerasbp` sets `TF_CPP_MIN_LOG_LEVEL=3` (unless it is already set).

    Args:
        main: callable without arguments that returns the exit status, e.g. `main_xor`.

    Raises:
        SystemExit: always, with `main()`'s status.
    """
    with terminate_as_interrupt():
        try:
            status = main()
        except KeyboardInterrupt as e:  # before or after the job's own handling (e.g. importing)
            print(f"interrupted ({'SIGTERM' if isinstance(e, Terminated) else 'Ctrl-C'})", file=sys.stderr)
            status = exit_status(e)
    sys.exit(status)
