"""The scripts' command lines (kerasbp.cli) and the training jobs behind them (kerasbp.jobs)."""

import csv
import inspect
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kerasbp import cli, jobs, linear_model
from kerasbp.reference import SGD, NumpyMLP
from kerasbp.logger import STATS, load_gradient_log
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
    # The run is deterministic: the NumPy twin, from the same initial weights (linear_model(seed=0))
    # with the same settings (float32, SGD at float32(0.01), batches of 10 in order, 100 epochs),
    # ends at the same weights and loss. 1000 float32 steps of a contracting linear update keep
    # the two within a few float32 roundings: 1e-5 relative (measured here: bit for bit equal).
    twin = NumpyMLP.from_keras(linear_model(1, seed=0))
    twin_losses = twin.fit(X, y, SGD(learning_rate=0.01), epochs=100, batch_size=10, loss="mse")
    kernel, bias = twin.params
    assert r["coefficients"] == pytest.approx([float(kernel[0, 0])], rel=1e-5)
    assert r["intercept"] == pytest.approx(float(bias[0]), rel=1e-5)
    assert r["final_loss"] == pytest.approx(float(twin_losses[-1]), rel=1e-5)
    # 100 epochs of SGD at 0.01 stop short of least squares, but are on the way to it
    assert 0.02 < abs(r["coefficients"][0] - slope) < 0.5
    # predictions inside the data: at the quartiles of x
    assert [p["x"] for p in r["predictions"]] == [[q] for q in np.quantile(X[:, 0], [0.25, 0.5, 0.75])]
    for p in r["predictions"]:
        assert p["y"] == pytest.approx(r["coefficients"][0] * p["x"][0] + r["intercept"], rel=1e-12)


def test_train_linear_text_output(capsys):
    # in-process: the real script's text is checked on a CSV in test_issue17_1_diabetes_run_...
    assert main_linear(["--epochs", "5"]) == 0
    out = capsys.readouterr().out
    for text in ("mean squared error on the data", "least squares", "relative gap", "coef x", "intercept", "predictions at the quartiles of x", ": y = "):
        assert text in out
    assert "on 100 rows" in out.splitlines()[0] and "MSE in the data's units" in out


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


def test_xor_that_did_not_learn_says_so(capsys):
    r = run_xor(epochs=3, seed=0)
    assert r["learned"] is False
    assert main_xor(["--epochs", "3"]) == 0  # in-process: the real script runs in the tests below
    assert "learned XOR: NO" in capsys.readouterr().out


def test_train_xor_script_json():
    proc = run_script("train_xor.py", "--json", "--seed", "1")
    assert proc.returncode == 0 and proc.stderr == ""
    r = json.loads(proc.stdout)
    assert set(r) >= {"inputs", "targets", "predictions", "learned", "final_loss", "optimizer", "epochs", "steps"}
    assert r["inputs"] == [[0, 0], [0, 1], [1, 0], [1, 1]] and r["targets"] == [0, 1, 1, 0]
    assert r["learned"] is True and r["steps"] == 1000


LINEAR_BAD = [
    (["--optimizer", "muon"], "--optimizer must be one of"),
    (["--learning-rate", "0"], "--learning-rate must be a positive finite number. Received: --learning-rate=0.0"),
    (["--learning-rate", "-1"], "--learning-rate=-1.0"),
    (["--learning-rate", "nan"], "--learning-rate=nan"),
    (["--learning-rate", "fast"], "argument --learning-rate: expected a number, received 'fast'"),
    (["--epochs", "0"], "--epochs must be a positive integer. Received: --epochs=0"),
    (["--epochs", "2.5"], "argument --epochs: expected an integer"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer"),
    (["--csv", "missing.csv", "--x-columns", "a", "--y-column", "y"], "--csv must be an existing CSV file. Received: --csv='missing.csv'"),
    (["--csv", "{csv}", "--x-columns", "a,nope", "--y-column", "y"], "--x-columns must name columns of the CSV header of --csv"),
    (["--csv", "{csv}", "--x-columns", "a", "--y-column", "z"], "--y-column must name columns of the CSV header of --csv"),
    (["--csv", "{bad}", "--x-columns", "a", "--y-column", "y"], "line 3, column 'a': expected a finite number. Received: 'oops'"),
    (["--csv", "{bad}", "--x-columns", "a", "--y-column", "y"], "error: --csv "),
    (["--csv", "{csv}"], "--csv needs --x-columns and --y-column"),
    (["--csv", "{csv}", "--x-columns", "", "--y-column", "y"], "--x-columns must name one or more columns, none empty. Received: --x-columns=''"),
    (["--csv", "{csv}", "--x-columns", "a", "--y-column", ""], "--y-column must be a column name. Received: --y-column=''"),
    (["--x-columns", "a", "--y-column", "y"], "--x-columns and --y-column need --csv"),
    (["--csv", "{csv}", "--x-columns", "a,a", "--y-column", "y"], "--x-columns must not name a column twice. Received: --x-columns='a,a'"),
    (["--csv", "{const}", "--x-columns", "a", "--y-column", "y", "--standardize"], "cannot standardize column 'a'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--log-gradients", "no/such/folder/log.npz"], "--log-gradients must be a file path in an existing folder"),
    (["--log-gradients", "{tmp}/log.txt"], "--log-gradients must end in .npz"),
    # its sidecar cannot be made (here a file is in the way; a read-only disk alike)
    (["--epochs", "2", "--log-gradients", "{tmp}/blocked.npz"], "--log-gradients must be a path in a folder this process can write to"),
]


@pytest.fixture
def csv_files(tmp_path):
    files = {"csv": "a,y\n1,2\n2,4\n3,6\n", "bad": "a,y\n1,2\noops,4\n", "const": "a,y\n1,2\n1,4\n1,6\n"}
    out = {"tmp": tmp_path}
    (tmp_path / "blocked.npz.partial").write_text("a file where the sidecar folder of blocked.npz would go")
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
    assert "`" not in err, err  # no Python argument name: the flags typed


XOR_BAD = [
    (["--optimizer", "lbfgs"], "--optimizer must be one of"),
    (["--loss", "hinge"], f"--loss must be one of {list(LOSS_NAMES)}. Received: --loss='hinge'"),
    (["--activation", "sine"], "--activation must be one of"),
    (["--hidden-units", "0"], "--hidden-units must be a positive integer"),
    (["--epochs", "-1"], "--epochs must be a positive integer"),
    (["--learning-rate", "inf"], "--learning-rate=inf"),
    (["--seed", "-2"], "argument --seed: expected an integer in [0, 2**31), received '-2'"),
    (["--seed", "99999999999999999999"], "argument --seed: expected an integer in [0, 2**31), received '99999999999999999999'"),
    (["--log-gradients", "run.h5"], "--log-gradients must end in .npz"),
]


@pytest.mark.parametrize("argv, message", XOR_BAD, ids=[" ".join(a) for a, _ in XOR_BAD])
def test_train_xor_bad_input_exits_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main_xor(argv))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err
    assert "`" not in err, err


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
    assert log.names[0].endswith("kernel") and log.stats_array().shape == (30, 2, len(STATS))
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
        cli.script_main(lambda: 3, fast_exit=False)
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


def option_sections(help_text):
    """`{"--flag": "its help, whitespace collapsed"}` from the options block of a `--help` text
    (the epilog after it, with its examples, is left out)."""
    block = help_text.split("options:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=  -)", block)  # each option's entry starts on a line of its own
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries if entry.strip()}


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
    sections = option_sections(capsys.readouterr().out)
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
    assert f"--optimizer must be one of {list(OPTIMIZERS)}. Received: --optimizer='muon'" in capsys.readouterr().err


@pytest.mark.parametrize("loss", list(LOSS_NAMES))
def test_xor_job_takes_every_loss_name_of_the_twin(loss):
    r = run_xor(epochs=1, loss=loss.upper())
    assert r["loss"] == loss and r["steps"] == 1


# ---------------------------------------------------------------------------- issue 17: a new user's run
#
# One test (or more) per numbered problem of issue 17, each failing on the code before it. The
# scripts run as subprocesses where the problem is what a user sees; a subprocess that imports
# TensorFlow costs about 10 s here, so the checks that answer before TensorFlow is imported (usage
# errors, --help, file checks) are the cheap ones, and the rest share a few runs.


def write_diabetes_like_csv(path, n=442, seed=0):
    """A CSV shaped like scikit-learn's diabetes data in its original units (which is not installed
    here): age 19-79, bmi 18-42, bp 62-133, target 25-346. Returns the columns as a dict."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.rint(rng.normal(48.5, 13.1, n)), 19, 79)
    bmi = np.clip(np.round(rng.normal(26.4, 4.4, n), 1), 18.0, 42.0)
    bp = np.clip(np.round(rng.normal(94.6, 13.8, n), 1), 62, 133)
    target = np.clip(np.rint(-240 + 10.2 * bmi + 1.1 * bp + 0.1 * age + rng.normal(0, 58, n)), 25, 346)
    columns = {"age": age, "bmi": bmi, "bp": bp, "target": target}
    lines = [",".join(columns)] + [",".join(f"{v:g}" for v in row) for row in zip(*columns.values(), strict=True)]
    Path(path).write_text("\n".join(lines) + "\n")
    return columns


def test_issue17_1_diabetes_run_reports_inside_the_data_in_data_units(tmp_path):
    # 1. predictions at bmi = 0.3, 0.5, 0.7 (bmi runs 18-42); the loss in standardized units; no
    # least-squares loss to compare with.
    data = write_diabetes_like_csv(tmp_path / "diabetes.csv")
    proc = run_script("train_linear.py", "--csv", str(tmp_path / "diabetes.csv"), "--x-columns", "bmi", "--y-column", "target", "--standardize")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "standardized" in out.splitlines()[0] and "data's units" in out.splitlines()[0]
    bmi, target = data["bmi"], data["target"]
    predictions = re.findall(r"^  bmi = ([-\d.e+]+): target = ([-\d.e+]+)$", out, re.M)
    assert len(predictions) == 3, out
    np.testing.assert_allclose([float(x) for x, _ in predictions], np.quantile(bmi, [0.25, 0.5, 0.75]), rtol=1e-3)
    for x, y in predictions:
        assert bmi.min() <= float(x) <= bmi.max() and target.min() <= float(y) <= target.max(), (x, y)
    # both MSEs, in data units: least squares computed here independently with np.polyfit
    slope, intercept = np.polyfit(bmi, target, 1)
    ols_mse = np.mean((slope * bmi + intercept - target) ** 2)
    trained, ols = (float(v) for v in re.search(r"mean squared error on the data: (\S+) trained, (\S+) least squares", out).groups())
    assert ols == pytest.approx(ols_mse, rel=1e-5)
    assert ols_mse > 1000  # data units (standardized units would be below 1)
    assert ols_mse <= trained < 1.01 * ols_mse
    # each coefficient's gap as a relative difference
    row = re.search(r"^coef bmi\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    learned, ls, relative = (float(v) for v in row.groups())
    assert ls == pytest.approx(slope, rel=1e-5)
    assert relative == pytest.approx(abs(learned - ls) / abs(ls), rel=0.02, abs=1e-6)
    assert "MSE in standardized units" in out  # the History loss says which units it is in


def test_issue17_2_log_gradients_suffix_picks_the_format(tmp_path):
    # 2. `--log-gradients out.csv` exited 0 and wrote NPZ bytes into out.csv. 9. --json printed
    # 0.05000000074505806 for --learning-rate 0.05.
    path = tmp_path / "out.csv"
    proc = run_script("train_xor.py", "--epochs", "3", "--learning-rate", "0.05", "--json", "--log-gradients", str(path))
    assert proc.returncode == 0, proc.stderr
    assert '"learning_rate": 0.05,' in proc.stdout
    assert json.loads(proc.stdout)["learning_rate"] == 0.05
    text = path.read_text(encoding="utf-8")  # text, not zip bytes
    assert not path.read_bytes().startswith(b"PK")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3 * 4 and rows[0]["step"] == "0" and rows[0]["variable"].endswith("kernel")
    # any other suffix is refused before training (and before TensorFlow is imported)
    for name in ("out.txt", "out"):
        proc = run_script("train_xor.py", "--log-gradients", str(tmp_path / name))
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: --log-gradients must end in .npz") and ".csv" in proc.stderr, proc.stderr
        assert not (tmp_path / name).exists()


def test_issue17_3_script_errors_name_the_flags(tmp_path):
    # 3. "`path` must be an existing CSV file" for --csv, "`log_gradients` must be ..." for --log-gradients.
    cases = [
        ("train_linear.py", ["--csv", str(tmp_path / "missing.csv"), "--x-columns", "a", "--y-column", "y"], "--csv must be an existing CSV file"),
        ("train_xor.py", ["--log-gradients", str(tmp_path / "no" / "log.npz")], "--log-gradients must be a file path in an existing folder"),
        ("report.py", [str(tmp_path / "missing.npz")], "LOG must be an existing .npz gradient log"),
        ("report.py", [str(tmp_path / "missing.npz"), "--out", str(tmp_path / "no" / "r.html")], "LOG must be an existing"),
    ]
    for script, args, message in cases:
        proc = run_script(script, *args)
        assert proc.returncode == 2, (script, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        for python_name in ("`path`", "`log_gradients`", "log_gradients=", "path="):
            assert python_name not in proc.stderr, proc.stderr


#: Each script's command line in kerasbp.cli, by name (looked up when a test runs).
HELP_MAINS = {"train_linear.py": "main_linear", "train_xor.py": "main_xor", "compare.py": "main_compare", "report.py": "main_report"}


@pytest.mark.parametrize("script", list(HELP_MAINS))
def test_issue17_4_help_documents_every_option_examples_and_exit_codes(script, capsys):
    # 4. --batch-size, --x-columns, --y-column had no help; compare.py --help hid its per-task
    # defaults; examples, the CSV format and the exit codes were only in the module docstrings.
    with pytest.raises(SystemExit) as exit_info:
        getattr(cli, HELP_MAINS[script])(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sections = option_sections(text)
    for option, section in sections.items():
        if option not in ("-h", "--help"):
            assert "default" in section, (option, section)
    epilog = text.split("options:\n", 1)[1].split("\n\n", 1)[1]
    assert "examples:\n" in epilog and f"python scripts/{script}" in epilog
    assert "exit status:\n" in epilog
    codes = ("0", "2") if script == "report.py" else ("0", "1", "2", "130")
    for code in codes:
        assert re.search(rf"^  {code} +\S", epilog, re.M), (code, epilog)
    if script == "train_linear.py":
        assert "your data (--csv):" in epilog and "age,bmi,bp,target" in epilog
        assert "--x-columns" in sections and "--y-column" in sections and "--batch-size" in sections
    if script == "compare.py":
        table = epilog.split("defaults per task", 1)[1]
        assert re.search(r"^  xor .* 50 +3 +binary_crossentropy$", table, re.M), table
        assert re.search(r"^  linear .* 5 +30 +mse$", table, re.M), table
        assert "sgd 0.01, adam 0.001, rmsprop 0.001" in sections["--learning-rate"]


def test_issue17_4_real_script_help_without_tensorflow():
    proc = run_script("compare.py", "--help")
    assert proc.returncode == 0 and "defaults per task" in proc.stdout and "exit status:" in proc.stdout


#: What a reader cannot know: the project's own history.
SEED_WORDING = re.compile(r"seed notebook|seed's|the seed\b(?! of| to|=)", re.I)


def test_issue17_5_user_facing_text_describes_the_origin(capsys):
    # 5. "the seed notebook", "the seed's network": undefined for a reader (and --seed is a random seed).
    texts = {}
    for script, main in HELP_MAINS.items():
        with pytest.raises(SystemExit):
            getattr(cli, main)(["--help"])
        texts[f"{script} --help"] = capsys.readouterr().out
    for path in sorted((ROOT / "scripts").glob("*.py")):
        texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts[str(path.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for name, text in texts.items():
        assert not SEED_WORDING.search(text), (name, SEED_WORDING.search(text).group(0))
    # the origin, by what it is
    assert "the Keras linear regression that kerasbp grew from" in " ".join(texts["train_linear.py --help"].split())
    assert "classic NumPy XOR example (the network kerasbp grew from)" in " ".join(texts["train_xor.py --help"].split())


def test_issue17_6_notebooks_extra_and_how_to_open():
    # 6. nothing said how to open the notebooks, and no extra installed Jupyter.
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert "jupyterlab" in extras["notebooks"]
    first = json.loads((ROOT / "notebooks" / "01_backprop_from_scratch.ipynb").read_text(encoding="utf-8"))["cells"][0]
    assert '.[notebooks]' in "".join(first["source"]) and "jupyter lab" in "".join(first["source"])


def test_issue17_readme_wording():
    # 2: load_gradient_log and what a saved log holds; 5: no "seed notebook"; 6: how to open the
    # notebooks; 8: the performance table's ratio read as a contradiction (1.102 s / 1.046 s, "0.98").
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "kb.load_gradient_log" in readme and "scripts/report.py" in readme
    assert not SEED_WORDING.search(readme), SEED_WORDING.search(readme).group(0)
    assert '.[notebooks]' in readme and "jupyter lab" in readme
    performance = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "| 0.98 |" not in performance and "median of the per-round ratios" in performance


def test_issue17_9_one_row_csv_warns_that_least_squares_is_not_unique(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("a,y\n1,2\n")
    assert main_linear(["--csv", str(path), "--x-columns", "a", "--y-column", "y", "--epochs", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: the least-squares answer is not unique") and "1 row(s)" in err, err
    assert json.loads(out)["warnings"] == [err.strip()[len("warning: "):]]


def test_issue17_9_cli_and_health_name_the_same_first_nonfinite_step(tmp_path, capsys):
    path = tmp_path / "diverged.npz"
    assert main_linear(["--learning-rate", "5", "--log-gradients", str(path)]) == 1
    err = capsys.readouterr().err
    step = int(re.search(r"NaN/Inf at epoch \d+ \(step (\d+)\)", err).group(1))
    log = load_gradient_log(path)
    assert log.health().figures["first_nonfinite_step"] == step
    # the saved log ends at that step: training stopped inside the compiled loop
    assert log.steps.tolist() == list(range(step + 1))
