"""The training jobs behind the scripts (kerasbp.jobs): what `run_linear` and `run_xor` return.

The command lines around them are tested in tests/test_cli.py (as a user runs them, in
subprocesses); here the jobs are called directly, so the numbers can be checked against an
independent computation.
"""

import csv
import io

import numpy as np
import pytest

import kerasbp as kb
from kerasbp import jobs
from kerasbp.jobs import PREDICT_QUANTILES, Diverged, run_linear, run_xor
from kerasbp.logger import load_gradient_log


def write_csv(path, columns):
    """Write `{name: 1-D array}` as a CSV file with a header row."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    path.write_text("\n".join([",".join(names)] + [",".join(f"{v!r}" for v in map(float, row)) for row in rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def diabetes_like(tmp_path_factory):
    """`(path, columns)`: a CSV at the diabetes data's real scale (bmi 18-42, target 25-346)."""
    rng = np.random.default_rng(1)
    n = 442
    bmi = np.clip(np.round(rng.normal(26.4, 4.4, n), 1), 18.0, 42.0)
    bp = np.clip(np.round(rng.normal(94.6, 13.8, n), 1), 62, 133)
    target = np.clip(np.rint(-240 + 10.2 * bmi + 1.1 * bp + rng.normal(0, 58, n)), 25, 346)
    columns = {"bmi": bmi, "bp": bp, "target": target}
    return write_csv(tmp_path_factory.mktemp("data") / "diabetes.csv", columns), columns


def ols(X, y):
    """Least squares with an intercept, computed independently of kerasbp (normal equations)."""
    A = np.column_stack([X, np.ones(len(X))])
    solution = np.linalg.solve(A.T @ A, A.T @ y)
    return solution[:-1], solution[-1]


def test_one_column_predictions_at_its_quartiles_and_mses_in_data_units(diabetes_like):
    path, data = diabetes_like
    r = run_linear(csv=path, x_columns="bmi", y_column="target", standardize=True, optimizer="adam", learning_rate=0.05, epochs=30)
    bmi, target = data["bmi"], data["target"]
    assert r["predict_at"] == "the quartiles of bmi" and r["target"] == "target" and r["columns"] == ["bmi"]
    np.testing.assert_array_equal([p["x"][0] for p in r["predictions"]], np.quantile(bmi, PREDICT_QUANTILES))
    for p in r["predictions"]:
        assert target.min() <= p["y"] <= target.max()
        assert p["y"] == pytest.approx(r["coefficients"][0] * p["x"][0] + r["intercept"], rel=1e-12)
        assert p["target"] is None
    coef, intercept = ols(bmi[:, None], target)
    assert r["ols_coefficients"] == pytest.approx(coef, rel=1e-9) and r["ols_intercept"] == pytest.approx(intercept, rel=1e-9)
    # the MSEs are in data units, whatever the model trained on
    assert r["ols_mse"] == pytest.approx(np.mean((bmi * coef[0] + intercept - target) ** 2), rel=1e-9)
    assert r["mse"] == pytest.approx(np.mean((bmi * r["coefficients"][0] + r["intercept"] - target) ** 2), rel=1e-9)
    assert r["ols_mse"] <= r["mse"] < 1.01 * r["ols_mse"]
    assert r["final_loss"] < 1 < r["ols_mse"]  # History's loss is in standardized units
    # relative gaps: |learned - ls| / |ls|; the intercept's relative to max(|ls|, std(target))
    assert r["relative_gaps"]["bmi"] == pytest.approx(abs(r["coefficients"][0] - coef[0]) / abs(coef[0]), rel=1e-9)
    assert r["relative_gaps"]["intercept"] == pytest.approx(abs(r["intercept"] - intercept) / max(abs(intercept), target.std()), rel=1e-9)
    assert r["warnings"] == []


def test_several_columns_predict_at_rows_at_the_targets_quartiles(diabetes_like):
    path, data = diabetes_like
    # centred inputs: the old mean - sd, mean, mean + sd points printed x = -1.4e-13
    centred = {"bmi": data["bmi"] - data["bmi"].mean(), "bp": data["bp"] - data["bp"].mean(), "target": data["target"]}
    path = write_csv(path.parent / "centred.csv", centred)
    r = run_linear(csv=path, x_columns=["bmi", "bp"], y_column="target", standardize=True, optimizer="adam", learning_rate=0.05, epochs=10)
    assert r["predict_at"] == "the rows of the data at the quartiles of target"
    X = np.column_stack([centred["bmi"], centred["bp"]])
    order = np.argsort(centred["target"], kind="stable")
    for p, q in zip(r["predictions"], PREDICT_QUANTILES, strict=True):
        row = order[int(round(q * (len(X) - 1)))]
        np.testing.assert_array_equal(p["x"], X[row])  # a real row of the data
        assert p["target"] == centred["target"][row]
        assert p["target"] == pytest.approx(np.quantile(centred["target"], q), abs=2.0)
    assert set(r["relative_gaps"]) == {"bmi", "bp", "intercept"}


def test_dependent_columns_warn_that_least_squares_is_not_unique(tmp_path):
    one_row = write_csv(tmp_path / "one.csv", {"a": [1.0], "y": [2.0]})
    r = run_linear(csv=one_row, x_columns="a", y_column="y", epochs=1)
    assert len(r["warnings"]) == 1 and "not unique (1 row(s) for 1 input column(s) and an intercept: rank 1 of 2)" in r["warnings"][0]
    a = np.arange(10.0)
    collinear = write_csv(tmp_path / "collinear.csv", {"a": a, "b": 2 * a, "y": a + 1})
    r = run_linear(csv=collinear, x_columns="a,b", y_column="y", epochs=1)
    assert "some input columns are constant or linear combinations of others: rank 2 of 3" in r["warnings"][0]


def test_learning_rate_reported_as_given_or_keras_default():
    assert run_xor(epochs=1, learning_rate=0.05)["learning_rate"] == 0.05  # not 0.05000000074505806
    assert repr(run_linear(epochs=1)["learning_rate"]) == "0.01"  # Keras's SGD default, float32 0.0099999998


@pytest.mark.parametrize("name", ["log.npz", "LOG.NPZ", "log.csv"])
def test_log_gradients_format_follows_the_suffix(tmp_path, name):
    path = tmp_path / name
    run_xor(epochs=4, log_gradients=path)
    if name.lower().endswith(".npz"):
        assert load_gradient_log(path).steps.tolist() == [0, 1, 2, 3]
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        assert [int(r["step"]) for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
        assert rows[1]["update_ratio"] == "inf"  # dense_0/bias starts at zero


@pytest.mark.parametrize("name", ["log.txt", "log", "log.npz.bak", "log.h5"])
def test_log_gradients_other_suffixes_refused_before_training(tmp_path, name):
    with pytest.raises(ValueError, match=r"`log_gradients` must end in \.npz .* or \.csv"):
        run_xor(epochs=1, log_gradients=tmp_path / name)
    assert not (tmp_path / name).exists()


def test_diverged_run_names_the_step_health_names_and_the_log_ends_there(tmp_path):
    path = tmp_path / "diverged.npz"
    with pytest.raises(Diverged) as info:
        run_linear(learning_rate=5, log_gradients=path)
    log = load_gradient_log(path)
    health = log.health()
    assert health.nonfinite and info.value.step == health.figures["first_nonfinite_step"]
    assert f"(step {info.value.step})" in str(info.value)
    assert log.steps[-1] == info.value.step and len(log) == info.value.step + 1  # stopped at that step


def test_progress_line_on_a_terminal_for_long_runs():
    stream = io.StringIO()
    progress = jobs._Progress(epochs=300, every_seconds=0.0, stream=stream)
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "sgd")
    kb.train(model, X, y, epochs=300, batch_size=4, callbacks=[progress])
    text = stream.getvalue()
    assert text.startswith("\repoch ") and text.endswith("\n")
    assert "epoch 300/300 (100.0%), loss " in text
