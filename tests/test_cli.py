"""The scripts' command lines (kerasbp.cli) and the training jobs behind them (kerasbp.jobs)."""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kerasbp import cli, jobs
from kerasbp.logger import load_gradient_log
from kerasbp.cli import main_compare, main_linear, main_xor
from kerasbp.jobs import run_linear, run_xor
from kerasbp.reference.losses import LOSS_NAMES
from kerasbp.reference.optimizers import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]

#: TensorFlow's native log lines (tensorflow/tensorflow#100442) that must not reach a user.
NATIVE_LOG_LINES = ("All log messages before absl", "cudart_stub", "oneDNN custom operations", "XLA service")


def user_env():
    """The environment of a user who never heard of TF_CPP_MIN_LOG_LEVEL: kerasbp's default applies."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def run_script(name, *args, python_flags=()):
    command = [sys.executable, *python_flags, str(ROOT / "scripts" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, env=user_env(), timeout=300)


def test_train_linear_script_defaults_reproduce_the_original_run():
    proc = run_script("train_linear.py", "--json", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    r = json.loads(proc.stdout)
    assert r["optimizer"] == "sgd" and r["epochs"] == 100 and r["batch_size"] == 10
    assert r["learning_rate"] == pytest.approx(0.01)
    # linear_data(), the original run's points: least squares computed independently with np.polyfit
    np.random.seed(42)
    X = np.random.rand(100, 1)
    y = 2 * X + 1 + 0.1 * np.random.randn(100, 1)
    slope, intercept = np.polyfit(X[:, 0], y[:, 0], 1)
    assert r["ols_coefficients"][0] == pytest.approx(slope, rel=1e-10)
    assert r["ols_intercept"] == pytest.approx(intercept, rel=1e-10)
    # 100 epochs of SGD at 0.01 stop short of least squares, but are on the way to it
    assert 0.02 < abs(r["coefficients"][0] - slope) < 0.5
    assert 0.005 < r["final_loss"] < 0.05
    assert [p["x"] for p in r["predictions"]] == [[0.3], [0.5], [0.7]]
    for p in r["predictions"]:
        assert p["y"] == pytest.approx(r["coefficients"][0] * p["x"][0] + r["intercept"], rel=1e-12)


def test_train_linear_text_output():
    proc = run_script("train_linear.py", "--epochs", "5")
    assert proc.returncode == 0, proc.stderr
    for text in ("final training loss", "least squares", "coef x", "intercept", "x = 0.3", "x = 0.7"):
        assert text in proc.stdout


def test_adam_reaches_least_squares_on_the_linear_data():
    r = run_linear(optimizer="adam", learning_rate=0.05, epochs=100, seed=0)
    assert abs(r["coefficients"][0] - r["ols_coefficients"][0]) < 0.02
    assert abs(r["intercept"] - r["ols_intercept"]) < 0.02


def test_csv_with_two_columns_and_standardize(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 300, 200)
    b = rng.normal(50, 10, 200)
    y = 0.05 * a - 0.3 * b + 7 + rng.normal(0, 0.1, 200)
    path = tmp_path / "mine.csv"
    np.savetxt(path, np.column_stack([a, b, y]), delimiter=",", header="a,b,target", comments="")
    r = run_linear(csv=path, x_columns="a,b", y_column="target", standardize=True, optimizer="adam", learning_rate=0.05, epochs=100, seed=0)
    assert len(r["coefficients"]) == 2
    np.testing.assert_allclose(r["coefficients"], r["ols_coefficients"], rtol=0.01)
    assert r["intercept"] == pytest.approx(r["ols_intercept"], abs=0.2)
    assert r["ols_coefficients"] == pytest.approx([0.05, -0.3], abs=0.005)


@pytest.mark.parametrize("seed", range(10))
def test_xor_defaults_learn_the_truth_table(seed):
    r = run_xor(seed=seed)
    assert r["learned"], r["predictions"]
    assert r["steps"] == r["epochs"] == 1000
    predictions = np.array(r["predictions"])
    np.testing.assert_array_equal(predictions > 0.5, [False, True, True, False])


def test_xor_that_did_not_learn_says_so():
    r = run_xor(epochs=3, seed=0)
    assert r["learned"] is False
    proc = run_script("train_xor.py", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    assert "learned XOR: NO" in proc.stdout


def test_train_xor_script_json():
    proc = run_script("train_xor.py", "--json", "--seed", "1")
    assert proc.returncode == 0 and proc.stderr == ""
    r = json.loads(proc.stdout)
    assert set(r) >= {"inputs", "targets", "predictions", "learned", "final_loss", "optimizer", "epochs", "steps"}
    assert r["inputs"] == [[0, 0], [0, 1], [1, 0], [1, 1]] and r["targets"] == [0, 1, 1, 0]
    assert r["learned"] is True and r["steps"] == 1000


LINEAR_BAD = [
    (["--optimizer", "muon"], "`optimizer` must be one of"),
    (["--learning-rate", "0"], "`learning_rate` must be a positive finite number. Received: learning_rate=0.0"),
    (["--learning-rate", "-1"], "learning_rate=-1.0"),
    (["--learning-rate", "nan"], "learning_rate=nan"),
    (["--learning-rate", "fast"], "argument --learning-rate: expected a number, received 'fast'"),
    (["--epochs", "0"], "`epochs` must be a positive integer. Received: epochs=0"),
    (["--epochs", "2.5"], "argument --epochs: expected an integer"),
    (["--batch-size", "-3"], "`batch_size` must be a positive integer"),
    (["--csv", "missing.csv", "--x-columns", "a", "--y-column", "y"], "`path` must be an existing CSV file"),
    (["--csv", "{csv}", "--x-columns", "a,nope", "--y-column", "y"], "column 'nope' is not in the CSV header"),
    (["--csv", "{bad}", "--x-columns", "a", "--y-column", "y"], "line 3, column 'a': expected a finite number. Received: 'oops'"),
    (["--csv", "{csv}"], "`csv` needs `x_columns` and `y_column`"),
    (["--csv", "{const}", "--x-columns", "a", "--y-column", "y", "--standardize"], "cannot standardize column 'a'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--log-gradients", "no/such/folder/log.npz"], "`log_gradients` must be a file path in an existing folder"),
]


@pytest.fixture
def csv_files(tmp_path):
    files = {"csv": "a,y\n1,2\n2,4\n3,6\n", "bad": "a,y\n1,2\noops,4\n", "const": "a,y\n1,2\n1,4\n1,6\n"}
    out = {}
    for key, text in files.items():
        out[key] = tmp_path / f"{key}.csv"
        out[key].write_text(text)
    return out


@pytest.mark.parametrize("argv, message", LINEAR_BAD, ids=[" ".join(a) for a, _ in LINEAR_BAD])
def test_train_linear_bad_input_exits_2_with_one_line(argv, message, csv_files, capsys):
    argv = [a.format(**csv_files) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main_linear(argv))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


XOR_BAD = [
    (["--optimizer", "lbfgs"], "`optimizer` must be one of"),
    (["--loss", "hinge"], f"`loss` must be one of {list(LOSS_NAMES)}. Received: loss='hinge'"),
    (["--activation", "hard_sigmoid"], "`activations[0]` must be one of"),
    (["--hidden-units", "0"], "`hidden_units` must be a positive integer"),
    (["--epochs", "-1"], "`epochs` must be a positive integer"),
    (["--learning-rate", "inf"], "learning_rate=inf"),
    (["--seed", "-2"], "`seed` must be None or an integer in [0, 2**31)"),
    (["--seed", "99999999999999999999"], "`seed` must be None or an integer in [0, 2**31)"),
]


@pytest.mark.parametrize("argv, message", XOR_BAD, ids=[" ".join(a) for a, _ in XOR_BAD])
def test_train_xor_bad_input_exits_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main_xor(argv))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    "script, args",
    [("train_linear.py", ["--learning-rate", "-1"]), ("train_xor.py", ["--loss", "hinge"]), ("train_linear.py", ["--csv", "nope.csv", "--x-columns", "a", "--y-column", "b"])],
    ids=["linear-lr", "xor-loss", "linear-csv"],
)
def test_scripts_bad_input_real_process(script, args):
    proc = run_script(script, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr


def test_log_gradients_option_saves_the_log(tmp_path):
    path = tmp_path / "linear.npz"
    assert main_linear(["--epochs", "3", "--log-gradients", str(path)]) == 0
    log = load_gradient_log(path)
    assert log.steps.tolist() == list(range(30))  # 3 epochs of 10 batches
    assert log.names[0].endswith("kernel") and log.stats_array().shape == (30, 2, 9)
    path = tmp_path / "xor.npz"
    assert main_xor(["--epochs", "7", "--log-gradients", str(path)]) == 0
    assert load_gradient_log(path).steps.tolist() == list(range(7))


def test_long_runs_log_every_kth_step_to_bound_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_LOGGED_STEPS", 10)
    path = tmp_path / "xor.npz"
    jobs.run_xor(epochs=50, log_gradients=path)
    log = load_gradient_log(path)
    assert log.every_n_steps == 5 and log.steps.tolist() == list(range(0, 50, 5))


# ---------------------------------------------------------------------------- command line vs jobs


def test_script_main_leaves_the_environment_alone(monkeypatch):
    # script_main used to setdefault TF_CPP_MIN_LOG_LEVEL, too late to matter: `import kerasbp`
    # sets it before TensorFlow is imported, and script_main only exits with main()'s status.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.script_main(lambda: 3)
    assert exit_info.value.code == 3
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


def test_train_xor_script_writes_no_tensorflow_log_lines():
    # No TF_CPP_MIN_LOG_LEVEL in the environment: the quiet default is kerasbp's own.
    proc = run_script("train_xor.py", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    for line in NATIVE_LOG_LINES:
        assert line not in proc.stderr
    assert proc.stderr == ""
    assert "learned XOR" in proc.stdout


HELP_WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import json, sys
    from kerasbp.cli import main_compare, main_linear, main_xor
    statuses = []
    for main, argv in ((main_xor, ["--help"]), (main_linear, ["--help"]), (main_compare, ["--help"]),
                       (main_linear, ["--frobnicate"]), (main_xor, ["--epochs", "2.5"])):
        try:
            main(argv)
        except SystemExit as e:
            statuses.append(e.code)
    imported = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "matplotlib", "kerasbp"})
    print(json.dumps({"statuses": statuses, "imported": imported}))
    """
)


def test_help_and_usage_errors_do_not_import_tensorflow():
    proc = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TENSORFLOW], capture_output=True, text=True, env=user_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [0, 0, 0, 2, 2], "imported": ["kerasbp"]}
    # the real script, import by import
    proc = run_script("train_xor.py", "--help", python_flags=("-X", "importtime"))
    assert proc.returncode == 0 and "usage: train_xor.py" in proc.stdout
    modules = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "kerasbp.cli" in modules
    assert not [m for m in modules if m.split(".")[0] in ("tensorflow", "keras")]


@pytest.mark.parametrize(
    "main, job, options",
    [
        (main_linear, run_linear, {"--optimizer": "optimizer", "--epochs": "epochs", "--batch-size": "batch_size", "--seed": "seed"}),
        (
            main_xor,
            run_xor,
            {
                "--optimizer": "optimizer",
                "--learning-rate": "learning_rate",
                "--epochs": "epochs",
                "--seed": "seed",
                "--hidden-units": "hidden_units",
                "--activation": "activation",
                "--loss": "loss",
            },
        ),
        (main_compare, jobs.run_compare, {"--task": "task", "--optimizer": "optimizer", "--dtype": "dtype", "--seed": "seed"}),
    ],
    ids=["linear", "xor", "compare"],
)
def test_help_shows_the_jobs_defaults(main, job, options, capsys):
    # cli writes the defaults out (so that --help does not import the jobs); they must be the jobs' own.
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    sections = {part.split()[0]: part for part in re.split(r" (?=--[a-z])", text.split("options:", 1)[1])}
    defaults = inspect.signature(job).parameters
    for option, name in options.items():
        assert f"default: {defaults[name].default}" in sections[option], (option, sections[option])


@pytest.mark.parametrize("main", [main_linear, main_xor, main_compare], ids=["linear", "xor", "compare"])
def test_choices_come_from_the_twin_registries(main, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    registries = [OPTIMIZERS] if main is main_linear else [OPTIMIZERS, LOSS_NAMES]
    for registry in registries:
        names = list(registry)
        assert ", ".join(names[:-1]) + " or " + names[-1] in text
    assert main(["--optimizer", "muon"]) == 2
    assert f"`optimizer` must be one of {list(OPTIMIZERS)}. Received: optimizer='muon'" in capsys.readouterr().err


@pytest.mark.parametrize("loss", list(LOSS_NAMES))
def test_xor_job_takes_every_loss_name_of_the_twin(loss):
    r = run_xor(epochs=1, loss=loss.upper())
    assert r["loss"] == loss and r["steps"] == 1
